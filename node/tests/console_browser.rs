//! The officers' page (`quantrac-console`) in a real browser (Debian's headless Chromium over
//! WebDriver) against the real services: alerting (single-node edge), the
//! query service and the console, on a fresh PostgreSQL database.
//!
//! An officer logs in, sees an exceedance appear in the open list without a
//! reload, acknowledges it with a comment, assigns and comments, and the
//! database holds each act under their name; an analyst sees no buttons,
//! and a forged form is refused by the alerting service. Screenshots go to
//! `target/tmp/console-screenshots/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use quantrac_alerting::{Alerting, AlertingConfig};
use quantrac_console::{Console, ConsoleConfig};
use quantrac_db::access::Role;
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::v1::{DeviceStatus, StoredReading, StoredReadingBatch};
use quantrac_query::{Query, QueryConfig};
use quantrac_testkit::db::{connect, fresh_database};
use tokio_util::sync::CancellationToken;

#[path = "common/webdriver.rs"]
mod webdriver;
use webdriver::{Driver, Session};

struct Stack {
    console: String,
    db_url: String,
    bus: tokio::sync::mpsc::Sender<StoredReadingBatch>,
    /// The station the officer test works on.
    station: String,
    /// A second outfall of the same zone (bulk acknowledgement).
    other: String,
    stop: CancellationToken,
}

async fn start() -> Stack {
    let db_url = fresh_database().await;
    let prefix = quantrac_testkit::unique("WEB");
    let (station, other) = (format!("{prefix}-0"), format!("{prefix}-1"));
    // The station's camera: a listener here, so the page finds it reachable.
    let camera = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("camera");
    let camera_url = format!(
        "http://{}/snapshot.jpg",
        camera.local_addr().expect("camera addr")
    );
    tokio::spawn(async move {
        // Accepts and drops: reachability is a TCP connection.
        while let Ok((conn, _)) = camera.accept().await {
            drop(conn);
        }
    });
    let registry = quantrac_testkit::registry::Outfalls::numbered(&prefix, 2)
        .measuring(&["COD"])
        .expected_interval("1h")
        .with_lines(&format!("camera_url = \"{camera_url}\""))
        .write()
        .expect("registry");
    let stop = CancellationToken::new();
    let mut ac = AlertingConfig {
        node_id: quantrac_testkit::unique("node"),
        database_url: db_url.clone(),
        registry: registry.clone(),
        rules: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules.toml"),
        grpc_listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        tick: Duration::from_millis(200),
        ..Default::default()
    };
    ac.kafka.brokers = "127.0.0.1:1".into();
    let (bus, rx) = tokio::sync::mpsc::channel(16);
    let alerting = Alerting::start(ac, quantrac_alerting::Edge::Bus(rx), None, stop.clone())
        .await
        .expect("alerting");
    // The stations as the processor keeps them (the query service reads them).
    let mut db = connect(&db_url).await;
    let reg = quantrac_proto::registry::Registry::load(&registry).expect("load registry");
    quantrac_db::registry::sync(&mut db, &reg)
        .await
        .expect("sync");
    let query = Query::start(
        QueryConfig {
            database_url: db_url.clone(),
            grpc_listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        },
        None,
        stop.clone(),
    )
    .await
    .expect("query");
    let console = Console::start(
        ConsoleConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            alerting_url: format!("http://{}", alerting.grpc_addr),
            query_url: format!("http://{}", query.grpc_addr),
            ..Default::default()
        },
        None,
        stop.clone(),
    )
    .await
    .expect("console");
    let url = format!("http://{}", console.addr);
    for t in [
        tokio::spawn(async move { alerting.wait().await.map_err(|e| e.to_string()) }),
        tokio::spawn(async move { query.wait().await.map_err(|e| e.to_string()) }),
        tokio::spawn(async move { console.wait().await.map_err(|e| e.to_string()) }),
    ] {
        drop(t);
    }
    Stack {
        console: url,
        db_url,
        bus,
        station,
        other,
        stop,
    }
}

async fn token(db_url: &str, identity: &str, role: Role) -> String {
    let db = connect(db_url).await;
    quantrac_db::access::issue(&db, identity, role, Utc::now() + chrono::Duration::hours(1))
        .await
        .expect("issue")
        .secret
}

/// COD = `value` measured on the 5-minute grid 10 minutes ago, stored as
/// the processor stores it (latest_readings too) and handed to alerting
/// on the bus.
async fn exceedance(s: &Stack, value: f64) {
    exceedance_at(s, &s.station, value).await;
}

/// [`exceedance`] at `station`.
async fn exceedance_at(s: &Stack, station: &str, value: f64) {
    let at = Utc::now() - chrono::Duration::minutes(10);
    let at = chrono::DateTime::from_timestamp(at.timestamp() / 300 * 300, 0).expect("time");
    let db = connect(&s.db_url).await;
    db.execute(
        "INSERT INTO readings (station_id, parameter, measured_at, value, unit, status, device_flag, qc_flag, source) \
         VALUES ($1, 'COD', $2, $3, 'mg/L', 1, '00', 'valid', 1)",
        &[&station, &at, &value],
    )
    .await
    .expect("reading");
    // And into latest_readings, as the processor's flush does.
    quantrac_db::readings::seed_latest(&db)
        .await
        .expect("latest_readings");
    s.bus
        .send(StoredReadingBatch {
            station_id: station.to_owned(),
            readings: vec![StoredReading {
                station_id: station.to_owned(),
                parameter: "COD".into(),
                value,
                unit: "mg/L".into(),
                measured_at: Some(to_timestamp(at)),
                status: DeviceStatus::Measuring as i32,
                device_flag: "00".into(),
                qc_flag: "valid".into(),
                source: 0,
                received_at: Some(to_timestamp(Utc::now())),
                ingest_id: uuid::Uuid::now_v7().to_string(),
                converted: None,
            }],
            unjudged_batch: 0,
        })
        .await
        .expect("bus");
}

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("console-screenshots")
        .join(format!("{name}.png"))
}

async fn login(b: &Session, console: &str, token: &str) {
    b.goto(&format!("{console}/login")).await;
    b.type_into("#token", token).await;
    b.click_and_wait("#login").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officer_sees_a_live_alert_acts_on_it_and_an_analyst_cannot() {
    let s = start().await;
    let officer = token(&s.db_url, "lan.nguyen@dost", Role::Officer).await;
    let analyst = token(&s.db_url, "minh.le@dost", Role::Analyst).await;
    let driver = Driver::start().await;
    let b = driver.session().await;

    // A wrong token is refused at the door.
    login(&b, &s.console, "qt_not_a_token").await;
    assert!(b.url().await.ends_with("/login"), "{}", b.url().await);
    assert_eq!(b.count(".notice.error").await, 1);

    // The officer's "active and unacknowledged" list, live.
    login(&b, &s.console, &officer).await;
    b.wait_url("/alerts").await;
    assert_eq!(b.text("#viewer").await, "lan.nguyen@dost (officer)");
    b.click_and_wait("#quick-unacked").await;
    b.wait_url("/alerts?state=open").await;
    assert!(
        b.wait_for(
            "return document.body.getAttribute('data-live') === 'ready';",
            Duration::from_secs(10)
        )
        .await,
        "the live stream did not open"
    );
    assert_eq!(
        b.count("tr.alert").await,
        0,
        "no alert before the exceedance"
    );
    b.script("window.__notReloaded = true; return true;").await;

    let injected = Instant::now();
    exceedance(&s, 300.0).await;
    let appeared = b
        .wait_for(
            "return document.querySelectorAll('tr.alert.open').length === 1;",
            Duration::from_secs(10),
        )
        .await;
    let took = injected.elapsed();
    assert!(appeared, "the alert never appeared in the list");
    assert_eq!(
        b.script("return window.__notReloaded === true;").await,
        serde_json::Value::Bool(true),
        "the list must update without a reload"
    );
    // The 2-second figure is reported, not asserted (timing belongs in
    // benches); the test shows the list updates by itself.
    println!("alert appeared in the open list {took:?} after the reading reached alerting");
    assert_eq!(b.text("#count-unacked b").await, "1");
    b.screenshot(&shot("1-alerts-live-officer")).await;

    // Acknowledge with a comment, from the alert's page.
    b.click_and_wait("a.open-alert").await;
    b.type_into("#acknowledge-note", "gọi nhà máy, đang kiểm tra")
        .await;
    b.click_and_wait("#do-acknowledge").await;
    assert_eq!(
        b.script("return document.getElementById('alert-state').dataset.state;")
            .await,
        "acknowledged"
    );
    b.type_into("#assign-assignee", "binh.tran@dost").await;
    b.click_and_wait("#do-assign").await;
    b.type_into("#comment-note", "aerator tripped at 10:05")
        .await;
    b.click_and_wait("#do-comment").await;
    let history = b.text("#history").await;
    for change in ["opened", "acknowledged", "assigned", "commented"] {
        assert!(history.contains(change), "{change} missing in {history}");
    }
    b.screenshot(&shot("2-alert-acknowledged-history")).await;

    let db = connect(&s.db_url).await;
    let row = db
        .query_one(
            "SELECT id, state, acknowledged_by, assignee FROM alerts WHERE station_id = $1",
            &[&s.station],
        )
        .await
        .expect("the alert");
    let alert_id: String = row.get(0);
    assert_eq!(
        (
            row.get::<_, String>(1),
            row.get::<_, Option<String>>(2),
            row.get::<_, Option<String>>(3)
        ),
        (
            "acknowledged".into(),
            Some("lan.nguyen@dost".into()),
            Some("binh.tran@dost".into())
        )
    );
    let acts: Vec<(String, String, String)> = db
        .query(
            "SELECT change, actor, note FROM alert_events WHERE alert_id = $1 AND actor IS NOT NULL ORDER BY sequence",
            &[&alert_id],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        acts,
        vec![
            (
                "acknowledged".into(),
                "lan.nguyen@dost".into(),
                "gọi nhà máy, đang kiểm tra".into()
            ),
            (
                "assigned".into(),
                "lan.nguyen@dost".into(),
                "gọi nhà máy, đang kiểm tra".into()
            ),
            (
                "commented".into(),
                "lan.nguyen@dost".into(),
                "aerator tripped at 10:05".into()
            ),
        ]
    );

    // The station board: online, the COD value over its limit.
    b.goto(&format!("{}/stations", s.console)).await;
    assert_eq!(
        b.script(&format!(
            "return document.querySelector('tr[data-station=\"{}\"]').dataset.status;",
            s.station
        ))
        .await,
        "online"
    );
    assert_eq!(b.count("span.v.over").await, 1);
    b.goto(&format!("{}/stations/{}", s.console, s.station))
        .await;
    assert_eq!(b.count("figure.param svg.chart").await, 1);
    assert_eq!(b.count("svg.chart line.limit").await, 1);
    assert_eq!(
        b.script("return document.getElementById('camera-status').dataset.reachable;")
            .await,
        "true"
    );
    assert_eq!(b.count("img.camera-snapshot").await, 1);
    // Spreadsheets from the page: the averages as CSV, the alerts as XLSX.
    let averages = b
        .script_async(
            "const done = arguments[arguments.length - 1];
             fetch(document.querySelector('a[href$=\"averages.csv?hours=24\"]').href).then(r => r.text()).then(done);",
        )
        .await;
    let averages = averages.as_str().unwrap_or_default().to_owned();
    assert!(
        averages.starts_with(
            "station_id,parameter,hour_local,avg,min,max,unit,readings,coverage,lower_bound\n"
        ),
        "{averages}"
    );
    assert!(
        averages.contains(",COD,") && averages.contains(",300,300,300,mg/L,1,"),
        "{averages}"
    );
    let xlsx = b
        .script_async(
            "const done = arguments[arguments.length - 1];
             fetch('/alerts/export.xlsx').then(r => r.arrayBuffer()).then(a => { const v = new Uint8Array(a); done([v.length, v[0], v[1]]); });",
        )
        .await;
    assert_eq!(xlsx[1], 0x50, "an XLSX (ZIP) file: {xlsx}");
    assert_eq!(xlsx[2], 0x4b, "an XLSX (ZIP) file: {xlsx}");

    // Planned maintenance from the station's page: listed, and audited
    // under the officer.
    let starts = (Utc::now() + chrono::Duration::hours(1))
        .with_timezone(&quantrac_proto::domain::local_offset())
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    b.script(&format!(
        "document.getElementById('maintenance-starts').value = '{starts}'; return true;"
    ))
    .await;
    b.type_into("#maintenance-reason", "thay điện cực COD")
        .await;
    b.click_and_wait("#do-maintenance").await;
    assert!(
        b.text("#maintenance-windows")
            .await
            .contains("thay điện cực COD · lan.nguyen@dost")
    );
    let planned: i64 = connect(&s.db_url)
        .await
        .query_one(
            "SELECT count(*) FROM audit_log WHERE actor = 'lan.nguyen@dost' AND action = 'create_maintenance' AND target = $1",
            &[&s.station],
        )
        .await
        .expect("audit")
        .get(0);
    assert_eq!(planned, 1);
    b.screenshot(&shot("3-station-board")).await;

    // The analyst: the same list, no buttons; a forged form is refused by
    // the alerting service, and the alert stays as the officer left it.
    b.click_and_wait("form[action='/logout'] button").await;
    login(&b, &s.console, &analyst).await;
    assert_eq!(b.text("#viewer").await, "minh.le@dost (analyst)");
    assert_eq!(b.count("tr.alert").await, 1);
    assert_eq!(b.count("#bulk").await, 0);
    assert_eq!(b.count("input[name=id]").await, 0);
    b.click_and_wait("a.open-alert").await;
    assert_eq!(
        b.count("form.act").await,
        0,
        "no action forms for an analyst"
    );
    b.screenshot(&shot("4-analyst-read-only")).await;
    let status = b
        .script_async(&format!(
            "const done = arguments[arguments.length - 1];
             fetch('/alerts/' + encodeURIComponent({}) + '/resolve', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body: 'note=forged'}})
               .then(r => done(r.status));",
            serde_json::Value::from(alert_id.as_str())
        ))
        .await;
    assert_eq!(status, 403, "an analyst's resolve must be refused");
    let state: String = db
        .query_one("SELECT state FROM alerts WHERE id = $1", &[&alert_id])
        .await
        .expect("alert")
        .get(0);
    assert_eq!(state, "acknowledged");

    b.close().await;
    s.stop.cancel();
}

/// Bulk acknowledge: every checked alert is acknowledged, each attributed
/// to the officer; the English labels are one click away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_acknowledge_and_english_labels() {
    let s = start().await;
    let officer = token(&s.db_url, "lan.nguyen@dost", Role::Officer).await;
    let driver = Driver::start().await;
    let b = driver.session().await;
    login(&b, &s.console, &officer).await;
    // Vietnamese by default.
    assert_eq!(b.text("#quick-unacked").await, "Đang mở, chưa xác nhận");
    b.click_and_wait("#lang").await;
    assert_eq!(b.text("#quick-unacked").await, "Active and unacknowledged");

    // Two stations over their limits: two open alerts to acknowledge at once.
    exceedance(&s, 300.0).await;
    exceedance_at(&s, &s.other, 300.0).await;
    let both = vec![s.station.clone(), s.other.clone()];
    let db = connect(&s.db_url).await;
    let mut opened = 0;
    for _ in 0..200 {
        opened = db
            .query_one(
                "SELECT count(*) FROM alerts WHERE station_id = ANY($1) AND state = 'open'",
                &[&both],
            )
            .await
            .expect("count")
            .get::<_, i64>(0);
        if opened >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(opened >= 2, "an alert per station: {opened}");
    b.goto(&format!("{}/alerts?state=open", s.console)).await;
    let open = b.count("input[name=id]").await;
    assert_eq!(open as i64, opened, "a checkbox per open alert");
    b.click("#select-all").await;
    b.type_into("#bulk input[name=note]", "đã nhận").await;
    b.click_and_wait("#bulk-ack").await;
    let (n, by): (i64, Option<String>) = {
        let r = db
            .query_one(
                "SELECT count(*), min(acknowledged_by) FROM alerts WHERE station_id = ANY($1) AND state = 'acknowledged'",
                &[&both],
            )
            .await
            .expect("count");
        (r.get(0), r.get(1))
    };
    assert_eq!(n as usize, open);
    assert_eq!(by.as_deref(), Some("lan.nguyen@dost"));
    b.goto(&format!("{}/alerts?state=open", s.console)).await;
    assert_eq!(b.count("input[name=id]").await, 0);
    b.screenshot(&shot("5-bulk-acknowledged-en")).await;
    b.close().await;
    s.stop.cancel();
}
