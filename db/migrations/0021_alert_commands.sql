-- Officers' actions (acknowledge, resolve, assign, comment) received by an
-- alerting instance that does not hold the alert, for the instance that
-- does. The one that holds it applies the action with its engine, records
-- the change as usual, and writes the outcome here; the receiving instance
-- answers the officer from it. Finished rows are kept a day.

CREATE TABLE IF NOT EXISTS alert_commands (
    id          bigserial PRIMARY KEY,
    alert_id    text NOT NULL,
    action      text NOT NULL,
    assignee    text NOT NULL DEFAULT '',
    officer     text NOT NULL,
    note        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- the instance (node_id) that took it: one applies it, even where
    -- several hold the alert
    claimed_by  text,
    done_at     timestamptz,
    -- tonic::Code of the answer (0: ok) and its message
    code        integer,
    message     text,
    -- the alert after the action (quantrac.v1.Alert), when it succeeded
    result      bytea
);

CREATE INDEX IF NOT EXISTS alert_commands_pending ON alert_commands (id) WHERE done_at IS NULL;
