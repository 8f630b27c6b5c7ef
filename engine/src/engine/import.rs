//! Imported codes: an [`Importer`] feeds client lines into a campaign in
//! logged batches; replay adds each batch again.

use std::collections::HashSet;

use crate::Timestamp;
use crate::campaign::Campaign;
use crate::record::{Journal, Lsn, Record, Slot};
use crate::sync::{Arc, Ordering};

use super::refusal::replay_err;
use super::{
    Engine, IMPORT_BATCH_CODES, IMPORT_REJECTS_REPORTED_MAX, IMPORTED_CODE_CHARS_MAX, ImportReport,
    Refusal, ReplayError,
};

impl<J: Journal> Engine<J> {
    /// Starts an import into a campaign; feed it lines, then `finish`.
    pub fn importer(&self, id: &str) -> Result<Importer<'_, J>, Refusal> {
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        Ok(Importer {
            engine: self,
            campaign,
            pending: Vec::new(),
            pending_set: HashSet::new(),
            report: ImportReport::default(),
        })
    }

    /// Replays a batch of imported codes: it must continue the campaign's
    /// imports, and no code may exist yet.
    pub(super) fn replay_imported(
        &self,
        lsn: Lsn,
        campaign: &Campaign,
        first: u64,
        codes: &[&str],
    ) -> Result<(), ReplayError> {
        if first != campaign.imported.len() {
            return Err(replay_err(
                lsn,
                format!(
                    "import starts at {first}, campaign has {}",
                    campaign.imported.len()
                ),
            ));
        }
        for (i, code) in codes.iter().enumerate() {
            let slot = Slot::imported(first + i as u64);
            let mut shard = self.imported.shard(*code);
            if shard.contains_key(*code) {
                return Err(replay_err(lsn, format!("imported code {code} exists")));
            }
            shard.insert((*code).into(), (campaign.number, slot));
        }
        self.add_imported(campaign, codes);
        Ok(())
    }

    /// Makes imported codes (already in `self.imported`) live in the campaign.
    fn add_imported(&self, campaign: &Campaign, codes: &[&str]) {
        {
            let mut list = campaign.imported_codes.write();
            list.extend(codes.iter().map(|c| Arc::from(*c)));
        }
        // Relaxed: a hint for `resolve` only.
        self.imported_count
            .fetch_add(codes.len() as u64, Ordering::Relaxed);
        campaign
            .imported
            .grow(codes.len() as u64)
            .expect("imports bounded by the map capacity");
        self.after_stock_added(campaign);
    }
}

/// Feeds imported codes into a campaign in batches of
/// [`IMPORT_BATCH_CODES`], one record each, so a huge import never sits in
/// memory whole.
pub struct Importer<'e, J: Journal> {
    /// The engine the codes go into.
    engine: &'e Engine<J>,
    /// Their campaign.
    campaign: &'e Campaign,
    /// Codes of the next batch, in line order.
    pending: Vec<String>,
    /// The same codes, so a repeat within the batch is a duplicate.
    pending_set: HashSet<String>,
    /// What the import did so far.
    report: ImportReport,
}

impl<J: Journal> Importer<'_, J> {
    /// Counts a rejected line, and reports the first ones in detail.
    fn reject(&mut self, line: u64, reason: &'static str) {
        self.report.rejected_total += 1;
        if self.report.rejected.len() < IMPORT_REJECTS_REPORTED_MAX {
            self.report.rejected.push((line, reason));
        }
    }

    /// Takes one line (1-based number); blank lines are ignored.
    pub fn push(&mut self, line_no: u64, line: &str, now: Timestamp) -> Result<(), Refusal> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Ok(());
        }
        if !is_imported_syntax(line) {
            self.reject(line_no, "invalid_code");
            return Ok(());
        }
        let normalized: String = line
            .chars()
            .filter(|&c| c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if normalized.is_empty() {
            self.reject(line_no, "invalid_code");
            return Ok(());
        }
        if self.pending_set.contains(&normalized) {
            self.report.duplicates += 1;
            return Ok(());
        }
        if let Some(&(number, _)) = self
            .engine
            .imported
            .shard(normalized.as_str())
            .get(normalized.as_str())
        {
            if number == self.campaign.number {
                self.report.duplicates += 1;
            } else {
                self.reject(line_no, "exists_in_other_campaign");
            }
            return Ok(());
        }
        // A generated code of any campaign would be ambiguous.
        if let Ok(code) = self.engine.resolve(&normalized) {
            if code.campaign.number == self.campaign.number {
                self.report.duplicates += 1;
            } else {
                self.reject(line_no, "exists_in_other_campaign");
            }
            return Ok(());
        }
        self.pending_set.insert(normalized.clone());
        self.pending.push(normalized);
        if self.pending.len() >= IMPORT_BATCH_CODES {
            self.flush(now)?;
        }
        Ok(())
    }

    /// Logs the pending batch as one record and makes its codes live.
    fn flush(&mut self, now: Timestamp) -> Result<(), Refusal> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let engine = self.engine;
        let campaign = self.campaign;
        let _order = campaign.add_lock.lock();
        let first = campaign.imported.len();
        // Claim each code in the global map; a code another import took in
        // the meantime is reported, not logged.
        let mut winners: Vec<&str> = Vec::with_capacity(self.pending.len());
        let mut lost = 0u64;
        for code in &self.pending {
            let slot = Slot::imported(first + winners.len() as u64);
            let mut shard = engine.imported.shard(code.as_str());
            match shard.get(code.as_str()) {
                Some(&(number, _)) if number == campaign.number => lost += 1,
                Some(_) => {
                    self.report.rejected_total += 1;
                }
                None => {
                    shard.insert(code.as_str().into(), (campaign.number, slot));
                    winners.push(code);
                }
            }
        }
        self.report.duplicates += lost;
        let record = Record::CodesImported {
            at: now,
            campaign: campaign.number,
            first,
            codes: winners,
        };
        if let Err(refusal) = engine.append(&record) {
            let Record::CodesImported { codes, .. } = &record else {
                unreachable!()
            };
            for code in codes {
                engine.imported.shard(*code).remove(*code);
            }
            return Err(refusal);
        }
        let Record::CodesImported { codes, .. } = &record else {
            unreachable!()
        };
        engine.add_imported(campaign, codes);
        self.report.added += codes.len() as u64;
        self.pending.clear();
        self.pending_set.clear();
        Ok(())
    }

    /// Logs the last batch and reports the whole import.
    pub fn finish(mut self, now: Timestamp) -> Result<ImportReport, Refusal> {
        self.flush(now)?;
        self.report.total = self.campaign.generated.len() + self.campaign.imported.len();
        Ok(self.report)
    }
}

/// Whether `input` is shaped like an imported code: 1 to
/// [`IMPORTED_CODE_CHARS_MAX`] characters of `[A-Za-z0-9_-]`.
pub(super) fn is_imported_syntax(input: &str) -> bool {
    (1..=IMPORTED_CODE_CHARS_MAX).contains(&input.len())
        && input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
