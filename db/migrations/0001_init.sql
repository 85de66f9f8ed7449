-- Tables that run on plain PostgreSQL and on TimescaleDB alike.
-- Every statement is idempotent: a migration interrupted half-way is simply
-- run again.

CREATE TABLE IF NOT EXISTS stations (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    facility        text NOT NULL,
    industrial_zone text NOT NULL,
    province        text NOT NULL,
    latitude        double precision,
    longitude       double precision,
    kind            text NOT NULL CHECK (kind IN ('wastewater', 'stack')),
    hj212_password  text,
    mqtt_username   text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS station_parameters (
    station_id          text NOT NULL REFERENCES stations (id) ON DELETE CASCADE,
    code                text NOT NULL,
    aliases             text[] NOT NULL DEFAULT '{}',
    unit                text NOT NULL,
    range_min           double precision NOT NULL,
    range_max           double precision NOT NULL,
    expected_interval_s integer NOT NULL,
    PRIMARY KEY (station_id, code)
);

CREATE TABLE IF NOT EXISTS permit_limits (
    station_id     text NOT NULL REFERENCES stations (id) ON DELETE CASCADE,
    parameter      text NOT NULL,
    effective_from date NOT NULL,
    limit_min      double precision,
    -- C as written in the regulation; effective_max = C x coefficients (Cmax;
    -- "cmax" itself is a PostgreSQL system column name).
    limit_max      double precision,
    effective_max  double precision,
    regulation     text NOT NULL,
    column_name    text NOT NULL,
    coefficients   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (station_id, parameter, effective_from)
);

-- One row per (station, parameter, measurement time): the natural key makes
-- redelivery harmless (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE IF NOT EXISTS readings (
    station_id  text NOT NULL,
    parameter   text NOT NULL,
    measured_at timestamptz NOT NULL,
    value       double precision NOT NULL,
    unit        text NOT NULL,
    -- 1 measuring, 2 calibrating, 3 error (quantrac.v1.DeviceStatus)
    status      smallint NOT NULL,
    device_flag text NOT NULL,
    qc_flag     text NOT NULL,
    -- quantrac.v1.SourceProtocol
    source      smallint NOT NULL,
    received_at timestamptz,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    ingest_id   uuid,
    PRIMARY KEY (station_id, parameter, measured_at)
);

CREATE TABLE IF NOT EXISTS rejected_readings (
    -- The reading's ingest id, or topic/partition/offset for an undecodable
    -- record: replaying a topic does not store a rejection twice.
    key              text PRIMARY KEY,
    rejected_at      timestamptz NOT NULL DEFAULT now(),
    reason           text NOT NULL,
    detail           text NOT NULL,
    station_id       text,
    parameter        text,
    measured_at      timestamptz,
    raw              bytea NOT NULL,
    source_topic     text,
    source_partition integer,
    source_offset    bigint
);

CREATE INDEX IF NOT EXISTS rejected_readings_time ON rejected_readings (rejected_at);
CREATE INDEX IF NOT EXISTS readings_time ON readings (measured_at);
