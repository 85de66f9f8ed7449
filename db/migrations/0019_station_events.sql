-- What stations say about themselves rather than measure: HJ 212 notices
-- (2081 logger restart, 2021 equipment running status, 2041 running time,
-- 3020 on-site device information), written by the processor. A resent
-- notice is the same event: the key is the station, the command and its
-- time. Silences are data-gap alerts (the alerts table); the query service
-- lists both.

CREATE TABLE IF NOT EXISTS station_events (
    station_id   text NOT NULL,
    kind         text NOT NULL,
    code         text NOT NULL,
    at           timestamptz NOT NULL,
    -- false: the notice gave no readable time, `at` is its reception
    station_time boolean NOT NULL,
    detail       text NOT NULL,
    -- quantrac.v1.SourceProtocol
    source       smallint NOT NULL,
    received_at  timestamptz,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, at, code)
);
