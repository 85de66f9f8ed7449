-- What the registry says about how a stack's limit is judged and about the
-- analysers' certificates, written with the rest of the registry so that
-- the query service and the officers' page show them: a limit's reference
-- O2 (the percentage the concentration is corrected to), and each
-- instrument's calibration and inspection dates.

ALTER TABLE permit_limits ADD COLUMN IF NOT EXISTS reference_o2 double precision;

CREATE TABLE IF NOT EXISTS station_instruments (
    station_id           text NOT NULL REFERENCES stations (id),
    name                 text NOT NULL,
    parameters           text[] NOT NULL,
    calibrated_on        date,
    calibration_valid_to date,
    inspected_on         date,
    inspection_valid_to  date,
    PRIMARY KEY (station_id, name)
);
