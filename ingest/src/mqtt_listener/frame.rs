//! Pure MQTT 3.1.1 framing that the listener needs before (or instead of)
//! rumqttc's codec: the fixed header, the head of a PUBLISH too large to
//! buffer, and the protocol of a CONNECT.
//!
//! Only `std` on purpose: `proto/fuzz/fuzz_targets/mqtt_publish_head_decode.rs`
//! includes this file with `#[path]`, so libFuzzer exercises exactly this
//! code without building ingest (and librdkafka) under sanitizers.

/// Packet type of a PUBLISH in the first byte's high nibble.
pub const PUBLISH: u8 = 3;
/// Packet type of a CONNECT.
pub const CONNECT: u8 = 1;

/// Why bytes are not an MQTT packet (the connection is then closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A remaining length of more than four bytes.
    BadRemainingLength,
    /// Not the packet type asked for.
    NotPublish,
    /// QoS bits 11.
    BadQos,
    /// The topic runs past the end of the packet.
    TopicPastEnd,
    /// The topic is not UTF-8.
    TopicNotUtf8,
    /// QoS 1 or 2 without room for the packet id, or a packet id 0.
    BadPacketId,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadRemainingLength => "remaining length longer than four bytes",
            Self::NotPublish => "not a PUBLISH packet",
            Self::BadQos => "QoS 3",
            Self::TopicPastEnd => "topic runs past the end of the packet",
            Self::TopicNotUtf8 => "topic is not UTF-8",
            Self::BadPacketId => "missing or zero packet id",
        })
    }
}

impl std::error::Error for FrameError {}

/// The fixed header: first byte and remaining length (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub byte1: u8,
    /// Bytes of the fixed header itself (2 to 5).
    pub len: usize,
    /// Bytes after the fixed header.
    pub remaining: usize,
}

impl FixedHeader {
    pub fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }

    /// The whole packet's length.
    pub fn frame_len(&self) -> usize {
        self.len + self.remaining
    }
}

/// The fixed header at the start of `buf`; `Ok(None)` until enough bytes
/// arrived to tell.
pub fn fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, FrameError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for (i, &b) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                byte1,
                len: i + 2,
                remaining,
            }));
        }
    }
    if buf.len() >= 5 {
        return Err(FrameError::BadRemainingLength);
    }
    Ok(None)
}

/// What the listener needs of a PUBLISH it will not buffer whole: enough to
/// reject it on the station's behalf and acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishHead {
    pub header: FixedHeader,
    pub qos: u8,
    pub dup: bool,
    pub retain: bool,
    pub topic: String,
    /// `None` for QoS 0.
    pub pkid: Option<u16>,
    /// Bytes from the start of the packet to the start of the payload.
    pub head_len: usize,
}

impl PublishHead {
    /// Bytes of payload.
    pub fn payload_len(&self) -> usize {
        self.header.frame_len() - self.head_len
    }
}

/// Parses the head of a PUBLISH from a prefix of it: the fixed header,
/// the topic and the packet id. `Ok(None)` until the prefix holds them all;
/// the payload need never be read.
pub fn publish_head(buf: &[u8]) -> Result<Option<PublishHead>, FrameError> {
    let Some(header) = fixed_header(buf)? else {
        return Ok(None);
    };
    if header.packet_type() != PUBLISH {
        return Err(FrameError::NotPublish);
    }
    let qos = (header.byte1 >> 1) & 0b11;
    if qos == 3 {
        return Err(FrameError::BadQos);
    }
    let end = header.frame_len();
    let at = header.len;
    if header.remaining < 2 {
        return Err(FrameError::TopicPastEnd);
    }
    let Some(len) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let topic_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let topic_end = at + 2 + topic_len;
    if topic_end > end {
        return Err(FrameError::TopicPastEnd);
    }
    let mut head_len = topic_end;
    let mut pkid = None;
    if qos > 0 {
        head_len += 2;
        if head_len > end {
            return Err(FrameError::BadPacketId);
        }
    }
    let Some(head) = buf.get(..head_len) else {
        return Ok(None);
    };
    let topic = std::str::from_utf8(&head[at + 2..topic_end])
        .map_err(|_| FrameError::TopicNotUtf8)?
        .to_owned();
    if qos > 0 {
        let id = u16::from_be_bytes([head[topic_end], head[topic_end + 1]]);
        if id == 0 {
            return Err(FrameError::BadPacketId);
        }
        pkid = Some(id);
    }
    Ok(Some(PublishHead {
        header,
        qos,
        dup: header.byte1 & 0b1000 != 0,
        retain: header.byte1 & 1 != 0,
        topic,
        pkid,
        head_len,
    }))
}

/// The protocol name and level of a complete CONNECT packet (§3.1.2.1-2),
/// read before rumqttc's parser, which refuses unknown levels without
/// saying which: the station must get CONNACK 0x01 for them.
pub fn connect_protocol(packet: &[u8]) -> Option<(&[u8], u8)> {
    let header = fixed_header(packet).ok()??;
    if header.packet_type() != CONNECT {
        return None;
    }
    let body = packet.get(header.len..header.frame_len())?;
    let n = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let name = body.get(2..2 + n)?;
    Some((name, *body.get(2 + n)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{Connect, Publish};

    fn encoded(topic: &str, qos: QoS, pkid: u16, payload: usize) -> Vec<u8> {
        let mut p = Publish::new(topic, qos, vec![b'x'; payload]);
        p.pkid = pkid;
        let mut buf = BytesMut::new();
        p.write(&mut buf).expect("encode");
        buf.to_vec()
    }

    #[test]
    fn fixed_headers() {
        assert_eq!(fixed_header(&[]), Ok(None));
        assert_eq!(fixed_header(&[0x30]), Ok(None));
        assert_eq!(fixed_header(&[0x30, 0x80, 0x80]), Ok(None));
        assert_eq!(
            fixed_header(&[0x32, 0xc1, 0x02]),
            Ok(Some(FixedHeader {
                byte1: 0x32,
                len: 3,
                remaining: 0x41 + (2 << 7),
            }))
        );
        assert_eq!(
            fixed_header(&[0x30, 0xff, 0xff, 0xff, 0x7f]).map(|h| h.map(|h| h.remaining)),
            Ok(Some(268_435_455))
        );
        assert_eq!(
            fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::BadRemainingLength)
        );
    }

    #[test]
    fn a_large_publish_head_is_read_from_its_first_bytes() {
        let bytes = encoded("stations/S1/readings", QoS::AtLeastOnce, 7, 300_000);
        let head = publish_head(&bytes[..40])
            .expect("valid")
            .expect("complete");
        assert_eq!(head.topic, "stations/S1/readings");
        assert_eq!(head.pkid, Some(7));
        assert_eq!(head.qos, 1);
        assert_eq!(head.payload_len(), 300_000);
        assert_eq!(head.header.frame_len(), bytes.len());
        // One byte short of the packet id: not yet.
        assert_eq!(publish_head(&bytes[..head.head_len - 1]), Ok(None));
    }

    #[test]
    fn malformed_heads_are_refused() {
        assert_eq!(publish_head(&[0x82, 0x02]), Err(FrameError::NotPublish));
        assert_eq!(publish_head(&[0x36, 0x02]), Err(FrameError::BadQos));
        // A topic longer than the packet.
        assert_eq!(
            publish_head(&[0x30, 0x03, 0x00, 0x05, b'a']),
            Err(FrameError::TopicPastEnd)
        );
        // QoS 1 with no room for the packet id, and with id 0.
        assert_eq!(
            publish_head(&[0x32, 0x03, 0x00, 0x01, b'a']),
            Err(FrameError::BadPacketId)
        );
        assert_eq!(
            publish_head(&[0x32, 0x05, 0x00, 0x01, b'a', 0, 0]),
            Err(FrameError::BadPacketId)
        );
        assert_eq!(
            publish_head(&[0x30, 0x03, 0x00, 0x01, 0xff]),
            Err(FrameError::TopicNotUtf8)
        );
    }

    #[test]
    fn connect_protocol_level() {
        let mut buf = BytesMut::new();
        Connect::new("c").write(&mut buf).expect("encode");
        assert_eq!(connect_protocol(&buf), Some((&b"MQTT"[..], 4)));
        buf[8] = 3;
        assert_eq!(connect_protocol(&buf), Some((&b"MQTT"[..], 3)));
        assert_eq!(connect_protocol(&buf[..5]), None);
    }

    proptest::proptest! {
        /// Against rumqttc's encoder: any topic, QoS, packet id and payload
        /// size; every prefix too short for the head says "more", every
        /// longer prefix gives back the topic, packet id and frame length.
        #[test]
        fn the_head_of_any_encoded_publish_is_recovered_from_a_prefix(
            topic in "\\PC{0,80}",
            qos in 0u8..3,
            pkid in 1u16..,
            payload in proptest::prop_oneof![
                0usize..200,
                100usize..20_000,
                2_097_000usize..2_097_300,
            ],
            extra in 0usize..64,
        ) {
            let q = match qos { 0 => QoS::AtMostOnce, 1 => QoS::AtLeastOnce, _ => QoS::ExactlyOnce };
            let bytes = encoded(&topic, q, pkid, payload);
            let head = publish_head(&bytes).expect("valid").expect("complete");
            proptest::prop_assert_eq!(&head.topic, &topic);
            proptest::prop_assert_eq!(head.pkid, (qos > 0).then_some(pkid));
            proptest::prop_assert_eq!(head.qos, qos);
            proptest::prop_assert_eq!(head.header.frame_len(), bytes.len());
            proptest::prop_assert_eq!(head.payload_len(), payload);
            for cut in 0..head.head_len {
                proptest::prop_assert_eq!(publish_head(&bytes[..cut]), Ok(None));
            }
            let cut = (head.head_len + extra).min(bytes.len());
            proptest::prop_assert_eq!(publish_head(&bytes[..cut]), Ok(Some(head)));
        }
    }
}
