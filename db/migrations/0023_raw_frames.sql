-- The digest of every frame a station sent over TCP or MQTT (an HJ 212
-- packet, a JSON line or a Circular 10 record without its line ending, an
-- MQTT payload), with its
-- reception time and origin: hashing the station's own copy of a frame
-- (HJ 212 `PW=` values replaced by `<redacted>` first) and finding it here
-- for the station and the reception time of a stored reading proves the
-- value is what the station sent. FTP files are kept whole in raw_files.

CREATE TABLE IF NOT EXISTS raw_frames (
    station_id  text NOT NULL,
    received_at timestamptz NOT NULL,
    sha256      bytea NOT NULL,
    size        bigint NOT NULL,
    -- the peer address, or the MQTT topic through a broker
    origin      text NOT NULL,
    -- quantrac.v1.SourceProtocol
    source      smallint NOT NULL,
    PRIMARY KEY (station_id, received_at, sha256)
);

CREATE INDEX IF NOT EXISTS raw_frames_received ON raw_frames (received_at);
