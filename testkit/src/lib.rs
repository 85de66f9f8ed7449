//! What quantrac's integration tests and benches share, so each fixture is
//! written once. A dev-dependency only: nothing here ships.
//!
//! Tour:
//! - [`env`]: where the services started by `deploy/services.sh` are, from
//!   the same environment variables (and defaults) the services read;
//! - [`unique`] / [`unique_ident`]: names no other test uses, so tests that
//!   share a broker or a server never see each other's data;
//! - [`db`]: a fresh PostgreSQL database per test, counting and polling;
//! - [`kafka`]: a test's own topics, producing samples as ingest would,
//!   reading a topic back;
//! - [`registry`]: station registry files (wastewater outfalls with
//!   permits);
//! - [`samples`]: readings to send;
//! - [`process`]: a child process that dies with the test;
//! - [`grpc`]: clients that send a bearer token on every call;
//! - [`ftp`]: free ports, and uploads through a real FTP(S) client;
//! - [`oidc`]: a stand-in OpenID Connect provider (keys, signed tokens,
//!   the key set over HTTPS);
//! - [`pg_cluster`]: a PostgreSQL cluster of a test's own, to crash.
//!
//! Helpers panic with a message that says what to start: a test that cannot
//! reach its services has nothing else useful to do.

pub mod db;
pub mod env;
pub mod ftp;
pub mod grpc;
pub mod kafka;
pub mod oidc;
pub mod pg_cluster;
pub mod process;
pub mod registry;
pub mod samples;

/// `prefix-<10 random hex digits>`: a topic, group, node or station name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", suffix())
}

/// `prefix_<10 random hex digits>`: a name that is also a bare SQL
/// identifier (a database name).
pub fn unique_ident(prefix: &str) -> String {
    format!("{prefix}_{}", suffix())
}

fn suffix() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 10..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_and_identifiers_are_sql_safe() {
        let a = unique_ident("qt");
        let b = unique_ident("qt");
        assert_ne!(a, b);
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{a}"
        );
        assert!(unique("t").starts_with("t-"));
    }
}
