//! E-mail against a real SMTP server (aiosmtpd from Debian, started by
//! `deploy/services.sh start smtp`, keeping what it accepts in a Maildir):
//! who is told, the facility's contacts, escalation, the digest, a
//! maintenance window, and an outage of the mail server that loses nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use quantrac_alerting::config::Subscription;
use tokio_util::sync::CancellationToken;

mod common;
use common::{alerting_config, env, fresh_database, stored_cod, unique};

/// Messages in the test server's Maildir for `address`: their
/// X-Quantrac-Kind headers, counted.
fn received(address: &str) -> BTreeMap<String, usize> {
    let dir =
        PathBuf::from(env("QUANTRAC_SMTP_MAILDIR", ".local/services/smtp/maildir")).join("new");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let header = |name: &str| {
            text.lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if header("X-RcptTo:").as_deref() == Some(address) {
            *out.entry(header("X-Quantrac-Kind:").unwrap_or_default())
                .or_default() += 1;
        }
    }
    out
}

async fn wait_for(address: &str, kind: &str, within: Duration) -> usize {
    let until = tokio::time::Instant::now() + within;
    loop {
        let n = received(address).get(kind).copied().unwrap_or(0);
        if n > 0 || tokio::time::Instant::now() > until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Setup {
    station: String,
    hh: String,
    ap: String,
    facility: String,
    chief: String,
    registry: PathBuf,
}

fn setup() -> Setup {
    let u = unique("m").to_lowercase();
    let station = unique("MAIL");
    let facility = format!("ops-{u}@plant.example.vn");
    let registry = quantrac_testkit::registry::Outfalls::one(&station)
        .measuring(&["COD"])
        .expected_interval("1h")
        .with_lines(&format!("contacts = [\"{facility}\"]"))
        .write()
        .expect("registry");
    Setup {
        station,
        hh: format!("hh-{u}@dost.example.vn"),
        ap: format!("ap-{u}@dost.example.vn"),
        facility,
        chief: format!("chief-{u}@dost.example.vn"),
        registry,
    }
}

fn config(db_url: &str, s: &Setup, smtp_url: &str) -> quantrac_alerting::AlertingConfig {
    let mut c = alerting_config(db_url, &s.registry);
    c.email.smtp_url = smtp_url.to_owned();
    c.email.from = "Quantrac <quantrac@test.example.vn>".into();
    c.email.subscriptions = vec![
        Subscription {
            address: s.hh.clone(),
            zones: vec!["KCN Hòa Hiệp".into()],
            stations: vec![],
            min_severity: "warning".into(),
        },
        Subscription {
            address: s.ap.clone(),
            zones: vec!["KCN An Phú".into()],
            stations: vec![],
            min_severity: "info".into(),
        },
    ];
    c.email.escalation_after = Some(Duration::from_secs(1));
    c.email.escalation_to = vec![s.chief.clone()];
    c.email.timeout = Duration::from_secs(5);
    c
}

/// Alerting on the bus with `c`; the bus sender and the stop token.
async fn start(
    c: quantrac_alerting::AlertingConfig,
) -> (
    quantrac_alerting::Alerting,
    tokio::sync::mpsc::Sender<quantrac_proto::v1::StoredReadingBatch>,
    CancellationToken,
) {
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let alerting =
        quantrac_alerting::Alerting::start(c, quantrac_alerting::Edge::Bus(rx), None, stop.clone())
            .await
            .expect("alerting");
    (alerting, tx, stop)
}

fn smtp_url() -> String {
    env("QUANTRAC_SMTP_URL", "smtp://127.0.0.1:12525")
}

#[tokio::test]
async fn officers_facility_and_escalation_are_told_and_other_zones_are_not() {
    let db_url = fresh_database().await;
    let s = setup();
    let mut c = config(&db_url, &s, &smtp_url());
    c.email.digest_at = Some("00:00".into());
    let (alerting, tx, stop) = start(c).await;
    tx.send(stored_cod(&s.station, 300.0, 10))
        .await
        .expect("bus");

    let within = Duration::from_secs(20);
    assert_eq!(
        wait_for(&s.hh, "subscription", within).await,
        1,
        "the zone's officer"
    );
    assert_eq!(
        wait_for(&s.facility, "facility", within).await,
        1,
        "the facility"
    );
    assert_eq!(
        wait_for(&s.chief, "escalation", within).await,
        1,
        "escalation"
    );
    // The digest: each subscription once today, whatever is open.
    assert_eq!(wait_for(&s.hh, "digest", within).await, 1);
    assert_eq!(wait_for(&s.ap, "digest", within).await, 1);
    // Another zone's officer hears nothing of it.
    assert_eq!(received(&s.ap).get("subscription"), None);

    // Every row sent once, none pending or failed. A row is marked sent
    // only after the SMTP server accepted it, so the mail can be in the
    // Maildir a moment before its row says so: wait for the marks.
    let db = quantrac_testkit::db::connect(&db_url).await;
    let deadline = tokio::time::Instant::now() + within;
    let unsent = loop {
        let unsent: i64 = db
            .query_one(
                "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL",
                &[],
            )
            .await
            .expect("outbox")
            .get(0);
        if unsent == 0 || tokio::time::Instant::now() > deadline {
            break unsent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(unsent, 0);
    // A few ticks later, still exactly one of each (no repeat).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received(&s.hh).get("subscription"), Some(&1));
    assert_eq!(received(&s.chief).get("escalation"), Some(&1));
    assert_eq!(received(&s.hh).get("digest"), Some(&1));
    stop.cancel();
    alerting.wait().await.expect("clean stop");
}

#[tokio::test]
async fn a_dead_mail_server_loses_nothing_and_a_restart_delivers() {
    let db_url = fresh_database().await;
    let s = setup();
    // A port where nothing listens.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        format!("smtp://127.0.0.1:{port}")
    };
    let (alerting, tx, stop) = start(config(&db_url, &s, &dead)).await;
    tx.send(stored_cod(&s.station, 300.0, 10))
        .await
        .expect("bus");
    let db = quantrac_testkit::db::connect(&db_url).await;
    // Planned, tried, refused, kept.
    let mut tried = 0;
    for _ in 0..200 {
        tried = db
            .query_one(
                "SELECT count(*) FROM mail_outbox WHERE recipient = $1 AND attempts > 0 AND sent_at IS NULL AND last_error IS NOT NULL",
                &[&s.hh],
            )
            .await
            .expect("outbox")
            .get::<_, i64>(0);
        if tried > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tried, 1, "the message waits in the outbox with its error");
    assert_eq!(received(&s.hh).get("subscription"), None);
    // A crash (here: a stop) before delivery; the next start, with the mail
    // server back, sends it (now, not at the old backoff).
    stop.cancel();
    alerting.wait().await.expect("stop");
    db.execute("UPDATE mail_outbox SET next_attempt_at = now()", &[])
        .await
        .expect("due now");
    let (alerting, _tx, stop) = start(config(&db_url, &s, &smtp_url())).await;
    assert_eq!(
        wait_for(&s.hh, "subscription", Duration::from_secs(20)).await,
        1
    );
    assert_eq!(
        wait_for(&s.facility, "facility", Duration::from_secs(20)).await,
        1
    );
    stop.cancel();
    alerting.wait().await.expect("clean stop");
}

#[tokio::test]
async fn alerts_during_maintenance_are_kept_but_not_mailed() {
    let db_url = fresh_database().await;
    let s = setup();
    let mut c = config(&db_url, &s, &smtp_url());
    c.email.escalation_after = None;
    let (alerting, tx, stop) = start(c).await;
    let mut db = quantrac_testkit::db::connect(&db_url).await;
    let reg = quantrac_proto::registry::Registry::load(&s.registry).expect("registry");
    quantrac_db::registry::sync(&mut db, &reg)
        .await
        .expect("sync");
    // An officer plans maintenance over the last hour and the next.
    let mut officer = common::alert_client(
        alerting.grpc_addr,
        &db_url,
        "lan.nguyen@dost",
        quantrac_db::access::Role::Officer,
    )
    .await;
    let now = chrono::Utc::now();
    let w = officer
        .create_maintenance(quantrac_proto::v1::MaintenanceWindow {
            station_id: s.station.clone(),
            starts_at: Some(quantrac_proto::domain::to_timestamp(
                now - chrono::Duration::hours(1),
            )),
            ends_at: Some(quantrac_proto::domain::to_timestamp(
                now + chrono::Duration::hours(1),
            )),
            reason: "thay điện cực COD".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(w.created_by, "lan.nguyen@dost");
    tx.send(stored_cod(&s.station, 300.0, 10))
        .await
        .expect("bus");
    // The alert opens (it is kept) ...
    let opened = quantrac_testkit::db::wait_for_count(
        &db,
        &format!(
            "SELECT count(*) FROM alerts WHERE station_id = '{}'",
            s.station
        ),
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(opened, 1);
    // ... its messages are written as suppressed, with the window, and none is sent.
    let suppressed = quantrac_testkit::db::wait_for_count(
        &db,
        "SELECT count(*) FROM mail_outbox WHERE suppressed LIKE 'maintenance #%'",
        2,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(suppressed, 2, "the officer's and the facility's");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(received(&s.hh).get("subscription"), None);
    assert_eq!(received(&s.facility).get("facility"), None);
    // The creation is audited under the officer.
    let audited: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_log WHERE actor = 'lan.nguyen@dost' AND action = 'create_maintenance'",
            &[],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(audited, 1);
    stop.cancel();
    alerting.wait().await.expect("clean stop");
}

/// The outbox is bounded: finished messages older than `keep` are deleted,
/// unsent ones and recent ones stay.
#[tokio::test]
async fn finished_messages_are_pruned_after_keep_unsent_never() {
    let db_url = fresh_database().await;
    let s = setup();
    let db = quantrac_testkit::db::connect(&db_url).await;
    quantrac_db::schema::migrate_tables(&db)
        .await
        .expect("schema");
    for (key, age_days, sent) in [
        ("old-sent", 400, true),
        ("old-unsent", 400, false),
        ("new-sent", 10, true),
    ] {
        db.execute(
            "INSERT INTO mail_outbox (dedupe_key, kind, recipient, subject, body, created_at, sent_at, next_attempt_at) \
             VALUES ($1, 'subscription', 'x@example.vn', 's', 'b', now() - make_interval(days => $2), \
             CASE WHEN $3 THEN now() END, now() + interval '1 day')",
            &[&key, &age_days, &sent],
        )
        .await
        .expect("row");
    }
    let (alerting, _tx, stop) = start(config(&db_url, &s, &smtp_url())).await;
    // The sender prunes when it starts; wait for the old finished row to go.
    let mut left = 3;
    for _ in 0..200 {
        left = db
            .query_one("SELECT count(*) FROM mail_outbox", &[])
            .await
            .expect("count")
            .get::<_, i64>(0);
        if left < 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 2);
    let keys: Vec<String> = db
        .query(
            "SELECT dedupe_key FROM mail_outbox ORDER BY dedupe_key",
            &[],
        )
        .await
        .expect("keys")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, vec!["new-sent", "old-unsent"]);
    stop.cancel();
    alerting.wait().await.expect("clean stop");
}
