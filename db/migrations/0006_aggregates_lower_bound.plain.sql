-- A saturated analyser's value (qc_flag 'above_range') is a lower bound of
-- the true value: it is evidence of an exceedance, so it counts in the
-- average, and the bucket says how many such values it holds. A bucket
-- with above_range_count > 0 has an average that is a lower bound.
-- valid_count still counts 'valid' readings only.

DROP VIEW IF EXISTS readings_hourly;

DROP VIEW IF EXISTS readings_daily;

CREATE VIEW readings_hourly AS
SELECT station_id, parameter,
       date_bin(INTERVAL '1 hour', measured_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       avg(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS avg,
       min(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS min,
       max(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS max,
       count(*) FILTER (WHERE qc_flag = 'valid') AS valid_count,
       count(*) AS total_count,
       count(*) FILTER (WHERE qc_flag = 'above_range') AS above_range_count
FROM readings
GROUP BY station_id, parameter, bucket;

-- Day buckets start at local midnight (UTC+7, no daylight saving in Viet Nam).
CREATE VIEW readings_daily AS
SELECT station_id, parameter,
       date_bin(INTERVAL '1 day', measured_at, TIMESTAMPTZ '2000-01-01 00:00:00+07') AS bucket,
       avg(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS avg,
       min(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS min,
       max(value) FILTER (WHERE qc_flag IN ('valid', 'above_range')) AS max,
       count(*) FILTER (WHERE qc_flag = 'valid') AS valid_count,
       count(*) AS total_count,
       count(*) FILTER (WHERE qc_flag = 'above_range') AS above_range_count
FROM readings
GROUP BY station_id, parameter, bucket;
