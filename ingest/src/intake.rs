//! What both receivers do with a decoded frame: turn samples into
//! `ReadingBatch` records, or a failure into a `RejectedInput` record with
//! the raw bytes and the reason, and hand them to Kafka.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use prost::Message;
use quantrac_proto::Sample;
use quantrac_proto::domain::to_timestamp;
use quantrac_proto::v1::{
    FrameDigest, RawFile, ReadingBatch, RejectedInput, SourceProtocol, StationNotice,
};
use quantrac_proto::wire::WireError;

use crate::sink::{Acks, OutRecord, Sink, SinkError};
use crate::status::Status;

/// The answer a station gets once the records are on Kafka.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accepted { readings: usize },
    Rejected(WireError),
}

/// Records ready to send, with the verdict they stand for.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub records: Vec<OutRecord>,
    pub verdict: Verdict,
}

/// What is kept of a frame: the SHA-256 of its bytes with every HJ 212
/// `PW=` value replaced by `<redacted>` (a digest of the secret would let a
/// weak one be guessed offline), its size and its origin.
pub fn frame_digest(raw: &[u8], origin: &str) -> FrameDigest {
    use sha2::Digest as _;
    FrameDigest {
        sha256: sha2::Sha256::digest(redact_pw(raw)).to_vec(),
        size: u32::try_from(raw.len()).unwrap_or(u32::MAX),
        origin: origin.to_owned(),
    }
}

/// The bytes with the value of every `PW=` field replaced by `<redacted>`
/// (an HJ 212 packet's CRC then no longer matches: the bytes are evidence of
/// what came, less the secret). Other frames come back unchanged.
pub fn redact_pw(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.windows(3).position(|w| w == b"PW=") {
        out.extend_from_slice(&rest[..i + 3]);
        out.extend_from_slice(b"<redacted>");
        rest = &rest[i + 3..];
        let end = rest
            .iter()
            .position(|&c| c == b';' || c == b'&' || c == b'\r' || c == b'\n')
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
    out
}

/// Short, bounded label for metrics and logs.
pub fn source_label(source: SourceProtocol) -> &'static str {
    match source {
        SourceProtocol::MqttJson => "mqtt_json",
        SourceProtocol::MqttCircular10 => "mqtt_circular10",
        SourceProtocol::TcpHj212 => "tcp_hj212",
        SourceProtocol::TcpCircular10 => "tcp_circular10",
        SourceProtocol::TcpJson => "tcp_json",
        SourceProtocol::FtpCircular10 => "ftp_circular10",
        SourceProtocol::Unspecified => "unknown",
    }
}

#[derive(Debug, Clone)]
pub struct Intake {
    sink: Sink,
    node: Arc<str>,
    readings_topic: Arc<str>,
    rejected_topic: Arc<str>,
    status: Arc<Status>,
}

impl Intake {
    pub fn new(
        sink: Sink,
        node: &str,
        readings_topic: &str,
        rejected_topic: &str,
        status: Arc<Status>,
    ) -> Self {
        Self {
            sink,
            node: node.into(),
            readings_topic: readings_topic.into(),
            rejected_topic: rejected_topic.into(),
            status,
        }
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Counts a frame received from a station.
    pub fn received(&self, source: SourceProtocol) {
        self.status.received();
        metrics::counter!("ingest_received_total", "source" => source_label(source)).increment(1);
    }

    /// Counts a frame whose verdict was acknowledged to the station.
    pub fn acknowledged(&self, source: SourceProtocol, verdict: &Verdict) {
        self.status.acknowledged();
        metrics::counter!("ingest_acknowledged_total", "source" => source_label(source))
            .increment(1);
        if let Verdict::Accepted { readings } = verdict {
            metrics::counter!("ingest_readings_total", "source" => source_label(source))
                .increment(*readings as u64);
        }
    }

    /// One `ReadingBatch` record per sample, keyed by station.
    pub fn accept(&self, source: SourceProtocol, samples: Vec<Sample>) -> Prepared {
        self.accept_file(source, samples, None)
    }

    /// [`Intake::accept`] of the samples of one frame, each record carrying
    /// the frame's digest ([`frame_digest`]) and `origin` as evidence.
    pub fn accept_frame(
        &self,
        source: SourceProtocol,
        samples: Vec<Sample>,
        raw: &[u8],
        origin: &str,
    ) -> Prepared {
        self.prepare(source, samples, None, Some(frame_digest(raw, origin)))
    }

    /// [`Intake::accept`] of the samples of one file `(name, bytes)`, which
    /// rides unchanged on the first record, as evidence.
    pub fn accept_file(
        &self,
        source: SourceProtocol,
        samples: Vec<Sample>,
        file: Option<(&str, &[u8])>,
    ) -> Prepared {
        self.prepare(source, samples, file, None)
    }

    fn prepare(
        &self,
        source: SourceProtocol,
        samples: Vec<Sample>,
        file: Option<(&str, &[u8])>,
        frame: Option<FrameDigest>,
    ) -> Prepared {
        let received_at = Utc::now();
        let mut readings = 0;
        let mut file = file.map(|(name, content)| RawFile {
            name: name.to_owned(),
            content: content.to_vec(),
            received_at: Some(to_timestamp(received_at)),
            source: source as i32,
        });
        let records = samples
            .into_iter()
            .map(|s| {
                let mut batch = s.into_batch(source, received_at, &self.node);
                batch.file = file.take();
                batch.frame.clone_from(&frame);
                readings += batch.readings.len();
                OutRecord {
                    topic: Arc::clone(&self.readings_topic),
                    key: Bytes::from(batch.station_id.clone()),
                    payload: Bytes::from(batch.encode_to_vec()),
                }
            })
            .collect();
        Prepared {
            records,
            verdict: Verdict::Accepted { readings },
        }
    }

    /// A station notice (HJ 212 restart, status, device information): a
    /// `ReadingBatch` record holding only the notice, kept by the
    /// processor as a station event; answered as accepted.
    pub fn notice(
        &self,
        source: SourceProtocol,
        station: &str,
        mut notice: StationNotice,
    ) -> Prepared {
        notice.source = source as i32;
        notice.received_at = Some(to_timestamp(Utc::now()));
        let batch = ReadingBatch {
            station_id: station.to_owned(),
            readings: Vec::new(),
            ingest_node: self.node.to_string(),
            notices: vec![notice],
            file: None,
            frame: None,
        };
        Prepared {
            records: vec![OutRecord {
                topic: Arc::clone(&self.readings_topic),
                key: Bytes::from(station.to_owned()),
                payload: Bytes::from(batch.encode_to_vec()),
            }],
            verdict: Verdict::Accepted { readings: 0 },
        }
    }

    /// A `RejectedInput` record with the raw bytes and the reason; logged and
    /// counted here so every rejection path is seen the same way.
    pub fn reject(
        &self,
        source: SourceProtocol,
        origin: &str,
        station: &str,
        raw: &[u8],
        error: WireError,
    ) -> Prepared {
        tracing::warn!(source = source_label(source), origin, station, reason = error.reason, detail = %error.detail, "rejected input");
        self.status.rejected();
        metrics::counter!("ingest_rejected_total", "source" => source_label(source), "reason" => error.reason).increment(1);
        let record = RejectedInput {
            raw: raw.to_vec(),
            reason: error.reason.to_owned(),
            detail: error.detail.clone(),
            source: source as i32,
            station_id: station.to_owned(),
            origin: origin.to_owned(),
            received_at: Some(to_timestamp(Utc::now())),
            ingest_node: self.node.to_string(),
        };
        // Key by station when known so one station's rejections stay in
        // order; otherwise by origin.
        let key = if station.is_empty() { origin } else { station };
        Prepared {
            records: vec![OutRecord {
                topic: Arc::clone(&self.rejected_topic),
                key: Bytes::from(key.to_owned()),
                payload: Bytes::from(record.encode_to_vec()),
            }],
            verdict: Verdict::Rejected(error),
        }
    }

    /// Hands the records to Kafka; see [`Sink::send`].
    pub async fn publish(&self, prepared: &Prepared) -> Result<Acks, SinkError> {
        self.sink.send(&prepared.records).await
    }

    /// Hands the records of a failed delivery to Kafka again; see
    /// [`Sink::resend`].
    pub async fn republish(&self, prepared: &Prepared) -> Result<Acks, SinkError> {
        self.sink.resend(&prepared.records).await
    }

    pub fn sink(&self) -> &Sink {
        &self.sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_digest_does_not_depend_on_the_password_and_does_on_the_rest() {
        let a = frame_digest(
            b"##0101QN=1;ST=32;CN=2011;PW=secret-1;MN=S1;CP=&&w01018-Rtd=40&&",
            "x",
        );
        let b = frame_digest(
            b"##0101QN=1;ST=32;CN=2011;PW=other;MN=S1;CP=&&w01018-Rtd=40&&",
            "x",
        );
        let c = frame_digest(
            b"##0101QN=1;ST=32;CN=2011;PW=other;MN=S1;CP=&&w01018-Rtd=41&&",
            "x",
        );
        assert_eq!(a.sha256, b.sha256, "the secret is not in the digest");
        assert_ne!(b.sha256, c.sha256, "the value is");
        assert_eq!(a.size, 63);
        use sha2::Digest as _;
        assert_eq!(
            frame_digest(b"{\"station_id\":\"S1\"}", "x").sha256,
            sha2::Sha256::digest(b"{\"station_id\":\"S1\"}").to_vec(),
            "a frame without PW is hashed as it came"
        );
    }
}
