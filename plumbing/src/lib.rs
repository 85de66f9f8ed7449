//! Service plumbing: what ingest, the processor, alerting and single-node
//! mode share around their own logic. Nothing here knows about readings or
//! alerts.
//!
//! A tour:
//! - [`process`]: logging set-up, the signal rule (first SIGINT/SIGTERM
//!   drains, a second exits at once) and waiting on a service's tasks (the
//!   first to fail stops the others).
//! - [`config`]: defaults, then a TOML file, then
//!   `QUANTRAC_<SERVICE>__<SECTION>__<FIELD>` variables; errors name the
//!   field.
//! - [`http`]: the one `/health` + `/metrics` server; each service answers
//!   health from its own state through [`http::Health`].
//! - [`kafka`]: every Kafka client is built here. The operator's extra
//!   librdkafka properties are applied first and the settings delivery
//!   depends on (idempotence, `acks=all`, manual offset store) last, so no
//!   configuration line can switch them off.
//! - [`oidc`]: people's OpenID Connect tokens (JWTs), checked against the
//!   issuer's published keys.
//! - [`secret`]: station secrets, generated and kept as Argon2id hashes.
//! - [`syslog`]: security events as RFC 5424 datagrams, when
//!   `QUANTRAC_SYSLOG` names a collector.
//! - [`tls`]: rustls server and client configurations from PEM files, for
//!   every listener and client that speaks TLS.
//! - [`bus`]: the bounded in-process bus that stands in for Kafka in
//!   single-node mode; a batch is answered only once it is durable.

pub mod bus;
pub mod config;
pub mod http;
pub mod kafka;
pub mod oidc;
pub mod process;
pub mod secret;
pub mod syslog;
pub mod tls;
