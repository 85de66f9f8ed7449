-- The audit log: every manual action (token issued or revoked, alert
-- acknowledged or resolved) and every refused call, append-only and
-- chained: each row's hash covers its content and the previous row's
-- hash, so altering, removing or inserting a row breaks the chain at that
-- row (`quantrac audit verify`). The trigger refuses UPDATE and DELETE;
-- the chain catches whoever disables it.

CREATE TABLE IF NOT EXISTS audit_log (
    sequence   bigint PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    -- JSON text exactly as hashed (jsonb would reorder it).
    detail     text NOT NULL,
    prev_hash  bytea NOT NULL,
    hash       bytea NOT NULL UNIQUE
);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;

DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
