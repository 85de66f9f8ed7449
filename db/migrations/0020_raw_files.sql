-- Each file a station uploaded (FTP), unchanged, with its reception time:
-- the evidence behind its readings. Written by the processor with the
-- file's first readings; the same bytes under the same name again are the
-- same file.

CREATE TABLE IF NOT EXISTS raw_files (
    station_id  text NOT NULL,
    name        text NOT NULL,
    sha256      bytea NOT NULL,
    content     bytea NOT NULL,
    received_at timestamptz NOT NULL,
    -- quantrac.v1.SourceProtocol
    source      smallint NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, name, sha256)
);

CREATE INDEX IF NOT EXISTS raw_files_received ON raw_files (received_at);
