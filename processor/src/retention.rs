//! Storage that stays bounded: what TimescaleDB's retention policy does for
//! `readings`, done by the processor where no policy runs (plain
//! PostgreSQL), and the same horizon for `rejected_readings`,
//! `station_events` and `raw_files`, which no policy covers anywhere.
//!
//! Every `storage.cleanup_every`, in slices of 10,000 rows so a long
//! backlog never holds one big lock. Several processors may run it at once:
//! deleting what another already deleted is harmless.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ProcessorError;
use crate::store::{Expiring, Store};

/// Runs until `shutdown`. `readings_too`: plain PostgreSQL (TimescaleDB's
/// own policy drops whole chunks of `readings`).
pub async fn run(
    mut store: Store,
    retention: Duration,
    every: Duration,
    readings_too: bool,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        for table in [
            Expiring::Readings,
            Expiring::Rejected,
            Expiring::StationEvents,
            Expiring::RawFiles,
            Expiring::RawFrames,
        ] {
            if table == Expiring::Readings && !readings_too {
                continue;
            }
            report(
                table.columns().0,
                store.delete_expired(table, retention).await,
            );
        }
    }
}

/// Counts and logs one table's round. A failed round is tried again at the
/// next tick: retention is never worth stopping the processor for.
fn report(table: &'static str, deleted: Result<u64, crate::store::StoreError>) {
    match deleted {
        Ok(n) => {
            metrics::counter!("processor_expired_deleted_total", "table" => table).increment(n);
            if n > 0 {
                tracing::info!(table, rows = n, "rows past retention deleted");
            }
        }
        Err(e) => tracing::warn!(table, error = %e, "deleting rows past retention failed"),
    }
}
