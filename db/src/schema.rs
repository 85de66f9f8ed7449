//! Versioned SQL migrations, applied at start.
//!
//! Each migration is a file under `db/migrations/` (the readings and
//! registry tables and their aggregates, 0001-0002, 0006, 0009, 0011, 0013, 0015-0020; alerting's
//! tables, 0003-0005, 0007, 0012 and 0014; people's access tokens, 0008; the audit log, 0010; the feed to the national system, 0024; officers' invalidations, 0025); one that
//! depends on TimescaleDB has a `.timescale.sql` variant and a `.plain.sql` variant,
//! and the one that fits the server is applied. Statements are idempotent and
//! run one by one (a continuous aggregate cannot be created inside a
//! transaction block), so an interrupted migration is simply run again; its
//! version is recorded only once all its statements succeeded.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::{DbError as StoreError, describe};

/// Whether to use TimescaleDB features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimescaleMode {
    /// Use them when the extension is available.
    Auto,
    /// Require them: refuse to start without the extension.
    On,
    /// Plain PostgreSQL schema even if the extension exists.
    Off,
}

/// What the schema's owner (the processor) decides about storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaOptions {
    pub timescale: TimescaleMode,
    /// TimescaleDB: compress chunks older than this.
    pub compress_after: Duration,
    /// TimescaleDB: drop chunks older than this.
    pub retention: Duration,
}

impl Default for SchemaOptions {
    fn default() -> Self {
        Self {
            timescale: TimescaleMode::Auto,
            compress_after: Duration::from_secs(7 * 86_400),
            retention: Duration::from_secs(5 * 365 * 86_400),
        }
    }
}

struct Migration {
    version: i32,
    name: &'static str,
    plain: &'static str,
    /// `None` when the same SQL serves both servers.
    timescale: Option<&'static str>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        plain: include_str!("../migrations/0001_init.sql"),
        timescale: None,
    },
    Migration {
        version: 2,
        name: "aggregates",
        plain: include_str!("../migrations/0002_aggregates.plain.sql"),
        timescale: Some(include_str!("../migrations/0002_aggregates.timescale.sql")),
    },
    Migration {
        version: 3,
        name: "alerts",
        plain: include_str!("../migrations/0003_alerts.sql"),
        timescale: None,
    },
    Migration {
        version: 4,
        name: "alert_outbox",
        plain: include_str!("../migrations/0004_alert_outbox.sql"),
        timescale: None,
    },
    Migration {
        version: 5,
        name: "alert_watermarks",
        plain: include_str!("../migrations/0005_alert_watermarks.sql"),
        timescale: None,
    },
    Migration {
        version: 6,
        name: "aggregates_lower_bound",
        plain: include_str!("../migrations/0006_aggregates_lower_bound.plain.sql"),
        timescale: Some(include_str!(
            "../migrations/0006_aggregates_lower_bound.timescale.sql"
        )),
    },
    Migration {
        version: 7,
        name: "webhook_cursors",
        plain: include_str!("../migrations/0007_webhook_cursors.sql"),
        timescale: None,
    },
    Migration {
        version: 8,
        name: "access_tokens",
        plain: include_str!("../migrations/0008_access_tokens.sql"),
        timescale: None,
    },
    Migration {
        version: 9,
        name: "reading_conflicts",
        plain: include_str!("../migrations/0009_reading_conflicts.sql"),
        timescale: None,
    },
    Migration {
        version: 10,
        name: "audit_log",
        plain: include_str!("../migrations/0010_audit_log.sql"),
        timescale: None,
    },
    Migration {
        version: 11,
        name: "station_secret_hash",
        plain: include_str!("../migrations/0011_station_secret_hash.sql"),
        timescale: None,
    },
    Migration {
        version: 12,
        name: "alert_assignee",
        plain: include_str!("../migrations/0012_alert_assignee.sql"),
        timescale: None,
    },
    Migration {
        version: 13,
        name: "station_camera_contacts",
        plain: include_str!("../migrations/0013_station_camera_contacts.sql"),
        timescale: None,
    },
    Migration {
        version: 14,
        name: "mail_and_maintenance",
        plain: include_str!("../migrations/0014_mail_and_maintenance.sql"),
        timescale: None,
    },
    Migration {
        version: 15,
        name: "record_kinds",
        plain: include_str!("../migrations/0015_record_kinds.sql"),
        timescale: None,
    },
    Migration {
        version: 16,
        name: "permit_record",
        plain: include_str!("../migrations/0016_permit_record.sql"),
        timescale: None,
    },
    Migration {
        version: 17,
        name: "rollups_real_time",
        plain: include_str!("../migrations/0017_rollups_real_time.plain.sql"),
        timescale: Some(include_str!(
            "../migrations/0017_rollups_real_time.timescale.sql"
        )),
    },
    Migration {
        version: 18,
        name: "latest_readings",
        plain: include_str!("../migrations/0018_latest_readings.sql"),
        timescale: None,
    },
    Migration {
        version: 19,
        name: "station_events",
        plain: include_str!("../migrations/0019_station_events.sql"),
        timescale: None,
    },
    Migration {
        version: 20,
        name: "raw_files",
        plain: include_str!("../migrations/0020_raw_files.sql"),
        timescale: None,
    },
    Migration {
        version: 21,
        name: "alert_commands",
        plain: include_str!("../migrations/0021_alert_commands.sql"),
        timescale: None,
    },
    Migration {
        version: 22,
        name: "alert_pending",
        plain: include_str!("../migrations/0022_alert_pending.sql"),
        timescale: None,
    },
    Migration {
        version: 23,
        name: "raw_frames",
        plain: include_str!("../migrations/0023_raw_frames.sql"),
        timescale: None,
    },
    Migration {
        version: 24,
        name: "forward",
        plain: include_str!("../migrations/0024_forward.sql"),
        timescale: None,
    },
    Migration {
        version: 25,
        name: "invalidations",
        plain: include_str!("../migrations/0025_invalidations.sql"),
        timescale: None,
    },
    Migration {
        version: 26,
        name: "reference_o2_and_instruments",
        plain: include_str!("../migrations/0026_reference_o2_and_instruments.sql"),
        timescale: None,
    },
];

/// What the schema ended up using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaInfo {
    pub timescale: bool,
    /// Migrations applied by this call.
    pub applied: usize,
}

/// Splits a migration file into statements: each ends with `;` at the end
/// of a line. `--` comment lines are dropped.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

async fn timescale_available(client: &Client) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await?;
    Ok(row.get::<_, i64>(0) > 0)
}

/// Applies pending migrations and (on TimescaleDB) sets the policies.
/// Several services may start at once (the processor and alerting both
/// migrate): a session-level advisory lock makes them take turns.
pub async fn migrate(client: &Client, storage: &SchemaOptions) -> Result<SchemaInfo, StoreError> {
    const LOCK: i64 = 0x7175_616e_7472_6163; // "quantrac"
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await?;
    let result = migrate_locked(client, storage, true).await;
    if let Err(e) = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await
    {
        tracing::warn!(error = %e, "releasing the migration lock");
    }
    result
}

/// Applies pending migrations without touching the storage policies (which
/// follow the processor's configuration): for the other services.
pub async fn migrate_tables(client: &Client) -> Result<SchemaInfo, StoreError> {
    const LOCK: i64 = 0x7175_616e_7472_6163;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await?;
    let result = migrate_locked(client, &SchemaOptions::default(), false).await;
    if let Err(e) = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await
    {
        tracing::warn!(error = %e, "releasing the migration lock");
    }
    result
}

async fn migrate_locked(
    client: &Client,
    storage: &SchemaOptions,
    owner: bool,
) -> Result<SchemaInfo, StoreError> {
    let timescale = match storage.timescale {
        TimescaleMode::Off => false,
        TimescaleMode::Auto => timescale_available(client).await?,
        TimescaleMode::On => {
            if !timescale_available(client).await? {
                return Err(StoreError::Schema(
                    "storage.timescale = \"on\" but the server has no timescaledb extension".into(),
                ));
            }
            true
        }
    };
    if timescale {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await?;
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                variant text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied_rows = client
        .query("SELECT version, variant FROM schema_migrations", &[])
        .await?;
    let mut applied = 0;
    for m in MIGRATIONS {
        let previous = applied_rows
            .iter()
            .find(|r| r.get::<_, i32>(0) == m.version);
        let (variant, sql) = match (timescale, m.timescale) {
            (true, Some(sql)) => ("timescale", sql),
            (false, Some(_)) => ("plain", m.plain),
            (_, None) => ("any", m.plain),
        };
        if let Some(row) = previous {
            let was: String = row.get(1);
            // Only the schema's owner (the processor, which knows the
            // configured mode) insists; others accept what is there.
            if owner && was != variant && variant != "any" {
                return Err(StoreError::Schema(format!(
                    "migration {} was applied as `{was}` but this server now needs `{variant}`; \
                     migrating between PostgreSQL and TimescaleDB is a manual step",
                    m.version
                )));
            }
            continue;
        }
        tracing::info!(
            version = m.version,
            name = m.name,
            variant,
            "applying migration"
        );
        for statement in statements(sql) {
            client.batch_execute(&statement).await.map_err(|e| {
                StoreError::Schema(format!(
                    "migration {} ({}): {}: {}",
                    m.version,
                    m.name,
                    describe(&e),
                    statement.trim()
                ))
            })?;
        }
        client
            .execute(
                "INSERT INTO schema_migrations (version, name, variant) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&m.version, &m.name, &variant],
            )
            .await?;
        applied += 1;
    }
    if timescale && owner {
        set_policies(client, storage).await?;
    }
    Ok(SchemaInfo { timescale, applied })
}

fn interval(d: Duration) -> String {
    format!("INTERVAL '{} seconds'", d.as_secs())
}

/// Compression and retention follow the configuration at every start.
async fn set_policies(client: &Client, storage: &SchemaOptions) -> Result<(), StoreError> {
    let sql = format!(
        "SELECT remove_compression_policy('readings', if_exists => TRUE);
         SELECT add_compression_policy('readings', {compress});
         SELECT remove_retention_policy('readings', if_exists => TRUE);
         SELECT add_retention_policy('readings', {retention});",
        compress = interval(storage.compress_after),
        retention = interval(storage.retention),
    );
    for s in statements(&sql) {
        client
            .batch_execute(&s)
            .await
            .map_err(|e| StoreError::Schema(format!("policy: {}: {}", describe(&e), s.trim())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_line_ending_semicolons() {
        let s = statements("-- c;\nCREATE TABLE a (x int);\n\nSELECT f('a;b',\n  1);\nSELECT 2");
        assert_eq!(
            s,
            vec![
                "CREATE TABLE a (x int);\n",
                "SELECT f('a;b',\n  1);\n",
                "SELECT 2\n"
            ]
        );
    }

    #[test]
    fn every_migration_file_splits_into_statements() {
        for m in MIGRATIONS {
            assert!(!statements(m.plain).is_empty(), "{}", m.name);
            if let Some(t) = m.timescale {
                assert!(!statements(t).is_empty(), "{}", m.name);
            }
        }
    }
}
