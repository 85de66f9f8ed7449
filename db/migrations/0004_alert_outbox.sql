-- Alert changes are recorded before they are published (Kafka, gRPC,
-- webhooks); notified_at marks those that were. At start, alerting
-- publishes what a crash left unpublished.

ALTER TABLE alert_events ADD COLUMN IF NOT EXISTS notified_at timestamptz;

CREATE INDEX IF NOT EXISTS alert_events_unnotified ON alert_events (sequence) WHERE notified_at IS NULL;
