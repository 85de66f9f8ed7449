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

/// Mosquitto's TLS listener (server certificate for `localhost`).
pub fn mqtts_url() -> String {
    var("QUANTRAC_MQTTS_URL", "mqtts://localhost:18883")
}

/// Kafka's SSL listener.
pub fn kafka_ssl_brokers() -> String {
    var("QUANTRAC_KAFKA_SSL_BROKERS", "localhost:19094")
}

/// The same PostgreSQL over TLS, by the name on its certificate.
pub fn database_tls_url() -> String {
    var(
        "QUANTRAC_DATABASE_TLS_URL",
        "postgres://quantrac:quantrac@localhost:15432/quantrac?sslmode=require",
    )
}

fn tls_file(name: &str, file: &str) -> std::path::PathBuf {
    std::env::var_os(name).map(Into::into).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.local/services/tls")
            .join(file)
    })
}

/// The test CA `deploy/services.sh` made.
pub fn tls_ca() -> std::path::PathBuf {
    tls_file("QUANTRAC_TLS_CA", "ca.pem")
}

/// The server certificate (for `localhost`, `127.0.0.1`) and its key.
pub fn tls_server() -> (std::path::PathBuf, std::path::PathBuf) {
    (
        tls_file("QUANTRAC_TLS_CERT", "server.pem"),
        tls_file("QUANTRAC_TLS_KEY", "server.key"),
    )
}

/// A station's client certificate and key, and the station id its CN names.
pub fn tls_station() -> (String, std::path::PathBuf, std::path::PathBuf) {
    (
        var("QUANTRAC_TLS_STATION_ID", "TLS-TEST-01"),
        tls_file("QUANTRAC_TLS_STATION_CERT", "station.pem"),
        tls_file("QUANTRAC_TLS_STATION_KEY", "station.key"),
    )
}

/// The upstream FTP(S) server `deploy/services.sh` runs (pure-ftpd, the
/// national system's stand-in): where to log in, and where its files and
/// transfer log are on this machine.
#[derive(Debug, Clone)]
pub struct UpstreamFtp {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The account's home directory on disk.
    pub home: std::path::PathBuf,
    /// One line per transfer, `"PUT <path>"` for an upload.
    pub transfers: std::path::PathBuf,
}

pub fn upstream_ftp() -> UpstreamFtp {
    let state = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/services/ftp");
    let url = std::env::var("QUANTRAC_UPSTREAM_FTP_URL").unwrap_or_else(|_| {
        let password = std::fs::read_to_string(state.join("password")).unwrap_or_default();
        format!("ftp://ministry:{}@127.0.0.1:12121", password.trim())
    });
    let rest = url
        .strip_prefix("ftp://")
        .expect("QUANTRAC_UPSTREAM_FTP_URL is ftp://");
    let (credentials, address) = rest
        .rsplit_once('@')
        .expect("ftp://user:password@host:port");
    let (user, password) = credentials.split_once(':').expect("user:password");
    let (host, port) = address
        .trim_end_matches('/')
        .rsplit_once(':')
        .expect("host:port");
    let path = |name: &str, file: &str| {
        std::env::var_os(name)
            .map(Into::into)
            .unwrap_or_else(|| state.join(file))
    };
    UpstreamFtp {
        host: host.into(),
        port: port.parse().expect("port"),
        user: user.into(),
        password: password.into(),
        home: path("QUANTRAC_UPSTREAM_FTP_HOME", "home"),
        transfers: path("QUANTRAC_UPSTREAM_FTP_TRANSFERS", "transfers.log"),
    }
}
