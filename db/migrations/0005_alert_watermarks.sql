-- Single-node mode has no topic offsets to say which stored readings the
-- alerting engine already judged. Per station, the newest measurement time
-- it judged, written after the alert changes those readings caused: at
-- start, readings up to it rebuild the windows, later ones are judged again.

CREATE TABLE IF NOT EXISTS alert_watermarks (
    station_id   text PRIMARY KEY,
    judged_until timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
