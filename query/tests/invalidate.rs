//! An officer invalidates readings, and registry changes are audited,
//! against the real PostgreSQL: the readings keep their values, are
//! flagged "invalidated", drop out of the averages, and the act is in the
//! audit log under the officer's token identity with the reason; an
//! analyst cannot; a station's permit change in the registry file is
//! recorded with what changed.

mod common;

use common::*;
use quantrac_db::access::Role;
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::v1::{GetSeriesRequest, InvalidateReadingsRequest, TimeRange};
use tonic::Code;

fn hour_11() -> TimeRange {
    // 15 Nov, 11:00-12:00 local: twelve COD values of 140 mg/L, valid.
    TimeRange {
        start: Some(to_timestamp(local(2026, 11, 15, 11, 0))),
        end: Some(to_timestamp(local(2026, 11, 15, 12, 0))),
    }
}

fn request(reason: &str) -> InvalidateReadingsRequest {
    InvalidateReadingsRequest {
        station_id: "Q-1".into(),
        parameters: vec!["COD".into()],
        range: Some(hour_11()),
        reason: reason.into(),
    }
}

/// Valid COD values in 11:00-12:00 on 15 Nov, as the hourly aggregate
/// counts them.
async fn valid_in_hour(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT coalesce(sum(valid_count), 0)::bigint FROM readings_hourly \
         WHERE station_id = 'Q-1' AND parameter = 'COD' AND bucket = $1",
        &[&local(2026, 11, 15, 11, 0)],
    )
    .await
    .expect("hourly")
    .get(0)
}

/// The registry changes in the audit log: actor, station, detail.
async fn audited(db: &tokio_postgres::Client) -> Vec<(String, String, serde_json::Value)> {
    db.query(
        "SELECT actor, target, detail FROM audit_log WHERE action = 'registry_change' ORDER BY sequence",
        &[],
    )
    .await
    .expect("audit")
    .iter()
    .map(|r| {
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            serde_json::from_str::<serde_json::Value>(&r.get::<_, String>(2)).expect("json"),
        )
    })
    .collect()
}

#[tokio::test]
async fn an_officer_invalidates_readings_and_the_averages_leave_them_out() {
    let f = Fixture::new().await;
    let (officer, analyst) = (f.token(Role::Officer).await, f.token(Role::Analyst).await);
    assert_eq!(valid_in_hour(&f.db).await, 12);

    // An analyst may not; a reason is required.
    let e = f
        .client()
        .await
        .invalidate_readings(with_token(&analyst, request("looks wrong")))
        .await
        .expect_err("an analyst invalidates");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = f
        .client()
        .await
        .invalidate_readings(with_token(&officer, request("  ")))
        .await
        .expect_err("no reason");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(
        valid_in_hour(&f.db).await,
        12,
        "refused calls changed readings"
    );

    let done = f
        .client()
        .await
        .invalidate_readings(with_token(
            &officer,
            request("analyser fouled; maintenance log 15/11"),
        ))
        .await
        .expect("an officer invalidates")
        .into_inner();
    assert_eq!(done.invalidated, 12);

    // Kept with their values, flagged, out of the average, and the hour's
    // other parameters untouched.
    let flags: Vec<(String, f64, String)> =
        f.db.query(
            "SELECT parameter, value, qc_flag FROM readings WHERE station_id = 'Q-1' \
             AND measured_at >= $1 AND measured_at < $2 ORDER BY parameter, measured_at",
            &[&local(2026, 11, 15, 11, 0), &local(2026, 11, 15, 12, 0)],
        )
        .await
        .expect("readings")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(flags.len(), 36);
    for (p, v, q) in &flags {
        if p == "COD" {
            assert_eq!((*v, q.as_str()), (140.0, "invalidated"));
        } else {
            assert_eq!(q, "valid", "{p}");
        }
    }
    assert_eq!(valid_in_hour(&f.db).await, 0);
    // The series hides them unless asked, and then names the flag.
    let series = f
        .client()
        .await
        .get_series(with_token(
            &analyst,
            GetSeriesRequest {
                station_id: "Q-1".into(),
                parameters: vec!["COD".into()],
                range: Some(hour_11()),
                include_flagged: true,
                ..Default::default()
            },
        ))
        .await
        .expect("series")
        .into_inner();
    assert_eq!(series.points.len(), 12);
    assert!(series.points.iter().all(|p| p.qc_flag == "invalidated"));

    // Who, why and the flag before, per reading, tied to the audit entry.
    let kept: Vec<(String, String, String, i64)> = f
        .db
        .query(
            "SELECT previous_qc_flag, invalidated_by, reason, audit_sequence FROM reading_invalidations",
            &[],
        )
        .await
        .expect("invalidations")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(kept.len(), 12);
    assert!(kept.iter().all(|k| k
        == &(
            "valid".to_string(),
            "officer@test".to_string(),
            "analyser fouled; maintenance log 15/11".to_string(),
            done.audit_sequence
        )));
    let entry =
        f.db.query_one(
            "SELECT actor, action, target, detail::jsonb->>'readings', detail::jsonb->>'reason' \
             FROM audit_log WHERE sequence = $1",
            &[&done.audit_sequence],
        )
        .await
        .expect("audit entry");
    assert_eq!(
        (
            entry.get::<_, String>(0),
            entry.get::<_, String>(1),
            entry.get::<_, String>(2),
            entry.get::<_, String>(3),
            entry.get::<_, String>(4)
        ),
        (
            "officer@test".into(),
            "invalidate".into(),
            "Q-1".into(),
            "12".into(),
            "analyser fouled; maintenance log 15/11".into()
        )
    );

    // Again: nothing more to invalidate; the chain still verifies.
    let again = f
        .client()
        .await
        .invalidate_readings(with_token(&officer, request("again")))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(again.invalidated, 0);
    let v = quantrac_db::audit::verify(&f.db).await.expect("verify");
    assert_eq!(v.broken, None);
}

#[tokio::test]
async fn registry_changes_are_audited_with_what_changed() {
    let mut f = Fixture::new().await;
    // The fixture's first write: both stations added.
    let first = audited(&f.db).await;
    assert_eq!(
        first
            .iter()
            .map(|(_, t, d)| (t.as_str(), d["change"].as_str().unwrap_or("")))
            .collect::<Vec<_>>(),
        vec![("Q-1", "added"), ("Q-2", "added")]
    );

    // The same file again: nothing to record.
    let same = quantrac_proto::registry::Registry::from_toml(REGISTRY).expect("registry");
    quantrac_db::registry::sync_as(&mut f.db, &same, "registry file test.toml")
        .await
        .expect("sync");
    assert_eq!(audited(&f.db).await.len(), 2);

    // Q-1's COD limit tightened, Q-2 gone from the file.
    let q1_only = REGISTRY
        .split("[[stations]]")
        .nth(1)
        .expect("Q-1")
        .replace("max = 150,", "max = 120,");
    let changed = quantrac_proto::registry::Registry::from_toml(&format!("[[stations]]{q1_only}"))
        .expect("registry");
    quantrac_db::registry::sync_as(&mut f.db, &changed, "registry file test.toml")
        .await
        .expect("sync");
    let after = audited(&f.db).await;
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(after[2].0, "registry file test.toml");
    assert_eq!(
        (after[2].1.as_str(), &after[2].2),
        (
            "Q-1",
            &serde_json::json!({"change": "changed", "fields": ["limits"]})
        )
    );
    assert_eq!(
        (after[3].1.as_str(), &after[3].2),
        ("Q-2", &serde_json::json!({"change": "removed_from_file"}))
    );
    let v = quantrac_db::audit::verify(&f.db).await.expect("verify");
    assert_eq!(v.broken, None);
}
