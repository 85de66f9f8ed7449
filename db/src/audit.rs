//! The tamper-evident audit log (`audit_log`): who did what, when, each
//! row chained to the one before by SHA-256. [`append`] takes a
//! transaction-scoped lock so the chain has one order; [`verify`] walks it
//! and names the first row that does not match.

use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::DbError;

/// `hash(n) = SHA-256(hash(n-1) || the row's fields, length-prefixed)`;
/// the first row's `prev_hash` is 32 zero bytes.
fn chain(
    prev: &[u8],
    sequence: i64,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(sequence.to_be_bytes());
    h.update(at.timestamp_micros().to_be_bytes());
    for field in [actor, action, target, detail] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_vec()
}

const LOCK: i64 = 0x6175_6469_745f_6c6f; // "audit_lo"

/// Appends one entry; returns its sequence number. `detail` is a JSON
/// value (secrets never go in it).
pub async fn append(
    client: &mut Client,
    actor: &str,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
) -> Result<i64, DbError> {
    let tx = client.transaction().await?;
    let sequence = append_in(&tx, actor, action, target, detail).await?;
    tx.commit().await?;
    Ok(sequence)
}

/// As [`append`], inside the caller's transaction: the entry is kept if
/// and only if what it records is (an invalidation, a registry change).
/// The chain's lock is held until that transaction ends.
pub async fn append_in(
    tx: &tokio_postgres::Transaction<'_>,
    actor: &str,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
) -> Result<i64, DbError> {
    let detail = detail.to_string();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    let last = tx
        .query_opt(
            "SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1",
            &[],
        )
        .await?;
    let (sequence, prev) = match last {
        Some(r) => (r.get::<_, i64>(0) + 1, r.get::<_, Vec<u8>>(1)),
        None => (1, vec![0u8; 32]),
    };
    // PostgreSQL keeps microseconds: hash what is stored.
    let at = Utc::now().trunc_subsecs(6);
    let hash = chain(&prev, sequence, at, actor, action, target, &detail);
    tx.execute(
        "INSERT INTO audit_log (sequence, at, actor, action, target, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &sequence, &at, &actor, &action, &target, &detail, &prev, &hash,
        ],
    )
    .await?;
    Ok(sequence)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Rows checked.
    pub rows: u64,
    /// The first row that breaks the chain, and how.
    pub broken: Option<(i64, String)>,
}

/// Walks the chain from the first row.
pub async fn verify(client: &Client) -> Result<Verified, DbError> {
    let rows = client
        .query(
            "SELECT sequence, at, actor, action, target, detail, prev_hash, hash FROM audit_log ORDER BY sequence",
            &[],
        )
        .await?;
    let mut prev = vec![0u8; 32];
    let mut n = 0;
    for (expected_sequence, r) in (1i64..).zip(rows.iter()) {
        n += 1;
        let sequence: i64 = r.get(0);
        let stored_prev: Vec<u8> = r.get(6);
        let stored: Vec<u8> = r.get(7);
        let broken = |why: String| Verified {
            rows: n,
            broken: Some((sequence, why)),
        };
        if sequence != expected_sequence {
            return Ok(broken(format!(
                "expected row {expected_sequence}: a row is missing"
            )));
        }
        if stored_prev != prev {
            return Ok(broken(
                "its prev_hash is not the previous row's hash".into(),
            ));
        }
        let again = chain(
            &prev,
            sequence,
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
        );
        if again != stored {
            return Ok(broken(
                "its content does not match its hash: altered".into(),
            ));
        }
        prev = stored;
    }
    Ok(Verified {
        rows: n,
        broken: None,
    })
}

/// One entry, for listings.
#[derive(Debug, Clone)]
pub struct Entry {
    pub sequence: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// The newest `limit` entries, newest first.
pub async fn recent(client: &Client, limit: i64) -> Result<Vec<Entry>, DbError> {
    let rows = client
        .query(
            "SELECT sequence, at, actor, action, target, detail FROM audit_log ORDER BY sequence DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            sequence: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            target: r.get(4),
            detail: r.get(5),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_in_the_hash() {
        let at = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("t");
        let base = chain(&[0; 32], 1, at, "a", "b", "c", "{}");
        assert_ne!(base, chain(&[1; 32], 1, at, "a", "b", "c", "{}"));
        assert_ne!(base, chain(&[0; 32], 2, at, "a", "b", "c", "{}"));
        assert_ne!(
            base,
            chain(
                &[0; 32],
                1,
                at + chrono::Duration::microseconds(1),
                "a",
                "b",
                "c",
                "{}"
            )
        );
        assert_ne!(
            base,
            chain(&[0; 32], 1, at, "ab", "", "c", "{}"),
            "fields are length-prefixed"
        );
        assert_ne!(base, chain(&[0; 32], 1, at, "a", "b", "c", "{\"x\":1}"));
    }
}

/// Appends through a connection of its own (an append is a transaction,
/// and a service's shared connections carry other calls), opened again
/// once lost. Refusals are many when someone probes: at most
/// `MAX_REFUSALS_PER_SECOND` are recorded each second, the rest counted
/// (`audit_refusals_unrecorded_total`), so a flood of bad tokens cannot
/// turn into a flood of writes.
#[derive(Debug)]
pub struct Auditor {
    url: String,
    options: crate::ConnectOptions,
    conn: tokio::sync::Mutex<Option<Client>>,
    window: std::sync::Mutex<(i64, u32)>,
}

pub const MAX_REFUSALS_PER_SECOND: u32 = 50;

impl Auditor {
    pub fn new(url: &str, options: crate::ConnectOptions) -> Self {
        Auditor {
            url: url.to_string(),
            options,
            conn: tokio::sync::Mutex::new(None),
            window: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Appends an entry; a failure is logged and counted, and returned.
    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<i64, DbError> {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(crate::connect(&self.url, &self.options).await?);
        }
        let Some(client) = slot.as_mut() else {
            return Err(DbError::Schema("no audit connection".into()));
        };
        let r = append(client, actor, action, target, &detail).await;
        if let Err(e) = &r {
            metrics::counter!("audit_append_failures_total").increment(1);
            tracing::error!(error = %e, action, target, "audit entry not recorded");
        }
        r
    }

    /// Records a refused call unless this second's share is used up.
    pub async fn refused(
        &self,
        actor: &str,
        method: &str,
        reason: &str,
        peer: Option<std::net::SocketAddr>,
    ) {
        let now = Utc::now().timestamp();
        let admitted = {
            let mut w = self
                .window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if w.0 != now {
                *w = (now, 0);
            }
            w.1 += 1;
            w.1 <= MAX_REFUSALS_PER_SECOND
        };
        if !admitted {
            metrics::counter!("audit_refusals_unrecorded_total").increment(1);
            return;
        }
        let _ = self
            .record(
                actor,
                "call_refused",
                method,
                serde_json::json!({ "reason": reason, "peer": peer.map(|p| p.to_string()) }),
            )
            .await;
    }
}
