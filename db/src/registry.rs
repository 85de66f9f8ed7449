//! The station registry written to its tables (`stations`,
//! `station_parameters`, `permit_limits`), so that queries and people see
//! what the services judge by. Every change of a station's definition
//! (permits included) is recorded in the audit log in the same
//! transaction: added, changed (which fields) or gone from the file.

use std::collections::HashMap;

use quantrac_proto::domain::StationKind;
use quantrac_proto::registry::{Registry, Station};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::DbError;

/// A station's definition as recorded: the registry entry with its
/// secrets (hashes) replaced by a short digest of them, so a changed
/// secret shows as a change without the hash leaving the file.
pub fn definition(s: &Station) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        for key in ["secret_hash", "mqtt_hash", "hj212_password"] {
            if let Some(x) = o.get_mut(key)
                && let Some(text) = x.as_str()
            {
                let d = Sha256::digest(text.as_bytes());
                *x = format!("sha256:{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3]).into();
            }
        }
    }
    v
}

/// The top-level fields in which two definitions differ.
fn changed_fields(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<String> = o
        .keys()
        .chain(n.keys())
        .filter(|k| o.get(*k) != n.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// [`sync_as`] recorded under the actor "registry".
pub async fn sync(client: &mut Client, registry: &Registry) -> Result<(), DbError> {
    sync_as(client, registry, "registry").await
}

/// Writes the registry in one transaction: stations are upserted, their
/// parameters and limits replaced. Stations missing from the file are kept
/// (their readings refer to them) but logged. Each station whose
/// definition differs from the one last written is recorded in the audit
/// log under `actor` (which file, which service wrote it).
pub async fn sync_as(client: &mut Client, registry: &Registry, actor: &str) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    let before: HashMap<String, Option<serde_json::Value>> = tx
        .query("SELECT id, definition FROM stations", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for s in registry.stations() {
        let def = definition(s);
        let change = match before.get(&s.id) {
            Some(Some(old)) if *old == def => None,
            Some(Some(old)) => Some(serde_json::json!({
                "change": "changed",
                "fields": changed_fields(old, &def),
            })),
            _ => Some(serde_json::json!({"change": "added"})),
        };
        if let Some(detail) = change {
            crate::audit::append_in(&tx, actor, "registry_change", &s.id, &detail).await?;
        }

        let kind = match s.kind {
            StationKind::Wastewater => "wastewater",
            StationKind::Stack => "stack",
        };
        tx.execute(
            // The plaintext hj212_password is never written: only the
            // secret's hash.
            "INSERT INTO stations (id, name, facility, industrial_zone, province, latitude, longitude, kind, \
             secret_hash, mqtt_username, camera_url, contacts, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now()) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, facility = EXCLUDED.facility, \
             industrial_zone = EXCLUDED.industrial_zone, province = EXCLUDED.province, \
             latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, kind = EXCLUDED.kind, \
             secret_hash = EXCLUDED.secret_hash, hj212_password = NULL, mqtt_username = EXCLUDED.mqtt_username, \
             camera_url = EXCLUDED.camera_url, contacts = EXCLUDED.contacts, updated_at = now()",
            &[
                &s.id,
                &s.name,
                &s.facility,
                &s.industrial_zone,
                &s.province,
                &s.latitude,
                &s.longitude,
                &kind,
                &s.secret_hash,
                &s.mqtt_username,
                &s.camera_url,
                &s.contacts,
            ],
        )
        .await?;
        tx.execute(
            "UPDATE stations SET definition = $2 WHERE id = $1",
            &[&s.id, &def],
        )
        .await?;
        tx.execute(
            "DELETE FROM station_parameters WHERE station_id = $1",
            &[&s.id],
        )
        .await?;
        for p in &s.parameters {
            let interval = i32::try_from(p.expected_interval.as_secs()).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO station_parameters (station_id, code, aliases, unit, range_min, range_max, expected_interval_s) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&s.id, &p.code, &p.aliases, &p.unit, &p.range_min, &p.range_max, &interval],
            )
            .await?;
        }
        tx.execute("DELETE FROM permit_limits WHERE station_id = $1", &[&s.id])
            .await?;
        for l in &s.limits {
            let coefficients = serde_json::to_value(&l.coefficients).unwrap_or_default();
            tx.execute(
                "INSERT INTO permit_limits (station_id, parameter, effective_from, limit_min, limit_max, effective_max, \
                 regulation, column_name, coefficients, effective_to, permit_number, authority, averaging, reference_o2) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[
                    &s.id,
                    &l.parameter,
                    &l.effective_from,
                    &l.min,
                    &l.max,
                    &l.cmax(),
                    &l.regulation,
                    &l.column.clone().unwrap_or_default(),
                    &coefficients,
                    &l.effective_to,
                    &l.permit_number,
                    &l.authority,
                    &l.averaging.as_str(),
                    &l.reference_o2,
                ],
            )
            .await?;
        }
    }
    for s in registry.stations() {
        tx.execute(
            "DELETE FROM station_instruments WHERE station_id = $1",
            &[&s.id],
        )
        .await?;
        for i in &s.instruments {
            tx.execute(
                "INSERT INTO station_instruments (station_id, name, parameters, calibrated_on, \
                 calibration_valid_to, inspected_on, inspection_valid_to) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &s.id,
                    &i.name,
                    &i.parameters,
                    &i.calibrated_on,
                    &i.calibration_valid_to,
                    &i.inspected_on,
                    &i.inspection_valid_to,
                ],
            )
            .await?;
        }
    }
    let known: Vec<&str> = registry.stations().map(|s| s.id.as_str()).collect();
    let stale = tx
        .query(
            "SELECT id, definition IS NOT NULL FROM stations WHERE NOT (id = ANY($1))",
            &[&known],
        )
        .await?;
    for row in stale {
        let (id, recorded): (String, bool) = (row.get(0), row.get(1));
        tracing::warn!(
            station = %id,
            "station in the database but not in the registry file"
        );
        if recorded {
            crate::audit::append_in(
                &tx,
                actor,
                "registry_change",
                &id,
                &serde_json::json!({"change": "removed_from_file"}),
            )
            .await?;
            tx.execute(
                "UPDATE stations SET definition = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
