-- The hourly and daily continuous aggregates answer with the raw tail:
-- buckets past the last refresh are computed from readings at query time
-- (TimescaleDB real-time aggregation; off by default since 2.13), so the
-- newest hour is always in an answer read from them. Readings that arrive
-- late into an already materialized bucket show there after the next
-- refresh (the processor's rollup task, or the refresh policy).

ALTER MATERIALIZED VIEW readings_hourly SET (timescaledb.materialized_only = false);

ALTER MATERIALIZED VIEW readings_daily SET (timescaledb.materialized_only = false);
