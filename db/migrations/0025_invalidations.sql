-- An officer's invalidation of stored readings (QueryService
-- InvalidateReadings): the reading keeps its value and gets qc_flag
-- 'invalidated' (never judged, left out of averages); its previous flag,
-- who, why and the audit entry are kept here, one row per reading.

CREATE TABLE IF NOT EXISTS reading_invalidations (
    station_id       text NOT NULL,
    parameter        text NOT NULL,
    measured_at      timestamptz NOT NULL,
    previous_qc_flag text NOT NULL,
    invalidated_by   text NOT NULL,
    reason           text NOT NULL,
    invalidated_at   timestamptz NOT NULL DEFAULT now(),
    audit_sequence   bigint NOT NULL,
    PRIMARY KEY (station_id, parameter, measured_at)
);

-- Each station's definition as last written from the registry (secrets
-- as digests), so that a change is recorded in the audit log with what
-- changed.
ALTER TABLE stations ADD COLUMN IF NOT EXISTS definition jsonb;
