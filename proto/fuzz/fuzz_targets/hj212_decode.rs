//! Any bytes as an HJ 212 frame, and the same bytes framed with a correct
//! length and CRC so the field and CP parsers are reached too. Whatever
//! decodes must re-encode to a frame that decodes to the same packet.
#![no_main]

use chrono::FixedOffset;
use libfuzzer_sys::fuzz_target;
use quantrac_proto::wire::hj212;

fn check(frame: &[u8]) {
    let p = match hj212::decode(frame) {
        Ok(p) => p,
        Err(e) => return assert!(e.reason.starts_with("hj212."), "{}", e.reason),
    };
    let headers = [&p.qn, &p.st, &p.cn, &p.pw, &p.mn];
    let encoded = hj212::encode(&p);
    // A header value holding "CP=&&" would be taken for CP: not canonical.
    if encoded.len() <= hj212::MAX_DATA_LEN + 12 && !headers.iter().any(|h| h.contains("CP=&&")) {
        assert_eq!(hj212::decode(&encoded).as_ref(), Ok(&p));
    }
    let Some(offset) = FixedOffset::east_opt(7 * 3600) else {
        return;
    };
    // A notice is exactly a notice command, whatever its segment holds.
    assert_eq!(p.notice(offset).is_some(), p.is_notice());
    match p.sample(offset) {
        Ok(s) => assert!(!s.values.is_empty() && s.values.iter().all(|v| v.value.is_finite())),
        Err(e) => assert!(e.reason.starts_with("hj212."), "{}", e.reason),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() <= hj212::MAX_DATA_LEN {
        let mut frame = format!("##{:04}", data.len()).into_bytes();
        frame.extend_from_slice(data);
        frame.extend_from_slice(format!("{:04X}\r\n", hj212::crc16(data)).as_bytes());
        check(&frame);
    }
});
