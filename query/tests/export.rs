//! Exports of the known data set (`common`) through `StreamSeries`, read
//! back: the Parquet file with the `parquet` crate's own reader, the CSV
//! line by line. Same rows, same values, the documented columns.

mod common;

use common::{Fixture, end, range, start, with_token};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use quantrac_db::access::Role;
use quantrac_proto::domain::from_timestamp;
use quantrac_proto::v1::{GetSeriesRequest, SeriesPoint};
use quantrac_query::export::{CSV_HEADER, LICENCE, Sink};

async fn all_points(f: &Fixture) -> Vec<SeriesPoint> {
    let t = f.token(Role::Analyst).await;
    let mut c = f.client().await;
    let mut stream = c
        .stream_series(with_token(
            &t,
            GetSeriesRequest {
                station_id: "Q-1".into(),
                parameters: vec![],
                range: range(start(), end()),
                page_size: 500,
                page_token: String::new(),
                include_flagged: true,
            },
        ))
        .await
        .expect("stream")
        .into_inner();
    let mut points = Vec::new();
    while let Some(page) = stream.message().await.expect("page") {
        points.extend(page.points);
    }
    points
}

#[tokio::test]
async fn parquet_export_reads_back_row_for_row() {
    let f = Fixture::new().await;
    let points = all_points(&f).await;
    // COD 564 (12 silent), Flow 576, pH 576.
    assert_eq!(points.len(), 1_716);
    let path = std::env::temp_dir().join(format!("{}.parquet", quantrac_testkit::unique("export")));
    let mut sink = Sink::parquet(std::fs::File::create(&path).expect("file")).expect("sink");
    for page in points.chunks(333) {
        sink.write("Q-1", page).expect("write");
    }
    sink.finish().expect("finish");

    let reader =
        SerializedFileReader::new(std::fs::File::open(&path).expect("open")).expect("parquet");
    let schema = reader.metadata().file_metadata().schema_descr();
    let columns: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        columns.join(","),
        CSV_HEADER,
        "Parquet and CSV share the columns"
    );
    let rows: Vec<_> = reader
        .get_row_iter(None)
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(rows.len(), points.len());
    for (row, p) in rows.iter().zip(&points) {
        let at = p
            .measured_at
            .as_ref()
            .and_then(from_timestamp)
            .expect("time");
        assert_eq!(row.get_string(0).expect("station"), "Q-1");
        assert_eq!(row.get_string(1).expect("parameter"), &p.parameter);
        assert_eq!(
            row.get_timestamp_micros(2).expect("time"),
            at.timestamp_micros()
        );
        assert_eq!(row.get_double(3).expect("value"), p.value);
        assert_eq!(row.get_string(4).expect("unit"), &p.unit);
        assert_eq!(row.get_string(5).expect("qc"), &p.qc_flag);
        assert_eq!(row.get_string(6).expect("licence"), LICENCE);
    }
    let calibrating = rows
        .iter()
        .filter(|r| r.get_string(5).is_ok_and(|q| q == "calibrating"))
        .count();
    assert_eq!(calibrating, 12);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn csv_export_has_the_header_and_every_row() {
    let f = Fixture::new().await;
    let points = all_points(&f).await;
    let mut buf = Vec::new();
    let mut sink = Sink::csv(&mut buf).expect("sink");
    sink.write("Q-1", &points).expect("write");
    sink.finish().expect("finish");
    let text = String::from_utf8(buf).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(lines.len(), points.len() + 1);
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first.len(), 7);
    assert_eq!(
        (first[0], first[1], first[6]),
        ("Q-1", points[0].parameter.as_str(), LICENCE)
    );
    assert!(first[2].ends_with('Z'), "UTC: {}", first[2]);
}
