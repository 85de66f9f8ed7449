//! The processor: a Kafka consumer group on `readings.raw` that validates
//! readings against the station registry, normalises units, stores them in
//! TimescaleDB (or plain PostgreSQL) exactly once, and publishes what it
//! stored on `readings.valid`.
//!
//! Not built yet: this crate is the place for issue "Processor: validate,
//! normalise and store every reading exactly once". Its contract is the
//! `ReadingBatch` record of `quantrac-proto`.
