//! The station registry written to its tables (`stations`,
//! `station_parameters`, `permit_limits`), so that queries and people see
//! what the services judge by.

use quantrac_proto::domain::StationKind;
use quantrac_proto::registry::Registry;
use tokio_postgres::Client;

use crate::DbError;

/// Writes the registry in one transaction: stations are upserted, their
/// parameters and limits replaced. Stations missing from the file are kept
/// (their readings refer to them) but logged.
pub async fn sync(client: &mut Client, registry: &Registry) -> Result<(), DbError> {
    let tx = client.transaction().await?;
    for s in registry.stations() {
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
                 regulation, column_name, coefficients, effective_to, permit_number, authority, averaging) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
                ],
            )
            .await?;
        }
    }
    let known: Vec<&str> = registry.stations().map(|s| s.id.as_str()).collect();
    let stale = tx
        .query(
            "SELECT id FROM stations WHERE NOT (id = ANY($1))",
            &[&known],
        )
        .await?;
    for row in stale {
        tracing::warn!(
            station = row.get::<_, String>(0),
            "station in the database but not in the registry file"
        );
    }
    tx.commit().await?;
    Ok(())
}
