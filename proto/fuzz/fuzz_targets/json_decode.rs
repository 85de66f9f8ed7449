//! Any bytes as a JSON sample, with and without a station from the
//! transport. Whatever decodes must re-encode and decode to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quantrac_proto::wire::json;

fuzz_target!(|data: &[u8]| {
    for station in [None, Some("S")] {
        match json::decode(data, station) {
            Ok(s) => {
                assert!(!s.values.is_empty() && s.values.iter().all(|v| v.value.is_finite()));
                assert_eq!(json::decode(&json::encode(&s), None), Ok(s));
            }
            Err(e) => assert!(e.reason.starts_with("json."), "{}", e.reason),
        }
    }
});
