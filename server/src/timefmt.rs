//! RFC 3339 timestamps in UTC, to and from the engine's milliseconds.
//!
//! Written out here rather than pulling a date crate: the API needs only
//! UTC output and a strict subset of RFC 3339 input.

use redeem_engine::Timestamp;

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `t`'s UTC calendar fields: year, month, day, hour, minute, second,
/// millisecond.
fn fields(t: Timestamp) -> (i64, u32, u32, i64, i64, i64, u64) {
    let millis = t.0 % 1000;
    let secs = (t.0 / 1000) as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (
        year,
        month,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis,
    )
}

/// [`format`]'s text through `format!`'s padding: for years past 9999,
/// whose digits do not fit the fixed layout.
fn padded(t: Timestamp) -> String {
    let (year, month, day, h, m, s, millis) = fields(t);
    if millis == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
    }
}

/// `2026-11-22T01:02:03.456Z`; milliseconds only when not zero.
pub fn format(t: Timestamp) -> String {
    let (year, month, day, h, m, s, millis) = fields(t);
    if !(0..=9999).contains(&year) {
        return padded(t);
    }
    // Digits written in place: this runs for every answer and event, and
    // `format!`'s padding machinery cost several times the arithmetic.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let digits = |out: &mut [u8], mut n: u64| {
        for d in out.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(&mut out[0..4], year as u64);
    digits(&mut out[5..7], u64::from(month));
    digits(&mut out[8..10], u64::from(day));
    digits(&mut out[11..13], h as u64);
    digits(&mut out[14..16], m as u64);
    digits(&mut out[17..19], s as u64);
    let len = if millis == 0 {
        out[19] = b'Z';
        20
    } else {
        digits(&mut out[20..23], millis);
        24
    };
    String::from_utf8(out[..len].to_vec()).expect("ASCII digits")
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `t` and `z` accepted
/// in lower case. Fractions beyond milliseconds are truncated.
pub fn parse(input: &str) -> Option<Timestamp> {
    let b = input.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 || year < 1970 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0u64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &input[start..i.min(start + 3)];
        millis = u64::from(frac.parse::<u32>().ok()?) * 10u64.pow(3 - frac.len() as u32);
    }
    let offset_seconds: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let oh = i64::from(digits(i + 1..i + 3)?);
            let om = i64::from(digits(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let total = oh * 3600 + om * 60;
            if *sign == b'+' { total } else { -total }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds;
    u64::try_from(secs)
        .ok()
        .map(|s| Timestamp(s * 1000 + millis))
}

/// The wall clock, in milliseconds since 1970; 0 for a clock set before.
fn wall_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Where the process's clock starts: the wall clock read once, and the
/// monotonic instant it was read at.
fn anchor() -> &'static (std::time::Instant, u64) {
    static ANCHOR: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    ANCHOR.get_or_init(|| {
        let wall = wall_millis();
        if wall == 0 {
            tracing::error!("the system clock is before 1970; times start at the epoch");
        }
        (std::time::Instant::now(), wall)
    })
}

/// Now: the wall clock at start-up advanced by the monotonic clock, so a
/// step of the system clock while serving (by hand, or a bad time source)
/// neither releases every hold at once nor makes time run backwards.
pub fn now() -> Timestamp {
    let (start, wall) = anchor();
    Timestamp(wall + start.elapsed().as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_follows_the_wall_clock_and_never_goes_back() {
        let first = now();
        let wall = wall_millis();
        assert!(first.0.abs_diff(wall) < 1_000, "{first:?} vs {wall}");
        let mut last = first;
        for _ in 0..1000 {
            let t = now();
            assert!(t >= last);
            last = t;
        }
    }

    #[track_caller]
    fn check(input: &str, expected: Option<u64>) {
        assert_eq!(parse(input).map(|t| t.0), expected, "{input}");
    }

    #[test]
    fn parses_rfc3339() {
        check("1970-01-01T00:00:00Z", Some(0));
        check("2026-11-22T01:02:03Z", Some(1_795_309_323_000));
        check("2026-11-22T01:02:03.5Z", Some(1_795_309_323_500));
        check("2026-11-22T01:02:03.123456Z", Some(1_795_309_323_123));
        check("2026-11-22T02:02:03+01:00", Some(1_795_309_323_000));
        check("2026-11-21t20:02:03-05:00", Some(1_795_309_323_000));
        check("2024-02-29T00:00:00Z", Some(1_709_164_800_000));
        check("2023-02-29T00:00:00Z", None);
        check("2026-13-01T00:00:00Z", None);
        check("2026-11-22 01:02:03Z", None);
        check("2026-11-22T01:02:03", None);
        check("2026-11-22T24:00:00Z", None);
        check("2026-11-22T01:02:03.Z", None);
        check("1969-12-31T23:59:59Z", None);
        check("", None);
        check("not a date at all, no", None);
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert_eq!(format(Timestamp(1_795_309_323_000)), "2026-11-22T01:02:03Z");
        assert_eq!(
            format(Timestamp(1_795_309_323_007)),
            "2026-11-22T01:02:03.007Z"
        );
        for t in [
            0,
            951_782_400_000,
            1_709_164_800_123,
            4_102_444_800_000,
            1_795_309_323_999,
        ] {
            assert_eq!(parse(&format(Timestamp(t))), Some(Timestamp(t)));
        }
    }

    /// The digits written in place agree with `format!`'s padding, the
    /// way this module wrote timestamps before, from 1970 to past 9999.
    #[test]
    fn in_place_digits_match_format() {
        let reference = padded;
        let year_10000 = 253_402_300_800_000u64;
        // 100,000 pseudo-random instants up to twice year 10000's start,
        // each also on its whole second, plus the edges.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let t = (x >> 11) % (2 * year_10000);
            for probe in [t, t - t % 1000] {
                assert_eq!(format(Timestamp(probe)), reference(Timestamp(probe)));
            }
        }
        for probe in [0, 999, 1000, year_10000 - 1, year_10000] {
            assert_eq!(format(Timestamp(probe)), reference(Timestamp(probe)));
        }
        assert_eq!(format(Timestamp(year_10000)), "10000-01-01T00:00:00Z");
    }
}
