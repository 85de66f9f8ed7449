-- A reading that arrives for a (station, parameter, time) already stored
-- with a different value, unit or device status: the first stays in
-- `readings` (what was judged), and the disagreement is kept here with
-- both origins, never dropped as a duplicate. An identical redelivery is
-- not a conflict. A replay of the same conflicting reading adds nothing.

CREATE TABLE IF NOT EXISTS reading_conflicts (
    station_id          text NOT NULL,
    parameter           text NOT NULL,
    measured_at         timestamptz NOT NULL,
    stored_value        double precision NOT NULL,
    stored_unit         text NOT NULL,
    stored_status       smallint NOT NULL,
    stored_source       smallint NOT NULL,
    stored_received_at  timestamptz,
    stored_ingest_id    uuid,
    value               double precision NOT NULL,
    unit                text NOT NULL,
    status              smallint NOT NULL,
    source              smallint NOT NULL,
    received_at         timestamptz,
    ingest_id           uuid,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (station_id, parameter, measured_at, ingest_id, value)
);

CREATE INDEX IF NOT EXISTS reading_conflicts_station ON reading_conflicts (station_id, measured_at);
