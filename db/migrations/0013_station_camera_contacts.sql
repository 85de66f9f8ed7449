-- Each station's camera (shown on the officers' page) and its facility's
-- contacts (told about exceedances), from the registry.

ALTER TABLE stations ADD COLUMN IF NOT EXISTS camera_url text;
ALTER TABLE stations ADD COLUMN IF NOT EXISTS contacts text[] NOT NULL DEFAULT '{}';
