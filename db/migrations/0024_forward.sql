-- The feed to the national system (the Ministry's FTP server): an outbox
-- of (station, measurement time) keys the processor writes in the
-- transaction that stores the readings, so a stored reading is never
-- missed; the forwarder renders each key's Circular 10 file from
-- `readings` and deletes the key only once the file is on the upstream
-- server. `version` grows when a key is written again (a late parameter
-- for a time already queued or sent), so a file sent before that write
-- cannot clear it.

CREATE TABLE IF NOT EXISTS forward_outbox (
    station_id      text NOT NULL,
    measured_at     timestamptz NOT NULL,
    version         bigint NOT NULL DEFAULT 1,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    PRIMARY KEY (station_id, measured_at)
);

CREATE INDEX IF NOT EXISTS forward_outbox_due ON forward_outbox (next_attempt_at);

-- What was delivered: a key sent again with the same content is not
-- uploaded twice.
CREATE TABLE IF NOT EXISTS forward_sent (
    station_id  text NOT NULL,
    measured_at timestamptz NOT NULL,
    file_name   text NOT NULL,
    sha256      bytea NOT NULL,
    lines       integer NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, measured_at)
);

CREATE INDEX IF NOT EXISTS forward_sent_at ON forward_sent (sent_at);

-- Each station's delivery status, for officers and the operator.
CREATE OR REPLACE VIEW forward_status AS
SELECT station_id,
       s.last_measured_at,
       s.last_sent_at,
       coalesce(p.pending, 0) AS pending,
       p.oldest_enqueued_at,
       p.last_error
FROM (SELECT station_id, max(measured_at) AS last_measured_at, max(sent_at) AS last_sent_at
      FROM forward_sent GROUP BY station_id) s
FULL JOIN (SELECT station_id, count(*) AS pending, min(enqueued_at) AS oldest_enqueued_at,
                  (array_agg(last_error ORDER BY next_attempt_at DESC)
                     FILTER (WHERE last_error IS NOT NULL))[1] AS last_error
           FROM forward_outbox GROUP BY station_id) p USING (station_id);
