-- Alerts and their history (written by the alerting service). One row per
-- incident, keyed by (rule, station, parameter, window): a replay that
-- raises the same incident again finds the row and adds nothing.

CREATE TABLE IF NOT EXISTS alerts (
    id               text PRIMARY KEY,
    rule             text NOT NULL,
    station_id       text NOT NULL,
    parameter        text NOT NULL,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz,
    severity         text NOT NULL,
    state            text NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    observed_value   double precision,
    limit_value      double precision,
    message          text NOT NULL,
    industrial_zone  text NOT NULL DEFAULT '',
    opened_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    acknowledged_by  text,
    note             text
);

CREATE INDEX IF NOT EXISTS alerts_open ON alerts (state) WHERE state <> 'resolved';

-- Every state change, in order; `sequence` is the position a subscriber
-- resumes after.
CREATE TABLE IF NOT EXISTS alert_events (
    sequence    bigserial PRIMARY KEY,
    alert_id    text NOT NULL REFERENCES alerts (id),
    change      text NOT NULL,
    state       text NOT NULL,
    actor       text,
    note        text,
    at          timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- the quantrac.v1.Alert as it was after the change
    alert       bytea NOT NULL
);

CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id);
