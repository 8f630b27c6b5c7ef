//! A campaign's recent history for the operator dashboard: one point per
//! ten-second interval with the codes in each state at its end and the
//! redemptions, assignments and failed attempts counted in it.
//!
//! The engine has no clock, so the ring is fed by record times: every
//! record about a campaign `touch`es its history before it takes effect,
//! live (at append) and in replay alike, and the first record of a new
//! interval closes the open one, sampling the state counts then. No record
//! means no state changed, so an interval without one repeats the counts
//! of the one before it; `History::points` fills those gaps when read.
//! Failed attempts are not logged, so they are counted live only.

use std::collections::VecDeque;

use crate::Timestamp;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Seconds one point covers.
pub const HISTORY_INTERVAL_SECONDS: u64 = 10;
/// Closed points kept per campaign: 24 hours at ten seconds.
pub const HISTORY_POINTS_MAX: usize = 8_640;
const _: () = assert!(HISTORY_POINTS_MAX as u64 * HISTORY_INTERVAL_SECONDS >= 86_400);

const INTERVAL_MS: u64 = HISTORY_INTERVAL_SECONDS * 1000;

/// What a point counts besides the state counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryEvent {
    Redemption,
    Assignment,
    /// A well-formed code under the campaign's prefix that was never issued.
    FailedAttempt,
}

/// One interval of a campaign's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The interval's number: its start divided by the interval length.
    pub interval: u64,
    /// Codes in each `PublicState` (by its index) at the interval's end.
    pub counts: [u64; 5],
    /// Events counted in the interval, by `HistoryEvent` index.
    pub events: [u64; 3],
    /// Seconds the events were counted over: the whole interval, or the
    /// part of the open one that has passed.
    pub seconds: u64,
}

impl Point {
    /// When the interval starts.
    pub fn at(&self) -> Timestamp {
        Timestamp(self.interval * INTERVAL_MS)
    }

    /// Events of one kind per second over the point's seconds.
    pub fn per_second(&self, event: HistoryEvent) -> f64 {
        self.events[event as usize] as f64 / self.seconds.max(1) as f64
    }
}

/// The ring of closed points and the counters of the open one.
#[derive(Debug)]
pub(crate) struct History {
    /// The open interval's number; 0 when no record has been seen since a
    /// restore, so nothing is known yet.
    open: AtomicU64,
    /// Events in the open interval, by `HistoryEvent` index.
    events: [AtomicU64; 3],
    /// Closed points, oldest first, at most `HISTORY_POINTS_MAX` and none
    /// older than that many intervals before the open one. Taken only when
    /// an interval closes (once per ten seconds at most) and by readers,
    /// never per record.
    closed: Mutex<VecDeque<Point>>,
}

impl History {
    /// A history whose first interval is the campaign's creation.
    pub fn new(created_at: Timestamp) -> History {
        History {
            open: AtomicU64::new(created_at.0 / INTERVAL_MS),
            events: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            closed: Mutex::new(VecDeque::new()),
        }
    }

    /// Drops everything: a restored snapshot carries no history, and its
    /// synthetic records' times say nothing about when things happened.
    pub fn forget(&self) {
        if cfg!(loom) {
            return;
        }
        let mut closed = self.closed.lock();
        closed.clear();
        // Relaxed: the lock orders every change of `open`.
        self.open.store(0, Ordering::Relaxed);
        for counter in &self.events {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Called with a record's time before the record takes effect: the
    /// first record of a later interval closes the open one with the state
    /// counts as they are now, which are the counts at its end.
    pub fn touch(&self, at: Timestamp, counts: impl FnOnce() -> [u64; 5]) {
        // Loom models check the code-state protocol; a statistic's lock
        // would only multiply their interleavings.
        if cfg!(loom) {
            return;
        }
        let interval = at.0 / INTERVAL_MS;
        // Relaxed: a stale read only takes the lock, which re-reads it.
        if interval <= self.open.load(Ordering::Relaxed) {
            return;
        }
        let mut closed = self.closed.lock();
        let open = self.open.load(Ordering::Relaxed);
        if interval <= open {
            return;
        }
        // Relaxed: a statistic; a count racing this swap lands in the new
        // interval instead of the old.
        let events = self
            .events
            .each_ref()
            .map(|counter| counter.swap(0, Ordering::Relaxed));
        if open != 0 {
            closed.push_back(Point {
                interval: open,
                counts: counts(),
                events,
                seconds: HISTORY_INTERVAL_SECONDS,
            });
        }
        let horizon = HISTORY_POINTS_MAX as u64;
        while closed.len() > HISTORY_POINTS_MAX
            || closed
                .front()
                .is_some_and(|p| p.interval + horizon <= interval)
        {
            closed.pop_front();
        }
        self.open.store(interval, Ordering::Relaxed);
    }

    /// The ring, the open interval and its counters, for a snapshot: 8
    /// bytes each (little-endian), then 80 bytes a closed point.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let closed = self.closed.lock();
        // Relaxed: read under the lock that orders its changes.
        out.extend_from_slice(&self.open.load(Ordering::Relaxed).to_le_bytes());
        for counter in &self.events {
            out.extend_from_slice(&counter.load(Ordering::Relaxed).to_le_bytes());
        }
        out.extend_from_slice(&(closed.len() as u64).to_le_bytes());
        for point in closed.iter() {
            let words = [point.interval]
                .into_iter()
                .chain(point.counts)
                .chain(point.events)
                .chain([point.seconds]);
            for word in words {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }

    /// Restores what [`History::encode`] wrote, refusing bytes it could not
    /// have written: points out of order, at or past the open interval,
    /// more than a day of them, or trailing bytes.
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<(), &'static str> {
        let mut words = bytes
            .chunks(8)
            .map(|chunk| <[u8; 8]>::try_from(chunk).map(u64::from_le_bytes));
        let mut next = || match words.next() {
            Some(Ok(word)) => Ok(word),
            _ => Err("history: truncated"),
        };
        let open = next()?;
        let events = [next()?, next()?, next()?];
        let count = next()?;
        if count > HISTORY_POINTS_MAX as u64 {
            return Err("history: more points than a day");
        }
        let mut points = VecDeque::with_capacity(count as usize);
        for _ in 0..count {
            let point = Point {
                interval: next()?,
                counts: [next()?, next()?, next()?, next()?, next()?],
                events: [next()?, next()?, next()?],
                seconds: next()?,
            };
            let after_previous = points
                .back()
                .is_none_or(|p: &Point| p.interval < point.interval);
            if !after_previous || point.interval >= open || point.seconds > HISTORY_INTERVAL_SECONDS
            {
                return Err("history: points out of order");
            }
            points.push_back(point);
        }
        if words.next().is_some() {
            return Err("history: trailing bytes");
        }
        let mut closed = self.closed.lock();
        *closed = points;
        // Relaxed: the lock orders every change of `open`.
        self.open.store(open, Ordering::Relaxed);
        for (counter, value) in self.events.iter().zip(events) {
            counter.store(value, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Counts an event in the open interval; its record touched first.
    pub fn count(&self, event: HistoryEvent) {
        if cfg!(loom) {
            return;
        }
        // Relaxed: a statistic.
        self.events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every interval from `from` (or the oldest known) through `now`,
    /// oldest first, gaps filled with the counts before them; the open
    /// and any later interval show `counts_now`.
    pub fn points(&self, from: Timestamp, now: Timestamp, counts_now: [u64; 5]) -> Vec<Point> {
        let end = now.0 / INTERVAL_MS;
        let closed = self.closed.lock();
        // Relaxed: read under the lock that orders its changes.
        let open = self.open.load(Ordering::Relaxed);
        let events = self
            .events
            .each_ref()
            .map(|counter| counter.load(Ordering::Relaxed));
        if open == 0 {
            // Nothing seen since a restore: only the present is known.
            return vec![Point {
                interval: end,
                counts: counts_now,
                events: [0; 3],
                seconds: HISTORY_INTERVAL_SECONDS,
            }];
        }
        let first_known = closed.front().map_or(open, |p| p.interval);
        let start = (from.0 / INTERVAL_MS).max(first_known);
        let next = closed.partition_point(|p| p.interval < start);
        let mut carry = next.checked_sub(1).map(|i| closed[i].counts);
        let mut stored = closed.range(next..).peekable();
        let mut out = Vec::new();
        for interval in start..=end.max(open) {
            let point = if interval < open {
                match stored.next_if(|p| p.interval == interval) {
                    Some(point) => *point,
                    None => match carry {
                        Some(counts) => Point {
                            interval,
                            counts,
                            events: [0; 3],
                            seconds: HISTORY_INTERVAL_SECONDS,
                        },
                        None => continue,
                    },
                }
            } else {
                let elapsed = now.0.saturating_sub(interval * INTERVAL_MS) / 1000;
                Point {
                    interval,
                    counts: counts_now,
                    events: if interval == open { events } else { [0; 3] },
                    seconds: elapsed.clamp(1, HISTORY_INTERVAL_SECONDS),
                }
            };
            carry = Some(point.counts);
            out.push(point);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Timestamp {
        Timestamp(1_000_000_000_000 + seconds * 1000)
    }

    #[test]
    fn intervals_close_with_their_counts_and_gaps_repeat_them() {
        let history = History::new(at(0));
        let mut counts = [10, 0, 0, 0, 0];
        history.touch(at(1), || counts);
        history.count(HistoryEvent::Redemption);
        counts = [9, 0, 0, 1, 0];
        // Nothing in the next interval; the one after closes the first.
        history.touch(at(25), || counts);
        history.count(HistoryEvent::Assignment);
        counts = [8, 1, 0, 1, 0];
        let points = history.points(at(0), at(27), counts);
        let got: Vec<(u64, [u64; 5], [u64; 3], u64)> = points
            .iter()
            .map(|p| (p.at().0 - at(0).0, p.counts, p.events, p.seconds))
            .collect();
        assert_eq!(
            got,
            [
                (0, [9, 0, 0, 1, 0], [1, 0, 0], 10),
                (10_000, [9, 0, 0, 1, 0], [0, 0, 0], 10),
                (20_000, [8, 1, 0, 1, 0], [0, 1, 0], 7),
            ]
        );
        // A later `from` starts there, with the counts carried in.
        let later = history.points(at(12), at(27), counts);
        assert_eq!(later.len(), 2);
        assert_eq!(later[0].counts, [9, 0, 0, 1, 0]);
    }

    #[test]
    fn the_ring_keeps_a_day_and_no_more() {
        let history = History::new(at(0));
        let day = HISTORY_POINTS_MAX as u64 * HISTORY_INTERVAL_SECONDS;
        for s in (0..day * 2).step_by(HISTORY_INTERVAL_SECONDS as usize) {
            history.touch(at(s), || [s, 0, 0, 0, 0]);
        }
        let len = history.closed.lock().len();
        assert!(len < HISTORY_POINTS_MAX, "{len}");
        let now = at(day * 2);
        let points = history.points(at(0), now, [0; 5]);
        assert!(points.len() <= HISTORY_POINTS_MAX + 2, "{}", points.len());
        assert!(points[0].at().0 <= now.0 - day * 1000, "a full day is kept");
    }

    #[test]
    fn a_history_survives_encoding_and_bad_bytes_are_refused() {
        let history = History::new(at(0));
        for (second, counts) in [
            (5, [9, 1, 0, 0, 0]),
            (25, [8, 1, 0, 1, 0]),
            (61, [7, 1, 0, 2, 0]),
        ] {
            history.touch(at(second), || counts);
            history.count(HistoryEvent::Redemption);
        }
        let mut bytes = Vec::new();
        history.encode(&mut bytes);
        let restored = History::new(at(0));
        restored.decode(&bytes).unwrap();
        let now = at(75);
        assert_eq!(
            restored.points(at(0), now, [7, 1, 0, 2, 0]),
            history.points(at(0), now, [7, 1, 0, 2, 0])
        );
        let mut again = Vec::new();
        restored.encode(&mut again);
        assert_eq!(again, bytes);
        assert!(restored.decode(&bytes[..bytes.len() - 1]).is_err());
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(&[0; 8]);
        assert!(restored.decode(&trailing).is_err());
        // A point at the open interval cannot have been written.
        let mut disordered = bytes.clone();
        disordered[..8].copy_from_slice(&1u64.to_le_bytes());
        assert!(restored.decode(&disordered).is_err());
    }

    #[test]
    fn after_forget_only_the_present_is_known() {
        let history = History::new(at(0));
        history.touch(at(15), || [1, 0, 0, 0, 0]);
        history.forget();
        let points = history.points(at(0), at(100), [7, 0, 0, 0, 0]);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].counts, [7, 0, 0, 0, 0]);
        history.touch(at(120), || [7, 0, 0, 0, 0]);
        assert_eq!(history.points(at(0), at(125), [7; 5]).len(), 1);
    }
}
