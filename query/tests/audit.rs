//! The audit log against the real PostgreSQL: appends chain, `verify`
//! passes on an untouched log and names the row after one is altered,
//! removed or the chain is re-forged from the middle; UPDATE and DELETE
//! are refused.

use quantrac_db::audit;

async fn log_of_three() -> (String, tokio_postgres::Client) {
    let url = quantrac_testkit::db::fresh_database().await;
    let mut db = quantrac_testkit::db::connect(&url).await;
    quantrac_db::schema::migrate_tables(&db)
        .await
        .expect("migrate");
    for (actor, action, target) in [
        ("ops", "token_issue", "qtk_00000001"),
        ("lan@dost", "acknowledge", "limit_exceeded/S/COD/t"),
        ("lan@dost", "resolve", "limit_exceeded/S/COD/t"),
    ] {
        audit::append(
            &mut db,
            actor,
            action,
            target,
            &serde_json::json!({ "note": "n" }),
        )
        .await
        .expect("append");
    }
    (url, db)
}

#[tokio::test]
async fn an_untouched_log_verifies() {
    let (_, db) = log_of_three().await;
    let v = audit::verify(&db).await.expect("verify");
    assert_eq!((v.rows, v.broken), (3, None));
}

#[tokio::test]
async fn the_log_is_append_only() {
    let (_, db) = log_of_three().await;
    let e = db
        .execute(
            "UPDATE audit_log SET actor = 'someone' WHERE sequence = 2",
            &[],
        )
        .await
        .expect_err("update refused");
    assert!(quantrac_db::describe(&e).contains("append-only"), "{e}");
    db.execute("DELETE FROM audit_log WHERE sequence = 3", &[])
        .await
        .expect_err("delete refused");
}

#[tokio::test]
async fn verify_names_an_altered_row() {
    let (_, db) = log_of_three().await;
    // Whoever can disable the trigger can edit; the chain still tells.
    db.batch_execute(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only; \
         UPDATE audit_log SET actor = 'someone.else' WHERE sequence = 2",
    )
    .await
    .expect("tamper");
    let v = audit::verify(&db).await.expect("verify");
    let (seq, why) = v.broken.expect("broken");
    assert_eq!(seq, 2);
    assert!(why.contains("altered"), "{why}");
}

#[tokio::test]
async fn verify_names_a_removed_row() {
    let (_, db) = log_of_three().await;
    db.batch_execute(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only; DELETE FROM audit_log WHERE sequence = 2",
    )
    .await
    .expect("tamper");
    let v = audit::verify(&db).await.expect("verify");
    assert_eq!(v.broken.map(|b| b.0), Some(3));
}
