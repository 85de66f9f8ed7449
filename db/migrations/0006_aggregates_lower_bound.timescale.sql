-- A saturated analyser's value (qc_flag 'above_range') is a lower bound of
-- the true value: it is evidence of an exceedance, so it counts in the
-- average, and the bucket says how many such values it holds. A bucket
-- with above_range_count > 0 has an average that is a lower bound.
-- valid_count still counts 'valid' readings only.
-- A continuous aggregate cannot change its query: drop and create again
-- (dropping also drops its refresh policy). The buckets are refilled from
-- readings by the refresh policy, or CALL refresh_continuous_aggregate.

DROP MATERIALIZED VIEW IF EXISTS readings_hourly;

DROP MATERIALIZED VIEW IF EXISTS readings_daily;

CREATE MATERIALIZED VIEW readings_hourly WITH (timescaledb.continuous) AS
SELECT station_id, parameter,
       time_bucket(INTERVAL '1 hour', measured_at) AS bucket,
       avg(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS avg,
       min(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS min,
       max(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS max,
       count(*) FILTER (WHERE qc_flag = 'valid') AS valid_count,
       count(*) AS total_count,
       count(*) FILTER (WHERE qc_flag = 'above_range') AS above_range_count
FROM readings
GROUP BY station_id, parameter, bucket
WITH NO DATA;

-- Day buckets start at local midnight (UTC+7, no daylight saving in Viet Nam).
CREATE MATERIALIZED VIEW readings_daily WITH (timescaledb.continuous) AS
SELECT station_id, parameter,
       time_bucket(INTERVAL '1 day', measured_at, TIMESTAMPTZ '2000-01-01 00:00:00+07') AS bucket,
       avg(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS avg,
       min(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS min,
       max(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS max,
       count(*) FILTER (WHERE qc_flag = 'valid') AS valid_count,
       count(*) AS total_count,
       count(*) FILTER (WHERE qc_flag = 'above_range') AS above_range_count
FROM readings
GROUP BY station_id, parameter, bucket
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_hourly', start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes', if_not_exists => TRUE);

SELECT add_continuous_aggregate_policy('readings_daily', start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour', if_not_exists => TRUE);
