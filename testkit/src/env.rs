//! Service addresses. The defaults are what `deploy/services.sh` starts;
//! `eval "$(deploy/services.sh env)"` exports the same values.

/// The variable's value, or `default` when unset.
pub fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

pub fn kafka_brokers() -> String {
    var("QUANTRAC_KAFKA_BROKERS", "127.0.0.1:19092")
}

/// A PostgreSQL URL whose user may create databases.
pub fn database_url() -> String {
    var(
        "QUANTRAC_DATABASE_URL",
        "postgres://quantrac:quantrac@127.0.0.1:15432/quantrac",
    )
}

pub fn mqtt_url() -> String {
    var("QUANTRAC_MQTT_URL", "mqtt://127.0.0.1:11883")
}
