//! The generated-code format: a keyed permutation of a code's index, written
//! in a 32-symbol alphabet and closed by one check symbol.
//!
//! A campaign that generates `issued` codes hands out the codes of indexes
//! `0..issued`. The code of index `i` is `encode(i)`, and reading a code back
//! gives its index, which the caller compares with `issued`; there is no
//! table. Without the campaign's [`CodeKey`] the codes look uniformly random
//! over the whole code space, so the index order cannot be seen in them.
//!
//! # Printed form
//!
//! `PREFIX-` (only when the campaign's prefix is not empty), then `length`
//! body symbols and one check symbol, grouped by hyphens in fives:
//! prefix `SPR`, length 10 prints as `SPR-7KQ2M-XP9TD-H`. The alphabet is
//! [`ALPHABET`], `23456789ABCDEFGHJKLMNPQRSTUVWXYZ` (no `0`, `1`, `I`, `O`);
//! symbol `ALPHABET[v]` has the value `v` in `0..32`, five bits.
//!
//! Input is read after [`normalize`]: ASCII letters uppercased, hyphens and
//! spaces dropped. [`CodeFormat::strip_prefix`] takes off the prefix and
//! [`Codec::decode_body`] reads the rest.
//!
//! # Construction, format version 1
//!
//! This is [`FORMAT_VERSION`] 1. Codes are persisted outside redeemd (printed
//! on vouchers, mailed), so every detail below is fixed forever; the
//! known-answer test `known_answers_are_pinned` fails if any of it changes,
//! and `matches_the_reference_model` checks the code against a direct
//! transcription of this text. A different construction needs a new version.
//!
//! Let `n` be the format's length (6..=20 body symbols), `k = ceil(5n / 2)`
//! (15..=50) and `K` the 16-byte campaign key.
//!
//! 1. **Round function.** For round `r` in `0..8` and a `k`-bit value `x`,
//!    `F(r, x)` is SipHash-2-4 keyed with `K` (`k0` = little-endian `u64` of
//!    `K[0..8]`, `k1` = of `K[8..16]`) over the 16-byte message
//!    `"RDMC" || FORMAT_VERSION || n || r || 0x00 || x as u64 little-endian`
//!    (the single bytes are `u8`), keeping the low `k` bits of the output.
//! 2. **Block cipher.** `E` permutes `[0, 2^(2k))`: split `x` into
//!    `L = x >> k` and `R = x mod 2^k`; for `r` in `0..8` in order, set
//!    `(L, R) = (R, L xor F(r, R))`; the result is `L * 2^k + R`. That is a
//!    balanced Feistel network of eight rounds. With `F` a pseudo-random
//!    function, four rounds already give a strong pseudo-random permutation
//!    (Luby–Rackoff), but only up to about `2^(k/2)` queries, which is small
//!    for the 15-bit halves of short formats; more rounds push the bound
//!    towards `2^k` (Patarin), hence eight. SipHash-2-4 rather than -1-3
//!    because it is the variant its authors put forward as a PRF.
//! 3. **Cycle walking.** The code space is `[0, 32^n)`. When `5n` is even
//!    it is exactly `E`'s domain; otherwise it is half of it, and
//!    `P(i) = E(i)`, repeated while the result is `>= 32^n`, is a permutation
//!    of the code space (`i` lies on its own cycle of `E`, so the walk ends).
//! 4. **Body.** `y = P(index)` is written in base 32 with `n` digits, most
//!    significant first, each digit `v` printed as `ALPHABET[v]`.
//! 5. **Check symbol.** Read the body symbol values `s_0 .. s_{n-1}` as
//!    elements of `GF(2^5) = GF(2)[x] / (x^5 + x^2 + 1)` (bit `j` of the value
//!    is the coefficient of `x^j`) and let `α` be the class of `x`. The check
//!    value is `s_n = Σ_{i<n} α^(n-i) · s_i`, so that a valid code satisfies
//!    `Σ_{i<=n} α^(n-i) · s_i = 0` (the check symbol has weight `α^0 = 1`).
//!
//! # Why every substitution and every swap is caught
//!
//! Call `w_i = α^(n-i)` the weight of position `i` (`0 <= i <= n`, the check
//! symbol included) and `S = Σ w_i · s_i` the syndrome; a valid code has
//! `S = 0`. `x^5 + x^2 + 1` is primitive, so `α` has multiplicative order 31:
//! every `w_i` is non-zero, and since the exponents `n - i` lie in `0..=20`,
//! all weights are pairwise distinct.
//!
//! - A substitution at `i` adds `e != 0` to `s_i` and changes `S` by `w_i · e`,
//!   a product of two non-zero field elements, hence non-zero.
//! - Swapping positions `i != j` holding `a != b` changes `S` by
//!   `w_i (b - a) + w_j (a - b) = (w_i + w_j)(a + b)` (characteristic 2:
//!   minus is plus). `a + b != 0` because `a != b`, and `w_i + w_j != 0`
//!   because the weights are distinct. So not only adjacent swaps but every
//!   transposition of two distinct symbols, the check symbol included, is
//!   detected.
//!
//! A code with either typo therefore fails [`Codec::decode_body`] with
//! [`Malformed::CheckMismatch`] before any lookup.
//!
//! # Guessing
//!
//! A random well-formed code of a campaign that issued `issued` codes is a
//! live code with probability `issued / 32^n`. The engine refuses campaigns
//! where that exceeds one in a million: see [`CodeFormat::max_issued`].

use std::fmt;
use std::ops::Deref;

/// Version of the construction documented in the module docs. It is part of
/// every round function input, so a future version yields unrelated codes.
pub const FORMAT_VERSION: u8 = 1;

/// The 32 symbols, in value order: symbol `ALPHABET[v]` has value `v`.
pub const ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Fewest body symbols a format may have (30 bits of code space).
pub const BODY_SYMBOLS_MIN: u8 = 6;
/// Most body symbols a format may have (100 bits of code space).
pub const BODY_SYMBOLS_MAX: u8 = 20;
/// Body symbols of a campaign that does not choose (50 bits of code space).
pub const BODY_SYMBOLS_DEFAULT: u8 = 10;
/// Longest campaign prefix, in bytes.
pub const PREFIX_BYTES_MAX: usize = 8;
/// Symbols per hyphen-separated group in the printed form.
pub const GROUP_SYMBOLS: usize = 5;
/// Longest printed code: prefix, its hyphen, body and check symbol, and the
/// hyphens between groups of five.
pub const CODE_BYTES_MAX: usize = PREFIX_BYTES_MAX
    + 1
    + (BODY_SYMBOLS_MAX as usize + 1)
    + BODY_SYMBOLS_MAX as usize / GROUP_SYMBOLS;
/// Longest normalized input: imported codes are at most 64 characters, and a
/// generated one is at most `PREFIX_BYTES_MAX + BODY_SYMBOLS_MAX + 1`.
pub const NORMALIZED_BYTES_MAX: usize = 64;
/// Longest raw input [`normalize`] reads, in bytes, hyphens and spaces
/// included; it bounds the work done on hostile input.
pub const INPUT_BYTES_MAX: usize = 256;
/// Code space per issued code below which a campaign is refused: a guessed
/// code may be live with probability at most one in a million.
pub const SPACE_PER_ISSUED_MIN: u128 = 1_000_000;
/// Feistel rounds of the permutation; part of format version 1.
const FEISTEL_ROUNDS: usize = 8;
/// Bound on cycle-walking steps. Each step leaves the code space with
/// probability at most 1/2, so no input of any key comes near it (about
/// 2^-156 over all 2^100 inputs); reaching it means a broken permutation.
const CYCLE_WALK_STEPS_MAX: u32 = 256;
/// `x^5 + x^2 + 1`, the primitive polynomial defining GF(32), as bits.
const GF32_POLYNOMIAL: u8 = 0b10_0101;
/// Marks a byte outside the alphabet in [`SYMBOL_VALUES`].
const NOT_A_SYMBOL: u8 = 0xFF;

const _: () = assert!(ALPHABET.len() == 1 << 5);
const _: () = assert!(CODE_BYTES_MAX == 34);
const _: () = assert!(BODY_SYMBOLS_MIN <= BODY_SYMBOLS_DEFAULT);
const _: () = assert!(BODY_SYMBOLS_DEFAULT <= BODY_SYMBOLS_MAX);
// The weights α^0 .. α^20 must be distinct, so α's order (31) must exceed 20.
const _: () = assert!((BODY_SYMBOLS_MAX as usize) < 31);
// Half blocks must fit in a u64 and whole blocks in a u128.
const _: () = assert!((5 * BODY_SYMBOLS_MAX as u32).div_ceil(2) <= 64);
// A normalized generated code (prefix, body, check symbol) must fit.
const _: () = assert!(PREFIX_BYTES_MAX + (BODY_SYMBOLS_MAX as usize) < NORMALIZED_BYTES_MAX);
const _: () = assert!(NORMALIZED_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(CODE_BYTES_MAX <= u8::MAX as usize);

/// Value of each byte as a symbol, or [`NOT_A_SYMBOL`].
const SYMBOL_VALUES: [u8; 256] = {
    let mut table = [NOT_A_SYMBOL; 256];
    let mut value = 0;
    while value < ALPHABET.len() {
        table[ALPHABET[value] as usize] = value as u8;
        value += 1;
    }
    table
};

/// Multiplies a GF(32) element by α, the class of `x`.
#[inline]
fn gf32_mul_alpha(value: u8) -> u8 {
    debug_assert!(value < 32);
    let shifted = value << 1;
    if shifted & 0b10_0000 != 0 {
        shifted ^ GF32_POLYNOMIAL
    } else {
        shifted
    }
}

/// The secret that keys a campaign's permutation. The caller draws it (the
/// engine has no source of randomness, as it has no clock); it is persisted
/// in the write-ahead log and never returned by any route; `Debug` does not
/// show it.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeKey([u8; 16]);

impl CodeKey {
    /// The key with these bytes, as read back from the write-ahead log.
    pub fn from_bytes(bytes: [u8; 16]) -> CodeKey {
        CodeKey(bytes)
    }

    /// The key's bytes, for the write-ahead log.
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(<redacted>)")
    }
}

/// The shape of a campaign's generated codes: its prefix and body length.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeFormat {
    /// Prefix bytes, `[A-Z0-9]`, only the first `prefix_len` are meaningful;
    /// the rest stay zero so derived equality and hashing are sound.
    prefix: [u8; PREFIX_BYTES_MAX],
    /// Number of meaningful bytes in `prefix`.
    prefix_len: u8,
    /// Body symbols, `BODY_SYMBOLS_MIN..=BODY_SYMBOLS_MAX`.
    length: u8,
}

impl CodeFormat {
    /// A format with this prefix (`[A-Z0-9]{0,8}`, uppercase) and `length`
    /// body symbols (`6..=20`).
    pub fn new(prefix: &str, length: u8) -> Result<CodeFormat, FormatError> {
        if prefix.len() > PREFIX_BYTES_MAX {
            return Err(FormatError::PrefixTooLong {
                given: prefix.len(),
                limit: PREFIX_BYTES_MAX,
            });
        }
        if let Some(position) = prefix
            .bytes()
            .position(|byte| !(byte.is_ascii_uppercase() || byte.is_ascii_digit()))
        {
            return Err(FormatError::PrefixBadByte {
                position,
                byte: prefix.as_bytes()[position],
            });
        }
        if !(BODY_SYMBOLS_MIN..=BODY_SYMBOLS_MAX).contains(&length) {
            return Err(FormatError::LengthOutOfRange {
                given: length,
                min: BODY_SYMBOLS_MIN,
                max: BODY_SYMBOLS_MAX,
            });
        }
        let mut bytes = [0u8; PREFIX_BYTES_MAX];
        bytes[..prefix.len()].copy_from_slice(prefix.as_bytes());
        Ok(CodeFormat {
            prefix: bytes,
            prefix_len: prefix.len() as u8,
            length,
        })
    }

    /// The campaign prefix, possibly empty.
    pub fn prefix(&self) -> &str {
        std::str::from_utf8(&self.prefix[..usize::from(self.prefix_len)])
            .expect("a validated prefix is ASCII")
    }

    /// Number of body symbols, not counting the check symbol.
    pub fn length(&self) -> u8 {
        self.length
    }

    /// Number of symbols after the prefix in a normalized code: the body and
    /// the check symbol.
    pub fn symbols_len(&self) -> usize {
        usize::from(self.length) + 1
    }

    /// Length in bytes of a normalized code: prefix, body and check symbol.
    pub fn normalized_len(&self) -> usize {
        usize::from(self.prefix_len) + self.symbols_len()
    }

    /// Length in bytes of the printed code, hyphens included.
    pub fn display_len(&self) -> usize {
        let prefix_hyphen = usize::from(self.prefix_len != 0);
        self.normalized_len() + prefix_hyphen + usize::from(self.length) / GROUP_SYMBOLS
    }

    /// Number of distinct bodies, `32^length`.
    pub fn space(&self) -> u128 {
        1u128 << (5 * u32::from(self.length))
    }

    /// Most codes a campaign of this format may issue: `floor(space / 10^6)`,
    /// so that a guessed code is live with probability at most 10^-6.
    pub fn max_issued(&self) -> u64 {
        u64::try_from(self.space() / SPACE_PER_ISSUED_MIN).unwrap_or(u64::MAX)
    }

    /// Probability that one uniformly guessed well-formed code is among the
    /// first `issued` codes.
    pub fn guess_probability(&self, issued: u64) -> f64 {
        issued as f64 / self.space() as f64
    }

    /// The normalized symbols after this format's prefix, if `normalized`
    /// starts with it.
    pub fn strip_prefix<'a>(&self, normalized: &'a [u8]) -> Option<&'a [u8]> {
        normalized.strip_prefix(&self.prefix[..usize::from(self.prefix_len)])
    }
}

impl fmt::Debug for CodeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeFormat")
            .field("prefix", &self.prefix())
            .field("length", &self.length)
            .finish()
    }
}

/// Why [`CodeFormat::new`] refused a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The prefix has more than `limit` bytes.
    PrefixTooLong { given: usize, limit: usize },
    /// The prefix holds a byte other than `A-Z` or `0-9`.
    PrefixBadByte { position: usize, byte: u8 },
    /// The body length is outside `min..=max`.
    LengthOutOfRange { given: u8, min: u8, max: u8 },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FormatError::PrefixTooLong { given, limit } => {
                write!(
                    f,
                    "code prefix is {given} bytes long, at most {limit} are allowed"
                )
            }
            FormatError::PrefixBadByte { position, byte } => write!(
                f,
                "code prefix byte {position} is {:?}, only A-Z and 0-9 are allowed",
                char::from(byte)
            ),
            FormatError::LengthOutOfRange { given, min, max } => {
                write!(f, "code length {given} is outside {min}..={max}")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Why a normalized input is not a code of this format. The server answers
/// each of these with `400 malformed_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// The symbols after the prefix are not `length + 1` bytes long.
    WrongLength { given: usize, expected: usize },
    /// A byte is not in [`ALPHABET`]; `position` counts from after the prefix.
    BadSymbol { position: usize, byte: u8 },
    /// The check symbol does not match the body: a typo.
    CheckMismatch,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformed::WrongLength { given, expected } => {
                write!(
                    f,
                    "code has {given} symbols after its prefix, expected {expected}"
                )
            }
            Malformed::BadSymbol { position, byte } => write!(
                f,
                "code symbol {position} is {:?}, which is not in the code alphabet",
                char::from(byte)
            ),
            Malformed::CheckMismatch => f.write_str("code check symbol does not match (a typo?)"),
        }
    }
}

impl std::error::Error for Malformed {}

/// A printed code, on the stack: `PREFIX-` and the hyphen-grouped body and
/// check symbol. Dereferences to `&str`.
#[derive(Clone, Copy)]
pub struct Code {
    /// ASCII bytes; the first `len` are the code, the rest stay zero.
    bytes: [u8; CODE_BYTES_MAX],
    /// Number of meaningful bytes in `bytes`.
    len: u8,
}

impl Code {
    /// The printed code.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("a code is ASCII")
    }
}

impl Deref for Code {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Code {
    fn eq(&self, other: &Code) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Code {}

impl std::hash::Hash for Code {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// SipHash-2-4 (Aumasson and Bernstein) specialised to the round function's
/// fixed message: 16 bytes, the first 8 fixed per round. [`RoundKey::new`]
/// keys the state and absorbs those 8 bytes once; [`RoundKey::hash`] absorbs
/// the half block, the length block and finalises: eight SipRounds and no
/// buffering, the same output as a general SipHash-2-4 over the whole
/// message (`round_key_matches_siphash` compares them).
#[derive(Clone, Copy)]
struct RoundKey {
    /// `v0..v3` after the key and the first message word.
    v: [u64; 4],
}

/// The final message word of a 16-byte message: its length in the top
/// byte and no tail bytes.
const SIP_LENGTH_WORD: u64 = 16 << 56;

impl RoundKey {
    /// The state keyed with `key` (`k0`, `k1` little-endian) after absorbing
    /// the first eight message bytes, `tweak`.
    fn new(key: &[u8; 16], tweak: [u8; 8]) -> RoundKey {
        let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
        let mut v = [
            k0 ^ 0x736f_6d65_7073_6575,
            k1 ^ 0x646f_7261_6e64_6f6d,
            k0 ^ 0x6c79_6765_6e65_7261,
            k1 ^ 0x7465_6462_7974_6573,
        ];
        compress(&mut v, u64::from_le_bytes(tweak));
        RoundKey { v }
    }

    /// SipHash-2-4 of the tweak followed by `x` as 8 little-endian bytes.
    #[inline(always)]
    fn hash(&self, x: u64) -> u64 {
        let mut v = self.v;
        compress(&mut v, x);
        compress(&mut v, SIP_LENGTH_WORD);
        v[2] ^= 0xff;
        for _ in 0..4 {
            sip_round(&mut v);
        }
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }
}

/// Absorbs one message word with SipHash-2-4's two compression rounds.
#[inline(always)]
fn compress(v: &mut [u64; 4], word: u64) {
    v[3] ^= word;
    sip_round(v);
    sip_round(v);
    v[0] ^= word;
}

/// One SipRound.
#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// Encodes indexes into codes and reads codes back, for one campaign.
///
/// Holds the format and the round function states already keyed and fed the
/// per-round prefix of their input; about 300 bytes, `Send + Sync`, no heap.
#[derive(Clone)]
pub struct Codec {
    /// The campaign's prefix and length.
    format: CodeFormat,
    /// Round `r`'s SipHash state after absorbing the first eight message
    /// bytes (`"RDMC"`, version, length, `r`, 0), so a round only hashes the
    /// half block.
    rounds: [RoundKey; FEISTEL_ROUNDS],
    /// `k`, the bits in each Feistel half.
    half_bits: u32,
    /// `2^k - 1`.
    half_mask: u64,
    /// `32^length`, cached from `format`.
    space: u128,
}

const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Codec>();
};

impl Codec {
    /// The codec of a campaign with this format and key.
    pub fn new(format: CodeFormat, key: &CodeKey) -> Codec {
        let rounds = std::array::from_fn(|round| {
            let tweak = [
                b'R',
                b'D',
                b'M',
                b'C',
                FORMAT_VERSION,
                format.length,
                round as u8,
                0,
            ];
            RoundKey::new(&key.0, tweak)
        });
        let half_bits = (5 * u32::from(format.length)).div_ceil(2);
        Codec {
            format,
            rounds,
            half_bits,
            half_mask: (1u64 << half_bits) - 1,
            space: format.space(),
        }
    }

    /// The campaign's format.
    pub fn format(&self) -> &CodeFormat {
        &self.format
    }

    /// The printed code of `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`CodeFormat::space`], which a campaign within
    /// [`CodeFormat::max_issued`] never asks for.
    /// The printed form of a code from its normalized symbols after the
    /// prefix (body and check symbol, as `decode_body` accepted them): the
    /// prefix, then the symbols grouped by hyphens in fives. No decryption.
    pub fn display(&self, symbols: &[u8]) -> Code {
        assert_eq!(
            symbols.len(),
            self.format.symbols_len(),
            "display of a wrong-length code"
        );
        let mut bytes = [0u8; CODE_BYTES_MAX];
        let prefix_len = usize::from(self.format.prefix_len);
        let mut len = 0;
        if prefix_len != 0 {
            bytes[..prefix_len].copy_from_slice(&self.format.prefix[..prefix_len]);
            bytes[prefix_len] = b'-';
            len = prefix_len + 1;
        }
        for (group, chunk) in symbols.chunks(GROUP_SYMBOLS).enumerate() {
            if group != 0 {
                bytes[len] = b'-';
                len += 1;
            }
            bytes[len..len + chunk.len()].copy_from_slice(chunk);
            len += chunk.len();
        }
        Code {
            bytes,
            len: len as u8,
        }
    }

    pub fn encode(&self, index: u64) -> Code {
        let body = self.permute(u128::from(index));
        let length = usize::from(self.format.length);
        let mut symbols = [0u8; BODY_SYMBOLS_MAX as usize + 1];
        let mut check = 0u8;
        for (position, symbol) in symbols[..length].iter_mut().enumerate() {
            let shift = 5 * (length - 1 - position);
            let value = ((body >> shift) & 0b1_1111) as u8;
            check = gf32_mul_alpha(check ^ value);
            *symbol = ALPHABET[usize::from(value)];
        }
        symbols[length] = ALPHABET[usize::from(check)];
        let code = self.display(&symbols[..=length]);
        debug_assert_eq!(usize::from(code.len), self.format.display_len());
        code
    }

    /// Appends the printed code of `index` to `out`; see [`Codec::encode`].
    pub fn encode_into(&self, index: u64, out: &mut String) {
        out.push_str(&self.encode(index));
    }

    /// The index of a code, from its normalized symbols after the prefix
    /// (body and check symbol). The caller compares it with the number of
    /// issued codes: an index at or above it is an unknown code.
    pub fn decode_body(&self, symbols: &[u8]) -> Result<u128, Malformed> {
        let expected = self.format.symbols_len();
        if symbols.len() != expected {
            return Err(Malformed::WrongLength {
                given: symbols.len(),
                expected,
            });
        }
        let (body_symbols, check_symbol) = symbols.split_at(expected - 1);
        let mut body = 0u128;
        let mut syndrome = 0u8;
        for (position, &byte) in body_symbols.iter().enumerate() {
            let value = SYMBOL_VALUES[usize::from(byte)];
            if value == NOT_A_SYMBOL {
                return Err(Malformed::BadSymbol { position, byte });
            }
            body = (body << 5) | u128::from(value);
            syndrome = gf32_mul_alpha(syndrome ^ value);
        }
        let check = SYMBOL_VALUES[usize::from(check_symbol[0])];
        if check == NOT_A_SYMBOL {
            return Err(Malformed::BadSymbol {
                position: expected - 1,
                byte: check_symbol[0],
            });
        }
        if syndrome != check {
            return Err(Malformed::CheckMismatch);
        }
        Ok(self.unpermute(body))
    }

    /// `F(r, x)` of the module docs.
    #[inline]
    fn round_function(&self, round: usize, half: u64) -> u64 {
        self.rounds[round].hash(half) & self.half_mask
    }

    /// `E` of the module docs, on `[0, 2^(2k))`.
    #[inline]
    fn encrypt_block(&self, block: u128) -> u128 {
        let mut left = (block >> self.half_bits) as u64;
        let mut right = (block as u64) & self.half_mask;
        for round in 0..FEISTEL_ROUNDS {
            (left, right) = (right, left ^ self.round_function(round, right));
        }
        (u128::from(left) << self.half_bits) | u128::from(right)
    }

    /// The inverse of [`Codec::encrypt_block`].
    #[inline]
    fn decrypt_block(&self, block: u128) -> u128 {
        let mut left = (block >> self.half_bits) as u64;
        let mut right = (block as u64) & self.half_mask;
        for round in (0..FEISTEL_ROUNDS).rev() {
            (left, right) = (right ^ self.round_function(round, left), left);
        }
        (u128::from(left) << self.half_bits) | u128::from(right)
    }

    /// `P` of the module docs: `E` with cycle walking, a permutation of
    /// `[0, space)`.
    fn permute(&self, value: u128) -> u128 {
        self.walk(value, Codec::encrypt_block)
    }

    /// The inverse of [`Codec::permute`].
    fn unpermute(&self, value: u128) -> u128 {
        self.walk(value, Codec::decrypt_block)
    }

    #[inline]
    fn walk(&self, value: u128, step: fn(&Codec, u128) -> u128) -> u128 {
        assert!(
            value < self.space,
            "value {value} is outside the code space {}",
            self.space
        );
        let mut result = step(self, value);
        let mut steps = 1;
        while result >= self.space {
            assert!(
                steps < CYCLE_WALK_STEPS_MAX,
                "cycle walking took {steps} steps: the permutation is broken"
            );
            result = step(self, result);
            steps += 1;
        }
        result
    }
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The round states embed the key, so only the format is shown.
        f.debug_struct("Codec")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// An input after [`normalize`], on the stack.
#[derive(Clone, Copy)]
pub struct NormalizedBuf {
    /// The normalized bytes; the first `len` are meaningful.
    bytes: [u8; NORMALIZED_BYTES_MAX],
    /// Number of meaningful bytes in `bytes`.
    len: u8,
}

impl NormalizedBuf {
    /// An empty buffer.
    pub fn new() -> NormalizedBuf {
        NormalizedBuf {
            bytes: [0; NORMALIZED_BYTES_MAX],
            len: 0,
        }
    }

    /// The normalized input.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The normalized input as text. [`normalize`] only uppercases ASCII
    /// letters and drops ASCII bytes, so the result stays UTF-8.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("normalizing keeps UTF-8 intact")
    }
}

impl Default for NormalizedBuf {
    fn default() -> NormalizedBuf {
        NormalizedBuf::new()
    }
}

impl fmt::Debug for NormalizedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Why [`normalize`] refused an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NormalizeError {
    /// The raw input has more than `limit` bytes.
    InputTooLong { given: usize, limit: usize },
    /// The input has more than `limit` bytes once hyphens and spaces are gone.
    TooLong { given: usize, limit: usize },
    /// Nothing is left once hyphens and spaces are gone.
    Empty,
}

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NormalizeError::InputTooLong { given, limit } => {
                write!(
                    f,
                    "code input is {given} bytes long, at most {limit} are read"
                )
            }
            NormalizeError::TooLong { given, limit } => write!(
                f,
                "code is {given} characters long without hyphens and spaces, at most {limit} are allowed"
            ),
            NormalizeError::Empty => f.write_str("code is empty"),
        }
    }
}

impl std::error::Error for NormalizeError {}

/// Writes `input` into `out` the way every code is matched: ASCII letters
/// uppercased, `-` and ` ` dropped, every other byte kept. Imported and
/// generated codes go through the same function. On error `out` is empty.
pub fn normalize(input: &str, out: &mut NormalizedBuf) -> Result<(), NormalizeError> {
    out.len = 0;
    if input.len() > INPUT_BYTES_MAX {
        return Err(NormalizeError::InputTooLong {
            given: input.len(),
            limit: INPUT_BYTES_MAX,
        });
    }
    let mut kept = 0usize;
    for byte in input.bytes() {
        if byte == b'-' || byte == b' ' {
            continue;
        }
        if kept < NORMALIZED_BYTES_MAX {
            out.bytes[kept] = byte.to_ascii_uppercase();
        }
        kept += 1;
    }
    if kept > NORMALIZED_BYTES_MAX {
        return Err(NormalizeError::TooLong {
            given: kept,
            limit: NORMALIZED_BYTES_MAX,
        });
    }
    if kept == 0 {
        return Err(NormalizeError::Empty);
    }
    out.len = kept as u8;
    Ok(())
}

#[cfg(test)]
mod tests;
