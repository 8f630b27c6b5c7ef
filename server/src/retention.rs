//! Log retention (API.md "Log retention"): which log segments may go.
//!
//! A segment may be deleted only once a snapshot covers every record in
//! it. Then it goes when its newest record is older than
//! `--retain-log-seconds` (so `/v1/events` reads a day back by default),
//! and in any case, oldest first, while the log's segments take more than
//! `--retain-log-bytes`. Age is the newest record's own time, read from
//! the log, so a restart does not make old segments look young.

use redeem_engine::{Lsn, Record, Timestamp};
use redeem_wal::SegmentInfo;

use crate::app::App;

/// What decides which segments go.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Covered segments whose newest record is at least this old go.
    pub retain_ms: u64,
    /// Covered segments go, oldest first, while the log is larger.
    pub retain_bytes: u64,
    /// The lowest cursor of the active webhook subscriptions, if any:
    /// segments with records after it are kept past `retain_ms`.
    pub webhook_cursor: Option<Lsn>,
}

/// The LSN before which every segment may be deleted: segments wholly
/// before it are covered by the snapshot at `snapshot_lsn` and either old
/// or over the byte budget. `last_at(lsn)` is the time of record `lsn`
/// (`None` if it cannot be read: the segment is then kept). The newest
/// segment always stays.
pub fn cut(
    segments: &[SegmentInfo],
    snapshot_lsn: Lsn,
    policy: Policy,
    now: Timestamp,
    mut last_at: impl FnMut(Lsn) -> Option<Timestamp>,
) -> Lsn {
    let Some(first) = segments.first() else {
        return 0;
    };
    let mut cut = first.first_lsn;
    let mut bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    for pair in segments.windows(2) {
        let (segment, next) = (pair[0], pair[1]);
        let last = next.first_lsn - 1;
        if last > snapshot_lsn {
            break;
        }
        let over_budget = bytes > policy.retain_bytes;
        let old = last < segment.first_lsn
            || last_at(last).is_some_and(|at| now.0.saturating_sub(at.0) >= policy.retain_ms);
        if !(over_budget || (old && !needed_by_webhooks(policy.webhook_cursor, last))) {
            break;
        }
        bytes -= segment.bytes;
        cut = next.first_lsn;
    }
    cut
}

/// Whether an active webhook has yet to deliver records up to `lsn`: the
/// lowest active cursor is before it. Such a segment is kept past
/// `--retain-log-seconds`, but not past `--retain-log-bytes` (a webhook
/// that loses events that way gets one `events_dropped` in their place).
/// Paused and disabled subscriptions keep nothing: they must not hold the
/// disk hostage.
fn needed_by_webhooks(lowest_cursor: Option<Lsn>, lsn: Lsn) -> bool {
    lowest_cursor.is_some_and(|cursor| cursor < lsn)
}

/// The lowest cursor of the active subscriptions.
pub fn lowest_active_cursor(app: &App) -> Option<Lsn> {
    app.engine
        .webhooks()
        .iter()
        .filter(|h| h.status == redeem_engine::WebhookStatus::Active)
        .map(|h| h.cursor)
        .min()
}

/// Deletes what the policy lets go, given the newest durable snapshot;
/// returns how many segments were deleted.
pub fn apply(app: &App, snapshot_lsn: Lsn, now: Timestamp) -> Result<usize, String> {
    let policy = Policy {
        retain_ms: app.config.retain_log_seconds.saturating_mul(1000),
        retain_bytes: app.config.retain_log_bytes,
        webhook_cursor: lowest_active_cursor(app),
    };
    let segments = app.wal.segments();
    let cut = cut(&segments, snapshot_lsn, policy, now, |lsn| {
        let mut records = app.wal.read_from(lsn).ok()?;
        let record = records.next_record()?.ok()?;
        let decoded = Record::decode(record.record_type, record.payload).ok()?;
        Some(decoded.at())
    });
    if cut <= segments.first().map_or(0, |s| s.first_lsn) {
        return Ok(0);
    }
    app.wal
        .remove_segments_before(cut)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    const SEGMENT_BYTES: u64 = 100;

    /// Segments starting at these LSNs; the record before each start was
    /// written at `times[i]` (ms).
    #[track_caller]
    fn check(starts: &[Lsn], times: &[u64], snapshot: Lsn, policy: Policy, now: u64, want: Lsn) {
        let segments: Vec<SegmentInfo> = starts
            .iter()
            .map(|&first_lsn| SegmentInfo {
                first_lsn,
                bytes: SEGMENT_BYTES,
            })
            .collect();
        let at = |lsn: Lsn| {
            let i = starts.iter().position(|&s| s == lsn + 1)?;
            Some(Timestamp(times[i - 1]))
        };
        assert_eq!(cut(&segments, snapshot, policy, Timestamp(now), at), want);
    }

    const DEFAULT: Policy = Policy {
        retain_ms: DAY_MS,
        retain_bytes: 4 << 30,
        webhook_cursor: None,
    };

    #[test]
    fn covered_old_segments_go_young_ones_stay() {
        // Segments 1..10, 10..20, 20..30, 30..; ends written at 0, 1 d, 2 d.
        let starts = [1, 10, 20, 30];
        let times = [0, DAY_MS, 2 * DAY_MS];
        // A day and a half later: the first is old, the second is not.
        check(&starts, &times, 40, DEFAULT, DAY_MS + DAY_MS / 2, 10);
        // Much later, all but the newest go.
        check(&starts, &times, 40, DEFAULT, 10 * DAY_MS, 30);
        // Only what the snapshot covers.
        check(&starts, &times, 19, DEFAULT, 10 * DAY_MS, 20);
        check(&starts, &times, 18, DEFAULT, 10 * DAY_MS, 10);
        // Right after a write, nothing.
        check(&starts, &times, 40, DEFAULT, 0, 1);
    }

    #[test]
    fn the_byte_budget_lets_young_segments_go() {
        let starts = [1, 10, 20, 30];
        let times = [0, 0, 0];
        let small = Policy {
            retain_ms: DAY_MS,
            retain_bytes: 2 * SEGMENT_BYTES,
            webhook_cursor: None,
        };
        // Four segments of 100 bytes over a 200-byte budget: two go.
        check(&starts, &times, 40, small, 0, 20);
        // Not past the snapshot, though.
        check(&starts, &times, 9, small, 0, 10);
        // Zero seconds: everything covered goes at once.
        let now = Policy {
            retain_ms: 0,
            retain_bytes: 4 << 30,
            webhook_cursor: None,
        };
        check(&starts, &times, 40, now, 0, 30);
    }

    #[test]
    fn an_active_webhook_keeps_what_it_has_not_delivered_within_the_budget() {
        let starts = [1, 10, 20, 30];
        let times = [0, 0, 0];
        // Its cursor at 12: the first segment (1..=9) is delivered and
        // goes; the second (10..=19) holds undelivered records and stays.
        let hooked = Policy {
            webhook_cursor: Some(12),
            ..DEFAULT
        };
        check(&starts, &times, 40, hooked, 10 * DAY_MS, 10);
        // A cursor at a segment's last record needs none of it.
        let hooked = Policy {
            webhook_cursor: Some(19),
            ..DEFAULT
        };
        check(&starts, &times, 40, hooked, 10 * DAY_MS, 20);
        // Over the byte budget, it loses them all the same.
        let small = Policy {
            retain_ms: DAY_MS,
            retain_bytes: 2 * SEGMENT_BYTES,
            webhook_cursor: Some(1),
        };
        check(&starts, &times, 40, small, 10 * DAY_MS, 20);
    }
}
