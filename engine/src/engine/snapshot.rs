//! Snapshots: the whole state as a sequence of synthetic records that
//! replay rebuilds it from, so a snapshot gets the log's validation; and a
//! text dump of the state for comparing two engines.
//!
//! The blob (`docs/record-format.md`): the version byte, then entries of a
//! fixed header (type byte, LSN, payload length) and a record payload; a
//! `Counters` entry closes it.

use std::collections::HashSet;

use crate::Timestamp;
use crate::campaign::{Campaign, CodeMeta};
use crate::record::{CampaignPatch, Journal, Lsn, Record, RecordKind, Slot};
use crate::state::{CodeState, PublicState};
use crate::sync::Ordering;

use super::{Engine, IMPORT_BATCH_CODES, ReplayError, SNAPSHOT_VERSION};

// ---- Blob layout ------------------------------------------------------------

const BLOB_VERSION_OFFSET: usize = 0;
const BLOB_ENTRIES_OFFSET: usize = BLOB_VERSION_OFFSET + 1;

// ---- Entry header -----------------------------------------------------------

const ENTRY_KIND_OFFSET: usize = 0;
const ENTRY_LSN_OFFSET: usize = ENTRY_KIND_OFFSET + 1;
const ENTRY_LENGTH_OFFSET: usize = ENTRY_LSN_OFFSET + 8;
/// Bytes of an entry before its payload.
const ENTRY_HEADER_BYTES: usize = ENTRY_LENGTH_OFFSET + 4;
const _: () = assert!(ENTRY_HEADER_BYTES == 13);

/// Appends one entry: header, then the record's payload.
fn put_entry(out: &mut Vec<u8>, lsn: Lsn, record: &Record<'_>) {
    put_raw_entry(out, record.kind() as u8, lsn, |out| record.encode(out));
}

/// An entry's header, then the payload `write` appends, then its length.
fn put_raw_entry(out: &mut Vec<u8>, kind: u8, lsn: Lsn, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.resize(start + ENTRY_HEADER_BYTES, 0);
    out[start + ENTRY_KIND_OFFSET] = kind;
    out[start + ENTRY_LSN_OFFSET..start + ENTRY_LENGTH_OFFSET].copy_from_slice(&lsn.to_le_bytes());
    write(out);
    let len = out.len() - start - ENTRY_HEADER_BYTES;
    let len = u32::try_from(len).expect("an entry under 4 GiB");
    out[start + ENTRY_LENGTH_OFFSET..start + ENTRY_HEADER_BYTES]
        .copy_from_slice(&len.to_le_bytes());
}

/// One entry read back: (type byte, LSN, payload), and the bytes after it.
/// Kind byte of a snapshot entry that is no record: a campaign's history
/// for the dashboard (its number, then [`History`]'s bytes), which the log
/// does not hold. Outside the record kinds, so the log can never carry one.
///
/// [`History`]: crate::history
const HISTORY_ENTRY_KIND: u8 = 0xF0;

fn put_history_entry(out: &mut Vec<u8>, lsn: Lsn, campaign: &Campaign) {
    put_raw_entry(out, HISTORY_ENTRY_KIND, lsn, |out| {
        out.extend_from_slice(&campaign.number.to_le_bytes());
        campaign.history.encode(out);
    });
}

type Entry<'b> = ((u8, Lsn, &'b [u8]), &'b [u8]);

/// Splits the first entry off `rest`.
fn take_entry(rest: &[u8]) -> Result<Entry<'_>, &'static str> {
    let header = rest
        .get(..ENTRY_HEADER_BYTES)
        .ok_or("truncated entry header")?;
    let kind = header[ENTRY_KIND_OFFSET];
    let lsn = &header[ENTRY_LSN_OFFSET..ENTRY_LENGTH_OFFSET];
    let lsn = u64::from_le_bytes(lsn.try_into().expect("8 bytes"));
    let len = &header[ENTRY_LENGTH_OFFSET..ENTRY_HEADER_BYTES];
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let end = ENTRY_HEADER_BYTES
        .checked_add(len)
        .ok_or("truncated entry")?;
    let payload = rest.get(ENTRY_HEADER_BYTES..end).ok_or("truncated entry")?;
    Ok(((kind, lsn, payload), &rest[end..]))
}

impl<J: Journal> Engine<J> {
    /// The whole state as a snapshot: a sequence of synthetic records that,
    /// applied by [`Engine::restore`] to a fresh engine, rebuild it exactly
    /// (the same `dump_state`). Re-applying goes through replay's checks, so
    /// a damaged snapshot is refused like a damaged log.
    ///
    /// Stored responses past their retention at `at` are left out.
    ///
    /// The engine must not change while this runs: the server takes
    /// snapshots of a shadow engine that only replays the log.
    pub fn snapshot(&self, lsn: Lsn, at: Timestamp) -> Vec<u8> {
        let mut out = vec![0; BLOB_ENTRIES_OFFSET];
        out[BLOB_VERSION_OFFSET] = SNAPSHOT_VERSION;
        for campaign in self.campaigns() {
            self.snapshot_campaign(campaign, lsn, &mut |lsn, record| {
                put_entry(&mut out, lsn, record);
            });
            put_history_entry(&mut out, lsn, campaign);
        }
        let mut emit = |lsn: Lsn, record: &Record<'_>| put_entry(&mut out, lsn, record);
        self.snapshot_webhooks(lsn, &mut emit);
        for (lsn, key, fingerprint, response, stored_at) in self.idempotency.entries(at) {
            emit(
                lsn,
                &Record::IdempotentResponse {
                    at: stored_at,
                    key: &key,
                    fingerprint,
                    status: response.status,
                    body: &response.body,
                },
            );
        }
        // Relaxed: the engine is quiescent (see above).
        let next_reservation = self.next_reservation.load(Ordering::Relaxed);
        emit(
            lsn,
            &Record::Counters {
                at,
                next_reservation,
            },
        );
        out
    }

    /// One campaign's records: its creation and settings, its imports, its
    /// assignments, the state of each touched code, its low-stock event.
    fn snapshot_campaign(
        &self,
        campaign: &Campaign,
        lsn: Lsn,
        emit: &mut impl FnMut(Lsn, &Record<'_>),
    ) {
        let mut emit = |record: &Record<'_>| emit(lsn, record);
        snapshot_creation(campaign, &mut emit);
        snapshot_imports(campaign, &mut emit);
        let touched = campaign.touched();
        snapshot_assignments(campaign, &touched, &mut emit);
        for (slot, meta) in &touched {
            snapshot_code_state(campaign, *slot, meta, &mut emit);
        }
        // Relaxed: the engine is quiescent.
        if campaign.low_stock_reported.load(Ordering::Relaxed) {
            emit(&Record::LowStock {
                at: campaign.created_at,
                campaign: campaign.number,
                available: campaign.available(),
            });
        }
    }

    /// Rebuilds a fresh engine's state from [`Engine::snapshot`]'s bytes.
    pub fn restore(&self, blob: &[u8]) -> Result<(), ReplayError> {
        let bad = |reason: &str| ReplayError {
            lsn: 0,
            reason: format!("snapshot: {reason}"),
        };
        let version = *blob.get(BLOB_VERSION_OFFSET).ok_or_else(|| bad("empty"))?;
        if version != SNAPSHOT_VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        if self.campaign_total() != 0 {
            return Err(bad("restore into an engine that has state"));
        }
        let mut rest = &blob[BLOB_ENTRIES_OFFSET..];
        // The counters entry closes every snapshot: a cut at an entry
        // boundary is caught too.
        let mut closed = false;
        let mut histories = Vec::new();
        while !rest.is_empty() {
            if closed {
                return Err(bad("entries after the closing counters"));
            }
            let ((kind, lsn, payload), after) = take_entry(rest).map_err(bad)?;
            closed = kind == RecordKind::Counters as u8;
            if kind == HISTORY_ENTRY_KIND {
                histories.push(payload);
            } else {
                self.apply_encoded(lsn, kind, payload)
                    .map_err(|e| bad(&e.to_string()))?;
            }
            rest = after;
        }
        if !closed {
            return Err(bad("truncated: no closing counters entry"));
        }
        // A snapshot's records carry creation and transition times out of
        // order, which says nothing of when things happened; the history
        // comes from the snapshot's own entries (a snapshot written before
        // they existed has none: the history then starts with the log
        // replayed after it).
        for campaign in self.campaigns() {
            campaign.history.forget();
        }
        for payload in histories {
            let (number, bytes) = payload
                .split_first_chunk::<4>()
                .ok_or_else(|| bad("history: truncated"))?;
            let campaign = self
                .campaign_by_number(u32::from_le_bytes(*number))
                .ok_or_else(|| bad("history of an unknown campaign"))?;
            campaign.history.decode(bytes).map_err(bad)?;
        }
        Ok(())
    }

    /// A deterministic text dump of every campaign, code, holder, user count
    /// and stored response: two engines with equal dumps hold equal state.
    /// O(codes); for tests, audits and `wal replay` checks on small logs.
    pub fn dump_state(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for campaign in self.campaigns() {
            let view = campaign.view(Timestamp(0));
            let s = view.stats;
            let _ = writeln!(
                out,
                "campaign {} #{} paused={} total={} avail={} assigned={} reserved={} redeemed={} voided={} test={}",
                campaign.id(),
                campaign.number,
                view.paused,
                s.total,
                s.available,
                s.assigned,
                s.reserved,
                s.redeemed,
                s.voided,
                s.test_assignments
            );
            for (map, make) in campaign.maps() {
                for index in 0..map.len() {
                    let slot = make(index);
                    let state = map.get(index).expect("slot exists");
                    let meta = campaign.meta_of(slot);
                    if state == CodeState::Available && meta.recipient.is_none() {
                        continue;
                    }
                    let _ = writeln!(
                        out,
                        "  {} {:?} recipient={:?} deadline={:?} hold={:?} redemption={:?}",
                        campaign.code_of(slot),
                        state,
                        meta.recipient.as_deref(),
                        meta.deadline(&campaign.terms),
                        meta.hold.map(|h| (h.id, h.user, h.until)),
                        meta.redemption.map(|r| (
                            r.user().to_owned(),
                            r.at(),
                            r.order().map(str::to_owned)
                        )),
                    );
                }
            }
            let mut users = Vec::new();
            campaign.users.for_each_shard(|map| {
                users.extend(
                    map.iter()
                        .filter(|(_, e)| e.claimed > 0)
                        .map(|(k, e)| (k.to_string(), e.claimed)),
                )
            });
            users.sort();
            let _ = writeln!(out, "  users {users:?}");
            let mut recipients: Vec<_> = campaign.recipients_snapshot().into_iter().collect();
            recipients.sort();
            let _ = writeln!(out, "  recipients {recipients:?}");
        }
        let mut holds = Vec::new();
        self.reservations.for_each_shard(|map| {
            holds.extend(map.iter().map(|(id, h)| (*id, h.campaign, h.slot, h.until)))
        });
        holds.sort();
        let _ = writeln!(out, "holds {holds:?}");
        let _ = writeln!(out, "expiries {:?}", *self.expiries.lock());
        out.push_str(&self.dump_webhooks());
        let _ = writeln!(out, "idempotency {}", self.idempotency.dump());
        out
    }
}

/// The campaign's creation with its current settings and generated count,
/// and a pause if it is paused.
fn snapshot_creation(campaign: &Campaign, emit: &mut impl FnMut(&Record<'_>)) {
    let view = campaign.view(campaign.created_at);
    let mut spec = view.spec.clone();
    spec.generate = campaign.generated.len();
    emit(&Record::CampaignCreated {
        at: campaign.created_at,
        campaign: campaign.number,
        key: campaign.codec_key,
        spec,
        idem: None,
    });
    if view.paused {
        let patch = CampaignPatch {
            paused: Some(true),
            ..CampaignPatch::default()
        };
        emit(&Record::CampaignUpdated {
            at: campaign.created_at,
            campaign: campaign.number,
            patch,
            idem: None,
        });
    }
}

/// The imported codes, in batches as an import logs them.
fn snapshot_imports(campaign: &Campaign, emit: &mut impl FnMut(&Record<'_>)) {
    let imported = campaign.imported_codes.read().clone();
    for (i, batch) in imported.chunks(IMPORT_BATCH_CODES).enumerate() {
        let codes = batch.iter().map(|c| &**c).collect();
        let first = (i * IMPORT_BATCH_CODES) as u64;
        emit(&Record::CodesImported {
            at: campaign.created_at,
            campaign: campaign.number,
            first,
            codes,
        });
    }
}

/// Every assignment: recipients' first, each recipient's codes in the order
/// it got them (its first code is the one it is given again), then those
/// of test recipients, which no recipient entry lists.
fn snapshot_assignments(
    campaign: &Campaign,
    touched: &[(Slot, CodeMeta)],
    emit: &mut impl FnMut(&Record<'_>),
) {
    let meta_of = |slot: Slot| {
        &touched[touched
            .binary_search_by_key(&slot, |(s, _)| *s)
            .expect("assigned code has meta")]
        .1
    };
    let mut recipients: Vec<(String, Vec<Slot>)> =
        campaign.recipients_snapshot().into_iter().collect();
    recipients.sort();
    let mut in_recipients = HashSet::new();
    for (recipient, slots) in &recipients {
        for slot in slots {
            let at = meta_of(*slot)
                .assigned_at()
                .expect("an assigned code has its time");
            in_recipients.insert(*slot);
            emit(&Record::Assigned {
                at,
                campaign: campaign.number,
                slot: *slot,
                recipient,
                test: false,
                idem: None,
            });
        }
    }
    for (slot, meta) in touched {
        if let (Some(recipient), Some(at)) = (meta.recipient.as_deref(), meta.assigned_at())
            && !in_recipients.contains(slot)
        {
            emit(&Record::Assigned {
                at,
                campaign: campaign.number,
                slot: *slot,
                recipient,
                test: true,
                idem: None,
            });
        }
    }
}

/// The record that takes a touched, possibly assigned, code to its state.
fn snapshot_code_state(
    campaign: &Campaign,
    slot: Slot,
    meta: &CodeMeta,
    emit: &mut impl FnMut(&Record<'_>),
) {
    let state = campaign
        .map(slot)
        .get(slot.index())
        .expect("touched slot exists");
    let number = campaign.number;
    match state.public() {
        PublicState::Available | PublicState::Assigned => {}
        PublicState::Reserved => {
            let hold = meta.hold.as_ref().expect("a reserved code has its hold");
            emit(&Record::Reserved {
                at: hold.until,
                campaign: number,
                slot,
                reservation: hold.id,
                user: &hold.user,
                expires_at: hold.until,
                idem: None,
            });
        }
        PublicState::Redeemed => {
            let r = meta
                .redemption
                .as_ref()
                .expect("a redeemed code has its redemption");
            emit(&Record::Redeemed {
                at: r.at(),
                campaign: number,
                slot,
                user: r.user(),
                order: r.order(),
                reservation: None,
                idem: None,
            });
        }
        PublicState::Voided => emit(&Record::Voided {
            at: campaign.created_at,
            campaign: number,
            slot,
            idem: None,
        }),
    }
}
