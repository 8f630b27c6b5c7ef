//! `Record::decode` on arbitrary (kind, payload).
//!
//! Reference check: decoding never panics, and whatever decodes is the
//! canonical encoding of its record: `encode(decode(payload)) == payload`
//! with the same kind byte. So no two payloads mean the same record, and
//! replay never accepts bytes that the writer could not have produced. A
//! short payload's strict prefixes must fail to decode, except where the
//! format has trailing fields (written last, only when not at their
//! default, so older logs still decode): such a prefix may decode, but
//! only canonically, as the record with those fields at their defaults.
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
            let prefix = &payload[..cut];
            if let Ok(shorter) = Record::decode(kind, prefix) {
                let mut again = Vec::new();
                shorter.encode(&mut again);
                assert_eq!(
                    again, prefix,
                    "a strict prefix ({cut} of {} bytes) decodes non-canonically",
                    payload.len()
                );
                assert_ne!(shorter, record, "a strict prefix means the same record");
            }
        }
    }
});
