//! Real loggers' packets, each in `tests/fixtures/hj212/` with the public
//! source it was taken from, and what it must become: the station, the
//! measurement time, and each value with its code as sent, the
//! catalogue's parameter and the standard's unit for that code, the device
//! flag, the converted value and, for a logger's own aggregate, its kind.
//! The expectations are read from the packet and the standard by hand, not
//! from this decoder's output.

use std::path::Path;

use chrono::{DateTime, Utc};
use quantrac_proto::domain::{hj212_standard_unit, local_offset, parameter_by_hj212};
use quantrac_proto::wire::hj212;

#[derive(Debug, Default)]
struct Fixture {
    name: String,
    frame: String,
    station: String,
    time: String,
    kind: Option<String>,
    /// code, canonical, unit, value, flag, converted ("-": none)
    values: Vec<[String; 6]>,
}

fn load(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut f = Fixture {
        name: path.display().to_string(),
        ..Fixture::default()
    };
    assert!(
        text.lines().any(|l| l.starts_with("# source: http")),
        "{}: every fixture cites its source",
        f.name
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (key, rest) = line.split_once(' ').expect("key and value");
        match key {
            "frame" => f.frame = rest.to_owned(),
            "station" => f.station = rest.to_owned(),
            "time" => f.time = rest.to_owned(),
            "kind" => f.kind = Some(rest.to_owned()),
            "value" => {
                let v: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
                f.values.push(v.try_into().expect("six fields"));
            }
            other => panic!("{}: unknown line {other}", f.name),
        }
    }
    f
}

fn shown(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| x.to_string())
}

#[test]
fn real_packets_decode_to_what_the_station_meant() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hj212");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "{paths:?}");
    for path in paths {
        let f = load(&path);
        let frame = format!("{}\r\n", f.frame);
        let packet = hj212::decode(frame.as_bytes())
            .unwrap_or_else(|e| panic!("{}: refused: {e:?}", f.name));
        let sample = packet
            .sample(local_offset())
            .unwrap_or_else(|e| panic!("{}: no sample: {e:?}", f.name));
        assert_eq!(sample.station_id, f.station, "{}", f.name);
        let time: DateTime<Utc> = f.time.parse().expect("time");
        assert_eq!(sample.measured_at, time, "{}", f.name);
        let got: Vec<[String; 6]> = sample
            .values
            .iter()
            .map(|v| {
                let code = v.parameter.as_str();
                [
                    code.to_owned(),
                    parameter_by_hj212(code).map_or("-".into(), |p| p.code.to_owned()),
                    hj212_standard_unit(code).unwrap_or("-").to_owned(),
                    v.value.to_string(),
                    v.device_flag.clone(),
                    shown(v.converted),
                ]
            })
            .collect();
        let want: Vec<[String; 6]> = f
            .values
            .iter()
            .map(|w| {
                let mut w = w.clone();
                // 231.0 and 231 are one value.
                w[3] = w[3].parse::<f64>().expect("value").to_string();
                w
            })
            .collect();
        assert_eq!(got, want, "{}", f.name);
        let kinds: Vec<Option<&str>> = sample
            .values
            .iter()
            .map(|v| v.report.as_ref().map(|r| r.kind.as_str()))
            .collect();
        assert!(
            kinds.iter().all(|k| *k == f.kind.as_deref()),
            "{}: {kinds:?}",
            f.name
        );
    }
}

/// Circular 10 files, each in `tests/fixtures/circular10/` under its own
/// file name, bytes as a logger writes them, beside a `.expect` file that
/// cites where its shape comes from and says what it must become.
#[test]
fn circular10_files_decode_to_what_the_station_meant() {
    use quantrac_proto::wire::circular10;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/circular10");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let expect = std::fs::read_to_string(path.with_extension("expect")).expect(".expect");
        assert!(
            expect.lines().any(|l| l.starts_with("# source:")),
            "{name}: every fixture cites its source"
        );
        let field = |key: &str| {
            expect
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
                .unwrap_or_else(|| panic!("{name}: no {key}"))
        };
        let want: Vec<(String, f64, String, String)> = expect
            .lines()
            .filter_map(|l| l.strip_prefix("value "))
            .map(|l| {
                let v: Vec<&str> = l.split(' ').collect();
                (
                    v[0].into(),
                    v[1].parse().expect("value"),
                    v[2].into(),
                    v[3].into(),
                )
            })
            .collect();

        let file = circular10::parse_file_name(name).expect("file name");
        assert_eq!(file.station, field("station"), "{name}");
        let bytes = std::fs::read(&path).expect("file");
        let samples = circular10::decode_record(&bytes, &file.station, local_offset())
            .unwrap_or_else(|e| panic!("{name}: refused: {e:?}"));
        circular10::check_file_time(&file, &samples, local_offset())
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(samples.len(), 1, "{name}: one sample per file");
        let time: DateTime<Utc> = field("time").parse().expect("time");
        assert_eq!(samples[0].measured_at, time, "{name}");
        let got: Vec<(String, f64, String, String)> = samples[0]
            .values
            .iter()
            .map(|v| {
                (
                    v.parameter.clone(),
                    v.value,
                    v.unit.clone(),
                    v.status.circular10_code().to_owned(),
                )
            })
            .collect();
        assert_eq!(got, want, "{name}");
    }
}
