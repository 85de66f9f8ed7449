//! A known data set in a fresh database, and the query service over it.
//!
//! Two wastewater stations. `Q-1` (zone "KCN Test") measures COD, Flow
//! and pH every 5 minutes for two local days, 2026-11-14 and 2026-11-15:
//! - COD is 120 mg/L throughout, under its permit of 150 until the permit
//!   changes to 100 on 2026-11-15 (local midnight);
//! - COD is silent 10:00-11:00 on the 15th (a gap), and 140 the hour after;
//! - COD's analyser is saturated 12:00-13:00 on the 15th (500, above_range);
//! - COD was calibrating 02:00-03:00 on the 14th (9999, calibrating);
//! - Flow is 36 m3/h: 864 m3 a day;
//! - one COD reading was refused (out_of_range).
//!
//! `Q-2` (zone "KCN Other") has one pH reading.
#![allow(dead_code)]

use std::net::SocketAddr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use quantrac_db::access::Role;
use quantrac_proto::v1::query_service_client::QueryServiceClient;
use quantrac_query::{Query, QueryConfig};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const REGISTRY: &str = r#"
[[stations]]
id = "Q-1"
name = "Outfall 1"
facility = "Dyeing plant"
industrial_zone = "KCN Test"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
parameters = [
  { code = "COD", unit = "mg/L", range_min = 0, range_max = 1000, expected_interval = "5m" },
  { code = "Flow", unit = "m3/h", range_min = 0, range_max = 5000, expected_interval = "5m" },
  { code = "pH", unit = "pH", range_min = 0, range_max = 14, expected_interval = "5m" },
]
limits = [
  { parameter = "COD", max = 150, regulation = "QCVN 40:2011/BTNMT", column = "B", effective_from = 2026-01-01 },
  { parameter = "COD", max = 100, regulation = "QCVN 40:2025/BTNMT", column = "B", effective_from = 2026-11-15 },
  { parameter = "pH", min = 5.5, max = 9, regulation = "QCVN 40:2011/BTNMT", column = "B", effective_from = 2026-01-01, effective_to = 2026-11-30, permit_number = "07/GP-UBND", authority = "UBND tỉnh Phú Yên", averaging = "24h" },
]

[[stations]]
id = "Q-2"
name = "Outfall 2"
facility = "Seafood plant"
industrial_zone = "KCN Other"
province = "Phú Yên"
latitude = 13.1
longitude = 109.2
kind = "wastewater"
parameters = [
  { code = "pH", unit = "pH", range_min = 0, range_max = 14, expected_interval = "5m" },
]
limits = []
"#;

/// A local (UTC+7) time.
pub fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    quantrac_query::interval::local()
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("local time")
        .with_timezone(&Utc)
}

pub fn start() -> DateTime<Utc> {
    local(2026, 11, 14, 0, 0)
}

pub fn end() -> DateTime<Utc> {
    local(2026, 11, 16, 0, 0)
}

/// A stored reading, as the processor writes it.
fn row(
    station: &str,
    parameter: &str,
    unit: &str,
    at: DateTime<Utc>,
    value: f64,
    qc: &str,
) -> quantrac_db::ReadingRow {
    quantrac_db::ReadingRow {
        station_id: station.into(),
        parameter: parameter.into(),
        value,
        unit: unit.into(),
        measured_at: at,
        status: if qc == "calibrating" {
            quantrac_proto::domain::DeviceStatus::Calibrating
        } else {
            quantrac_proto::domain::DeviceStatus::Measuring
        },
        device_flag: "N".into(),
        qc_flag: qc.parse().expect("qc flag"),
        source: 1,
        received_at: Some(at),
        ingest_id: String::new(),
        converted: None,
        wire_code: None,
    }
}

pub async fn load(client: &mut Client) {
    quantrac_db::schema::migrate(client, &quantrac_db::SchemaOptions::default())
        .await
        .expect("migrate");
    let registry = quantrac_proto::registry::Registry::from_toml(REGISTRY).expect("registry");
    quantrac_db::registry::sync(client, &registry)
        .await
        .expect("registry sync");
    let mut rows = Vec::new();
    let mut t = start();
    while t < end() {
        let l = t.with_timezone(&quantrac_query::interval::local());
        let day15 = l.format("%d").to_string() == "15";
        let hour = l.format("%H").to_string();
        let (cod, qc) = match (day15, hour.as_str()) {
            (true, "10") => (None, ""),
            (true, "11") => (Some(140.0), "valid"),
            (true, "12") => (Some(500.0), "above_range"),
            (false, "02") => (Some(9999.0), "calibrating"),
            _ => (Some(120.0), "valid"),
        };
        if let Some(v) = cod {
            rows.push(row("Q-1", "COD", "mg/L", t, v, qc));
        }
        rows.push(row("Q-1", "Flow", "m3/h", t, 36.0, "valid"));
        rows.push(row(
            "Q-1",
            "pH",
            "pH",
            t,
            7.0 + (t.timestamp() % 7) as f64 / 10.0,
            "valid",
        ));
        t += Duration::minutes(5);
    }
    rows.push(row(
        "Q-2",
        "pH",
        "pH",
        local(2026, 11, 15, 9, 0),
        6.5,
        "valid",
    ));
    // Through the processor's own write; latest_readings as the processor
    // seeds it at start.
    let mut tx = client.transaction().await.expect("tx");
    quantrac_db::readings::write(&mut tx, &rows, quantrac_db::WriteMethod::Unnest)
        .await
        .expect("write readings");
    tx.commit().await.expect("commit");
    quantrac_db::readings::seed_latest(client)
        .await
        .expect("seed latest_readings");
    client
        .execute(
            "INSERT INTO rejected_readings (key, reason, detail, station_id, parameter, measured_at, raw, rejected_at) \
             VALUES ('r-1', 'out_of_range', 'COD -5 below range 0', 'Q-1', 'COD', $1, '\\x00', $1)",
            &[&local(2026, 11, 14, 5, 0)],
        )
        .await
        .expect("insert rejected");
}

/// The service over a fresh database holding the data set.
pub struct Fixture {
    pub url: String,
    pub db: Client,
    pub addr: SocketAddr,
    pub stop: CancellationToken,
}

impl Fixture {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// The fixture with `change` applied to the service's configuration.
    pub async fn with(change: impl FnOnce(&mut QueryConfig)) -> Self {
        let url = quantrac_testkit::db::fresh_database().await;
        let mut db = quantrac_testkit::db::connect(&url).await;
        load(&mut db).await;
        let mut config = QueryConfig {
            database_url: url.clone(),
            grpc_listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            ..QueryConfig::default()
        };
        change(&mut config);
        let stop = CancellationToken::new();
        let q = Query::start(config, None, stop.clone())
            .await
            .expect("start");
        let addr = q.grpc_addr;
        tokio::spawn(q.wait());
        Fixture {
            url,
            db,
            addr,
            stop,
        }
    }

    pub async fn token(&self, role: Role) -> String {
        quantrac_db::access::issue(
            &self.db,
            &format!("{role}@test"),
            role,
            Utc::now() + Duration::hours(1),
        )
        .await
        .expect("issue")
        .secret
    }

    pub async fn client(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    r
}

pub fn range(s: DateTime<Utc>, e: DateTime<Utc>) -> Option<quantrac_proto::v1::TimeRange> {
    Some(quantrac_proto::v1::TimeRange {
        start: Some(quantrac_proto::domain::to_timestamp(s)),
        end: Some(quantrac_proto::domain::to_timestamp(e)),
    })
}
