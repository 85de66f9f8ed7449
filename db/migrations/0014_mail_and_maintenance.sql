-- E-mail to people, through an outbox: each message is a row written (once,
-- by its dedupe_key) before it is sent, and marked sent only after the SMTP
-- server accepted it. A crash before that resends after the restart; a dead
-- mail server delays only mail. Rows suppressed by a maintenance window are
-- kept with the reason and never sent. The planner's position in
-- alert_events is the webhook_cursors row 'mail:planner'.

CREATE TABLE IF NOT EXISTS mail_outbox (
    id              bigserial PRIMARY KEY,
    dedupe_key      text NOT NULL UNIQUE,
    kind            text NOT NULL,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL,
    alert_id        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    sent_at         timestamptz,
    failed_at       timestamptz,
    suppressed      text
);

CREATE INDEX IF NOT EXISTS mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL AND suppressed IS NULL;

-- Planned maintenance per station: alerts measured inside a window are
-- kept but not notified (mail, webhooks). Created by officers, audited.
CREATE TABLE IF NOT EXISTS maintenance_windows (
    id          bigserial PRIMARY KEY,
    station_id  text NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    reason      text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS maintenance_windows_station ON maintenance_windows (station_id, ends_at);
