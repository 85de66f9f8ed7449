-- Plain PostgreSQL: readings_hourly and readings_daily are ordinary views
-- over readings, always current; the query service computes aggregates
-- from raw rows there. Nothing to change.

SELECT 1;
