//! Scenarios: which operation each connection performs next.
//!
//! Work is handed out from one shared counter, so the codes a run touches
//! are decided by the order operations start, whatever the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a run does; see each scenario's `--help`.
#[derive(Clone, Copy, Debug)]
pub enum Scenario {
    /// Each operation redeems the next unused code.
    Uniform,
    /// `storm` redemptions of each code, `width` codes stormed at a time.
    Hot { storm: u64, width: u64 },
    /// assign, reserve, then confirm (with probability `confirm_ratio`) or release.
    Funnel { confirm_ratio: f64 },
    /// Each redemption sent twice with one Idempotency-Key.
    Retry,
    /// Lookups of random codes; a `redeem_ratio` share of operations redeems.
    Validate { redeem_ratio: f64 },
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Uniform => "uniform",
            Scenario::Hot { .. } => "hot",
            Scenario::Funnel { .. } => "funnel",
            Scenario::Retry => "retry",
            Scenario::Validate { .. } => "validate",
        }
    }

    /// One line on what the scenario does, for reports.
    pub fn describe(self) -> String {
        match self {
            Scenario::Uniform => "each operation redeems a distinct random code".into(),
            Scenario::Hot { storm, width } => format!(
                "{storm} redemptions race for each code, {width} codes stormed at a time; exactly one may win"
            ),
            Scenario::Funnel { confirm_ratio } => format!(
                "assign, reserve, then confirm ({:.0}%) or release",
                confirm_ratio * 100.0
            ),
            Scenario::Retry => {
                "each redemption sent twice with one Idempotency-Key; the replay must answer identically"
                    .into()
            }
            Scenario::Validate { redeem_ratio } => format!(
                "GET /v1/codes/{{code}} of random codes, {:.0}% of operations redeem a fresh code",
                redeem_ratio * 100.0
            ),
        }
    }

    /// The loser of a race for a code is a correct answer here.
    pub fn races(self) -> bool {
        matches!(self, Scenario::Hot { .. })
    }
}

/// One operation.
#[derive(Clone, Copy, Debug)]
pub enum Work {
    /// Redeem the code at this index.
    Redeem(u32),
    /// Look up the code at this index.
    Lookup(u32),
    /// Redeem with an Idempotency-Key, then send the same request again.
    Retry(u32),
    /// The funnel for recipient number `seq`.
    Funnel { seq: u64, confirm: bool },
}

/// The codes of a run and the counter that hands them out.
pub struct Plan {
    pub scenario: Scenario,
    /// The campaign's codes, shuffled: a redemption's index is its slot here.
    pub codes: Vec<String>,
    /// Code to its slot in `codes`, for scenarios whose answers name a
    /// code (the funnel's assignments); built after the shuffle, so a
    /// named code maps to the slot the run tracks it under.
    index: Option<HashMap<String, u32>>,
    next: AtomicU64,
}

impl Plan {
    pub fn new(scenario: Scenario, codes: Vec<String>) -> Plan {
        assert!(u32::try_from(codes.len()).is_ok(), "code indexes are u32");
        let index = matches!(scenario, Scenario::Funnel { .. }).then(|| {
            codes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i as u32))
                .collect()
        });
        Plan {
            scenario,
            codes,
            index,
            next: AtomicU64::new(0),
        }
    }

    /// The slot of `code` in `codes`; `None` for a code of another run, or
    /// in a scenario that keeps no index (only the funnel does).
    pub fn index_of(&self, code: &str) -> Option<u32> {
        self.index.as_ref()?.get(code).copied()
    }

    /// The next operation, or `None` once the codes are used up.
    pub fn next(&self, rng: &mut Rng) -> Option<Work> {
        let len = self.codes.len() as u64;
        // Relaxed: the counter only has to hand out each number once.
        let take = || {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            (n < len).then_some(n)
        };
        match self.scenario {
            Scenario::Uniform => take().map(|n| Work::Redeem(n as u32)),
            Scenario::Retry => take().map(|n| Work::Retry(n as u32)),
            Scenario::Hot { storm, width } => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let group = n / (storm * width);
                let idx = group * width + n % width;
                (idx < len).then_some(Work::Redeem(idx as u32))
            }
            Scenario::Funnel { confirm_ratio } => take().map(|seq| Work::Funnel {
                seq,
                confirm: rng.chance(confirm_ratio),
            }),
            Scenario::Validate { redeem_ratio } => {
                if rng.chance(redeem_ratio) {
                    take().map(|n| Work::Redeem(n as u32))
                } else if self.next.load(Ordering::Relaxed) >= len {
                    None
                } else {
                    Some(Work::Lookup(rng.below(len) as u32))
                }
            }
        }
    }
}

/// SplitMix64: small, fast, and good enough to pick codes and mixes.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(stream: u64) -> Rng {
        let seed = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
        Rng(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("C{i}")).collect()
    }

    #[test]
    fn uniform_hands_out_each_code_once() {
        let plan = Plan::new(Scenario::Uniform, codes(3));
        let mut rng = Rng::seeded(1);
        let got: Vec<u32> = std::iter::from_fn(|| match plan.next(&mut rng) {
            Some(Work::Redeem(i)) => Some(i),
            _ => None,
        })
        .collect();
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn hot_storms_each_code_storm_times() {
        let plan = Plan::new(Scenario::Hot { storm: 3, width: 2 }, codes(4));
        let mut rng = Rng::seeded(1);
        let mut hits = [0; 4];
        while let Some(Work::Redeem(i)) = plan.next(&mut rng) {
            hits[i as usize] += 1;
        }
        assert_eq!(hits, [3, 3, 3, 3]);
    }

    #[test]
    fn funnel_index_follows_the_shuffled_order() {
        let mut list = codes(50);
        Rng::seeded(3).shuffle(&mut list);
        let plan = Plan::new(Scenario::Funnel { confirm_ratio: 0.5 }, list);
        for (i, code) in plan.codes.iter().enumerate() {
            assert_eq!(plan.index_of(code), Some(i as u32));
        }
        assert_eq!(plan.index_of("C50"), None);
        let uniform = Plan::new(Scenario::Uniform, codes(3));
        assert_eq!(uniform.index_of("C0"), None);
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut rng = Rng::seeded(7);
        assert!((0..10_000).all(|_| rng.below(13) < 13));
        let mut v: Vec<u32> = (0..100).collect();
        rng.shuffle(&mut v);
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
