//! An officer's invalidation of stored readings: each reading of a station
//! (some or all parameters) in a time range gets `qc_flag = 'invalidated'`,
//! keeping its value; its previous flag, the officer, the reason and the
//! audit entry go to `reading_invalidations` (migration 0025), all in one
//! transaction with that audit entry. Invalidated readings are never
//! judged and the aggregates leave them out (they average `valid` and
//! `above_range` only). Readings already invalidated are left as they are.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::DbError;

/// What an officer asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalidation<'a> {
    pub station_id: &'a str,
    /// Empty: every parameter.
    pub parameters: &'a [String],
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: &'a str,
    /// The caller's identity, from their token.
    pub by: &'a str,
}

/// Invalidates; the readings changed and the audit entry's sequence.
pub async fn invalidate(
    client: &mut Client,
    what: &Invalidation<'_>,
) -> Result<(u64, i64), DbError> {
    // One snapshot for the count, the record and the change: a reading
    // stored meanwhile is neither counted nor changed.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let parameters: Vec<&str> = what.parameters.iter().map(String::as_str).collect();
    // Counted first, so that the audit entry (which the rows refer to)
    // says how many.
    let n: i64 = tx
        .query_one(
            "SELECT count(*) FROM readings WHERE station_id = $1 AND measured_at >= $2 \
             AND measured_at < $3 AND (cardinality($4::text[]) = 0 OR parameter = ANY($4)) \
             AND qc_flag <> 'invalidated'",
            &[&what.station_id, &what.start, &what.end, &parameters],
        )
        .await?
        .get(0);
    let sequence = crate::audit::append_in(
        &tx,
        what.by,
        "invalidate",
        what.station_id,
        &serde_json::json!({
            "parameters": what.parameters,
            "start": what.start.to_rfc3339(),
            "end": what.end.to_rfc3339(),
            "reason": what.reason,
            "readings": n,
        }),
    )
    .await?;
    tx.execute(
        "INSERT INTO reading_invalidations (station_id, parameter, measured_at, previous_qc_flag, \
         invalidated_by, reason, audit_sequence) \
         SELECT station_id, parameter, measured_at, qc_flag, $5, $6, $7 FROM readings \
         WHERE station_id = $1 AND measured_at >= $2 AND measured_at < $3 \
         AND (cardinality($4::text[]) = 0 OR parameter = ANY($4)) AND qc_flag <> 'invalidated' \
         ON CONFLICT (station_id, parameter, measured_at) DO UPDATE SET \
         previous_qc_flag = EXCLUDED.previous_qc_flag, invalidated_by = EXCLUDED.invalidated_by, \
         reason = EXCLUDED.reason, invalidated_at = now(), audit_sequence = EXCLUDED.audit_sequence",
        &[
            &what.station_id,
            &what.start,
            &what.end,
            &parameters,
            &what.by,
            &what.reason,
            &sequence,
        ],
    )
    .await?;
    let changed = tx
        .execute(
            "UPDATE readings SET qc_flag = 'invalidated' WHERE station_id = $1 \
             AND measured_at >= $2 AND measured_at < $3 \
             AND (cardinality($4::text[]) = 0 OR parameter = ANY($4)) AND qc_flag <> 'invalidated'",
            &[&what.station_id, &what.start, &what.end, &parameters],
        )
        .await?;
    tx.commit().await?;
    Ok((changed, sequence))
}
