-- The permit behind each limit: its number, the issuing authority, its last
-- day, and the value it judges (each value, the 1-hour or the 24-hour
-- average), from the registry.

ALTER TABLE permit_limits ADD COLUMN IF NOT EXISTS effective_to date;
ALTER TABLE permit_limits ADD COLUMN IF NOT EXISTS permit_number text;
ALTER TABLE permit_limits ADD COLUMN IF NOT EXISTS authority text;
ALTER TABLE permit_limits ADD COLUMN IF NOT EXISTS averaging text NOT NULL DEFAULT 'single';
