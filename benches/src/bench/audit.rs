//! After the load: does what the server stored agree with what the
//! harness saw? A redemption the harness saw succeed must be stored, and a
//! stored one must have been seen (or have had its answer lost).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::driver::Ctx;
use crate::plan::Scenario;
use crate::stats::{Class, Summary};
use crate::targets::{Held, ServerState};

pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// A failed fatal check fails the run; others are warnings.
    pub fatal: bool,
    pub detail: String,
}

pub struct Audit {
    pub checks: Vec<Check>,
}

impl Audit {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok || !c.fatal)
    }
}

/// Codes named in a failure message.
const EXAMPLES_MAX: usize = 5;

fn examples(codes: &[&str]) -> String {
    let mut s = codes
        .iter()
        .take(EXAMPLES_MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if codes.len() > EXAMPLES_MAX {
        s.push_str(", ...");
    }
    s
}

pub fn audit(ctx: &Ctx, summary: &Summary, server: &ServerState) -> Audit {
    let t = &ctx.tracking;
    let codes = &ctx.plan.codes;
    let mut checks = Vec::new();
    // Relaxed loads: every worker has been joined.
    let successes: Vec<u32> = t
        .successes
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .collect();
    let unknown: Vec<bool> = t
        .unknown
        .iter()
        .map(|u| u.load(Ordering::Relaxed) != 0)
        .collect();
    let total: u64 = successes.iter().map(|&s| u64::from(s)).sum();
    let unknown_n = unknown.iter().filter(|&&u| u).count() as u64;

    let doubles: Vec<&str> = successes
        .iter()
        .enumerate()
        .filter(|(_, s)| **s > 1)
        .map(|(i, _)| codes[i].as_str())
        .collect();
    checks.push(Check {
        name: "at most one success per code",
        ok: doubles.is_empty(),
        fatal: true,
        detail: if doubles.is_empty() {
            format!("{total} successes on {total} distinct codes")
        } else {
            format!(
                "{} codes succeeded more than once: {}",
                doubles.len(),
                examples(&doubles)
            )
        },
    });

    let server_errors = summary.count_class(|o| o.class == Class::Server);
    checks.push(Check {
        name: "no 5xx (no server or database error)",
        ok: server_errors == 0,
        fatal: true,
        detail: format!("{server_errors} server errors over the whole run, warm-up included"),
    });

    let (ok, detail) = if unknown_n == 0 {
        (
            server.redeemed == total,
            format!(
                "harness saw {total}, server reports {} ({})",
                server.redeemed, server.source
            ),
        )
    } else {
        (
            (total..=total + unknown_n).contains(&server.redeemed),
            format!(
                "harness saw {total} and {unknown_n} redemptions without an answer; server reports {} ({}), expected {total}..={}",
                server.redeemed,
                server.source,
                total + unknown_n
            ),
        )
    };
    checks.push(Check {
        name: "successes equal the server's redeemed count",
        ok,
        fatal: true,
        detail,
    });

    let index: HashMap<&str, usize> = codes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut stored = vec![false; codes.len()];
    let mut foreign = Vec::new();
    for code in &server.redeemed_codes {
        match index.get(code.as_str()) {
            Some(&i) => stored[i] = true,
            None => foreign.push(code.as_str()),
        }
    }
    let lost: Vec<&str> = (0..codes.len())
        .filter(|&i| successes[i] > 0 && !stored[i])
        .map(|i| codes[i].as_str())
        .collect();
    let phantom: Vec<&str> = (0..codes.len())
        .filter(|&i| stored[i] && successes[i] == 0 && !unknown[i])
        .map(|i| codes[i].as_str())
        .collect();
    let ok = lost.is_empty() && phantom.is_empty() && foreign.is_empty();
    checks.push(Check {
        name: "stored redemptions are exactly the acknowledged ones",
        ok,
        fatal: true,
        detail: if ok {
            format!("{} redeemed codes listed by the server, each acknowledged to the harness (or unanswered)", server.redeemed_codes.len())
        } else {
            format!(
                "acknowledged but not stored: {} [{}]; stored but refused: {} [{}]; not this run's codes: {} [{}]",
                lost.len(),
                examples(&lost),
                phantom.len(),
                examples(&phantom),
                foreign.len(),
                examples(&foreign)
            )
        },
    });

    if let Scenario::Hot { .. } = ctx.plan.scenario {
        let attempted = t.attempted.iter().map(|a| a.load(Ordering::Relaxed) != 0);
        let stormed = attempted.clone().filter(|&a| a).count();
        let wrong: Vec<&str> = attempted
            .enumerate()
            .filter(|&(i, a)| a && !unknown[i] && successes[i] != 1)
            .map(|(i, _)| codes[i].as_str())
            .collect();
        checks.push(Check {
            name: "exactly one success per stormed code",
            ok: wrong.is_empty(),
            fatal: true,
            detail: if wrong.is_empty() {
                format!("{stormed} codes stormed, one winner each")
            } else {
                format!(
                    "{} codes without exactly one winner: {}",
                    wrong.len(),
                    examples(&wrong)
                )
            },
        });
    }

    if let Scenario::Retry = ctx.plan.scenario {
        let differ = t.replay_mismatches.load(Ordering::Relaxed);
        let unmarked = t.replay_unmarked.load(Ordering::Relaxed);
        checks.push(Check {
            name: "replays answer identically, marked Idempotent-Replayed",
            ok: differ == 0 && unmarked == 0,
            fatal: true,
            detail: format!(
                "{differ} replays answered differently, {unmarked} lacked Idempotent-Replayed: true"
            ),
        });
    }

    if let Scenario::Funnel { .. } = ctx.plan.scenario {
        checks.push(funnel_check(t, total, server.held));
    }

    let unexpected = summary.count_class(|o| o.class == Class::Unexpected);
    let transport = summary.count_class(|o| o.class == Class::Transport);
    checks.push(Check {
        name: "no unexpected answers, none lost",
        ok: unexpected == 0 && transport == 0,
        fatal: false,
        detail: format!("{unexpected} unexpected answers, {transport} requests without an answer"),
    });
    Audit { checks }
}

/// The funnel leaves each acknowledged assignment in the state its last
/// acknowledged step put it in: assigned (never held, or released),
/// reserved (held, neither confirmed nor released), or redeemed
/// (confirmed, checked above). Each request without an answer may have
/// moved one code, so it widens both counts by one.
fn funnel_check(t: &crate::stats::Tracking, confirmed: u64, held: Option<Held>) -> Check {
    let name = "acknowledged assignments, holds and releases are stored";
    let Some(held) = held else {
        return Check {
            name,
            ok: false,
            fatal: true,
            detail: "the target did not report its assigned and reserved counts".into(),
        };
    };
    let load = |a: &std::sync::atomic::AtomicU64| i128::from(a.load(Ordering::Relaxed));
    let (assigned, reserved, released) = (load(&t.assigned), load(&t.reserved), load(&t.released));
    let lost = load(&t.funnel_lost);
    let want_assigned = assigned - reserved + released;
    let want_reserved = reserved - i128::from(confirmed) - released;
    let ok = (i128::from(held.assigned) - want_assigned).abs() <= lost
        && (i128::from(held.reserved) - want_reserved).abs() <= lost;
    Check {
        name,
        ok,
        fatal: true,
        detail: format!(
            "harness saw {assigned} assignments, {reserved} holds, {confirmed} confirms, {released} releases ({lost} without an answer): \
             expected {want_assigned} assigned and {want_reserved} reserved{}, server reports {} and {}",
            if lost > 0 {
                format!(" (each within {lost})")
            } else {
                String::new()
            },
            held.assigned,
            held.reserved
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::driver::Ctx;
    use crate::plan::Plan;
    use crate::stats::{Kind, Recorder};

    fn ctx(scenario: Scenario) -> Ctx {
        let codes = (0..4).map(|i| format!("C{i}")).collect();
        Ctx::new(Plan::new(scenario, codes), Duration::from_secs(1))
    }

    fn state(redeemed: u64, codes: &[&str]) -> ServerState {
        ServerState {
            redeemed,
            redeemed_codes: codes.iter().map(|c| c.to_string()).collect(),
            source: "test".into(),
            held: None,
        }
    }

    fn summary(ctx: &Ctx, server_errors: u64) -> Summary {
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0, t0);
        for _ in 0..server_errors {
            rec.request(
                &ctx.live,
                t0,
                Kind::Redeem,
                t0,
                t0,
                503,
                "log_failed",
                Class::Server,
            );
        }
        Summary::merge(vec![rec], t0)
    }

    #[track_caller]
    fn check(ctx: &Ctx, server_errors: u64, server: ServerState, failing: &[&str]) {
        let audit = audit(ctx, &summary(ctx, server_errors), &server);
        let failed: Vec<&str> = audit
            .checks
            .iter()
            .filter(|c| !c.ok && c.fatal)
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, failing);
        assert_eq!(audit.passed(), failing.is_empty());
    }

    #[test]
    fn agreement_passes() {
        let c = ctx(Scenario::Uniform);
        c.tracking.success(0);
        c.tracking.success(2);
        check(&c, 0, state(2, &["C0", "C2"]), &[]);
    }

    #[test]
    fn disagreements_fail() {
        let c = ctx(Scenario::Uniform);
        c.tracking.success(0);
        c.tracking.success(0);
        // Two clients were told they won C0; the server stored it once.
        check(
            &c,
            0,
            state(1, &["C0"]),
            &[
                "at most one success per code",
                "successes equal the server's redeemed count",
            ],
        );
        let c = ctx(Scenario::Uniform);
        c.tracking.success(1);
        check(
            &c,
            0,
            state(1, &["C2"]),
            &["stored redemptions are exactly the acknowledged ones"],
        );
        let c = ctx(Scenario::Uniform);
        check(
            &c,
            1,
            state(0, &[]),
            &["no 5xx (no server or database error)"],
        );
    }

    #[test]
    fn lost_answers_widen_the_count() {
        let c = ctx(Scenario::Uniform);
        c.tracking.success(0);
        c.tracking.unknown(1);
        check(&c, 0, state(2, &["C0", "C1"]), &[]);
        check(&c, 0, state(1, &["C0"]), &[]);
        check(
            &c,
            0,
            state(3, &["C0", "C1", "C3"]),
            &[
                "successes equal the server's redeemed count",
                "stored redemptions are exactly the acknowledged ones",
            ],
        );
    }

    #[test]
    fn funnel_needs_its_holds_stored() {
        use std::sync::atomic::Ordering::Relaxed;
        let c = ctx(Scenario::Funnel { confirm_ratio: 0.5 });
        // Three assigned, all reserved; C0 confirmed, C1 released, C2 held.
        c.tracking.assigned.store(3, Relaxed);
        c.tracking.reserved.store(3, Relaxed);
        c.tracking.released.store(1, Relaxed);
        c.tracking.success(0);
        let with = |assigned, reserved| ServerState {
            held: Some(Held { assigned, reserved }),
            ..state(1, &["C0"])
        };
        check(&c, 0, with(1, 1), &[]);
        let lost = "acknowledged assignments, holds and releases are stored";
        // The release was not stored: the code is still reserved.
        check(&c, 0, with(0, 2), &[lost]);
        check(&c, 0, state(1, &["C0"]), &[lost]);
        // A release without an answer may or may not have happened.
        c.tracking.released.store(0, Relaxed);
        c.tracking.funnel_lost.store(1, Relaxed);
        check(&c, 0, with(1, 1), &[]);
        check(&c, 0, with(0, 2), &[]);
        check(&c, 0, with(2, 2), &[lost]);
    }

    #[test]
    fn hot_needs_one_winner_per_stormed_code() {
        let c = ctx(Scenario::Hot { storm: 2, width: 1 });
        c.tracking.attempt(0);
        c.tracking.attempt(1);
        c.tracking.success(0);
        check(
            &c,
            0,
            state(1, &["C0"]),
            &["exactly one success per stormed code"],
        );
    }
}
