//! Campaigns: creation, updates, generated codes, and the low-stock event
//! that follows their stock.

use crate::Timestamp;
use crate::campaign::Campaign;
use crate::codec::{CodeFormat, CodeKey, Codec};
use crate::record::{
    CODE_KEY_BYTES, CampaignNo, CampaignPatch, CampaignSpec, Journal, Lsn,
    RESERVATION_TTL_SECONDS_MAX, Record,
};
use crate::sync::Ordering;

use super::refusal::replay_err;
use super::{
    CAMPAIGNS_MAX, Engine, GENERATE_MAX, GUESS_PROBABILITY_MAX, IdemKey, ImportReport, PrefixEntry,
    Refusal, ReplayError, check_name,
};

/// Most test recipients a campaign lists: at the longest names they stay
/// well inside one record, so a client's long list is refused as a 4xx
/// rather than failing the log append as a 503.
pub const TEST_RECIPIENTS_MAX: usize = 1000;

fn check_test_recipients(list: &[String]) -> Result<(), Refusal> {
    if list.len() > TEST_RECIPIENTS_MAX {
        return Err(Refusal::InvalidRequest {
            field: "test_recipients",
            message: format!("at most {TEST_RECIPIENTS_MAX} names, got {}", list.len()),
        });
    }
    list.iter()
        .try_for_each(|recipient| check_name("test_recipients", recipient))
}

/// The longest campaign id, in bytes.
const CAMPAIGN_ID_BYTES_MAX: usize = 64;

impl<J: Journal> Engine<J> {
    /// The rules every campaign is created under, live and in replay.
    pub(super) fn validate_spec(spec: &CampaignSpec) -> Result<CodeFormat, Refusal> {
        let id_ok = !spec.id.is_empty()
            && spec.id.len() <= CAMPAIGN_ID_BYTES_MAX
            && spec
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(Refusal::InvalidRequest {
                field: "id",
                message: format!("must be 1 to {CAMPAIGN_ID_BYTES_MAX} characters of [a-z0-9-]"),
            });
        }
        let format =
            CodeFormat::new(&spec.prefix, spec.length).map_err(|err| Refusal::InvalidRequest {
                field: "code",
                message: err.to_string(),
            })?;
        if spec.generate > GENERATE_MAX {
            return Err(Refusal::InvalidRequest {
                field: "generate",
                message: format!("at most {GENERATE_MAX}, got {}", spec.generate),
            });
        }
        Self::check_space(&format, spec.generate)?;
        if !(1..=RESERVATION_TTL_SECONDS_MAX).contains(&spec.reservation_ttl_seconds) {
            return Err(Refusal::InvalidRequest {
                field: "reservation_ttl_seconds",
                message: format!("must be 1 to {RESERVATION_TTL_SECONDS_MAX}"),
            });
        }
        if spec.per_recipient_limit == 0 {
            return Err(Refusal::InvalidRequest {
                field: "per_recipient_limit",
                message: "must be at least 1".into(),
            });
        }
        if let (Some(start), Some(end)) = (spec.starts_at, spec.expires_at)
            && end <= start
        {
            return Err(Refusal::InvalidRequest {
                field: "expires_at",
                message: "must be after starts_at".into(),
            });
        }
        check_test_recipients(&spec.test_recipients)?;
        Ok(format)
    }

    /// Refuses `issued` codes of `format` when a guess would hit one too often.
    fn check_space(format: &CodeFormat, issued: u64) -> Result<(), Refusal> {
        if format.guess_probability(issued) > GUESS_PROBABILITY_MAX {
            let space = format.space();
            return Err(Refusal::CodeSpaceTooSmall { issued, space });
        }
        Ok(())
    }

    /// Creates a campaign keyed by `key`, which the caller draws (the engine
    /// has no source of randomness, as it has no clock).
    pub fn create_campaign(
        &self,
        spec: CampaignSpec,
        key: CodeKey,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<crate::CampaignView, Refusal> {
        let format = Self::validate_spec(&spec)?;
        let _create = self.create_lock.lock();
        if self
            .by_id
            .shard(spec.id.as_str())
            .contains_key(spec.id.as_str())
        {
            return Err(Refusal::CampaignExists);
        }
        self.check_prefix(&format)?;
        let count = self.campaign_total();
        if count as usize >= CAMPAIGNS_MAX {
            return Err(Refusal::TooManyCampaigns {
                limit: CAMPAIGNS_MAX,
            });
        }
        let number = count as CampaignNo + 1;
        let record = Record::CampaignCreated {
            at: now,
            campaign: number,
            key: key.to_bytes(),
            spec: spec.clone(),
            idem,
        };
        let lsn = self.append(&record)?;
        let campaign = self.install(number, spec, format, key, now);
        self.store_effect(lsn, &record, campaign);
        Ok(campaign.view(now))
    }

    /// Replays [`Engine::create_campaign`], checking its rules again and
    /// that numbers follow log order.
    pub(super) fn replay_created(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        number: CampaignNo,
        key: &[u8; CODE_KEY_BYTES],
        spec: &CampaignSpec,
    ) -> Result<(), ReplayError> {
        if u64::from(number) != self.campaign_total() + 1 {
            return Err(replay_err(
                lsn,
                format!("campaign number {number} out of sequence"),
            ));
        }
        let format = Self::validate_spec(spec).map_err(|r| replay_err(lsn, r.to_string()))?;
        if self
            .by_id
            .shard(spec.id.as_str())
            .contains_key(spec.id.as_str())
        {
            return Err(replay_err(lsn, format!("campaign {} exists", spec.id)));
        }
        self.check_prefix(&format)
            .map_err(|r| replay_err(lsn, r.to_string()))?;
        let key = CodeKey::from_bytes(*key);
        let campaign = self.install(number, spec.clone(), format, key, record.at());
        self.store_effect(lsn, record, campaign);
        Ok(())
    }

    /// Refuses a campaign whose codes could be mistaken for another's, so
    /// that every issued code resolves to its own campaign whatever is
    /// created later. Non-empty prefixes may not begin one another; one
    /// campaign at most has the empty prefix, and its normalized codes must
    /// differ in length from every other campaign's (the empty prefix is
    /// the start of every code, so length is what tells them apart).
    fn check_prefix(&self, format: &CodeFormat) -> Result<(), Refusal> {
        let prefix = format.prefix();
        let code_len = format.normalized_len();
        let prefixes = self.prefixes.read();
        for other in prefixes.iter() {
            let conflict = match (prefix.is_empty(), other.prefix.is_empty()) {
                (true, true) => true,
                (true, false) | (false, true) => other.code_len == code_len,
                (false, false) => {
                    other.prefix.starts_with(prefix) || prefix.starts_with(&*other.prefix)
                }
            };
            if conflict {
                let id = self
                    .campaign_by_number(other.number)
                    .map_or_else(String::new, |c| c.id().into());
                return Err(Refusal::PrefixConflict { other: id });
            }
        }
        Ok(())
    }

    /// Adds a campaign whose record is in the log. Caller holds `create_lock`
    /// or is replaying.
    fn install(
        &self,
        number: CampaignNo,
        spec: CampaignSpec,
        format: CodeFormat,
        key: CodeKey,
        now: Timestamp,
    ) -> &Campaign {
        let generate = spec.generate;
        let code_len = format.normalized_len();
        let codec = Codec::new(format, &key);
        let campaign = Campaign::new(number, spec, codec, key.to_bytes(), now);
        campaign
            .generated
            .grow(generate)
            .expect("GENERATE_MAX is below the map capacity");
        self.prefixes.write().push(PrefixEntry {
            prefix: campaign.terms.prefix.as_str().into(),
            code_len,
            number,
        });
        self.by_id
            .shard(campaign.id())
            .insert(campaign.id().into(), number);
        let ptr = Box::into_raw(Box::new(campaign));
        // Release: the campaign's contents are visible to whoever loads it.
        self.campaigns[number as usize - 1].store(ptr, Ordering::Release);
        // Release: publishes the pointer stored above to `campaign_total` readers.
        self.campaign_count
            .store(u64::from(number), Ordering::Release);
        self.campaign_by_number(number).expect("just installed")
    }

    pub fn update_campaign(
        &self,
        id: &str,
        patch: CampaignPatch,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<crate::CampaignView, Refusal> {
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        if let Some(list) = &patch.test_recipients {
            check_test_recipients(list)?;
        }
        // Hold the add lock so concurrent updates log in the order applied.
        let _order = campaign.add_lock.lock();
        {
            let settings = campaign.settings.read();
            let start = patch.starts_at.unwrap_or(settings.starts_at);
            let end = patch.expires_at.unwrap_or(settings.expires_at);
            if let (Some(start), Some(end)) = (start, end)
                && end <= start
            {
                return Err(Refusal::InvalidRequest {
                    field: "expires_at",
                    message: "must be after starts_at".into(),
                });
            }
        }
        let record = Record::CampaignUpdated {
            at: now,
            campaign: campaign.number,
            patch,
            idem,
        };
        let lsn = self.append(&record)?;
        let Record::CampaignUpdated { patch, .. } = &record else {
            unreachable!()
        };
        campaign.apply_patch(patch);
        self.store_effect(lsn, &record, campaign);
        Ok(campaign.view(now))
    }

    /// Replays [`Engine::update_campaign`]. Settings are admission policy,
    /// not re-checked here.
    pub(super) fn replay_updated(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        campaign: &Campaign,
        patch: &CampaignPatch,
    ) -> Result<(), ReplayError> {
        campaign.apply_patch(patch);
        self.store_effect(lsn, record, campaign);
        Ok(())
    }

    /// Adds `count` generated codes.
    pub fn generate(
        &self,
        id: &str,
        count: u64,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<ImportReport, Refusal> {
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        let _order = campaign.add_lock.lock();
        let issued = campaign.generated.len();
        let new_total = issued
            .checked_add(count)
            .filter(|&n| n <= GENERATE_MAX)
            .ok_or_else(|| Refusal::InvalidRequest {
                field: "generate",
                message: format!("a campaign holds at most {GENERATE_MAX} generated codes"),
            })?;
        Self::check_space(campaign.codec.format(), new_total)?;
        let record = Record::CodesGenerated {
            at: now,
            campaign: campaign.number,
            count,
            idem,
        };
        let lsn = self.append(&record)?;
        campaign
            .generated
            .grow(count)
            .expect("bounded by GENERATE_MAX");
        self.after_stock_added(campaign);
        self.store_effect(lsn, &record, campaign);
        Ok(ImportReport {
            added: count,
            total: campaign.generated.len() + campaign.imported.len(),
            ..ImportReport::default()
        })
    }

    /// Replays [`Engine::generate`].
    pub(super) fn replay_generated(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        campaign: &Campaign,
        count: u64,
    ) -> Result<(), ReplayError> {
        let total = campaign.generated.len().saturating_add(count);
        if total > GENERATE_MAX {
            return Err(replay_err(lsn, "generated codes over the limit"));
        }
        campaign
            .generated
            .grow(count)
            .expect("bounded by GENERATE_MAX");
        self.after_stock_added(campaign);
        self.store_effect(lsn, record, campaign);
        Ok(())
    }

    // ---- low stock ----------------------------------------------------------

    /// Emits the campaign's low-stock event once when a depletion takes the
    /// pool below its threshold.
    pub(super) fn after_depletion(&self, campaign: &Campaign, now: Timestamp) {
        let threshold = campaign.settings.read().low_stock_threshold;
        // Summing the counters costs O(shards): skip it when no threshold is set.
        if threshold == 0 {
            return;
        }
        let available = campaign.available();
        // Relaxed load, then a CAS that elects exactly one reporter.
        if available < threshold
            && !campaign.low_stock_reported.load(Ordering::Relaxed)
            && campaign
                .low_stock_reported
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // An event only; if the journal refuses it, the state is unchanged
            // and the next depletion tries again.
            if self
                .append(&Record::LowStock {
                    at: now,
                    campaign: campaign.number,
                    available,
                })
                .is_err()
            {
                campaign.low_stock_reported.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Re-arms the low-stock event once stock is back at its threshold.
    pub(super) fn after_stock_added(&self, campaign: &Campaign) {
        let threshold = campaign.settings.read().low_stock_threshold;
        if threshold == 0 || campaign.available() >= threshold {
            // Relaxed: a flag for event de-duplication, not for state.
            campaign.low_stock_reported.store(false, Ordering::Relaxed);
        }
    }

    /// Replays the low-stock event: it was reported, so it is not again.
    pub(super) fn replay_low_stock(&self, campaign: &Campaign) -> Result<(), ReplayError> {
        // Relaxed: replay is single-threaded.
        campaign.low_stock_reported.store(true, Ordering::Relaxed);
        Ok(())
    }
}
