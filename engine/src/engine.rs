//! The engine: campaigns, code lookup and every transition, live and in
//! replay.
//!
//! A live operation decides under the code's busy bit, appends its record to
//! the journal while still holding it, then applies the record's effects and
//! publishes the new state. Replay re-validates each record against the same
//! rules and applies the same effects, so both paths share `effect_*`.

use std::collections::BTreeSet;

use crate::Timestamp;
use crate::campaign::{Campaign, CampaignView, CodeMeta, Hold, RecipientEntry, Redemption};
use crate::codec::{self, CodeFormat, CodeKey, Codec};
use crate::idempotency::{Begin, IdempotencyTable, StoredResponse, TableFull};
use crate::limiter::FailureLimiter;
use crate::record::{
    CampaignNo, CampaignPatch, CampaignSpec, IdemTag, Journal, JournalError, Lsn, Record,
    ReservationId, Slot,
};
use crate::state::{CodeState, Locked, PublicState, StateMap, Transition};
use crate::sync::{Arc, AtomicPtr, AtomicU64, IntHasher, Mutex, Ordering, RwLock, ShardedMap};

/// Most campaigns an engine holds; two under loom, where each slot is a
/// modelled atomic.
pub const CAMPAIGNS_MAX: usize = if cfg!(loom) { 2 } else { 1 << 14 };
/// Most codes `generate` may add at once, as API.md says.
pub const GENERATE_MAX: u64 = 1_000_000_000;
/// Longest `user`, `order` and `recipient`, in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest imported code, in characters.
pub const IMPORTED_CODE_CHARS_MAX: usize = 64;
/// The highest acceptable chance that one guess hits an issued code.
pub const GUESS_PROBABILITY_MAX: f64 = 1e-6;
/// Imported codes per `CodesImported` record.
pub const IMPORT_BATCH_CODES: usize = 1024;
/// The snapshot format's version byte.
pub const SNAPSHOT_VERSION: u8 = 1;
/// Rejected import lines reported in detail.
pub const IMPORT_REJECTS_REPORTED_MAX: usize = 100;

/// Why an operation changed nothing. Each maps to one stable API error code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    InvalidRequest {
        field: &'static str,
        message: String,
    },
    UnknownCampaign,
    CampaignExists,
    PrefixConflict {
        other: String,
    },
    CodeSpaceTooSmall {
        issued: u64,
        space: u128,
    },
    TooManyCampaigns {
        limit: usize,
    },
    MalformedCode,
    UnknownCode,
    /// `lsn`: the record that redeemed it (as for the other refusals that
    /// report a code's state: an answer need wait for no later record).
    AlreadyRedeemed {
        redeemed_at: Timestamp,
        lsn: Lsn,
    },
    CodeReserved {
        lsn: Lsn,
    },
    CodeVoided {
        lsn: Lsn,
    },
    CodeExpired,
    CampaignNotStarted,
    CampaignPaused,
    UserLimitReached {
        limit: u32,
    },
    TooManyFailedAttempts {
        retry_after_seconds: u64,
    },
    PoolExhausted,
    NotRedeemed,
    UnknownReservation,
    ReservationExpired,
    IdempotencyTableFull(TableFull),
    /// The journal refused the record: the disk is full or failing.
    Unavailable(JournalError),
}

impl Refusal {
    /// The LSN of the record whose effect this refusal reports, when it
    /// reports a code's state; the answer must wait until it is durable.
    pub fn reported_lsn(&self) -> Option<Lsn> {
        match self {
            Refusal::AlreadyRedeemed { lsn, .. }
            | Refusal::CodeReserved { lsn }
            | Refusal::CodeVoided { lsn } => Some(*lsn),
            _ => None,
        }
    }

    /// The API's stable snake_case error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InvalidRequest { .. } => "invalid_request",
            Refusal::UnknownCampaign => "unknown_campaign",
            Refusal::CampaignExists => "campaign_exists",
            Refusal::PrefixConflict { .. } => "prefix_conflict",
            Refusal::CodeSpaceTooSmall { .. } => "code_space_too_small",
            Refusal::TooManyCampaigns { .. } => "too_many_campaigns",
            Refusal::MalformedCode => "malformed_code",
            Refusal::UnknownCode => "unknown_code",
            Refusal::AlreadyRedeemed { .. } => "already_redeemed",
            Refusal::CodeReserved { .. } => "code_reserved",
            Refusal::CodeVoided { .. } => "code_voided",
            Refusal::CodeExpired => "code_expired",
            Refusal::CampaignNotStarted => "campaign_not_started",
            Refusal::CampaignPaused => "campaign_paused",
            Refusal::UserLimitReached { .. } => "user_limit_reached",
            Refusal::TooManyFailedAttempts { .. } => "too_many_failed_attempts",
            Refusal::PoolExhausted => "pool_exhausted",
            Refusal::NotRedeemed => "not_redeemed",
            Refusal::UnknownReservation => "unknown_reservation",
            Refusal::ReservationExpired => "reservation_expired",
            Refusal::IdempotencyTableFull(_) => "idempotency_table_full",
            Refusal::Unavailable(_) => "unavailable",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::InvalidRequest { field, message } => write!(f, "{field}: {message}"),
            Refusal::UnknownCampaign => f.write_str("no campaign has that id"),
            Refusal::CampaignExists => f.write_str("a campaign with that id already exists"),
            Refusal::PrefixConflict { other } => {
                write!(f, "the prefix overlaps the prefix of campaign {other}")
            }
            Refusal::CodeSpaceTooSmall { issued, space } => write!(
                f,
                "{issued} codes in a space of {space} could be guessed with probability above {GUESS_PROBABILITY_MAX}; use longer codes"
            ),
            Refusal::TooManyCampaigns { limit } => write!(f, "at most {limit} campaigns"),
            Refusal::MalformedCode => {
                f.write_str("the code is not well formed (check symbol, length or characters)")
            }
            Refusal::UnknownCode => f.write_str("no such code"),
            Refusal::AlreadyRedeemed { .. } => f.write_str("the code was already redeemed"),
            Refusal::CodeReserved { .. } => f.write_str("the code is held by another user"),
            Refusal::CodeVoided { .. } => f.write_str("the code was voided"),
            Refusal::CodeExpired => f.write_str("the code has expired"),
            Refusal::CampaignNotStarted => f.write_str("the campaign has not started"),
            Refusal::CampaignPaused => f.write_str("the campaign is paused"),
            Refusal::UserLimitReached { limit } => {
                write!(f, "the user has reached the limit of {limit} redemptions")
            }
            Refusal::TooManyFailedAttempts {
                retry_after_seconds,
            } => write!(
                f,
                "too many unknown or malformed codes; retry after {retry_after_seconds} s"
            ),
            Refusal::PoolExhausted => f.write_str("no code is left to assign"),
            Refusal::NotRedeemed => f.write_str("the code is not redeemed"),
            Refusal::UnknownReservation => f.write_str("no such reservation"),
            Refusal::ReservationExpired => f.write_str("the reservation has expired"),
            Refusal::IdempotencyTableFull(full) => write!(
                f,
                "the idempotency table holds {} keys, all younger than 24 h",
                full.limit
            ),
            Refusal::Unavailable(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// A record that does not apply to the state the log before it built: the
/// log is corrupt (or was written by a buggy engine). Never skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    pub lsn: Lsn,
    pub reason: String,
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record at LSN {} does not apply: {}",
            self.lsn, self.reason
        )
    }
}

impl std::error::Error for ReplayError {}

/// An idempotency key sent with a request, scoped to its token by the
/// caller: the same pair a transition's record carries.
pub type IdemKey<'a> = IdemTag<'a>;

/// What the renderer sees of a transition that carried an idempotency key.
#[derive(Debug)]
pub struct Effect<'a> {
    pub lsn: Lsn,
    pub record: &'a Record<'a>,
    pub campaign: &'a Campaign,
    /// The status, just after the record, of the code it is about, if any.
    pub status: Option<&'a CodeStatus>,
}

/// Turns a transition into the response stored under its idempotency key.
/// The server renders its HTTP response this way both live and in replay,
/// so a replayed key returns the same bytes.
pub type Renderer = Box<dyn Fn(&Effect<'_>) -> (u16, Vec<u8>) + Send + Sync>;

/// A code's status, as `GET /v1/codes/{code}` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeStatus {
    pub code: String,
    pub campaign: String,
    /// `available`, `assigned`, `reserved`, `redeemed`, `voided`, `expired`
    /// or `not_started`.
    pub state: &'static str,
    pub recipient: Option<String>,
    pub assigned_at: Option<Timestamp>,
    pub reserved_until: Option<Timestamp>,
    pub redeemed_by: Option<String>,
    pub redeemed_at: Option<Timestamp>,
    pub order: Option<String>,
    pub expires_at: Option<Timestamp>,
}

/// A successful redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    pub code: String,
    pub campaign: String,
    pub user: String,
    pub order: Option<String>,
    pub redeemed_at: Timestamp,
    pub lsn: Lsn,
}

/// A successful reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub reservation: ReservationId,
    pub code: String,
    pub user: String,
    pub expires_at: Timestamp,
    pub lsn: Lsn,
}

/// A successful assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub code: String,
    pub campaign: String,
    pub recipient: String,
    pub state: PublicState,
    /// False when the recipient already held a code and got it again.
    pub new: bool,
    pub lsn: Option<Lsn>,
}

/// What a code import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: u64,
    pub duplicates: u64,
    /// The first rejected lines: (1-based line number, reason code).
    pub rejected: Vec<(u64, &'static str)>,
    pub rejected_total: u64,
    /// Codes in the campaign afterwards.
    pub total: u64,
}

/// A located code: its campaign and slot.
#[derive(Debug, Clone, Copy)]
pub struct CodeRef<'e> {
    pub campaign: &'e Campaign,
    pub slot: Slot,
    /// The printed form of a generated code, made from the input while it
    /// was parsed, so answers need not encrypt the index again.
    printed: Option<codec::Code>,
}

impl CodeRef<'_> {
    /// The code's printed form.
    pub fn code_string(&self) -> String {
        match &self.printed {
            Some(code) => code.as_str().to_owned(),
            None => self.campaign.code_of(self.slot),
        }
    }
}

/// Engine-wide configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub failed_lookups_per_minute: u32,
    pub idempotency_entries_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            failed_lookups_per_minute: crate::limiter::FAILURES_PER_WINDOW_DEFAULT,
            idempotency_entries_max: crate::idempotency::ENTRIES_MAX_DEFAULT,
        }
    }
}

/// A live hold, by reservation id.
#[derive(Debug, Clone)]
struct HoldRef {
    campaign: CampaignNo,
    slot: Slot,
    until: Timestamp,
}

/// The whole in-memory state.
pub struct Engine<J> {
    journal: J,
    /// Campaigns by number - 1; set once, freed in `Drop`, never moved.
    campaigns: Box<[AtomicPtr<Campaign>]>,
    campaign_count: AtomicU64,
    by_id: ShardedMap<Box<str>, CampaignNo>,
    /// Non-empty prefixes and the empty one, for parsing generated codes.
    prefixes: RwLock<Vec<(Box<str>, CampaignNo)>>,
    /// Serialises creations so numbers follow log order.
    create_lock: Mutex<()>,
    /// Normalized imported code -> where it lives.
    imported: ShardedMap<Box<str>, (CampaignNo, Slot)>,
    imported_count: AtomicU64,
    reservations: ShardedMap<ReservationId, HoldRef, IntHasher>,
    /// Live holds by deadline, for the sweeper.
    expiries: Mutex<BTreeSet<(Timestamp, ReservationId)>>,
    /// Expired holds, remembered so a late confirm gets `reservation_expired`.
    expired: ShardedMap<ReservationId, Timestamp, IntHasher>,
    next_reservation: AtomicU64,
    idempotency: IdempotencyTable,
    limiter: FailureLimiter,
    render: Renderer,
}

impl<J> std::fmt::Debug for Engine<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Relaxed: a debugging aid.
        let campaigns = self.campaign_count.load(Ordering::Relaxed);
        f.debug_struct("Engine")
            .field("campaigns", &campaigns)
            .finish_non_exhaustive()
    }
}

/// A locked code that unlocks on drop unless published.
struct Guard<'m> {
    map: &'m StateMap,
    locked: Option<Locked>,
}

impl Guard<'_> {
    fn state(&self) -> CodeState {
        self.locked.as_ref().expect("guard holds a code").state
    }

    fn publish(mut self, transition: Transition, to: CodeState) {
        let locked = self.locked.take().expect("guard holds a code");
        self.map.publish(locked, transition, to);
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(locked) = self.locked.take() {
            self.map.unlock(locked);
        }
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), Refusal> {
    if value.is_empty() || value.len() > NAME_BYTES_MAX {
        return Err(Refusal::InvalidRequest {
            field,
            message: format!("must be 1 to {NAME_BYTES_MAX} bytes, got {}", value.len()),
        });
    }
    Ok(())
}

fn replay_err(lsn: Lsn, reason: impl Into<String>) -> ReplayError {
    ReplayError {
        lsn,
        reason: reason.into(),
    }
}

impl<J: Journal> Engine<J> {
    pub fn new(journal: J, config: Config, render: Renderer) -> Engine<J> {
        Engine {
            journal,
            campaigns: (0..CAMPAIGNS_MAX)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            campaign_count: AtomicU64::new(0),
            by_id: ShardedMap::default(),
            prefixes: RwLock::new(Vec::new()),
            create_lock: Mutex::new(()),
            imported: ShardedMap::default(),
            imported_count: AtomicU64::new(0),
            reservations: ShardedMap::default(),
            expiries: Mutex::new(BTreeSet::new()),
            expired: ShardedMap::default(),
            next_reservation: AtomicU64::new(1),
            idempotency: IdempotencyTable::new(config.idempotency_entries_max),
            limiter: FailureLimiter::new(config.failed_lookups_per_minute),
            render,
        }
    }

    pub fn journal(&self) -> &J {
        &self.journal
    }

    pub fn idempotency(&self) -> &IdempotencyTable {
        &self.idempotency
    }

    fn campaign_total(&self) -> u64 {
        // Acquire pairs with the Release in `install`.
        self.campaign_count.load(Ordering::Acquire)
    }

    /// The campaign with this number, if it exists.
    pub fn campaign_by_number(&self, number: CampaignNo) -> Option<&Campaign> {
        if number == 0 || u64::from(number) > self.campaign_total() {
            return None;
        }
        // Acquire pairs with the Release store in `install`.
        let ptr = self.campaigns[number as usize - 1].load(Ordering::Acquire);
        // SAFETY: non-null pointers come from `Box::into_raw` in `install`,
        // are never replaced, and are freed only in `Drop`, which cannot run
        // while `&self` is borrowed.
        (!ptr.is_null()).then(|| unsafe { &*ptr })
    }

    pub fn campaign(&self, id: &str) -> Option<&Campaign> {
        let number = *self.by_id.shard(id).get(id)?;
        self.campaign_by_number(number)
    }

    /// Every campaign, in creation order.
    pub fn campaigns(&self) -> impl Iterator<Item = &Campaign> {
        (1..=self.campaign_total() as CampaignNo).filter_map(|n| self.campaign_by_number(n))
    }

    fn append(&self, record: &Record<'_>) -> Result<Lsn, Refusal> {
        self.journal.append(record).map_err(Refusal::Unavailable)
    }

    fn lock<'c>(&self, campaign: &'c Campaign, slot: Slot) -> Option<Guard<'c>> {
        let map = campaign.map(slot);
        map.lock(slot.index()).map(|locked| Guard {
            map,
            locked: Some(locked),
        })
    }

    /// Stores the rendered response of a keyed transition.
    fn store_effect(&self, lsn: Lsn, record: &Record<'_>, campaign: &Campaign) {
        if let Some(tag) = record.idem() {
            let code_status = record.code().map(|(_, slot)| {
                self.status_of(
                    CodeRef {
                        campaign,
                        slot,
                        printed: None,
                    },
                    record.at(),
                )
            });
            let (status, body) = (self.render)(&Effect {
                lsn,
                record,
                campaign,
                status: code_status.as_ref(),
            });
            self.idempotency.complete(
                tag.key,
                tag.fingerprint,
                StoredResponse {
                    status,
                    body: body.into(),
                    lsn,
                },
                record.at(),
            );
        }
    }

    // ---- campaigns -------------------------------------------------------

    fn validate_spec(spec: &CampaignSpec) -> Result<CodeFormat, Refusal> {
        let id_ok = !spec.id.is_empty()
            && spec.id.len() <= 64
            && spec
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(Refusal::InvalidRequest {
                field: "id",
                message: "must be 1 to 64 characters of [a-z0-9-]".into(),
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
        if spec.reservation_ttl_seconds == 0 {
            return Err(Refusal::InvalidRequest {
                field: "reservation_ttl_seconds",
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
        for recipient in &spec.test_recipients {
            check_name("test_recipients", recipient)?;
        }
        Ok(format)
    }

    fn check_space(format: &CodeFormat, issued: u64) -> Result<(), Refusal> {
        let space = format.space();
        if issued as f64 / space as f64 > GUESS_PROBABILITY_MAX {
            return Err(Refusal::CodeSpaceTooSmall { issued, space });
        }
        Ok(())
    }

    pub fn create_campaign(
        &self,
        spec: CampaignSpec,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<CampaignView, Refusal> {
        let format = Self::validate_spec(&spec)?;
        let key = CodeKey::random().map_err(|err| {
            Refusal::Unavailable(JournalError {
                message: format!("no randomness: {err}"),
            })
        })?;
        let _create = self.create_lock.lock();
        if self
            .by_id
            .shard(spec.id.as_str())
            .contains_key(spec.id.as_str())
        {
            return Err(Refusal::CampaignExists);
        }
        self.check_prefix(&spec.prefix)?;
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

    fn check_prefix(&self, prefix: &str) -> Result<(), Refusal> {
        let prefixes = self.prefixes.read();
        for (other, number) in prefixes.iter() {
            let conflict = if prefix.is_empty() || other.is_empty() {
                prefix.is_empty() && other.is_empty()
            } else {
                other.starts_with(prefix) || prefix.starts_with(&**other)
            };
            if conflict {
                let id = self
                    .campaign_by_number(*number)
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
        let codec = Codec::new(format, &key);
        let campaign = Campaign::new(number, spec, codec, key.to_bytes(), now);
        campaign
            .generated
            .grow(generate)
            .expect("GENERATE_MAX is below the map capacity");
        self.prefixes
            .write()
            .push((campaign.spec.prefix.as_str().into(), number));
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
    ) -> Result<CampaignView, Refusal> {
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        if let Some(list) = &patch.test_recipients {
            for recipient in list {
                check_name("test_recipients", recipient)?;
            }
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

    /// Starts an import into a campaign; feed it lines, then `finish`.
    pub fn importer(&self, id: &str) -> Result<Importer<'_, J>, Refusal> {
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        Ok(Importer {
            engine: self,
            campaign,
            pending: Vec::new(),
            pending_set: std::collections::HashSet::new(),
            report: ImportReport::default(),
        })
    }

    // ---- lookup ---------------------------------------------------------

    /// Finds a code from client input, without touching the limiter.
    pub fn resolve(&self, input: &str) -> Result<CodeRef<'_>, Refusal> {
        let mut buf = codec::NormalizedBuf::new();
        codec::normalize(input, &mut buf).map_err(|_| Refusal::MalformedCode)?;
        let normalized = buf.as_str();
        if normalized.is_empty() {
            return Err(Refusal::MalformedCode);
        }
        // Relaxed: a hint that skips the map when nothing was imported; an
        // import racing with this lookup may be missed either way.
        let found = if self.imported_count.load(Ordering::Relaxed) > 0 {
            self.imported.shard(normalized).get(normalized).copied()
        } else {
            None
        };
        if let Some((number, slot)) = found {
            let campaign = self
                .campaign_by_number(number)
                .ok_or(Refusal::UnknownCode)?;
            if slot.index() < campaign.imported.len() {
                return Ok(CodeRef {
                    campaign,
                    slot,
                    printed: None,
                });
            }
            return Err(Refusal::UnknownCode);
        }
        let number = {
            let prefixes = self.prefixes.read();
            let mut found = None;
            for (prefix, number) in prefixes.iter() {
                if normalized.starts_with(&**prefix)
                    && found.is_none_or(|(p, _): (usize, CampaignNo)| prefix.len() > p)
                {
                    found = Some((prefix.len(), *number));
                }
            }
            found.ok_or(Refusal::UnknownCode)?.1
        };
        let campaign = self
            .campaign_by_number(number)
            .ok_or(Refusal::UnknownCode)?;
        let body = &normalized.as_bytes()[campaign.spec.prefix.len()..];
        let index = campaign
            .codec
            .decode_body(body)
            .map_err(|_| Refusal::MalformedCode)?;
        if index >= u128::from(campaign.generated.len()) {
            return Err(Refusal::UnknownCode);
        }
        Ok(CodeRef {
            campaign,
            slot: Slot::generated(index as u64),
            printed: Some(campaign.codec.display(body)),
        })
    }

    /// `resolve` behind the failed-attempt limiter for `user`.
    fn resolve_limited(
        &self,
        input: &str,
        user: &str,
        now: Timestamp,
    ) -> Result<CodeRef<'_>, Refusal> {
        self.limiter
            .check(user, now)
            .map_err(|retry_after_seconds| Refusal::TooManyFailedAttempts {
                retry_after_seconds,
            })?;
        self.resolve(input).inspect_err(|refusal| {
            if matches!(refusal, Refusal::UnknownCode | Refusal::MalformedCode) {
                self.limiter.note_failure(user, now);
            }
        })
    }

    /// A code's status; `user`, when given, is subject to the limiter.
    pub fn status(
        &self,
        input: &str,
        user: Option<&str>,
        now: Timestamp,
    ) -> Result<CodeStatus, Refusal> {
        if let Some(user) = user {
            check_name("user", user)?;
        }
        let code = match user {
            Some(user) => self.resolve_limited(input, user, now)?,
            None => self.resolve(input)?,
        };
        Ok(self.status_of(code, now))
    }

    /// The status of a located code, waiting out a transition in progress.
    pub fn status_of(&self, code: CodeRef<'_>, now: Timestamp) -> CodeStatus {
        let CodeRef { campaign, slot, .. } = code;
        let state = campaign
            .map(slot)
            .get(slot.index())
            .expect("resolved slot exists");
        let meta = campaign.meta_of(slot);
        let settings = campaign.settings.read();
        let public = state.public();
        let deadline = meta.deadline.into_iter().chain(settings.expires_at).min();
        let state_name = match public {
            PublicState::Redeemed | PublicState::Voided => public.as_str(),
            _ if deadline.is_some_and(|d| now >= d) => "expired",
            _ if settings.starts_at.is_some_and(|s| now < s) => "not_started",
            _ => public.as_str(),
        };
        CodeStatus {
            code: campaign.code_of(slot),
            campaign: campaign.id().into(),
            state: state_name,
            recipient: meta.recipient.as_deref().map(Into::into),
            assigned_at: meta.assigned_at,
            reserved_until: meta.hold.as_ref().map(|h| h.until),
            redeemed_by: meta.redemption.as_ref().map(|r| r.user.to_string()),
            redeemed_at: meta.redemption.as_ref().map(|r| r.at),
            order: meta
                .redemption
                .as_ref()
                .and_then(|r| r.order.as_deref().map(Into::into)),
            expires_at: deadline,
        }
    }

    /// Refuses work in a paused, not yet started or ended campaign.
    fn window_check(&self, campaign: &Campaign, now: Timestamp) -> Result<(), Refusal> {
        let settings = campaign.settings.read();
        if settings.expires_at.is_some_and(|end| now >= end) {
            return Err(Refusal::CodeExpired);
        }
        if settings.starts_at.is_some_and(|start| now < start) {
            return Err(Refusal::CampaignNotStarted);
        }
        if settings.paused {
            return Err(Refusal::CampaignPaused);
        }
        Ok(())
    }

    // ---- assignment -------------------------------------------------------

    pub fn assign(
        &self,
        id: &str,
        recipient: &str,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Assigned, Refusal> {
        check_name("recipient", recipient)?;
        let campaign = self.campaign(id).ok_or(Refusal::UnknownCampaign)?;
        self.window_check(campaign, now)?;
        let test = campaign.settings.read().test_recipients.contains(recipient);
        let tag = idem;
        if test {
            let (slot, lsn) = self.assign_fresh(campaign, recipient, true, now, tag)?;
            return Ok(self.assigned(campaign, slot, recipient, true, Some(lsn)));
        }
        // The recipient's shard stays locked through the assignment, so one
        // recipient racing with itself gets one code. Lock order: recipient
        // shard, then a code; no path takes them the other way round.
        let mut shard = campaign.recipients.shard(recipient);
        if let Some(entry) = shard.get(recipient)
            && entry.slots.len() >= campaign.spec.per_recipient_limit as usize
        {
            let slot = entry.slots[0];
            drop(shard);
            return Ok(self.assigned(campaign, slot, recipient, false, None));
        }
        #[cfg(loom)]
        if crate::mutations::on(crate::mutations::Mutation::AssignUnlocksRecipient) {
            drop(shard);
            shard = campaign.recipients.shard(recipient);
        }
        let (slot, lsn) = self.assign_fresh(campaign, recipient, false, now, tag)?;
        let entry = shard
            .entry(recipient.into())
            .or_insert_with(|| RecipientEntry { slots: Vec::new() });
        entry.slots.push(slot);
        drop(shard);
        Ok(self.assigned(campaign, slot, recipient, true, Some(lsn)))
    }

    fn assigned(
        &self,
        campaign: &Campaign,
        slot: Slot,
        recipient: &str,
        new: bool,
        lsn: Option<Lsn>,
    ) -> Assigned {
        let state = campaign
            .map(slot)
            .get(slot.index())
            .expect("assigned slot exists")
            .public();
        Assigned {
            code: campaign.code_of(slot),
            campaign: campaign.id().into(),
            recipient: recipient.into(),
            state,
            new,
            lsn,
        }
    }

    /// Takes an available code, logs its assignment, publishes it.
    fn assign_fresh(
        &self,
        campaign: &Campaign,
        recipient: &str,
        test: bool,
        now: Timestamp,
        idem: Option<IdemTag<'_>>,
    ) -> Result<(Slot, Lsn), Refusal> {
        // Relaxed: the cursor only spreads assigners over the pool.
        let start = campaign.assign_cursor.fetch_add(1, Ordering::Relaxed);
        // Generated codes first, then imported ones.
        let Some((map, make_slot, locked)) = campaign
            .maps()
            .into_iter()
            .find_map(|(map, make_slot)| map.lock_available(start).map(|l| (map, make_slot, l)))
        else {
            return Err(Refusal::PoolExhausted);
        };
        let slot = make_slot(locked.slot);
        let guard = Guard {
            map,
            locked: Some(locked),
        };
        let record = Record::Assigned {
            at: now,
            campaign: campaign.number,
            slot,
            recipient,
            test,
            idem,
        };
        let lsn = self.append(&record)?;
        self.effect_assigned(campaign, guard, slot, lsn, recipient, test, now);
        self.store_effect(lsn, &record, campaign);
        self.after_depletion(campaign, now);
        Ok((slot, lsn))
    }

    #[allow(clippy::too_many_arguments)]
    fn effect_assigned(
        &self,
        campaign: &Campaign,
        guard: Guard<'_>,
        slot: Slot,
        lsn: Lsn,
        recipient: &str,
        test: bool,
        at: Timestamp,
    ) {
        let deadline = campaign
            .spec
            .code_valid_seconds_after_assignment
            .map(|s| Timestamp(at.0.saturating_add(s.saturating_mul(1000))));
        campaign.update_meta(slot, |meta| {
            meta.lsn = lsn;
            meta.recipient = Some(Arc::from(recipient));
            meta.assigned_at = Some(at);
            meta.deadline = deadline;
        });
        guard.publish(Transition::Assign, CodeState::Assigned);
        if test {
            // Relaxed: a statistic.
            campaign.test_assignments.fetch_add(1, Ordering::Relaxed);
        }
        campaign.assignments.note(at);
        campaign.depletions.note(at);
    }

    // ---- redemption -----------------------------------------------------

    /// Checks that bar any new hold or redemption of a locked code.
    fn code_usable(state: CodeState, meta: &CodeMeta, now: Timestamp) -> Result<(), Refusal> {
        match state.public() {
            PublicState::Redeemed => Err(Refusal::AlreadyRedeemed {
                redeemed_at: meta.redemption.as_ref().map_or(Timestamp(0), |r| r.at),
                lsn: meta.lsn,
            }),
            PublicState::Voided => Err(Refusal::CodeVoided { lsn: meta.lsn }),
            _ if meta.deadline.is_some_and(|d| now >= d) => Err(Refusal::CodeExpired),
            _ => Ok(()),
        }
    }

    pub fn redeem(
        &self,
        input: &str,
        user: &str,
        order: Option<&str>,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Redeemed, Refusal> {
        check_name("user", user)?;
        if let Some(order) = order {
            check_name("order", order)?;
        }
        let code = self.resolve_limited(input, user, now)?;
        let campaign = code.campaign;
        let slot = code.slot;
        let (guard, meta) = self.lock_live(campaign, slot, now)?;
        // A code's own state first: a redeemed code reports `redeemed` even
        // in a paused or ended campaign.
        Self::code_usable(guard.state(), &meta, now)?;
        self.window_check(campaign, now)?;
        let limit = campaign.spec.per_user_limit;
        let mut reservation = None;
        let claimed = match &meta.hold {
            Some(hold) if guard.state().public() == PublicState::Reserved => {
                if &*hold.user != user {
                    return Err(Refusal::CodeReserved { lsn: meta.lsn });
                }
                // The holder redeems directly: the hold's claim carries over.
                reservation = Some(hold.id);
                None
            }
            _ => Some(
                campaign
                    .claim_user(user, limit)
                    .map_err(|()| Refusal::UserLimitReached { limit })?,
            ),
        };
        let record = Record::Redeemed {
            at: now,
            campaign: campaign.number,
            slot,
            user,
            order,
            reservation,
            idem,
        };
        let lsn = match self.append(&record) {
            Ok(lsn) => lsn,
            Err(refusal) => {
                #[cfg(loom)]
                let claimed = claimed.filter(|_| {
                    !crate::mutations::on(crate::mutations::Mutation::RedeemKeepsClaimOnFailure)
                });
                if claimed.is_some() {
                    campaign.unclaim_user(user);
                }
                return Err(refusal);
            }
        };
        let code_string = code.code_string();
        self.effect_redeemed(campaign, guard, slot, lsn, claimed, order, reservation, now);
        self.store_effect(lsn, &record, campaign);
        Ok(Redeemed {
            code: code_string,
            campaign: campaign.id().into(),
            user: user.into(),
            order: order.map(Into::into),
            redeemed_at: now,
            lsn,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn effect_redeemed(
        &self,
        campaign: &Campaign,
        guard: Guard<'_>,
        slot: Slot,
        lsn: Lsn,
        claimed: Option<Arc<str>>,
        order: Option<&str>,
        reservation: Option<ReservationId>,
        at: Timestamp,
    ) {
        let from = guard.state();
        campaign.update_meta(slot, |meta| {
            meta.lsn = lsn;
            // The user's claim: taken for this redemption, or the hold's.
            let hold = meta.hold.take().map(|h| h.user);
            let user = claimed.or(hold).expect("a redemption has its user's claim");
            meta.redemption = Some(Redemption {
                user,
                at,
                order: order.map(Into::into),
            });
        });
        let transition = if reservation.is_some() {
            Transition::Confirm
        } else {
            Transition::Redeem
        };
        guard.publish(transition, from.redeemed());
        if let Some(id) = reservation {
            self.forget_hold(id);
        }
        campaign.redemptions.note(at);
        if from == CodeState::Available {
            campaign.depletions.note(at);
            self.after_depletion(campaign, at);
        }
    }

    /// Locks a code for a new hold or redemption. A hold already past its
    /// deadline that the sweeper has not reached yet is released first (its
    /// own record), so an expired hold never blocks or is handed out again.
    fn lock_live<'c>(
        &self,
        campaign: &'c Campaign,
        slot: Slot,
        now: Timestamp,
    ) -> Result<(Guard<'c>, CodeMeta), Refusal> {
        let guard = self.lock(campaign, slot).expect("resolved slot exists");
        let meta = campaign.meta_in(slot, guard.state());
        match &meta.hold {
            Some(hold) if guard.state().public() == PublicState::Reserved && now >= hold.until => {
                self.release_locked(campaign, slot, guard, hold, true, now, None)?;
                let guard = self.lock(campaign, slot).expect("resolved slot exists");
                let meta = campaign.meta_in(slot, guard.state());
                Ok((guard, meta))
            }
            _ => Ok((guard, meta)),
        }
    }

    fn forget_hold(&self, id: ReservationId) {
        if let Some(hold) = self.reservations.shard(&id).remove(&id) {
            self.expiries.lock().remove(&(hold.until, id));
        }
    }

    pub fn rollback(
        &self,
        input: &str,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<CodeStatus, Refusal> {
        let code = self.resolve(input)?;
        let (campaign, slot) = (code.campaign, code.slot);
        let guard = self.lock(campaign, slot).expect("resolved slot exists");
        if guard.state().public() != PublicState::Redeemed {
            return Err(Refusal::NotRedeemed);
        }
        let record = Record::RolledBack {
            at: now,
            campaign: campaign.number,
            slot,
            idem,
        };
        #[cfg(loom)]
        let early = crate::mutations::unclaim_before_record(campaign, slot);
        let lsn = self.append(&record)?;
        #[cfg(loom)]
        crate::mutations::reclaim_after_record(campaign, early);
        self.effect_rolled_back(campaign, guard, slot, lsn);
        self.store_effect(lsn, &record, campaign);
        Ok(self.status_of(code, now))
    }

    fn effect_rolled_back(&self, campaign: &Campaign, guard: Guard<'_>, slot: Slot, lsn: Lsn) {
        let from = guard.state();
        let mut user = None;
        campaign.update_meta(slot, |meta| {
            meta.lsn = lsn;
            user = meta.redemption.take().map(|r| r.user);
        });
        guard.publish(Transition::Rollback, from.base());
        // After the record: the freed slot may only be claimed by a record
        // that follows this one in the log.
        campaign.unclaim_user(&user.expect("a redeemed code has its redemption"));
        if from.base() == CodeState::Available {
            self.after_stock_added(campaign);
        }
    }

    pub fn void(
        &self,
        input: &str,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<CodeStatus, Refusal> {
        let code = self.resolve(input)?;
        let (campaign, slot) = (code.campaign, code.slot);
        #[cfg(loom)]
        let stale = crate::mutations::on(crate::mutations::Mutation::VoidChecksStaleState)
            .then(|| campaign.map(slot).peek(slot.index()))
            .flatten();
        let guard = self.lock(campaign, slot).expect("resolved slot exists");
        let state = guard.state();
        #[cfg(loom)]
        let state = stale.unwrap_or(state);
        match state.public() {
            PublicState::Redeemed => {
                let meta = campaign.meta_of(slot);
                let at = meta.redemption.map_or(Timestamp(0), |r| r.at);
                return Err(Refusal::AlreadyRedeemed {
                    redeemed_at: at,
                    lsn: meta.lsn,
                });
            }
            PublicState::Voided => {
                drop(guard);
                return Ok(self.status_of(code, now));
            }
            _ => {}
        }
        let record = Record::Voided {
            at: now,
            campaign: campaign.number,
            slot,
            idem,
        };
        let lsn = self.append(&record)?;
        self.effect_voided(campaign, guard, slot, lsn);
        self.store_effect(lsn, &record, campaign);
        Ok(self.status_of(code, now))
    }

    fn effect_voided(&self, campaign: &Campaign, guard: Guard<'_>, slot: Slot, lsn: Lsn) {
        let mut hold = None;
        campaign.update_meta(slot, |meta| {
            meta.lsn = lsn;
            hold = meta.hold.take();
        });
        guard.publish(Transition::Void, CodeState::Voided);
        if let Some(hold) = hold {
            self.forget_hold(hold.id);
            campaign.unclaim_user(&hold.user);
        }
    }

    // ---- reservations -----------------------------------------------------

    pub fn reserve(
        &self,
        input: &str,
        user: &str,
        ttl_seconds: Option<u64>,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Reserved, Refusal> {
        check_name("user", user)?;
        if ttl_seconds == Some(0) {
            return Err(Refusal::InvalidRequest {
                field: "ttl_seconds",
                message: "must be at least 1".into(),
            });
        }
        let code = self.resolve_limited(input, user, now)?;
        let (campaign, slot) = (code.campaign, code.slot);
        let ttl = ttl_seconds.unwrap_or(campaign.spec.reservation_ttl_seconds);
        let expires_at = Timestamp(now.0.saturating_add(ttl.saturating_mul(1000)));
        let (guard, meta) = self.lock_live(campaign, slot, now)?;
        Self::code_usable(guard.state(), &meta, now)?;
        self.window_check(campaign, now)?;
        if guard.state().public() == PublicState::Reserved {
            let hold = meta.hold.expect("a reserved code has its hold");
            if &*hold.user == user {
                // The holder asking again gets its hold back.
                return Ok(Reserved {
                    reservation: hold.id,
                    code: campaign.code_of(slot),
                    user: user.into(),
                    expires_at: hold.until,
                    lsn: 0,
                });
            }
            return Err(Refusal::CodeReserved { lsn: meta.lsn });
        }
        let limit = campaign.spec.per_user_limit;
        campaign
            .claim_user(user, limit)
            .map_err(|()| Refusal::UserLimitReached { limit })?;
        // Relaxed: uniqueness comes from the atomic increment alone.
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        let record = Record::Reserved {
            at: now,
            campaign: campaign.number,
            slot,
            reservation: id,
            user,
            expires_at,
            idem,
        };
        let lsn = match self.append(&record) {
            Ok(lsn) => lsn,
            Err(refusal) => {
                campaign.unclaim_user(user);
                return Err(refusal);
            }
        };
        let code_string = code.code_string();
        self.effect_reserved(campaign, guard, slot, lsn, id, user, expires_at);
        self.store_effect(lsn, &record, campaign);
        Ok(Reserved {
            reservation: id,
            code: code_string,
            user: user.into(),
            expires_at,
            lsn,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn effect_reserved(
        &self,
        campaign: &Campaign,
        guard: Guard<'_>,
        slot: Slot,
        lsn: Lsn,
        id: ReservationId,
        user: &str,
        until: Timestamp,
    ) {
        let name = campaign
            .users
            .shard(user)
            .get(user)
            .map(|e| e.name.clone())
            .expect("user claimed");
        campaign.update_meta(slot, |meta| {
            meta.lsn = lsn;
            meta.hold = Some(Hold {
                id,
                user: name,
                until,
            })
        });
        // Indexed before the code is published as reserved: a void or a
        // release that takes the code next must find the hold to forget it.
        self.reservations.shard(&id).insert(
            id,
            HoldRef {
                campaign: campaign.number,
                slot,
                until,
            },
        );
        self.expiries.lock().insert((until, id));
        let from = guard.state();
        guard.publish(Transition::Reserve, from.reserved());
    }

    /// Locks the code a live reservation holds, checking the hold is still
    /// that reservation's.
    fn lock_hold(&self, id: ReservationId) -> Result<(&Campaign, Slot, Guard<'_>, Hold), Refusal> {
        let Some(hold_ref) = self.reservations.shard(&id).get(&id).cloned() else {
            if self.expired.shard(&id).contains_key(&id) {
                return Err(Refusal::ReservationExpired);
            }
            return Err(Refusal::UnknownReservation);
        };
        let campaign = self
            .campaign_by_number(hold_ref.campaign)
            .expect("hold's campaign exists");
        #[cfg(loom)]
        let stale = crate::mutations::on(crate::mutations::Mutation::LockHoldChecksBeforeLock)
            .then(|| campaign.meta_of(hold_ref.slot).hold)
            .flatten()
            .filter(|hold| hold.id == id);
        let guard = self
            .lock(campaign, hold_ref.slot)
            .expect("hold's slot exists");
        #[cfg(loom)]
        if let Some(hold) = stale {
            return Ok((campaign, hold_ref.slot, guard, hold));
        }
        match campaign.meta_of(hold_ref.slot).hold {
            Some(hold) if hold.id == id && guard.state().public() == PublicState::Reserved => {
                Ok((campaign, hold_ref.slot, guard, hold))
            }
            // Released or expired between the lookup and the lock.
            _ if self.expired.shard(&id).contains_key(&id) => Err(Refusal::ReservationExpired),
            _ => Err(Refusal::UnknownReservation),
        }
    }

    pub fn confirm(
        &self,
        id: ReservationId,
        order: Option<&str>,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<Redeemed, Refusal> {
        if let Some(order) = order {
            check_name("order", order)?;
        }
        let (campaign, slot, guard, hold) = self.lock_hold(id)?;
        if now >= hold.until {
            self.release_locked(campaign, slot, guard, &hold, true, now, None)?;
            return Err(Refusal::ReservationExpired);
        }
        self.window_check(campaign, now)?;
        let meta = campaign.meta_in(slot, guard.state());
        Self::code_usable(guard.state(), &meta, now)?;
        let record = Record::Redeemed {
            at: now,
            campaign: campaign.number,
            slot,
            user: &hold.user,
            order,
            reservation: Some(id),
            idem,
        };
        let lsn = self.append(&record)?;
        let code_string = campaign.code_of(slot);
        self.effect_redeemed(campaign, guard, slot, lsn, None, order, Some(id), now);
        self.store_effect(lsn, &record, campaign);
        Ok(Redeemed {
            code: code_string,
            campaign: campaign.id().into(),
            user: hold.user.to_string(),
            order: order.map(Into::into),
            redeemed_at: now,
            lsn,
        })
    }

    /// Releases a hold; the code returns to its state before it.
    pub fn release(
        &self,
        id: ReservationId,
        now: Timestamp,
        idem: Option<IdemKey<'_>>,
    ) -> Result<CodeStatus, Refusal> {
        let (campaign, slot, guard, hold) = self.lock_hold(id)?;
        if now >= hold.until {
            self.release_locked(campaign, slot, guard, &hold, true, now, None)?;
            return Err(Refusal::ReservationExpired);
        }
        let tag = idem;
        self.release_locked(campaign, slot, guard, &hold, false, now, tag)?;
        Ok(self.status_of(
            CodeRef {
                campaign,
                slot,
                printed: None,
            },
            now,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn release_locked(
        &self,
        campaign: &Campaign,
        slot: Slot,
        guard: Guard<'_>,
        hold: &Hold,
        expired: bool,
        now: Timestamp,
        idem: Option<IdemTag<'_>>,
    ) -> Result<Lsn, Refusal> {
        let record = Record::Released {
            at: now,
            campaign: campaign.number,
            slot,
            reservation: hold.id,
            expired,
            idem,
        };
        let lsn = self.append(&record)?;
        self.effect_released(campaign, guard, slot, lsn, hold, expired, now);
        self.store_effect(lsn, &record, campaign);
        Ok(lsn)
    }

    #[allow(clippy::too_many_arguments)]
    fn effect_released(
        &self,
        campaign: &Campaign,
        guard: Guard<'_>,
        slot: Slot,
        lsn: Lsn,
        hold: &Hold,
        expired: bool,
        at: Timestamp,
    ) {
        campaign.update_meta(slot, |meta| {
            meta.lsn = lsn;
            meta.hold = None;
        });
        // Remembered before the code is released and the hold forgotten: a
        // confirm that misses the hold in either place must find it here
        // and answer `reservation_expired`, not `unknown_reservation`.
        if expired {
            self.expired.shard(&hold.id).insert(hold.id, at);
        }
        let from = guard.state();
        guard.publish(Transition::Release, from.base());
        self.forget_hold(hold.id);
        campaign.unclaim_user(&hold.user);
    }

    /// Releases every hold whose deadline has passed and prunes limiter and
    /// expired-hold memory. The server calls it a few times a second.
    /// Returns the number of holds released.
    pub fn sweep(&self, now: Timestamp) -> Result<usize, Refusal> {
        let due: Vec<ReservationId> = {
            let expiries = self.expiries.lock();
            expiries
                .range(..(Timestamp(now.0 + 1), 0))
                .map(|&(_, id)| id)
                .collect()
        };
        let mut released = 0;
        for id in due {
            match self.lock_hold(id) {
                Ok((campaign, slot, guard, hold)) => {
                    if now < hold.until {
                        continue;
                    }
                    self.release_locked(campaign, slot, guard, &hold, true, now, None)?;
                    released += 1;
                }
                // Confirmed or released since the scan.
                Err(_) => continue,
            }
        }
        self.limiter.prune(now);
        // Expired holds are remembered for an hour, for late confirms.
        self.expired
            .for_each_shard(|map| map.retain(|_, at| now.0.saturating_sub(at.0) < 3_600_000));
        Ok(released)
    }

    // ---- idempotency ------------------------------------------------------

    /// Marks a key in flight, or tells how to answer it.
    pub fn begin_idempotent(&self, key: IdemKey<'_>, now: Timestamp) -> Result<Begin, Refusal> {
        self.idempotency
            .begin(key.key, key.fingerprint, now)
            .map_err(Refusal::IdempotencyTableFull)
    }

    /// Durably stores the response of a keyed request that changed nothing.
    pub fn store_response(
        &self,
        key: IdemKey<'_>,
        status: u16,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Lsn, Refusal> {
        let record = Record::IdempotentResponse {
            at: now,
            key: key.key,
            fingerprint: key.fingerprint,
            status,
            body,
        };
        let lsn = self.append(&record)?;
        self.idempotency.complete(
            key.key,
            key.fingerprint,
            StoredResponse {
                status,
                body: body.into(),
                lsn,
            },
            now,
        );
        Ok(lsn)
    }

    // ---- low stock ----------------------------------------------------------

    fn after_depletion(&self, campaign: &Campaign, now: Timestamp) {
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

    fn after_stock_added(&self, campaign: &Campaign) {
        let threshold = campaign.settings.read().low_stock_threshold;
        if threshold == 0 || campaign.available() >= threshold {
            // Relaxed: a flag for event de-duplication, not for state.
            campaign.low_stock_reported.store(false, Ordering::Relaxed);
        }
    }

    // ---- replay -------------------------------------------------------------

    /// Decodes a record's bytes (kind and payload, as the log stores them)
    /// and re-applies it; bytes that do not decode are corruption too.
    pub fn apply_encoded(&self, lsn: Lsn, kind: u8, payload: &[u8]) -> Result<(), ReplayError> {
        let record = Record::decode(kind, payload).map_err(|e| replay_err(lsn, e.to_string()))?;
        self.apply_replayed(lsn, &record)
    }

    /// Re-applies a record from the log, re-validating it against the state
    /// the records before it built. Never consults the clock.
    pub fn apply_replayed(&self, lsn: Lsn, record: &Record<'_>) -> Result<(), ReplayError> {
        let campaign_of = |number: CampaignNo| {
            self.campaign_by_number(number)
                .ok_or_else(|| replay_err(lsn, format!("unknown campaign number {number}")))
        };
        fn locked(campaign: &Campaign, slot: Slot, lsn: Lsn) -> Result<Guard<'_>, ReplayError> {
            let map = campaign.map(slot);
            map.lock(slot.index())
                .map(|locked| Guard {
                    map,
                    locked: Some(locked),
                })
                .ok_or_else(|| replay_err(lsn, format!("slot {:#x} does not exist", slot.0)))
        }
        match record {
            Record::CampaignCreated {
                at,
                campaign,
                key,
                spec,
                ..
            } => {
                if u64::from(*campaign) != self.campaign_total() + 1 {
                    return Err(replay_err(
                        lsn,
                        format!("campaign number {campaign} out of sequence"),
                    ));
                }
                let format =
                    Self::validate_spec(spec).map_err(|r| replay_err(lsn, r.to_string()))?;
                if self
                    .by_id
                    .shard(spec.id.as_str())
                    .contains_key(spec.id.as_str())
                {
                    return Err(replay_err(lsn, format!("campaign {} exists", spec.id)));
                }
                self.check_prefix(&spec.prefix)
                    .map_err(|r| replay_err(lsn, r.to_string()))?;
                let campaign = self.install(
                    *campaign,
                    spec.clone(),
                    format,
                    CodeKey::from_bytes(*key),
                    *at,
                );
                self.store_effect(lsn, record, campaign);
            }
            Record::CampaignUpdated {
                campaign, patch, ..
            } => {
                let campaign = campaign_of(*campaign)?;
                campaign.apply_patch(patch);
                self.store_effect(lsn, record, campaign);
            }
            Record::CodesGenerated {
                campaign, count, ..
            } => {
                let campaign = campaign_of(*campaign)?;
                let total = campaign.generated.len().saturating_add(*count);
                if total > GENERATE_MAX {
                    return Err(replay_err(lsn, "generated codes over the limit"));
                }
                campaign
                    .generated
                    .grow(*count)
                    .expect("bounded by GENERATE_MAX");
                self.after_stock_added(campaign);
                self.store_effect(lsn, record, campaign);
            }
            Record::CodesImported {
                campaign,
                first,
                codes,
                ..
            } => {
                let campaign = campaign_of(*campaign)?;
                if *first != campaign.imported.len() {
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
            }
            Record::Assigned {
                at,
                campaign,
                slot,
                recipient,
                test,
                ..
            } => {
                let campaign = campaign_of(*campaign)?;
                let guard = locked(campaign, *slot, lsn)?;
                if guard.state() != CodeState::Available {
                    return Err(replay_err(
                        lsn,
                        format!("assign of a code in state {:?}", guard.state()),
                    ));
                }
                if !*test {
                    let mut shard = campaign.recipients.shard(*recipient);
                    let entry = shard
                        .entry((*recipient).into())
                        .or_insert_with(|| RecipientEntry { slots: Vec::new() });
                    if entry.slots.len() >= campaign.spec.per_recipient_limit as usize {
                        return Err(replay_err(
                            lsn,
                            format!("recipient {recipient} over its limit"),
                        ));
                    }
                    entry.slots.push(*slot);
                }
                self.effect_assigned(campaign, guard, *slot, lsn, recipient, *test, *at);
                self.store_effect(lsn, record, campaign);
            }
            Record::Reserved {
                at: _,
                campaign,
                slot,
                reservation,
                user,
                expires_at,
                ..
            } => {
                let campaign = campaign_of(*campaign)?;
                let guard = locked(campaign, *slot, lsn)?;
                if !matches!(guard.state(), CodeState::Available | CodeState::Assigned) {
                    return Err(replay_err(
                        lsn,
                        format!("reserve of a code in state {:?}", guard.state()),
                    ));
                }
                let limit = campaign.spec.per_user_limit;
                campaign
                    .claim_user(user, limit)
                    .map_err(|()| replay_err(lsn, format!("user {user} over its limit")))?;
                // Relaxed: replay is single-threaded; keep ids unique afterwards.
                self.next_reservation
                    .fetch_max(reservation + 1, Ordering::Relaxed);
                self.effect_reserved(campaign, guard, *slot, lsn, *reservation, user, *expires_at);
                self.store_effect(lsn, record, campaign);
            }
            Record::Released {
                at,
                campaign,
                slot,
                reservation,
                expired,
                ..
            } => {
                let campaign = campaign_of(*campaign)?;
                let guard = locked(campaign, *slot, lsn)?;
                let hold = match campaign.meta_of(*slot).hold {
                    Some(hold)
                        if hold.id == *reservation
                            && guard.state().public() == PublicState::Reserved =>
                    {
                        hold
                    }
                    _ => {
                        return Err(replay_err(
                            lsn,
                            format!(
                                "release of reservation {reservation} that does not hold the code"
                            ),
                        ));
                    }
                };
                self.effect_released(campaign, guard, *slot, lsn, &hold, *expired, *at);
                self.store_effect(lsn, record, campaign);
            }
            Record::Redeemed {
                at,
                campaign,
                slot,
                user,
                order,
                reservation,
                ..
            } => {
                let campaign = campaign_of(*campaign)?;
                let guard = locked(campaign, *slot, lsn)?;
                let mut claimed = None;
                match reservation {
                    Some(id) => match campaign.meta_of(*slot).hold {
                        Some(hold)
                            if hold.id == *id
                                && &*hold.user == *user
                                && guard.state().public() == PublicState::Reserved => {}
                        _ => {
                            return Err(replay_err(
                                lsn,
                                format!(
                                    "redeem through reservation {id} that does not hold the code"
                                ),
                            ));
                        }
                    },
                    None => {
                        if !matches!(guard.state(), CodeState::Available | CodeState::Assigned) {
                            return Err(replay_err(
                                lsn,
                                format!("redeem of a code in state {:?}", guard.state()),
                            ));
                        }
                        let limit = campaign.spec.per_user_limit;
                        claimed = Some(campaign.claim_user(user, limit).map_err(|()| {
                            replay_err(lsn, format!("user {user} over its limit"))
                        })?);
                    }
                }
                self.effect_redeemed(
                    campaign,
                    guard,
                    *slot,
                    lsn,
                    claimed,
                    *order,
                    *reservation,
                    *at,
                );
                self.store_effect(lsn, record, campaign);
            }
            Record::RolledBack { campaign, slot, .. } => {
                let campaign = campaign_of(*campaign)?;
                let guard = locked(campaign, *slot, lsn)?;
                if guard.state().public() != PublicState::Redeemed {
                    return Err(replay_err(
                        lsn,
                        format!("rollback of a code in state {:?}", guard.state()),
                    ));
                }
                self.effect_rolled_back(campaign, guard, *slot, lsn);
                self.store_effect(lsn, record, campaign);
            }
            Record::Voided { campaign, slot, .. } => {
                let campaign = campaign_of(*campaign)?;
                let guard = locked(campaign, *slot, lsn)?;
                if matches!(
                    guard.state().public(),
                    PublicState::Redeemed | PublicState::Voided
                ) {
                    return Err(replay_err(
                        lsn,
                        format!("void of a code in state {:?}", guard.state()),
                    ));
                }
                self.effect_voided(campaign, guard, *slot, lsn);
                self.store_effect(lsn, record, campaign);
            }
            Record::IdempotentResponse {
                at,
                key,
                fingerprint,
                status,
                body,
            } => {
                self.idempotency.complete(
                    key,
                    *fingerprint,
                    StoredResponse {
                        status: *status,
                        body: (*body).into(),
                        lsn,
                    },
                    *at,
                );
            }
            Record::Counters {
                next_reservation, ..
            } => {
                // Relaxed: replay is single-threaded.
                self.next_reservation
                    .fetch_max(*next_reservation, Ordering::Relaxed);
            }
            Record::LowStock { campaign, .. } => {
                let campaign = campaign_of(*campaign)?;
                // Relaxed: replay is single-threaded.
                campaign.low_stock_reported.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The whole state as a snapshot: a sequence of synthetic records that,
    /// applied by [`Engine::restore`] to a fresh engine, rebuild it exactly
    /// (the same `dump_state`). Re-applying goes through replay's checks, so
    /// a damaged snapshot is refused like a damaged log.
    ///
    /// The engine must not change while this runs: the server takes
    /// snapshots of a shadow engine that only replays the log.
    pub fn snapshot(&self, lsn: Lsn, at: Timestamp) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        let mut emit = |lsn: Lsn, record: &Record<'_>| {
            out.push(record.kind() as u8);
            out.extend_from_slice(&lsn.to_le_bytes());
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            record.encode(&mut out);
            let len = u32::try_from(out.len() - len_at - 4).expect("record under 4 GiB");
            out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        };
        for campaign in self.campaigns() {
            self.snapshot_campaign(campaign, lsn, &mut emit);
        }
        for (lsn, key, fingerprint, response, stored_at) in self.idempotency.entries() {
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

    fn snapshot_campaign(
        &self,
        campaign: &Campaign,
        lsn: Lsn,
        emit: &mut impl FnMut(Lsn, &Record<'_>),
    ) {
        let number = campaign.number;
        let view = campaign.view(campaign.created_at);
        let mut spec = view.spec.clone();
        spec.generate = campaign.generated.len();
        emit(
            lsn,
            &Record::CampaignCreated {
                at: campaign.created_at,
                campaign: number,
                key: campaign.codec_key,
                spec,
                idem: None,
            },
        );
        if view.paused {
            let patch = CampaignPatch {
                paused: Some(true),
                ..CampaignPatch::default()
            };
            emit(
                lsn,
                &Record::CampaignUpdated {
                    at: campaign.created_at,
                    campaign: number,
                    patch,
                    idem: None,
                },
            );
        }
        let imported = campaign.imported_codes.read().clone();
        for (i, batch) in imported.chunks(IMPORT_BATCH_CODES).enumerate() {
            let codes = batch.iter().map(|c| &**c).collect();
            let first = (i * IMPORT_BATCH_CODES) as u64;
            emit(
                lsn,
                &Record::CodesImported {
                    at: campaign.created_at,
                    campaign: number,
                    first,
                    codes,
                },
            );
        }
        let mut touched: Vec<(Slot, CodeMeta)> = Vec::new();
        campaign
            .meta
            .for_each_shard(|map| touched.extend(map.iter().map(|(s, m)| (*s, m.clone()))));
        touched.sort_by_key(|(slot, _)| *slot);
        let meta_of = |slot: Slot| {
            &touched[touched
                .binary_search_by_key(&slot, |(s, _)| *s)
                .expect("assigned code has meta")]
            .1
        };
        // Assignments first, each recipient's codes in the order it got
        // them (its first code is the one it is given again).
        let mut recipients: Vec<(String, Vec<Slot>)> =
            campaign.recipients_snapshot().into_iter().collect();
        recipients.sort();
        let mut in_recipients = std::collections::HashSet::new();
        for (recipient, slots) in &recipients {
            for slot in slots {
                let at = meta_of(*slot)
                    .assigned_at
                    .expect("an assigned code has its time");
                in_recipients.insert(*slot);
                emit(
                    lsn,
                    &Record::Assigned {
                        at,
                        campaign: number,
                        slot: *slot,
                        recipient,
                        test: false,
                        idem: None,
                    },
                );
            }
        }
        for (slot, meta) in &touched {
            if let (Some(recipient), Some(at)) = (&meta.recipient, meta.assigned_at)
                && !in_recipients.contains(slot)
            {
                emit(
                    lsn,
                    &Record::Assigned {
                        at,
                        campaign: number,
                        slot: *slot,
                        recipient,
                        test: true,
                        idem: None,
                    },
                );
            }
        }
        for (slot, meta) in &touched {
            let state = campaign
                .map(*slot)
                .get(slot.index())
                .expect("touched slot exists");
            match state.public() {
                PublicState::Available | PublicState::Assigned => {}
                PublicState::Reserved => {
                    let hold = meta.hold.as_ref().expect("a reserved code has its hold");
                    emit(
                        lsn,
                        &Record::Reserved {
                            at: hold.until,
                            campaign: number,
                            slot: *slot,
                            reservation: hold.id,
                            user: &hold.user,
                            expires_at: hold.until,
                            idem: None,
                        },
                    );
                }
                PublicState::Redeemed => {
                    let r = meta
                        .redemption
                        .as_ref()
                        .expect("a redeemed code has its redemption");
                    emit(
                        lsn,
                        &Record::Redeemed {
                            at: r.at,
                            campaign: number,
                            slot: *slot,
                            user: &r.user,
                            order: r.order.as_deref(),
                            reservation: None,
                            idem: None,
                        },
                    );
                }
                PublicState::Voided => {
                    emit(
                        lsn,
                        &Record::Voided {
                            at: campaign.created_at,
                            campaign: number,
                            slot: *slot,
                            idem: None,
                        },
                    );
                }
            }
        }
        // Relaxed: the engine is quiescent.
        if campaign.low_stock_reported.load(Ordering::Relaxed) {
            emit(
                lsn,
                &Record::LowStock {
                    at: campaign.created_at,
                    campaign: number,
                    available: campaign.available(),
                },
            );
        }
    }

    /// Rebuilds a fresh engine's state from [`Engine::snapshot`]'s bytes.
    pub fn restore(&self, blob: &[u8]) -> Result<(), ReplayError> {
        let bad = |reason: &str| ReplayError {
            lsn: 0,
            reason: format!("snapshot: {reason}"),
        };
        let (&version, mut rest) = blob.split_first().ok_or_else(|| bad("empty"))?;
        if version != SNAPSHOT_VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        if self.campaign_total() != 0 {
            return Err(bad("restore into an engine that has state"));
        }
        // The counters entry closes every snapshot: a cut at an entry
        // boundary is caught too.
        let mut closed = false;
        while !rest.is_empty() {
            if closed {
                return Err(bad("entries after the closing counters"));
            }
            if rest.len() < 13 {
                return Err(bad("truncated entry header"));
            }
            let kind = rest[0];
            let lsn = u64::from_le_bytes(rest[1..9].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(rest[9..13].try_into().expect("4 bytes")) as usize;
            let payload = rest
                .get(13..13 + len)
                .ok_or_else(|| bad("truncated entry"))?;
            closed = kind == crate::record::RecordKind::Counters as u8;
            self.apply_encoded(lsn, kind, payload)
                .map_err(|e| bad(&e.to_string()))?;
            rest = &rest[13 + len..];
        }
        if !closed {
            return Err(bad("truncated: no closing counters entry"));
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
                        meta.recipient,
                        meta.deadline,
                        meta.hold.map(|h| (h.id, h.user, h.until)),
                        meta.redemption.map(|r| (r.user, r.at, r.order)),
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
        let _ = writeln!(out, "idempotency {}", self.idempotency.dump());
        out
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

impl<J> Drop for Engine<J> {
    fn drop(&mut self) {
        for ptr in self.campaigns.iter() {
            // Relaxed: `&mut self` excludes every other thread.
            let ptr = ptr.load(Ordering::Relaxed);
            if !ptr.is_null() {
                // SAFETY: from `Box::into_raw` in `install`, freed once here.
                drop(unsafe { Box::from_raw(ptr) });
            }
        }
    }
}

/// Feeds imported codes into a campaign in batches of
/// [`IMPORT_BATCH_CODES`], one record each, so a huge import never sits in
/// memory whole.
pub struct Importer<'e, J: Journal> {
    engine: &'e Engine<J>,
    campaign: &'e Campaign,
    pending: Vec<String>,
    pending_set: std::collections::HashSet<String>,
    report: ImportReport,
}

impl<J: Journal> Importer<'_, J> {
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
        let valid = line.len() <= IMPORTED_CODE_CHARS_MAX
            && line
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
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

    pub fn finish(mut self, now: Timestamp) -> Result<ImportReport, Refusal> {
        self.flush(now)?;
        self.report.total = self.campaign.generated.len() + self.campaign.imported.len();
        Ok(self.report)
    }
}
