-- TimescaleDB: readings becomes a hypertable on measurement time, with
-- hourly and daily continuous aggregates of the valid readings.
-- Compression and retention policies are set at every start from the
-- configuration (they are settings, not schema).

SELECT create_hypertable('readings', by_range('measured_at', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);

ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'station_id, parameter', timescaledb.compress_orderby = 'measured_at DESC');

-- Day buckets start at local midnight (UTC+7, no daylight saving in Viet Nam).
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_hourly WITH (timescaledb.continuous) AS
SELECT station_id, parameter,
       time_bucket(INTERVAL '1 hour', measured_at) AS bucket,
       avg(value) FILTER (WHERE qc_flag = 'valid') AS avg,
       min(value) FILTER (WHERE qc_flag = 'valid') AS min,
       max(value) FILTER (WHERE qc_flag = 'valid') AS max,
       count(*) FILTER (WHERE qc_flag = 'valid') AS valid_count,
       count(*) AS total_count
FROM readings
GROUP BY station_id, parameter, bucket
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_daily WITH (timescaledb.continuous) AS
SELECT station_id, parameter,
       time_bucket(INTERVAL '1 day', measured_at, TIMESTAMPTZ '2000-01-01 00:00:00+07') AS bucket,
       avg(value) FILTER (WHERE qc_flag = 'valid') AS avg,
       min(value) FILTER (WHERE qc_flag = 'valid') AS min,
       max(value) FILTER (WHERE qc_flag = 'valid') AS max,
       count(*) FILTER (WHERE qc_flag = 'valid') AS valid_count,
       count(*) AS total_count
FROM readings
GROUP BY station_id, parameter, bucket
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_hourly', start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);

SELECT add_continuous_aggregate_policy('readings_daily', start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour', if_not_exists => TRUE);
