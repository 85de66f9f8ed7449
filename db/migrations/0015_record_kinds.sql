-- What stations mean, kept as they said it:
-- - readings.converted: HJ 212 -ZsRtd, the analyser's value converted to the
--   reference state (dry gas, reference O2), beside the measured value;
-- - readings.wire_code: the parameter code as the station sent it (w01018,
--   011, cod), when it differs from the canonical code;
-- - reported_aggregates: a logger's own minute, hourly and daily records
--   (HJ 212 CN 2051 / 2061 / 2031) over the period starting at period_start.
--   They never collide with real-time readings at the same time, and an
--   identical one sent again is a duplicate.

ALTER TABLE readings ADD COLUMN IF NOT EXISTS converted double precision;
ALTER TABLE readings ADD COLUMN IF NOT EXISTS wire_code text;

CREATE TABLE IF NOT EXISTS reported_aggregates (
    station_id     text NOT NULL,
    parameter      text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('minute', 'hour', 'day')),
    period_start   timestamptz NOT NULL,
    -- 0 when the record does not say (minute records: the logger's setting)
    period_seconds integer NOT NULL,
    avg            double precision NOT NULL,
    min            double precision,
    max            double precision,
    -- HJ 212 -Cou, as sent: the period's cumulative amount
    total          double precision,
    converted      double precision,
    unit           text NOT NULL,
    status         smallint NOT NULL,
    device_flag    text NOT NULL,
    qc_flag        text NOT NULL,
    source         smallint NOT NULL,
    wire_code      text,
    received_at    timestamptz,
    stored_at      timestamptz NOT NULL DEFAULT now(),
    ingest_id      uuid,
    PRIMARY KEY (station_id, parameter, kind, period_start)
);
