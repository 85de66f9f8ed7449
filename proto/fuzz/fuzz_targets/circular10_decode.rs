//! Any bytes as a Circular 10 record and as a file name.
#![no_main]

use chrono::FixedOffset;
use libfuzzer_sys::fuzz_target;
use quantrac_proto::wire::circular10;

fuzz_target!(|data: &[u8]| {
    let Some(offset) = FixedOffset::east_opt(7 * 3600) else {
        return;
    };
    match circular10::decode_record(data, "S", offset) {
        Ok(samples) => {
            assert!(!samples.is_empty());
            for s in &samples {
                assert!(!s.values.is_empty() && s.values.iter().all(|v| v.value.is_finite()));
                // Whatever decodes, our encoding of it decodes to the same
                // (sub-second parts cannot occur: the format has none).
                let again =
                    circular10::decode_record(&circular10::encode_record(s, offset), "S", offset);
                let mut expected = s.clone();
                for v in &mut expected.values {
                    v.device_flag = v.status.circular10_code().to_owned();
                }
                // Units or codes with inner spaces only survive tab mode,
                // which the encoder always uses.
                assert_eq!(again, Ok(vec![expected]));
            }
        }
        Err(e) => assert!(e.reason.starts_with("circular10."), "{}", e.reason),
    }
    if let Ok(name) = std::str::from_utf8(data) {
        match circular10::parse_file_name(name) {
            Ok(f) => {
                let again = circular10::parse_file_name(&circular10::file_name(
                    &f.province,
                    &f.facility,
                    &f.station,
                    f.time,
                ));
                assert_eq!(again, Ok(f));
            }
            Err(e) => assert!(e.reason.starts_with("circular10."), "{}", e.reason),
        }
    }
});
