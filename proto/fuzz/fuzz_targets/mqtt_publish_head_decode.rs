//! Any bytes as the head of an MQTT PUBLISH too large to buffer, which
//! ingest's MQTT listener reads (fixed header, topic, packet id) and then
//! discards as it streams in; and as a CONNECT whose protocol it checks.
//!
//! The parser is ingest's own file, included by path: it uses only `std`,
//! so this target builds without ingest, whose librdkafka would have to be
//! built under the sanitizers too. Its property test against rumqttc's
//! encoder stays in ingest (`cargo test --lib -- mqtt_listener::frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../../ingest/src/mqtt_listener/frame.rs"]
mod frame;

fuzz_target!(|data: &[u8]| {
    let _ = frame::connect_protocol(data);
    if let Ok(Some(h)) = frame::publish_head(data) {
        assert!(h.head_len <= data.len() && h.head_len <= h.header.frame_len());
        assert_eq!(h.pkid.is_some(), h.qos > 0);
        assert!(h.qos < 3 && h.pkid != Some(0));
        // The head alone is enough; one byte less is not (never an error).
        assert_eq!(frame::publish_head(&data[..h.head_len]), Ok(Some(h.clone())));
        assert_eq!(frame::publish_head(&data[..h.head_len - 1]), Ok(None));
        // The topic is where the head says.
        let at = h.header.len + 2;
        assert_eq!(&data[at..at + h.topic.len()], h.topic.as_bytes());
    }
});
