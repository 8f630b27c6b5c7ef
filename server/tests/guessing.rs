//! Guessing codes against a campaign of ten million: a client cycles random
//! well-formed codes (the right prefix and a valid check symbol, computed
//! with the engine's GF(32) math, checked against a real code) and the test
//! measures how many guesses per second reach a lookup before the
//! failed-attempt limiter answers `429`, and after. It prints the expected
//! guesses to hit one live code (code space / issued) and the effective
//! rates, with `--nocapture`.
//!
//! Asserted: one user gets exactly the limit (20 a minute) of
//! `unknown_code` answers, then only `429 too_many_failed_attempts` with a
//! `Retry-After`, and no guess hits. Measured and printed, not asserted
//! (API.md allows both): the limiter counts per `user` string, which the
//! client chooses, so a new user name per guess is never throttled; and a
//! lookup without `?user=` is not limited at all.

mod common;

use std::time::{Duration, Instant};

use common::{ALPHABET, Rng, Role, Server};
use serde_json::json;

/// Codes in the campaign.
const ISSUED: u64 = 10_000_000;
/// Body symbols of its codes.
const LENGTH: u32 = 10;
/// Failed lookups a user gets per minute (the server's default).
const FAILURES_PER_MINUTE: usize = 20;
/// How long each way of guessing is measured.
const MEASURE: Duration = Duration::from_secs(3);

/// `x^5 + x^2 + 1`, GF(32)'s polynomial, as in `engine/src/codec.rs`.
const GF32_POLYNOMIAL: u8 = 0b10_0101;

fn mul_alpha(v: u8) -> u8 {
    let v = v << 1;
    if v & 0x20 != 0 {
        v ^ GF32_POLYNOMIAL
    } else {
        v
    }
}

/// The check value `sum of alpha^(n-i) * s_i` over the body, by Horner.
fn check_value(body: &[u8]) -> u8 {
    body.iter().fold(0, |acc, &s| mul_alpha(acc ^ s))
}

fn value(symbol: u8) -> u8 {
    ALPHABET
        .bytes()
        .position(|c| c == symbol)
        .expect("an alphabet symbol") as u8
}

/// A random well-formed code: `GS-` and ten body symbols plus the check.
fn guess(rng: &mut Rng) -> String {
    let body: Vec<u8> = (0..LENGTH).map(|_| rng.below(32) as u8).collect();
    let mut symbols: Vec<u8> = body.clone();
    symbols.push(check_value(&body));
    let printed: String = symbols
        .iter()
        .map(|&v| ALPHABET.as_bytes()[v as usize] as char)
        .collect();
    format!(
        "GS-{}-{}-{}",
        &printed[..5],
        &printed[5..10],
        &printed[10..]
    )
}

/// Outcomes of guesses sent for `MEASURE`: `[unknown, throttled]`.
fn measure(mut send: impl FnMut(u64) -> common::Response) -> [u64; 2] {
    let mut counts = [0u64; 2];
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < MEASURE {
        let r = send(i);
        i += 1;
        match (r.status, r.error_code().as_deref()) {
            (404, Some("unknown_code")) => counts[0] += 1,
            (429, Some("too_many_failed_attempts")) => counts[1] += 1,
            _ => panic!("a guess got {} {}", r.status, r.text()),
        }
    }
    counts
}

#[test]
fn guessing_is_throttled_per_user_and_the_odds_are_reported() {
    let server = Server::start();
    let created = Instant::now();
    server.create_campaign(json!({
        "id": "big", "generate": ISSUED, "code": {"prefix": "GS", "length": LENGTH},
        "per_user_limit": 0,
    }));
    let create_time = created.elapsed();
    // The guesser's check symbol agrees with the engine's on a real code.
    let real = server
        .get(Role::Admin, "/v1/campaigns/big/codes?limit=3")
        .text();
    for (code, _) in common::parse_csv(&real) {
        let symbols: Vec<u8> = code[3..]
            .bytes()
            .filter(|&c| c != b'-')
            .map(value)
            .collect();
        assert_eq!(symbols.len(), LENGTH as usize + 1, "{code}");
        assert_eq!(
            check_value(&symbols[..LENGTH as usize]),
            symbols[LENGTH as usize],
            "{code}"
        );
    }
    let mut rng = Rng::new(Rng::seed_from_env("GUESS_SEED"));
    // A well-formed guess is looked up, not refused as malformed.
    server
        .status(&guess(&mut rng))
        .expect(404, Some("unknown_code"));

    let redeem = |rng: &mut Rng, user: &str| server.redeem(&guess(rng), user);
    // One user: the first 20 are looked up, then 429 with Retry-After.
    let mut first = Vec::new();
    let started = Instant::now();
    for _ in 0..FAILURES_PER_MINUTE {
        first.push(redeem(&mut rng, "mallory"));
    }
    let before_rate = FAILURES_PER_MINUTE as f64 / started.elapsed().as_secs_f64();
    for r in &first {
        r.expect(404, Some("unknown_code"));
    }
    let throttled = redeem(&mut rng, "mallory");
    throttled.expect(429, Some("too_many_failed_attempts"));
    let retry: u64 = throttled
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let mut one_user_rng = rng.clone();
    let one_user = measure(|_| redeem(&mut one_user_rng, "mallory"));
    assert_eq!(one_user[0], 0, "guesses got through after the 429");

    // Measured, not asserted: a fresh user name per guess, and lookups
    // without a user.
    let mut rotating_rng = rng.clone();
    let rotating = measure(|i| redeem(&mut rotating_rng, &format!("mallory-{i}")));
    let mut lookup_rng = rng.clone();
    let lookups = measure(|_| server.status(&guess(&mut lookup_rng)));

    let space = 32f64.powi(LENGTH as i32);
    let expected = space / ISSUED as f64;
    let rate = |counts: [u64; 2]| counts[0] as f64 / MEASURE.as_secs_f64();
    let days = |per_second: f64| expected / per_second / 86_400.0;
    let limited = FAILURES_PER_MINUTE as f64 / 60.0;
    eprintln!(
        "guessing: {ISSUED} codes of length {LENGTH} created in {create_time:?}; space {space:.3e}, \
         expected guesses per hit {expected:.3e} (p = {:.2e} per guess)",
        1.0 / expected
    );
    eprintln!(
        "guessing: one user: {before_rate:.0} guesses/s before the 429, then {}/{} through in {MEASURE:?} \
         (effective {limited:.2}/s = {FAILURES_PER_MINUTE}/min, {:.0} days per expected hit)",
        one_user[0],
        one_user[0] + one_user[1],
        days(limited)
    );
    eprintln!(
        "guessing: a new user name per guess: {:.0} guesses/s through, {} throttled ({:.2} days per \
         expected hit at this rate from one client)",
        rate(rotating),
        rotating[1],
        days(rate(rotating))
    );
    eprintln!(
        "guessing: GET /v1/codes/{{code}} without ?user=: {:.0} lookups/s through, {} throttled ({:.2} \
         days per expected hit)",
        rate(lookups),
        lookups[1],
        days(rate(lookups))
    );
}
