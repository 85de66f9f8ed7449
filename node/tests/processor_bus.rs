//! Single-node mode on the real PostgreSQL, no Kafka: ingest and the
//! processor in one process over the in-process bus. A station's reply comes
//! only after its readings are committed; bad input lands in
//! `rejected_readings` with its raw bytes and reason.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use quantrac_ingest::{Ingest, IngestConfig};
use quantrac_processor::Processor;
use quantrac_proto::wire::{hj212, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Ingest (TCP only, HJ 212 password `pw`) and the processor in single-node
/// mode on a fresh database, for one registry station `<prefix>-0`.
struct SingleNode {
    db_url: String,
    ingest: Ingest,
    processor: Processor,
    ingest_stop: CancellationToken,
    processor_stop: CancellationToken,
}

/// Sends HJ 212 `frames` on one connection; each is answered as an upload
/// (CN 9014), in single-node mode once committed.
async fn send_answered_as_uploads(ingest: &Ingest, frames: &[Vec<u8>]) {
    let (rd, mut wr) = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);
    for f in frames {
        wr.write_all(f).await.expect("write");
        let mut line = String::new();
        tokio::time::timeout(WAIT, rd.read_line(&mut line))
            .await
            .expect("reply in time")
            .expect("read");
        assert_eq!(hj212::decode(line.as_bytes()).expect("reply").cn, "9014");
    }
}

/// The secret of the FTP node's station.
const FTP_SECRET: &str = "ftp-node-secret";

impl SingleNode {
    async fn start(prefix: &str) -> SingleNode {
        Self::start_with(prefix, false).await
    }

    /// With `ftp`: also the FTP receiver, the station's account from the
    /// registry (secret [`FTP_SECRET`]).
    async fn start_with(prefix: &str, ftp: bool) -> SingleNode {
        let db_url = fresh_database().await;
        // No Kafka here: topics are only names on the bus.
        let topics = Topics {
            raw: "readings.raw".into(),
            valid: "unused".into(),
            rejected: "unused".into(),
        };
        let mut pconfig = test_config(&db_url, &topics, registry_file(prefix, 1));
        pconfig.kafka.brokers = "127.0.0.1:1".into(); // would fail if used
        let mut iconfig = IngestConfig {
            node_id: unique("node"),
            ..Default::default()
        };
        iconfig.mqtt.enabled = false;
        iconfig.tcp.listen = "127.0.0.1:0".parse().expect("addr");
        iconfig.http.listen = "127.0.0.1:0".parse().expect("addr");
        iconfig.kafka.brokers = "127.0.0.1:1".into();
        iconfig.kafka.readings_topic = topics.raw.clone();
        iconfig.hj212.default_password = Some("pw".into());
        if ftp {
            let hash = quantrac_plumbing::secret::hash(FTP_SECRET).expect("hash");
            let registry = quantrac_testkit::registry::Outfalls::numbered(prefix, 1)
                .with_lines(&format!("secret_hash = \"{hash}\""))
                .write()
                .expect("registry");
            iconfig.auth.registry = Some(registry);
            let port = quantrac_testkit::ftp::free_port();
            iconfig.ftp.listen = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
            iconfig.ftp.passive_ports = quantrac_testkit::ftp::free_ports(4);
        }
        let ingest_stop = CancellationToken::new();
        let processor_stop = CancellationToken::new();
        let (tx, rx) = quantrac_plumbing::bus::channel(16);
        let processor = Processor::start(
            pconfig,
            quantrac_processor::Edge::Bus(quantrac_processor::local::LocalBus {
                input: rx,
                stored: None,
            }),
            None,
            processor_stop.clone(),
        )
        .await
        .expect("processor");
        let ingest = Ingest::start(
            iconfig,
            quantrac_ingest::Edge::Bus(tx),
            None,
            ingest_stop.clone(),
        )
        .await
        .expect("ingest");
        SingleNode {
            db_url,
            ingest,
            processor,
            ingest_stop,
            processor_stop,
        }
    }

    /// Ingest first, then the processor (the node's stop order).
    async fn stop(self) {
        self.ingest_stop.cancel();
        self.ingest.wait().await.expect("ingest stops");
        self.processor_stop.cancel();
        self.processor.wait().await.expect("processor stops");
    }
}

#[tokio::test]
async fn station_is_answered_after_its_reading_is_committed() {
    let prefix = unique("SN");
    let node = SingleNode::start(&prefix).await;
    let (db_url, ingest) = (node.db_url.clone(), &node.ingest);
    let client = db(&db_url).await;
    let (rd, mut wr) = TcpStream::connect(ingest.tcp_addr.expect("tcp"))
        .await
        .expect("connect")
        .into_split();
    let mut rd = BufReader::new(rd);
    let station = format!("{prefix}-0");

    for (i, sample) in samples(&prefix, 1, 5).into_iter().enumerate() {
        let mut sample = sample;
        // HJ 212 codes, as a logger sends them.
        for (v, code) in sample
            .values
            .iter_mut()
            .zip(["w01001", "w01012", "w01018", "w21003"])
        {
            v.parameter = code.into();
            v.unit.clear();
        }
        let packet = hj212::Packet::from_sample(
            &sample,
            "2011",
            "32",
            "pw",
            1,
            Utc::now(),
            chrono::FixedOffset::east_opt(7 * 3600).expect("offset"),
        );
        wr.write_all(&hj212::encode(&packet)).await.expect("write");
        let mut line = String::new();
        tokio::time::timeout(WAIT, rd.read_line(&mut line))
            .await
            .expect("reply in time")
            .expect("read");
        assert_eq!(
            hj212::decode(line.as_bytes()).expect("HJ 212 reply").cn,
            "9014"
        );
        // The reply came after the commit: the rows are there already.
        let rows: i64 = client
            .query_one(
                "SELECT count(*) FROM readings WHERE station_id = $1",
                &[&station],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(rows, 4 * (i as i64 + 1), "rows committed before reply {i}");
    }
    let cod: String = client
        .query_one(
            "SELECT parameter FROM readings WHERE station_id = $1 AND parameter = 'COD' LIMIT 1",
            &[&station],
        )
        .await
        .expect("COD row, HJ 212 code w01018 normalised")
        .get(0);
    assert_eq!(cod, "COD");

    // Bad input: a JSON line that does not parse (error reply) and a packet
    // with a wrong CRC (no reply): both stored with raw bytes and reason.
    wr.write_all(b"{\"station_id\": 5}\n").await.expect("write");
    let mut line = String::new();
    tokio::time::timeout(WAIT, rd.read_line(&mut line))
        .await
        .expect("reply")
        .expect("read");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json reply");
    assert_eq!(v["ok"], false);
    let good = json::encode(&samples(&prefix, 1, 1)[0]);
    let mut bad_crc = hj212::encode(&hj212::Packet {
        qn: "1".into(),
        st: "32".into(),
        cn: "2011".into(),
        pw: "pw".into(),
        mn: station.clone(),
        flag: 0,
        cp: "DataTime=20250101000000;w01018-Rtd=1,w01018-Flag=N".into(),
    });
    let n = bad_crc.len();
    bad_crc[n - 3] ^= 0x01;
    wr.write_all(&bad_crc).await.expect("write");
    // A good frame after them still flows.
    wr.write_all(&[good.as_slice(), b"\n"].concat())
        .await
        .expect("write");
    let mut line = String::new();
    tokio::time::timeout(WAIT, rd.read_line(&mut line))
        .await
        .expect("reply")
        .expect("read");
    assert!(line.contains("\"ok\":true"), "{line}");
    let reasons: Vec<String> = client
        .query("SELECT reason FROM rejected_readings ORDER BY reason", &[])
        .await
        .expect("rejected")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("hj212.") && reasons[1].starts_with("json."),
        "{reasons:?}"
    );
    let raw: Vec<u8> = client
        .query_one(
            "SELECT raw FROM rejected_readings WHERE reason LIKE 'hj212.%'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    // Kept as sent, less the password (PW=pw).
    let sent = String::from_utf8_lossy(&bad_crc[..n - 2]).replace("PW=pw;", "PW=<redacted>;");
    assert_eq!(
        String::from_utf8_lossy(&raw),
        sent,
        "raw bytes kept, password redacted"
    );

    node.stop().await;
}

/// A logger sends real-time (CN 2011, with -ZsRtd) and its own hourly
/// record (CN 2061, -Avg/-Min/-Max/-Cou) for the same hour: both are kept,
/// the hourly one as a reported aggregate, nothing collides, the code is
/// kept as sent; the same hourly packet again adds nothing.
#[tokio::test]
async fn hourly_records_do_not_collide_with_real_time_values() {
    let prefix = unique("RK");
    let node = SingleNode::start(&prefix).await;
    let (db_url, ingest) = (node.db_url.clone(), &node.ingest);
    let station = format!("{prefix}-0");
    // The top of the last full hour, in Viet Nam's time.
    let vn = chrono::FixedOffset::east_opt(7 * 3600).expect("offset");
    let hour = chrono::DateTime::from_timestamp((Utc::now().timestamp() / 3600 - 1) * 3600, 0)
        .expect("hour");
    let data_time = hour.with_timezone(&vn).format("%Y%m%d%H%M%S").to_string();
    let packet = |qn: &str, cn: &str, cp: String| {
        hj212::encode(&hj212::Packet {
            qn: qn.into(),
            st: "32".into(),
            cn: cn.into(),
            pw: "pw".into(),
            mn: station.clone(),
            flag: 5,
            cp,
        })
    };
    let frames = [
        packet(
            "20250101000000001",
            "2011",
            format!("DataTime={data_time};w01018-Rtd=42.5,w01018-ZsRtd=40.1,w01018-Flag=N"),
        ),
        packet(
            "20250101000000002",
            "2061",
            format!(
                "DataTime={data_time};w01018-Min=30.2,w01018-Avg=44.0,w01018-Max=61.7,w01018-Cou=1.2,w01018-Flag=N"
            ),
        ),
        // The logger resends its hourly record, then a different one for the
        // same hour: the first stands (the second is counted and logged).
        packet(
            "20250101000000003",
            "2061",
            format!(
                "DataTime={data_time};w01018-Min=30.2,w01018-Avg=44.0,w01018-Max=61.7,w01018-Cou=1.2,w01018-Flag=N"
            ),
        ),
        packet(
            "20250101000000004",
            "2061",
            format!("DataTime={data_time};w01018-Min=1,w01018-Avg=2.0,w01018-Max=3,w01018-Flag=N"),
        ),
    ];
    send_answered_as_uploads(ingest, &frames).await;
    let client = db(&db_url).await;
    let r = client
        .query_one(
            "SELECT value, converted, wire_code FROM readings WHERE station_id = $1 AND parameter = 'COD' AND measured_at = $2",
            &[&station, &hour],
        )
        .await
        .expect("the real-time value");
    assert_eq!(
        (
            r.get::<_, f64>(0),
            r.get::<_, Option<f64>>(1),
            r.get::<_, Option<String>>(2)
        ),
        (42.5, Some(40.1), Some("w01018".into()))
    );
    let rows = client
        .query(
            "SELECT kind, period_seconds, avg, min, max, total, wire_code FROM reported_aggregates \
             WHERE station_id = $1 AND parameter = 'COD' AND period_start = $2",
            &[&station, &hour],
        )
        .await
        .expect("the hourly record");
    assert_eq!(rows.len(), 1, "one hourly record, the resend a duplicate");
    let a = &rows[0];
    assert_eq!(
        (
            a.get::<_, String>(0),
            a.get::<_, i32>(1),
            a.get::<_, f64>(2),
            a.get::<_, Option<f64>>(3),
            a.get::<_, Option<f64>>(4),
            a.get::<_, Option<f64>>(5),
            a.get::<_, Option<String>>(6),
        ),
        (
            "hour".into(),
            3600,
            44.0,
            Some(30.2),
            Some(61.7),
            Some(1.2),
            Some("w01018".into())
        )
    );
    let readings: i64 = client
        .query_one(
            "SELECT count(*) FROM readings WHERE station_id = $1",
            &[&station],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(readings, 1, "the hourly average is not a reading");

    // Analysts see both, as the station said them.
    let query_stop = CancellationToken::new();
    let query = quantrac_query::Query::start(
        quantrac_query::QueryConfig {
            database_url: db_url.clone(),
            grpc_listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        },
        None,
        query_stop.clone(),
    )
    .await
    .expect("query");
    let token = quantrac_db::access::issue(
        &client,
        "analyst@test",
        quantrac_db::access::Role::Analyst,
        Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .expect("token")
    .secret;
    let mut q = quantrac_proto::v1::query_service_client::QueryServiceClient::with_interceptor(
        quantrac_testkit::grpc::channel(query.grpc_addr).await,
        quantrac_testkit::grpc::Bearer::new(&token),
    );
    let range = Some(quantrac_proto::v1::TimeRange {
        start: Some(quantrac_proto::domain::to_timestamp(hour)),
        end: Some(quantrac_proto::domain::to_timestamp(
            hour + chrono::Duration::hours(1),
        )),
    });
    let series = q
        .get_series(quantrac_proto::v1::GetSeriesRequest {
            station_id: station.clone(),
            range,
            ..Default::default()
        })
        .await
        .expect("series")
        .into_inner();
    assert_eq!(series.points.len(), 1);
    assert_eq!(
        (
            series.points[0].wire_code.as_str(),
            series.points[0].converted
        ),
        ("w01018", Some(40.1))
    );
    let reported = q
        .get_reported(quantrac_proto::v1::GetReportedRequest {
            station_id: station.clone(),
            kind: "hour".into(),
            range,
            ..Default::default()
        })
        .await
        .expect("reported")
        .into_inner();
    assert_eq!(reported.records.len(), 1);
    let r = &reported.records[0];
    assert_eq!(
        (
            r.parameter.as_str(),
            r.avg,
            r.max,
            r.total,
            r.wire_code.as_str()
        ),
        ("COD", 44.0, Some(61.7), Some(1.2), "w01018")
    );
    query_stop.cancel();
    query.wait().await.expect("query stop");
    node.stop().await;
}

/// A logger's restart notice (HJ 212 CN 2081) over TCP is answered as an
/// upload and kept as a station event at the restart's own time; the same
/// notice again adds nothing.
#[tokio::test]
async fn restart_notices_are_kept_as_station_events() {
    let prefix = unique("EV");
    let node = SingleNode::start(&prefix).await;
    let (db_url, ingest) = (node.db_url.clone(), &node.ingest);
    let station = format!("{prefix}-0");
    let vn = chrono::FixedOffset::east_opt(7 * 3600).expect("offset");
    let restart =
        chrono::DateTime::from_timestamp(Utc::now().timestamp() / 60 * 60 - 600, 0).expect("time");
    let local = |t: chrono::DateTime<Utc>| t.with_timezone(&vn).format("%Y%m%d%H%M%S").to_string();
    let cp = format!(
        "DataTime={};RestartTime={}",
        local(Utc::now()),
        local(restart)
    );
    let packet = |mn: &str| {
        hj212::encode(&hj212::Packet {
            qn: "20250101000000001".into(),
            st: "32".into(),
            cn: "2081".into(),
            pw: "pw".into(),
            mn: mn.into(),
            flag: 5,
            cp: cp.clone(),
        })
    };
    send_answered_as_uploads(ingest, &[packet(&station), packet(&station)]).await;
    let client = db(&db_url).await;
    let rows = client
        .query(
            "SELECT kind, code, at, station_time, detail FROM station_events WHERE station_id = $1",
            &[&station],
        )
        .await
        .expect("events");
    assert_eq!(rows.len(), 1, "one event, however often it is sent");
    let r = &rows[0];
    assert_eq!(
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, chrono::DateTime<Utc>>(2),
            r.get::<_, bool>(3)
        ),
        ("restart".into(), "2081".into(), restart, true)
    );
    assert!(r.get::<_, String>(4).contains("RestartTime="));
}

/// A Circular 10 file uploaded over FTP is answered 226 only once its
/// readings are committed (they are in the table when the upload returns),
/// and the file is kept unchanged as evidence; the same file again adds
/// nothing.
#[tokio::test]
async fn ftp_uploads_are_answered_once_committed_and_a_resend_adds_nothing() {
    let prefix = unique("FN");
    let node = SingleNode::start_with(&prefix, true).await;
    let addr = node.ingest.ftp_addr.expect("ftp");
    quantrac_testkit::ftp::wait_listening(addr).await;
    let station = format!("{prefix}-0");
    let vn = chrono::FixedOffset::east_opt(7 * 3600).expect("offset");
    let at = chrono::DateTime::from_timestamp(Utc::now().timestamp() / 300 * 300 - 600, 0)
        .expect("time")
        .with_timezone(&vn)
        .format("%Y%m%d%H%M%S")
        .to_string();
    let name = format!("PY_KCNHH_{station}_{at}.txt");
    let body = format!(
        "COD\t41.5\tmg/L\t{at}\t00\r\npH\t7.2\tpH\t{at}\t00\r\nTSS\t20\tmg/L\t{at}\t00\r\n"
    );
    let client = db(&node.db_url).await;
    let stored = format!("SELECT count(*) FROM readings WHERE station_id = '{station}'");
    // The table locked against writes: the upload cannot be answered.
    let mut locker = db(&node.db_url).await;
    let lock = locker.transaction().await.expect("transaction");
    lock.batch_execute("LOCK TABLE readings IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let (user, file, text) = (station.clone(), name.clone(), body.clone());
    let first = tokio::spawn(async move {
        quantrac_testkit::ftp::upload(addr, &user, FTP_SECRET, &file, text.as_bytes()).await
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !first.is_finished(),
        "answered before the readings were committed"
    );
    lock.commit().await.expect("unlock");
    let sent = tokio::time::timeout(WAIT, first)
        .await
        .expect("answered once committed")
        .expect("task");
    assert_eq!(sent, Ok(body.len() as u64));
    // No waiting: 226 came after the commit.
    assert_eq!(count(&client, &stored).await, 3);
    // The file itself, unchanged, with its reception time.
    let kept = format!(
        "SELECT count(*) FROM raw_files WHERE station_id = '{station}' AND name = '{name}' \
         AND content = decode('{}', 'hex') AND sha256 = sha256(content) \
         AND received_at > now() - interval '1 minute'",
        body.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    );
    assert_eq!(count(&client, &kept).await, 1);
    // The same file again: answered, nothing new.
    let again =
        quantrac_testkit::ftp::upload(addr, &station, FTP_SECRET, &name, body.as_bytes()).await;
    assert_eq!(again, Ok(body.len() as u64));
    assert_eq!(count(&client, &stored).await, 3);
    assert_eq!(
        count(&client, "SELECT count(*) FROM raw_files").await,
        1,
        "the same file is kept once"
    );
    let source: i16 = client
        .query_one(
            "SELECT source FROM readings WHERE station_id = $1 AND parameter = 'COD'",
            &[&station],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(
        source,
        quantrac_proto::v1::SourceProtocol::FtpCircular10 as i16
    );
    node.stop().await;
}

/// Every stored reading can be traced to the frame it came in: the SHA-256
/// of the frame as the station sent it (HJ 212 `PW=` value redacted first,
/// no line ending), with the station, the reception time of its readings,
/// its size and the sender's address.
#[tokio::test]
async fn every_reading_is_traced_to_the_digest_of_its_frame() {
    use sha2::Digest as _;
    let prefix = unique("FD");
    let node = SingleNode::start(&prefix).await;
    let client = db(&node.db_url).await;
    let station = format!("{prefix}-0");
    let mut sample = samples(&prefix, 1, 1).remove(0);
    for (v, code) in sample
        .values
        .iter_mut()
        .zip(["w01001", "w01012", "w01018", "w21003"])
    {
        v.parameter = code.into();
        v.unit.clear();
    }
    let packet = hj212::encode(&hj212::Packet::from_sample(
        &sample,
        "2011",
        "32",
        "pw",
        1,
        Utc::now(),
        chrono::FixedOffset::east_opt(7 * 3600).expect("offset"),
    ));
    send_answered_as_uploads(&node.ingest, std::slice::from_ref(&packet)).await;

    // What the station (or an auditor holding its copy) computes.
    let frame = packet.strip_suffix(b"\r\n").expect("line ending");
    let text = String::from_utf8(frame.to_vec()).expect("ASCII");
    assert!(text.contains("PW=pw;"), "{text}");
    let redacted = text.replace("PW=pw;", "PW=<redacted>;");
    let expected = sha2::Sha256::digest(redacted.as_bytes()).to_vec();

    let rows = client
        .query(
            "SELECT f.sha256, f.size, f.origin, count(r.*) FROM raw_frames f \
             JOIN readings r ON r.station_id = f.station_id AND r.received_at = f.received_at \
             WHERE f.station_id = $1 GROUP BY 1, 2, 3",
            &[&station],
        )
        .await
        .expect("frames");
    assert_eq!(rows.len(), 1, "one frame");
    let r = &rows[0];
    assert_eq!(
        r.get::<_, Vec<u8>>(0),
        expected,
        "digest of the redacted frame"
    );
    assert_eq!(r.get::<_, i64>(1), frame.len() as i64);
    assert!(r.get::<_, String>(2).starts_with("127.0.0.1:"));
    assert_eq!(r.get::<_, i64>(3), 4, "its four readings");
    node.stop().await;
}
