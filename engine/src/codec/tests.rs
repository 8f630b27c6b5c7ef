//! The permutation, the check symbol, parsing and printing.

use std::collections::HashSet;
use std::hash::Hasher;

use proptest::prelude::*;
use siphasher::sip::SipHasher24;

use super::*;

/// A fixed key for tests: bytes 0..16.
fn test_key() -> CodeKey {
    CodeKey::from_bytes(std::array::from_fn(|i| i as u8))
}

fn codec(prefix: &str, length: u8) -> Codec {
    Codec::new(CodeFormat::new(prefix, length).unwrap(), &test_key())
}

/// Normalizes a printed code and decodes it with `codec`.
fn decode_printed(codec: &Codec, printed: &str) -> Result<u128, Malformed> {
    let mut buf = NormalizedBuf::new();
    normalize(printed, &mut buf).unwrap();
    let symbols = codec.format().strip_prefix(buf.as_bytes()).unwrap();
    codec.decode_body(symbols)
}

/// Deterministic indexes spread over `0..limit` (splitmix64).
fn spread(count: usize, limit: u128, seed: u64) -> impl Iterator<Item = u128> {
    let mut state = seed;
    (0..count).map(move |_| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let high = u128::from(z ^ (z >> 31));
        let low = u128::from(z.rotate_left(17) ^ 0xA5A5);
        ((high << 64) | low) % limit
    })
}

#[test]
fn format_validation() {
    #[track_caller]
    fn check(prefix: &str, length: u8, expected: Result<(), FormatError>) {
        let got = CodeFormat::new(prefix, length).map(|format| {
            assert_eq!(format.prefix(), prefix);
            assert_eq!(format.length(), length);
        });
        assert_eq!(got, expected);
    }
    check("", 6, Ok(()));
    check("SPR", 10, Ok(()));
    check("ABCDEFG9", 20, Ok(()));
    check("0I1O", 10, Ok(()));
    check(
        "ABCDEFGHJ",
        10,
        Err(FormatError::PrefixTooLong { given: 9, limit: 8 }),
    );
    check(
        "SpR",
        10,
        Err(FormatError::PrefixBadByte {
            position: 1,
            byte: b'p',
        }),
    );
    check(
        "A-B",
        10,
        Err(FormatError::PrefixBadByte {
            position: 1,
            byte: b'-',
        }),
    );
    check(
        "SPR",
        5,
        Err(FormatError::LengthOutOfRange {
            given: 5,
            min: 6,
            max: 20,
        }),
    );
    check(
        "SPR",
        21,
        Err(FormatError::LengthOutOfRange {
            given: 21,
            min: 6,
            max: 20,
        }),
    );
}

#[test]
fn format_sizes() {
    #[track_caller]
    fn check(prefix: &str, length: u8, space: u128, max_issued: u64, display_len: usize) {
        let format = CodeFormat::new(prefix, length).unwrap();
        assert_eq!(format.space(), space);
        assert_eq!(format.max_issued(), max_issued);
        assert_eq!(format.display_len(), display_len);
        assert!(format.guess_probability(max_issued) <= 1e-6);
        if let Some(over) = max_issued.checked_add(1) {
            assert!(format.guess_probability(over) > 1e-6);
        }
    }
    check("", 6, 1 << 30, 1073, 8);
    check("SPR", 10, 1 << 50, 1_125_899_906, 17);
    check("X", 12, 1 << 60, 1_152_921_504_606, 17);
    check("ABCDEFGH", 20, 1 << 100, u64::MAX, 34);
}

#[test]
fn key_debug_hides_the_bytes() {
    let key = CodeKey::from_bytes([0xAB; 16]);
    assert_eq!(format!("{key:?}"), "CodeKey(<redacted>)");
    let codec = Codec::new(CodeFormat::new("SPR", 10).unwrap(), &key);
    let shown = format!("{codec:?}");
    assert!(
        !shown.contains("171") && !shown.to_lowercase().contains("ab"),
        "{shown}"
    );
    assert_eq!(CodeKey::from_bytes(key.to_bytes()), key);
}

#[test]
fn display_grouping() {
    #[track_caller]
    fn check(prefix: &str, length: u8, pattern: &str) {
        let codec = codec(prefix, length);
        let code = codec.encode(7);
        assert_eq!(code.len(), pattern.len(), "{code}");
        assert_eq!(code.len(), codec.format().display_len());
        for (got, want) in code.bytes().zip(pattern.bytes()) {
            match want {
                b'#' => assert!(ALPHABET.contains(&got), "{code} against {pattern}"),
                _ => assert_eq!(got, want, "{code} against {pattern}"),
            }
        }
    }
    check("SPR", 10, "SPR-#####-#####-#");
    check("", 10, "#####-#####-#");
    check("", 6, "#####-##");
    check("A", 9, "A-#####-#####");
    check("Z9", 14, "Z9-#####-#####-#####");
    check("ABCDEFGH", 20, "ABCDEFGH-#####-#####-#####-#####-#");
}

#[test]
fn round_trips() {
    #[track_caller]
    fn check(prefix: &str, length: u8, index: u64) {
        let codec = codec(prefix, length);
        let code = codec.encode(index);
        assert_eq!(
            decode_printed(&codec, &code),
            Ok(u128::from(index)),
            "{code}"
        );
        let mut out = String::from(">");
        codec.encode_into(index, &mut out);
        assert_eq!(out, format!(">{code}"));
    }
    check("SPR", 10, 0);
    check("SPR", 10, 1);
    check("SPR", 10, 1_125_899_905);
    check("", 6, 0);
    check("", 6, (1 << 30) - 1);
    check("Q", 7, (1 << 35) - 1);
    check("ABCDEFGH", 12, u64::MAX >> 4);
    check("X1", 13, u64::MAX);
    check("X1", 20, u64::MAX);
}

#[test]
fn decode_inverts_encode_at_every_length() {
    for length in BODY_SYMBOLS_MIN..=BODY_SYMBOLS_MAX {
        let codec = codec("P", length);
        let limit = codec.format().space().min(u128::from(u64::MAX) + 1);
        let indexes = (0..200u128).chain(spread(2000, limit, u64::from(length)));
        for index in indexes {
            let index = u64::try_from(index).unwrap();
            let code = codec.encode(index);
            assert_eq!(
                decode_printed(&codec, &code),
                Ok(u128::from(index)),
                "{code}"
            );
        }
    }
}

#[test]
fn permutation_inverts_over_the_whole_space() {
    for length in BODY_SYMBOLS_MIN..=BODY_SYMBOLS_MAX {
        let codec = codec("", length);
        let space = codec.format().space();
        for value in spread(2000, space, 99).chain([0, space - 1]) {
            let permuted = codec.permute(value);
            assert!(permuted < space);
            assert_eq!(codec.unpermute(permuted), value);
        }
    }
}

#[test]
fn encode_has_no_collisions() {
    for (length, count) in [(6, 100_000), (7, 100_000), (10, 100_000), (20, 20_000)] {
        let codec = codec("", length);
        let mut seen = HashSet::with_capacity(count);
        for index in 0..count as u64 {
            assert!(seen.insert(codec.encode(index)), "collision at {index}");
        }
    }
}

#[test]
fn consecutive_indexes_look_unrelated() {
    // A counter in disguise would keep most leading symbols equal.
    let codec = codec("", 10);
    let mut same_first_symbol = 0;
    for index in 0..1000 {
        let a = codec.encode(index);
        let b = codec.encode(index + 1);
        same_first_symbol += usize::from(a.as_bytes()[0] == b.as_bytes()[0]);
    }
    // Expected 1000 / 32 ≈ 31.
    assert!(same_first_symbol < 80, "{same_first_symbol}");
}

#[test]
fn different_keys_give_different_codes() {
    let format = CodeFormat::new("SPR", 10).unwrap();
    let a = Codec::new(format, &test_key());
    let b = Codec::new(format, &CodeKey::from_bytes([7; 16]));
    let mut flipped = test_key().to_bytes();
    flipped[15] ^= 0x80;
    let c = Codec::new(format, &CodeKey::from_bytes(flipped));
    for index in 0..1000 {
        assert_ne!(a.encode(index), b.encode(index));
        assert_ne!(a.encode(index), c.encode(index));
        assert_ne!(decode_printed(&b, &a.encode(index)), Ok(u128::from(index)));
    }
}

#[test]
fn different_lengths_give_unrelated_codes() {
    // The length is in the round function's input, so a longer format
    // does not extend a shorter one's bodies.
    let short = codec("", 10);
    let long = codec("", 12);
    let shared_start = (0..1000)
        .filter(|&index| short.encode(index)[..5] == long.encode(index)[..5])
        .count();
    assert_eq!(shared_start, 0);
}

#[test]
fn malformed_bodies() {
    let codec = codec("SPR", 10);
    let good = decode_printed_symbols(&codec, 3);
    #[track_caller]
    fn check(codec: &Codec, symbols: &[u8], expected: Result<u128, Malformed>) {
        assert_eq!(codec.decode_body(symbols), expected);
    }
    check(&codec, &good, Ok(3));
    check(
        &codec,
        &good[..10],
        Err(Malformed::WrongLength {
            given: 10,
            expected: 11,
        }),
    );
    check(
        &codec,
        b"",
        Err(Malformed::WrongLength {
            given: 0,
            expected: 11,
        }),
    );
    let mut long = good.clone();
    long.push(b'2');
    check(
        &codec,
        &long,
        Err(Malformed::WrongLength {
            given: 12,
            expected: 11,
        }),
    );
    for (position, byte) in [
        (0, b'0'),
        (4, b'1'),
        (7, b'I'),
        (9, b'O'),
        (10, b'a'),
        (3, 0xC3),
    ] {
        let mut bad = good.clone();
        bad[position] = byte;
        check(&codec, &bad, Err(Malformed::BadSymbol { position, byte }));
    }
    let mut typo = good.clone();
    typo[2] = if typo[2] == b'2' { b'3' } else { b'2' };
    check(&codec, &typo, Err(Malformed::CheckMismatch));
}

/// The normalized symbols after the prefix of `index`'s code.
fn decode_printed_symbols(codec: &Codec, index: u64) -> Vec<u8> {
    let mut buf = NormalizedBuf::new();
    normalize(&codec.encode(index), &mut buf).unwrap();
    codec
        .format()
        .strip_prefix(buf.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn every_substitution_and_adjacent_swap_is_rejected() {
    for (length, codes) in [(6, 3000), (7, 2000), (10, 3000), (13, 1000), (20, 1000)] {
        let codec = codec("AB", length);
        let limit = codec.format().space().min(u128::from(u64::MAX));
        for index in spread(codes, limit, 7) {
            let symbols = decode_printed_symbols(&codec, u64::try_from(index).unwrap());
            assert_eq!(codec.decode_body(&symbols), Ok(index));
            let mut typo = symbols.clone();
            for position in 0..symbols.len() {
                for &other in ALPHABET.iter().filter(|&&s| s != symbols[position]) {
                    typo[position] = other;
                    assert_eq!(
                        codec.decode_body(&typo),
                        Err(Malformed::CheckMismatch),
                        "{:?} at {position}",
                        std::str::from_utf8(&typo)
                    );
                }
                typo[position] = symbols[position];
            }
            for position in 0..symbols.len() - 1 {
                if symbols[position] == symbols[position + 1] {
                    continue;
                }
                typo.swap(position, position + 1);
                assert_eq!(
                    codec.decode_body(&typo),
                    Err(Malformed::CheckMismatch),
                    "{:?} swapped at {position}",
                    std::str::from_utf8(&typo)
                );
                typo.swap(position, position + 1);
            }
        }
    }
}

#[test]
fn every_transposition_is_rejected() {
    // The proof in the module docs covers swaps at any distance.
    for length in [6, 11, 20] {
        let codec = codec("", length);
        let limit = codec.format().space().min(u128::from(u64::MAX));
        for index in spread(300, limit, 11) {
            let symbols = decode_printed_symbols(&codec, u64::try_from(index).unwrap());
            let mut typo = symbols.clone();
            for i in 0..symbols.len() {
                for j in i + 1..symbols.len() {
                    if symbols[i] == symbols[j] {
                        continue;
                    }
                    typo.swap(i, j);
                    assert_eq!(codec.decode_body(&typo), Err(Malformed::CheckMismatch));
                    typo.swap(i, j);
                }
            }
        }
    }
}

#[test]
fn normalization() {
    #[track_caller]
    fn check(input: &str, expected: Result<&str, NormalizeError>) {
        let mut buf = NormalizedBuf::new();
        let got = normalize(input, &mut buf).map(|()| buf.as_str());
        assert_eq!(got, expected);
    }
    check("SPR-7KQ2M-XP9TD-H", Ok("SPR7KQ2MXP9TDH"));
    check("spr-7kq2m-xp9td-h", Ok("SPR7KQ2MXP9TDH"));
    check(" spr 7kq2m  xp9td h ", Ok("SPR7KQ2MXP9TDH"));
    check("--a--", Ok("A"));
    check("import_Code_42", Ok("IMPORT_CODE_42"));
    check("tab\tkept", Ok("TAB\tKEPT"));
    check("çode-é", Ok("çODEé"));
    check("", Err(NormalizeError::Empty));
    check(" - -", Err(NormalizeError::Empty));
    check(&"a".repeat(64), Ok(&"A".repeat(64)));
    check(&"a-".repeat(64), Ok(&"A".repeat(64)));
    check(
        &"a".repeat(65),
        Err(NormalizeError::TooLong {
            given: 65,
            limit: 64,
        }),
    );
    check(
        &" ".repeat(257),
        Err(NormalizeError::InputTooLong {
            given: 257,
            limit: 256,
        }),
    );
}

#[test]
fn error_messages() {
    #[track_caller]
    fn check(error: &dyn std::error::Error, expected: &str) {
        assert_eq!(error.to_string(), expected);
    }
    check(
        &Malformed::WrongLength {
            given: 3,
            expected: 11,
        },
        "code has 3 symbols after its prefix, expected 11",
    );
    check(
        &Malformed::BadSymbol {
            position: 2,
            byte: b'O',
        },
        "code symbol 2 is 'O', which is not in the code alphabet",
    );
    check(
        &Malformed::CheckMismatch,
        "code check symbol does not match (a typo?)",
    );
    check(
        &FormatError::LengthOutOfRange {
            given: 3,
            min: 6,
            max: 20,
        },
        "code length 3 is outside 6..=20",
    );
    check(
        &NormalizeError::TooLong {
            given: 65,
            limit: 64,
        },
        "code is 65 characters long without hyphens and spaces, at most 64 are allowed",
    );
}

#[test]
fn known_answers_are_pinned() {
    #[track_caller]
    fn check(prefix: &str, length: u8, index: u64, expected: &str) {
        let codec = codec(prefix, length);
        assert_eq!(codec.encode(index), expected, "format version 1 changed");
        assert_eq!(decode_printed(&codec, expected), Ok(u128::from(index)));
    }
    check("SPR", 10, 0, "SPR-YD8MM-D6LB6-L");
    check("SPR", 10, 1, "SPR-UT4TS-VFYVR-A");
    check("SPR", 10, 123_456_789, "SPR-NVWLV-9HFFL-C");
    check("", 6, 0, "6FNAZ-BX");
    check("", 6, 1073, "9HPCD-GX");
    check("Q", 7, 42, "Q-F3CEN-53M");
    check("X1", 13, u64::MAX, "X1-A8SPR-7QVVR-449H");
    check(
        "ABCDEFGH",
        20,
        987_654_321,
        "ABCDEFGH-DJ4KF-T4F6B-WDMZ8-UERV4-H",
    );
}

#[test]
fn check_symbol_known_answers() {
    // Worked by hand: in GF(32) with α^5 = α^2 + 1, α^10 = α^4 + 1 = 17
    // ('K') and α^1 = 2 ('4'); an all-zero body has check 0 ('2').
    #[track_caller]
    fn check(symbols: &str, accepted: bool) {
        let codec = codec("", 10);
        assert_eq!(
            codec.decode_body(symbols.as_bytes()).is_ok(),
            accepted,
            "{symbols}"
        );
    }
    check("22222222222", true);
    check("3222222222K", true);
    check("22222222234", true);
    check("3222222222Z", false);
    check("22222222233", false);
}

/// The construction transcribed from the module docs, as plainly as
/// possible: whole-message SipHash, explicit powers of α, no tables.
fn reference_encode(key: &[u8; 16], prefix: &str, n: u8, index: u128) -> String {
    fn gf32_mul(a: u8, b: u8) -> u8 {
        let mut product = 0u16;
        for bit in 0..5 {
            if b >> bit & 1 == 1 {
                product ^= u16::from(a) << bit;
            }
        }
        for bit in (5..10).rev() {
            if product >> bit & 1 == 1 {
                product ^= 0b10_0101 << (bit - 5);
            }
        }
        product as u8
    }
    fn alpha_pow(exponent: usize) -> u8 {
        (0..exponent).fold(1, |acc, _| gf32_mul(acc, 0b10))
    }
    let k = (5 * u32::from(n)).div_ceil(2);
    let mask = (1u128 << k) - 1;
    let f = |r: u8, x: u128| -> u128 {
        let mut message = b"RDMC".to_vec();
        message.extend([FORMAT_VERSION, n, r, 0]);
        message.extend(u64::try_from(x).unwrap().to_le_bytes());
        let mut hasher = SipHasher24::new_with_key(key);
        hasher.write(&message);
        u128::from(hasher.finish()) & mask
    };
    let e = |x: u128| -> u128 {
        let (mut l, mut r) = (x >> k, x & mask);
        for round in 0..8 {
            (l, r) = (r, l ^ f(round, r));
        }
        (l << k) + r
    };
    let space = 32u128.pow(u32::from(n));
    let mut y = e(index);
    while y >= space {
        y = e(y);
    }
    let digits: Vec<u8> = (0..n)
        .rev()
        .map(|i| (y / 32u128.pow(u32::from(i)) % 32) as u8)
        .collect();
    let n = usize::from(n);
    let check = (0..n).fold(0, |acc, i| acc ^ gf32_mul(alpha_pow(n - i), digits[i]));
    let symbols: Vec<char> = digits
        .iter()
        .chain([&check])
        .map(|&v| char::from(ALPHABET[usize::from(v)]))
        .collect();
    let groups: Vec<String> = symbols.chunks(5).map(|c| c.iter().collect()).collect();
    let body = groups.join("-");
    if prefix.is_empty() {
        body
    } else {
        format!("{prefix}-{body}")
    }
}

#[test]
fn matches_the_reference_model() {
    let keys = [test_key(), CodeKey::from_bytes([0xFF; 16])];
    for key in &keys {
        for length in BODY_SYMBOLS_MIN..=BODY_SYMBOLS_MAX {
            let codec = Codec::new(CodeFormat::new("REF", length).unwrap(), key);
            let limit = codec.format().space().min(u128::from(u64::MAX));
            for index in (0..20).chain(spread(100, limit, 3)) {
                let expected = reference_encode(&key.to_bytes(), "REF", length, index);
                let index = u64::try_from(index).unwrap();
                assert_eq!(codec.encode(index), expected.as_str(), "length {length}");
            }
        }
    }
}

/// SipHash-2-4 of `tweak || x` by the general `siphasher` crate, the way
/// the round function was computed before it was specialised.
fn general_siphash(key: &[u8; 16], tweak: [u8; 8], x: u64) -> u64 {
    let mut hasher = SipHasher24::new_with_key(key);
    hasher.write(&tweak);
    hasher.write(&x.to_le_bytes());
    hasher.finish()
}

/// Deterministic 64-bit words (splitmix64).
fn words(seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

#[test]
fn round_key_matches_siphash() {
    // Many random keys, tweaks and half blocks, and the edge values.
    let mut random = words(0x5EED);
    let mut next = move || random.next().expect("endless");
    let mut keys: Vec<[u8; 16]> = vec![[0; 16], [0xFF; 16], test_key().to_bytes()];
    keys.extend((0..200).map(|_| {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&next().to_le_bytes());
        key[8..].copy_from_slice(&next().to_le_bytes());
        key
    }));
    for key in &keys {
        for round in 0..FEISTEL_ROUNDS as u8 {
            let length = BODY_SYMBOLS_MIN + round % (BODY_SYMBOLS_MAX - BODY_SYMBOLS_MIN + 1);
            let tweak = [b'R', b'D', b'M', b'C', FORMAT_VERSION, length, round, 0];
            let other = next().to_le_bytes();
            for tweak in [tweak, other] {
                let round_key = RoundKey::new(key, tweak);
                for x in [0, 1, u64::MAX, 1 << 63]
                    .into_iter()
                    .chain((0..64).map(|_| next()))
                {
                    assert_eq!(round_key.hash(x), general_siphash(key, tweak, x));
                }
            }
        }
    }
}

#[test]
fn known_answers_of_other_keys_are_pinned() {
    // Cycle-walking (odd) and even lengths under keys other than the test
    // key; the expected codes were computed by `reference_encode` (the
    // general SipHash) and must never change.
    #[track_caller]
    fn check(key: [u8; 16], prefix: &str, length: u8, index: u64, expected: &str) {
        let key = CodeKey::from_bytes(key);
        let codec = Codec::new(CodeFormat::new(prefix, length).unwrap(), &key);
        assert_eq!(codec.encode(index), expected, "format version 1 changed");
        assert_eq!(decode_printed(&codec, expected), Ok(u128::from(index)));
    }
    check([0xFF; 16], "", 7, 0, "VM37J-ZLT");
    check([0xFF; 16], "Z", 9, 77, "Z-PMXHD-C3PYP");
    check([0x3C; 16], "B", 10, 999_999, "B-RDK8H-6SWZH-8");
    check([0x3C; 16], "", 11, 5, "DDUBX-HG6LQ-SW");
    check([0xA5; 16], "P2", 15, 1 << 40, "P2-GGH3N-B26U3-L9AMU-D");
    check([0xA5; 16], "", 19, u64::MAX, "U9YBR-8E5FD-RXHJC-6ZCCF");
}

proptest! {
    #[test]
    fn decode_never_panics(length in BODY_SYMBOLS_MIN..=BODY_SYMBOLS_MAX,
                           bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
        let codec = codec("", length);
        if let Ok(index) = codec.decode_body(&bytes) {
            prop_assert!(index < codec.format().space());
        }
    }

    #[test]
    fn a_decoded_body_is_exactly_that_code(length in BODY_SYMBOLS_MIN..=BODY_SYMBOLS_MAX,
                                          values in proptest::collection::vec(0..32usize, 21)) {
        // Random symbols pass the check one time in 32; when they do,
        // they must be the one code of the decoded index.
        let codec = codec("", length);
        let symbols: Vec<u8> = values[..=usize::from(length)]
            .iter()
            .map(|&v| ALPHABET[v])
            .collect();
        if let Ok(index) = codec.decode_body(&symbols) {
            prop_assert!(index < codec.format().space());
            if let Ok(index) = u64::try_from(index) {
                prop_assert_eq!(decode_printed_symbols(&codec, index), symbols);
            }
        }
    }

    #[test]
    fn normalize_never_panics(input in ".{0,300}") {
        let mut buf = NormalizedBuf::new();
        if normalize(&input, &mut buf).is_ok() {
            prop_assert!(!buf.as_str().contains(['-', ' ']));
            prop_assert!(!buf.as_bytes().iter().any(u8::is_ascii_lowercase));
        }
    }

    #[test]
    fn round_key_matches_siphash_on_any_input(k0 in any::<u64>(), k1 in any::<u64>(),
                                              tweak in any::<u64>(), x in any::<u64>()) {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&k0.to_le_bytes());
        key[8..].copy_from_slice(&k1.to_le_bytes());
        let tweak = tweak.to_le_bytes();
        prop_assert_eq!(RoundKey::new(&key, tweak).hash(x), general_siphash(&key, tweak, x));
    }

    #[test]
    fn permutation_round_trips(length in BODY_SYMBOLS_MIN..=BODY_SYMBOLS_MAX,
                               raw in any::<u128>()) {
        let codec = codec("", length);
        let value = raw % codec.format().space();
        let permuted = codec.permute(value);
        prop_assert!(permuted < codec.format().space());
        prop_assert_eq!(codec.unpermute(permuted), value);
    }
}
