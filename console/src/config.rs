//! Console configuration: defaults, a TOML file, then environment variables
//! `QUANTRAC_CONSOLE__<FIELD>`; validated at start. `deploy/console.toml`
//! documents every field.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use quantrac_plumbing::config::ConfigError;
use quantrac_plumbing::config::invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// The page.
    pub listen: SocketAddr,
    /// `/metrics` and `/health`.
    pub http_listen: SocketAddr,
    /// The alerting service's gRPC address (live alerts, acting on them).
    pub alerting_url: String,
    /// The query service's gRPC address (lists, history, stations, series).
    pub query_url: String,
    /// PEM CA trusted for `https://` service URLs (a private CA); unset:
    /// the public web roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Labels: "vi" (default) or "en"; each person can switch.
    pub language: String,
    /// Map tiles, e.g. `https://tile.openstreetmap.org/{z}/{x}/{y}.png` or
    /// a tile server of the province's own. Empty: markers on a plain
    /// background, nothing fetched from anywhere.
    pub tile_url: String,
    /// Send the session cookie only over HTTPS (set it when the page is
    /// served behind TLS).
    pub secure_cookies: bool,
    /// How long a login lasts in the browser (the token's own expiry still
    /// applies).
    #[serde(with = "humantime_serde")]
    pub session: Duration,
    /// A gRPC call from the page waits at most this long.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Live-alert streams (browser tabs) open at once.
    pub max_live_streams: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9468)),
            alerting_url: "http://127.0.0.1:50051".into(),
            query_url: "http://127.0.0.1:50052".into(),
            ca_file: None,
            language: "vi".into(),
            tile_url: String::new(),
            secure_cookies: false,
            session: Duration::from_secs(12 * 3600),
            call_timeout: Duration::from_secs(20),
            max_live_streams: 256,
        }
    }
}

impl ConsoleConfig {
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        quantrac_plumbing::config::load(path, "QUANTRAC_CONSOLE__")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, url) in [
            ("alerting_url", &self.alerting_url),
            ("query_url", &self.query_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    field,
                    format!("{url:?} is not an http:// or https:// address"),
                ));
            }
        }
        if self.language != "vi" && self.language != "en" {
            return Err(invalid("language", "\"vi\" or \"en\""));
        }
        let t = &self.tile_url;
        if !t.is_empty() && !["{z}", "{x}", "{y}"].iter().all(|p| t.contains(p)) {
            return Err(invalid(
                "tile_url",
                "a tile URL template with {z}, {x} and {y}",
            ));
        }
        if self.max_live_streams == 0 {
            return Err(invalid("max_live_streams", "at least 1"));
        }
        if self.session < Duration::from_secs(60) {
            return Err(invalid("session", "at least 1m"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        assert!(ConsoleConfig::default().validate().is_ok());
        let c = ConsoleConfig {
            tile_url: "https://tiles.example/{z}.png".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("tile_url"));
        let c = ConsoleConfig {
            language: "fr".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("language"));
        let c: ConsoleConfig =
            quantrac_plumbing::config::from_toml("session = \"8h\"\n").expect("parse");
        assert_eq!(c.session, Duration::from_secs(8 * 3600));
    }
}
