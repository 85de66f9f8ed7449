-- Webhook delivery reads alert_events in sequence order, per URL, and
-- records here how far each URL has been delivered: a crash, a full queue
-- or a dead endpoint loses nothing, and one dead URL delays only itself.
-- A URL seen for the first time starts at the newest event (it is not sent
-- the whole history).

CREATE TABLE IF NOT EXISTS webhook_cursors (
    url               text PRIMARY KEY,
    delivered_through bigint NOT NULL,
    delivered_at      timestamptz
);
