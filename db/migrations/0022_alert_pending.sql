-- Single-node mode: stored readings the alerting engine has not judged
-- yet, one row per (processor write, station) with the measurement times
-- it covers. The processor writes the row in the transaction that stores
-- the readings; alerting deletes it once the alert changes those readings
-- make are recorded. A restart judges the readings still covered here,
-- however old (a late backlog included), and only rebuilds state from the
-- rest.
--
-- It replaces alert_watermarks (per station, the newest measurement time
-- judged): a late reading stored but not judged before a crash lay behind
-- its station's watermark and was never judged.

CREATE TABLE IF NOT EXISTS alert_pending (
    batch       bigint      NOT NULL,
    station_id  text        NOT NULL,
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    PRIMARY KEY (batch, station_id)
);

-- What the watermarks left to judge: everything after them (the reading at
-- a watermark is judged again; the alert keys absorb that).
INSERT INTO alert_pending (batch, station_id, first_at, last_at)
SELECT 0, station_id, judged_until, '9999-12-31' FROM alert_watermarks
ON CONFLICT DO NOTHING;

DROP TABLE IF EXISTS alert_watermarks;
