//! `Record::decode` on arbitrary (kind, payload).
//!
//! Reference check: decoding never panics, and whatever decodes is the
//! canonical encoding of its record: `encode(decode(payload)) == payload`
//! with the same kind byte. So no two payloads mean the same record, and
//! replay never accepts bytes that the writer could not have produced. A
//! short payload's strict prefixes must all fail to decode (no record is a
//! prefix of another of its kind).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redeem_engine::Record;

/// Payloads up to this length also have every strict prefix checked.
const PREFIX_CHECK_BYTES_MAX: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let Ok(record) = Record::decode(kind, payload) else {
        return;
    };
    assert_eq!(record.kind() as u8, kind, "decoded into another kind");
    let mut encoded = Vec::with_capacity(payload.len());
    record.encode(&mut encoded);
    assert_eq!(
        encoded, payload,
        "not canonical: {record:?} re-encodes differently"
    );
    if payload.len() <= PREFIX_CHECK_BYTES_MAX {
        for cut in 0..payload.len() {
            assert!(
                Record::decode(kind, &payload[..cut]).is_err(),
                "a strict prefix ({cut} of {} bytes) also decodes",
                payload.len()
            );
        }
    }
});
