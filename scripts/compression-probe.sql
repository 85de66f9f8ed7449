-- How well TimescaleDB compresses readings shaped like the pipeline's:
-- 100 stations x 6 parameters every 5 minutes for 7 days (one chunk),
-- values with noise around a level, received 20-60 s after measurement,
-- a random ingest id each. Prints rows and bytes before and after.
--
--   psql "$QUANTRAC_TIMESCALE_URL" -At -f scripts/compression-probe.sql
--
-- (deploy/README.md, "Scale model", quotes one run.)
DROP TABLE IF EXISTS size_probe;
CREATE TABLE size_probe (
    station_id text NOT NULL, parameter text NOT NULL, measured_at timestamptz NOT NULL,
    value double precision NOT NULL, unit text NOT NULL, status smallint NOT NULL,
    device_flag text NOT NULL, qc_flag text NOT NULL, source smallint NOT NULL,
    received_at timestamptz, stored_at timestamptz NOT NULL DEFAULT now(), ingest_id uuid,
    converted double precision, wire_code text,
    PRIMARY KEY (station_id, parameter, measured_at));
SELECT create_hypertable('size_probe', 'measured_at', chunk_time_interval => interval '7 days');
INSERT INTO size_probe (station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source, received_at, ingest_id)
SELECT 'PY-KCN-' || s, p, t, round((l + l * 0.1 * sin(extract(epoch from t) / 3600 + s) + random() * l * 0.05)::numeric, 2),
       'mg/L', 1, 'N', 'valid', 3, t + (20 + random() * 40) * interval '1 second', gen_random_uuid()
FROM generate_series(1, 100) s,
     (VALUES ('COD', 60.0), ('TSS', 30.0), ('NH4', 3.0), ('pH', 7.2), ('Temp', 29.0), ('Flow', 40.0)) AS v(p, l),
     generate_series(timestamptz '2026-01-05 00:00+07', timestamptz '2026-01-11 23:55+07', interval '5 minutes') t;
SELECT 'rows', count(*), 'bytes before', hypertable_size('size_probe') FROM size_probe;
ALTER TABLE size_probe SET (timescaledb.compress, timescaledb.compress_segmentby = 'station_id, parameter',
                            timescaledb.compress_orderby = 'measured_at');
SELECT count(compress_chunk(c)) FROM show_chunks('size_probe') c;
SELECT 'bytes after', hypertable_size('size_probe');
DROP TABLE size_probe;
