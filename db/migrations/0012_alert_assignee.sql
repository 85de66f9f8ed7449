-- The officer an alert is assigned to (the officers' page); comments and
-- assignments are rows of alert_events like every other change.

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS assignee text;
