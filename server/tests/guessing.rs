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
//! `Retry-After` and `"limit": "user"`, and no guess hits. A new user name
//! per guess, or lookups without `?user=`, do not escape the token's own
//! budget (lowered here to 300 a minute so the test is quick): at most that
//! many guesses a minute reach a lookup, then `"limit": "token"`, while a
//! second checkout token is unaffected. An end client's address is limited
//! on its own (60 a minute). The rates are printed with `--nocapture`.

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
/// The token budget the server runs with here (the default is 6,000).
const TOKEN_BUDGET: u64 = 300;
/// Failed attempts an end client's address gets per minute (the default).
const CLIENT_IP_BUDGET: usize = 60;

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

/// The minute (since the epoch) now, to count the limiter's windows.
fn minute() -> u64 {
    common::since_epoch().as_secs() / 60
}

/// What the throttling half needs of one window: the three measurements
/// and a few hundred requests around them.
const THROTTLING_SPAN: Duration = Duration::from_secs(25);

#[test]
fn guessing_is_throttled_per_identity_and_the_odds_are_reported() {
    let budget = TOKEN_BUDGET.to_string();
    let server = Server::start_with(&["--failed-attempts-per-token-per-minute", &budget]);
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
    common::wait_for_a_limiter_window_with(THROTTLING_SPAN);
    let window = minute();
    // Checked after each answer that depends on the window, before its
    // assertions, so a rollover is named as such.
    let same_window = || {
        assert_eq!(
            minute(),
            window,
            "the limiter's window rolled over within {THROTTLING_SPAN:?}: the budgets \
             restarted, so the throttling below cannot be checked"
        )
    };
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
    same_window();
    throttled.expect(429, Some("too_many_failed_attempts"));
    assert_eq!(throttled.json()["error"]["limit"], "user");
    let retry: u64 = throttled
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let mut one_user_rng = rng.clone();
    let one_user = measure(|_| redeem(&mut one_user_rng, "mallory"));
    same_window();
    assert_eq!(one_user[0], 0, "guesses got through after the 429");

    // A fresh user name per guess, and lookups without a user: the
    // token's budget bounds both, counted over every limiter window the
    // measurement spans.
    let first_minute = minute();
    let mut rotating_rng = rng.clone();
    let rotating = measure(|i| redeem(&mut rotating_rng, &format!("mallory-{i}")));
    let mut lookup_rng = rng.clone();
    let lookups = measure(|_| server.status(&guess(&mut lookup_rng)));
    let windows = minute() - first_minute + 1;
    let through = FAILURES_PER_MINUTE as u64 + rotating[0] + lookups[0];
    assert!(
        through <= TOKEN_BUDGET * windows,
        "{through} guesses reached a lookup in {windows} windows of {TOKEN_BUDGET}"
    );
    assert!(
        rotating[1] + lookups[1] > 0,
        "the token budget never tripped"
    );
    let token_throttled = server.status(&guess(&mut rng));
    same_window();
    token_throttled.expect(429, Some("too_many_failed_attempts"));
    assert_eq!(token_throttled.json()["error"]["limit"], "token");
    // Another checkout token is not held back by this one's guessing.
    let honest = common::add_token(&server.data_dir, "checkout");
    let honest_guess = |rng: &mut Rng, user: &str, ip: &str| {
        let body = json!({"code": guess(rng), "user": user, "client_ip": ip}).to_string();
        common::request(
            server.addr,
            "POST",
            "/v1/redemptions",
            &[
                ("Authorization", &format!("Bearer {honest}")),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap()
    };
    honest_guess(&mut rng, "alice", "192.0.2.7").expect(404, Some("unknown_code"));
    // One end client's address is limited on its own, whatever user it
    // claims to be: 60 a minute (one used just now).
    let mut through_ip = 1;
    loop {
        let r = honest_guess(&mut rng, &format!("bob-{through_ip}"), "192.0.2.7");
        if r.status == 429 {
            assert_eq!(r.json()["error"]["limit"], "client_ip");
            break;
        }
        r.expect(404, Some("unknown_code"));
        through_ip += 1;
        assert!(
            through_ip <= 2 * CLIENT_IP_BUDGET,
            "the address was never limited"
        );
    }
    eprintln!("guessing: one client address got {through_ip} guesses through before its 429");
    honest_guess(&mut rng, "carol", "not-an-ip").expect(400, Some("invalid_request"));

    let space = 32f64.powi(LENGTH as i32);
    let expected = space / ISSUED as f64;
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
    let token_rate = TOKEN_BUDGET as f64 / 60.0;
    let sent = (rotating[0] + rotating[1]) as f64 / MEASURE.as_secs_f64();
    eprintln!(
        "guessing: one token, a new user name per guess then lookups without a user: {} and {} \
         reached a lookup, {} got 429, in {windows} limiter window(s) of {TOKEN_BUDGET}. \
         Sent {sent:.0} guesses/s: without a token budget (before) every one is looked up, \
         {:.1} days per expected hit from one client; with it, {token_rate:.1}/s, {:.0} days \
         ({:.0} days at the default budget of 6,000/min)",
        rotating[0],
        lookups[0],
        rotating[1] + lookups[1],
        days(sent),
        days(token_rate),
        days(6000.0 / 60.0)
    );
}
