//! Reading a printed code: `normalize`, `CodeFormat::strip_prefix` and
//! `Codec::decode_body`, for a fixed key and one of a few formats.
//!
//! Reference checks, against a plain transcription of the rules in
//! API.md and `engine/src/codec.rs`:
//! - `normalize` equals the model (ASCII letters uppercased, `-` and ` `
//!   dropped, at most 256 input bytes and 64 output bytes, not empty), and
//!   is idempotent;
//! - `decode_body` accepts exactly the inputs of the right length, all in
//!   the alphabet, whose check symbol matches the GF(32) syndrome computed
//!   here from scratch; its error names the first bad symbol;
//! - a decoded index is in the code space, and re-encoding it gives back
//!   exactly the normalized input;
//! - every single-symbol substitution and every adjacent swap of a decoded
//!   code fails with `CheckMismatch`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redeem_engine::codec::{
    ALPHABET, CodeFormat, CodeKey, Codec, Malformed, NormalizeError, NormalizedBuf, normalize,
};

/// The formats tried: the first input byte picks one.
const FORMATS: [(&str, u8); 4] = [("SPR", 10), ("", 6), ("Q", 7), ("ABCDEFGH", 20)];

fn codecs() -> &'static [Codec] {
    static CODECS: std::sync::OnceLock<Vec<Codec>> = std::sync::OnceLock::new();
    CODECS.get_or_init(|| {
        let key = CodeKey::from_bytes(*b"redeemd-fuzz-key");
        FORMATS
            .iter()
            .map(|&(prefix, length)| Codec::new(CodeFormat::new(prefix, length).unwrap(), &key))
            .collect()
    })
}

/// The normalization of API.md, written out.
fn model_normalize(input: &str) -> Result<Vec<u8>, NormalizeError> {
    if input.len() > 256 {
        return Err(NormalizeError::InputTooLong {
            given: input.len(),
            limit: 256,
        });
    }
    let kept: Vec<u8> = input
        .bytes()
        .filter(|&b| b != b'-' && b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if kept.len() > 64 {
        return Err(NormalizeError::TooLong {
            given: kept.len(),
            limit: 64,
        });
    }
    if kept.is_empty() {
        return Err(NormalizeError::Empty);
    }
    Ok(kept)
}

/// `a * b` in GF(2^5) modulo `x^5 + x^2 + 1`, bit by bit.
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

/// What `decode_body` must say about `symbols`, short of the index: the
/// check is `Σ α^(n-i) · s_i == 0` over body and check symbol.
fn model_decode(symbols: &[u8], length: usize) -> Result<(), Malformed> {
    if symbols.len() != length + 1 {
        return Err(Malformed::WrongLength {
            given: symbols.len(),
            expected: length + 1,
        });
    }
    let mut values = Vec::with_capacity(symbols.len());
    for (position, &byte) in symbols.iter().enumerate() {
        match ALPHABET.iter().position(|&s| s == byte) {
            Some(v) => values.push(v as u8),
            None => return Err(Malformed::BadSymbol { position, byte }),
        }
    }
    let mut syndrome = 0u8;
    for (i, &value) in values.iter().enumerate() {
        let weight = (0..length - i).fold(1, |acc, _| gf32_mul(acc, 2));
        syndrome ^= gf32_mul(weight, value);
    }
    if syndrome == 0 {
        Ok(())
    } else {
        Err(Malformed::CheckMismatch)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let codec = &codecs()[usize::from(pick) % FORMATS.len()];
    let input = String::from_utf8_lossy(rest);

    let mut buf = NormalizedBuf::new();
    let normalized = normalize(&input, &mut buf);
    let expected = model_normalize(&input);
    assert_eq!(
        normalized.map(|()| buf.as_bytes().to_vec()),
        expected,
        "normalize({input:?})"
    );
    if normalized.is_err() {
        return;
    }
    let mut again = NormalizedBuf::new();
    normalize(buf.as_str(), &mut again).expect("normalized input normalizes");
    assert_eq!(
        again.as_bytes(),
        buf.as_bytes(),
        "normalize is not idempotent"
    );

    let Some(symbols) = codec.format().strip_prefix(buf.as_bytes()) else {
        return;
    };
    let length = usize::from(codec.format().length());
    let decoded = codec.decode_body(symbols);
    assert_eq!(
        decoded.map(|_| ()),
        model_decode(symbols, length),
        "decode_body({:?})",
        String::from_utf8_lossy(symbols)
    );
    let Ok(index) = decoded else {
        return;
    };
    assert!(
        index < codec.format().space(),
        "index outside the code space"
    );
    if let Ok(index) = u64::try_from(index) {
        let mut printed = NormalizedBuf::new();
        normalize(&codec.encode(index), &mut printed).expect("a printed code normalizes");
        assert_eq!(
            printed.as_bytes(),
            buf.as_bytes(),
            "re-encoding index {index} gives another code"
        );
    }

    let mut typo = symbols.to_vec();
    for position in 0..typo.len() {
        let original = typo[position];
        for &other in ALPHABET.iter().filter(|&&s| s != original) {
            typo[position] = other;
            assert_eq!(
                codec.decode_body(&typo),
                Err(Malformed::CheckMismatch),
                "substitution at {position} accepted"
            );
        }
        typo[position] = original;
        if position + 1 < typo.len() && typo[position] != typo[position + 1] {
            typo.swap(position, position + 1);
            assert_eq!(
                codec.decode_body(&typo),
                Err(Malformed::CheckMismatch),
                "swap at {position} accepted"
            );
            typo.swap(position, position + 1);
        }
    }
});
