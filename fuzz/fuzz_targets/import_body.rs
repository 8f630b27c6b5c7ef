//! A `text/plain` code import: arbitrary bytes, split into lines the way
//! the server's `LineFeeder` does, fed to a real `Importer` of a fresh
//! `Engine<MemoryJournal>`.
//!
//! The engine holds campaign `a` (prefix `A`, three generated codes, two
//! imported) and campaign `b` (prefix `B`, the same), all replayed from
//! records with fixed keys so every run is the same. The body goes into
//! `a`.
//!
//! Reference model: a `HashSet` re-implementation of API.md's import rules
//! (a line loses one trailing `\r`; blank lines are ignored; a code is
//! 1..=64 chars of `[A-Za-z0-9_-]`, matched after uppercasing and dropping
//! hyphens, and must not normalize to nothing; a code already in `a` or
//! earlier in the body is a duplicate; one in `b` is rejected as
//! `exists_in_other_campaign`). It must predict `added`, `duplicates`,
//! `rejected_total`, the first 100 rejected lines with their reasons, and
//! `total` exactly. Then the journal must hold exactly the added codes in
//! body order, in `CodesImported` records with consecutive slots, and each
//! added code must resolve to campaign `a`.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use redeem_engine::codec::{CodeFormat, CodeKey, Codec, NormalizedBuf, normalize};
use redeem_engine::{CampaignSpec, Config, Engine, MemoryJournal, Record, Timestamp};

const T0: Timestamp = Timestamp(1_800_000_000_000);
const KEY_A: [u8; 16] = *b"import-fuzz-keyA";
const KEY_B: [u8; 16] = *b"import-fuzz-keyB";
const GENERATED: u64 = 3;
const IMPORTED_A: [&str; 2] = ["OLD_A", "SHARED_NAME1"];
const IMPORTED_B: [&str; 2] = ["OLD_B", "SHARED_NAME2"];
/// Rejected lines an import report lists (API.md: the first 100).
const REJECTS_LISTED: usize = 100;

fn spec(id: &str, prefix: &str) -> CampaignSpec {
    CampaignSpec {
        id: id.into(),
        generate: GENERATED,
        prefix: prefix.into(),
        length: 10,
        ..CampaignSpec::default()
    }
}

/// Normalized generated codes of a campaign, from the codec directly.
fn generated(prefix: &str, key: [u8; 16]) -> Vec<String> {
    let codec = Codec::new(
        CodeFormat::new(prefix, 10).unwrap(),
        &CodeKey::from_bytes(key),
    );
    (0..GENERATED)
        .map(|index| {
            let mut buf = NormalizedBuf::new();
            normalize(&codec.encode(index), &mut buf).unwrap();
            buf.as_str().to_owned()
        })
        .collect()
}

fn engine() -> Engine<MemoryJournal> {
    let engine = Engine::new(
        MemoryJournal::default(),
        Config::default(),
        Box::new(|_| (200, Vec::new())),
    );
    let records = [
        Record::CampaignCreated {
            at: T0,
            campaign: 1,
            key: KEY_A,
            spec: spec("a", "A"),
            idem: None,
        },
        Record::CampaignCreated {
            at: T0,
            campaign: 2,
            key: KEY_B,
            spec: spec("b", "B"),
            idem: None,
        },
        Record::CodesImported {
            at: T0,
            campaign: 1,
            first: 0,
            codes: IMPORTED_A.to_vec(),
        },
        Record::CodesImported {
            at: T0,
            campaign: 2,
            first: 0,
            codes: IMPORTED_B.to_vec(),
        },
    ];
    for (lsn, record) in (1..).zip(&records) {
        engine.apply_replayed(lsn, record).expect("setup replays");
    }
    engine
}

/// What the model predicts for a body.
#[derive(Debug, Default, PartialEq)]
struct Prediction {
    added: Vec<String>,
    duplicates: u64,
    rejected: Vec<(u64, &'static str)>,
    rejected_total: u64,
}

fn model(lines: &[String], in_a: &HashSet<String>, in_b: &HashSet<String>) -> Prediction {
    let mut out = Prediction::default();
    let mut seen = HashSet::new();
    let reject = |out: &mut Prediction, line_no: u64, reason| {
        out.rejected_total += 1;
        if out.rejected.len() < REJECTS_LISTED {
            out.rejected.push((line_no, reason));
        }
    };
    for (line_no, line) in (1..).zip(lines) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.chars().all(char::is_whitespace) {
            continue;
        }
        let valid = (1..=64).contains(&line.len())
            && line
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            reject(&mut out, line_no, "invalid_code");
            continue;
        }
        let normalized: String = line.replace('-', "").to_uppercase();
        if normalized.is_empty() {
            reject(&mut out, line_no, "invalid_code");
        } else if in_a.contains(&normalized) || seen.contains(&normalized) {
            out.duplicates += 1;
        } else if in_b.contains(&normalized) {
            reject(&mut out, line_no, "exists_in_other_campaign");
        } else {
            seen.insert(normalized.clone());
            out.added.push(normalized);
        }
    }
    out
}

/// The body's lines as `LineFeeder` hands them over: split at `\n`, a
/// last line without one kept unless empty, invalid UTF-8 replaced.
fn lines(body: &[u8]) -> Vec<String> {
    let mut parts: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if parts.last().is_some_and(|last| last.is_empty()) {
        parts.pop();
    }
    parts
        .into_iter()
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect()
}

fuzz_target!(|body: &[u8]| {
    let engine = engine();
    let lines = lines(body);
    let in_a: HashSet<String> = IMPORTED_A
        .iter()
        .map(|s| s.to_string())
        .chain(generated("A", KEY_A))
        .collect();
    let in_b: HashSet<String> = IMPORTED_B
        .iter()
        .map(|s| s.to_string())
        .chain(generated("B", KEY_B))
        .collect();
    let expected = model(&lines, &in_a, &in_b);

    let mut importer = engine.importer("a").expect("campaign a exists");
    for (line_no, line) in (1..).zip(&lines) {
        importer
            .push(line_no, line, T0)
            .expect("a memory journal takes it");
    }
    let report = importer.finish(T0).expect("a memory journal takes it");

    let got = Prediction {
        added: Vec::new(),
        duplicates: report.duplicates,
        rejected: report.rejected.clone(),
        rejected_total: report.rejected_total,
    };
    let added = expected.added;
    let want = Prediction {
        added: Vec::new(),
        ..expected
    };
    assert_eq!(got, want, "report {report:?} for {lines:?}");
    assert_eq!(report.added, added.len() as u64, "added, for {lines:?}");
    let before = GENERATED + IMPORTED_A.len() as u64;
    assert_eq!(report.total, before + report.added, "total");

    // The journal holds exactly the added codes, in order, slot after slot.
    let mut logged = Vec::new();
    let mut next_slot = IMPORTED_A.len() as u64;
    for (_, kind, payload) in engine.journal().records() {
        match Record::decode(kind, &payload).expect("the engine's records decode") {
            Record::CodesImported {
                campaign: 1,
                first,
                codes,
                ..
            } => {
                assert_eq!(first, next_slot, "slots not consecutive");
                next_slot += codes.len() as u64;
                logged.extend(codes.into_iter().map(str::to_owned));
            }
            other => panic!("unexpected record {other:?}"),
        }
    }
    assert_eq!(logged, added, "journal");
    for code in &added {
        let found = engine.resolve(code).expect("an added code resolves");
        assert_eq!(found.campaign.id(), "a");
    }
});
