-- Plain PostgreSQL: the same aggregate relations as TimescaleDB's continuous
-- aggregates, computed at query time with date_bin.

CREATE OR REPLACE VIEW readings_hourly AS
SELECT station_id, parameter,
       date_bin(INTERVAL '1 hour', measured_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       avg(value) FILTER (WHERE qc_flag = 'valid') AS avg,
       min(value) FILTER (WHERE qc_flag = 'valid') AS min,
       max(value) FILTER (WHERE qc_flag = 'valid') AS max,
       count(*) FILTER (WHERE qc_flag = 'valid') AS valid_count,
       count(*) AS total_count
FROM readings
GROUP BY station_id, parameter, bucket;

-- Day buckets start at local midnight (UTC+7, no daylight saving in Viet Nam).
CREATE OR REPLACE VIEW readings_daily AS
SELECT station_id, parameter,
       date_bin(INTERVAL '1 day', measured_at, TIMESTAMPTZ '2000-01-01 00:00:00+07') AS bucket,
       avg(value) FILTER (WHERE qc_flag = 'valid') AS avg,
       min(value) FILTER (WHERE qc_flag = 'valid') AS min,
       max(value) FILTER (WHERE qc_flag = 'valid') AS max,
       count(*) FILTER (WHERE qc_flag = 'valid') AS valid_count,
       count(*) AS total_count
FROM readings
GROUP BY station_id, parameter, bucket;
