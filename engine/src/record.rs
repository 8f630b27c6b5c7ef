//! The journal boundary: every change the engine makes is one [`Record`],
//! handed to a [`Journal`] before it takes effect and re-applied, in log
//! order, by `Engine::apply_replayed`.
//!
//! Records borrow their strings, so the hot path builds them without
//! allocating; [`Record::encode`] and [`Record::decode`] give the byte form
//! the server stores as a WAL payload, with [`Record::kind`] as its type byte.

use crate::Timestamp;
use crate::codec::BODY_SYMBOLS_DEFAULT;

mod wire;

use wire::{Reader, Writer};

// ---- Fixed payload header (`docs/record-format.md`) -----------------------
//
// Every payload opens with the record's time. A record about a campaign
// follows it with the campaign's number, and one about a single code
// follows that with the code's slot; the fields after those vary by kind.

/// Offset of `at`, milliseconds since the epoch, in every payload.
pub const PAYLOAD_AT_OFFSET: usize = 0;
/// Offset of the campaign number in a payload about a campaign.
pub const PAYLOAD_CAMPAIGN_OFFSET: usize = PAYLOAD_AT_OFFSET + 8;
/// Offset of the slot in a payload about one code.
pub const PAYLOAD_SLOT_OFFSET: usize = PAYLOAD_CAMPAIGN_OFFSET + 4;
/// Offset of the first field particular to a code record's kind.
pub const PAYLOAD_CODE_FIELDS_OFFSET: usize = PAYLOAD_SLOT_OFFSET + 8;
/// Bytes of a campaign's code key, after the number in `CampaignCreated`.
pub const CODE_KEY_BYTES: usize = 16;

/// A log sequence number: the journal's position of a record, dense from 1.
pub type Lsn = u64;

/// A campaign's number: its creation order, stable across replays.
pub type CampaignNo = u32;

/// Where a code lives in its campaign: generated codes by index, imported
/// codes by import order, told apart by the top bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u64);

impl Slot {
    const IMPORTED: u64 = 1 << 63;

    pub fn generated(index: u64) -> Slot {
        assert!(index < Slot::IMPORTED);
        Slot(index)
    }

    pub fn imported(index: u64) -> Slot {
        assert!(index < Slot::IMPORTED);
        Slot(index | Slot::IMPORTED)
    }

    pub fn is_imported(self) -> bool {
        self.0 & Slot::IMPORTED != 0
    }

    pub fn index(self) -> u64 {
        self.0 & !Slot::IMPORTED
    }
}

/// A reservation's identifier, unique within an engine's life and its log:
/// the server puts 96 random bits in the low part and a tag of the token
/// that made the hold in the high 32. Records store the low 64 bits where
/// the first format kept its 64-bit ids, and the high 64 bits last, only
/// when not zero, so a log written with 64-bit ids still decodes.
pub type ReservationId = u128;

/// An idempotency key attached to a transition: the stored response is
/// rendered from the record, so a crash keeps both or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdemTag<'a> {
    /// The key, already scoped to its token by the caller.
    pub key: &'a str,
    /// A hash of method, path and body; a reuse with another request differs.
    pub fingerprint: u128,
}

/// Campaign settings an update may change; `None` leaves one unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CampaignPatch {
    pub starts_at: Option<Option<Timestamp>>,
    pub expires_at: Option<Option<Timestamp>>,
    pub paused: Option<bool>,
    pub test_recipients: Option<Vec<String>>,
    pub low_stock_threshold: Option<u64>,
    pub guessing_alert_per_minute: Option<u64>,
}

/// Redemptions one user may make in a campaign that does not choose.
pub const PER_USER_LIMIT_DEFAULT: u32 = 1;
/// Codes one recipient may hold in a campaign that does not choose.
pub const PER_RECIPIENT_LIMIT_DEFAULT: u32 = 1;
/// A hold's length when neither the campaign nor the reserver chooses.
pub const RESERVATION_TTL_SECONDS_DEFAULT: u64 = 900;
/// Misses a minute under a campaign's prefix past which it reports
/// `guessing_suspected`, in a campaign that does not choose.
pub const GUESSING_ALERT_PER_MINUTE_DEFAULT: u64 = 600;
/// The longest hold a campaign may allow: a week.
pub const RESERVATION_TTL_SECONDS_MAX: u64 = 7 * 24 * 60 * 60;

/// Everything a campaign is created with, as it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSpec {
    pub id: String,
    pub generate: u64,
    pub prefix: String,
    pub length: u8,
    pub starts_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    /// Redemptions one user may make in the campaign; 0 means unlimited.
    pub per_user_limit: u32,
    /// Codes one recipient may hold; test recipients are exempt.
    pub per_recipient_limit: u32,
    pub code_valid_seconds_after_assignment: Option<u64>,
    pub reservation_ttl_seconds: u64,
    pub low_stock_threshold: u64,
    pub test_recipients: Vec<String>,
    /// Well-formed misses a minute (guesses) that raise `guessing_suspected`;
    /// 0 never does.
    pub guessing_alert_per_minute: u64,
}

impl Default for CampaignSpec {
    fn default() -> Self {
        CampaignSpec {
            id: String::new(),
            generate: 0,
            prefix: String::new(),
            length: BODY_SYMBOLS_DEFAULT,
            starts_at: None,
            expires_at: None,
            per_user_limit: PER_USER_LIMIT_DEFAULT,
            per_recipient_limit: PER_RECIPIENT_LIMIT_DEFAULT,
            code_valid_seconds_after_assignment: None,
            reservation_ttl_seconds: RESERVATION_TTL_SECONDS_DEFAULT,
            low_stock_threshold: 0,
            test_recipients: Vec::new(),
            guessing_alert_per_minute: GUESSING_ALERT_PER_MINUTE_DEFAULT,
        }
    }
}

/// One change of engine state. `at` is when it took effect; replay uses it
/// and never the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    CampaignCreated {
        at: Timestamp,
        campaign: CampaignNo,
        /// The campaign's secret code key.
        key: [u8; CODE_KEY_BYTES],
        spec: CampaignSpec,
        idem: Option<IdemTag<'a>>,
    },
    CampaignUpdated {
        at: Timestamp,
        campaign: CampaignNo,
        patch: CampaignPatch,
        idem: Option<IdemTag<'a>>,
    },
    CodesGenerated {
        at: Timestamp,
        campaign: CampaignNo,
        count: u64,
        idem: Option<IdemTag<'a>>,
    },
    /// A batch of imported codes, normalized, in slot order from `first`.
    CodesImported {
        at: Timestamp,
        campaign: CampaignNo,
        first: u64,
        codes: Vec<&'a str>,
    },
    Assigned {
        at: Timestamp,
        campaign: CampaignNo,
        slot: Slot,
        recipient: &'a str,
        test: bool,
        idem: Option<IdemTag<'a>>,
    },
    Reserved {
        at: Timestamp,
        campaign: CampaignNo,
        slot: Slot,
        reservation: ReservationId,
        user: &'a str,
        expires_at: Timestamp,
        idem: Option<IdemTag<'a>>,
    },
    Released {
        at: Timestamp,
        campaign: CampaignNo,
        slot: Slot,
        reservation: ReservationId,
        /// True when the sweeper released an expired hold.
        expired: bool,
        idem: Option<IdemTag<'a>>,
    },
    Redeemed {
        at: Timestamp,
        campaign: CampaignNo,
        slot: Slot,
        user: &'a str,
        order: Option<&'a str>,
        /// The hold this redemption consumed, if any.
        reservation: Option<ReservationId>,
        idem: Option<IdemTag<'a>>,
    },
    RolledBack {
        at: Timestamp,
        campaign: CampaignNo,
        slot: Slot,
        idem: Option<IdemTag<'a>>,
    },
    Voided {
        at: Timestamp,
        campaign: CampaignNo,
        slot: Slot,
        idem: Option<IdemTag<'a>>,
    },
    /// A stored response for a request that changed nothing (a refusal).
    IdempotentResponse {
        at: Timestamp,
        key: &'a str,
        fingerprint: u128,
        status: u16,
        body: &'a [u8],
    },
    /// The campaign's pool fell below its low-stock threshold.
    LowStock {
        at: Timestamp,
        campaign: CampaignNo,
        available: u64,
    },
    /// More well-formed codes that were never issued were tried under the
    /// campaign's prefix in a minute than its `guessing_alert_per_minute`.
    GuessingSuspected {
        at: Timestamp,
        campaign: CampaignNo,
        /// Misses in the minute when the alert was raised.
        attempts: u64,
    },
    /// Engine counters a snapshot carries that no other record implies.
    Counters {
        at: Timestamp,
        /// The next reservation id: ids are never reused, even after the
        /// holds that used them are gone.
        next_reservation: u64,
    },
    /// A reclaim took an assigned code back from its recipient (a bounced
    /// message): the code is available again, or voided with `void`, and
    /// the recipient's count drops.
    Unassigned {
        at: Timestamp,
        campaign: CampaignNo,
        slot: Slot,
        /// The recipient the code is taken from; replay checks it held it.
        recipient: &'a str,
        /// Void the code instead of returning it to the pool.
        void: bool,
    },
    /// A webhook subscription was created. Its delivery cursor is the
    /// record's own LSN: delivery starts after the log's end at creation.
    WebhookCreated {
        at: Timestamp,
        /// `wh_` and random characters, drawn by the server.
        id: &'a str,
        /// The signing secret (`whsec_...`); kept so the server can sign
        /// after a restart, never shown again.
        secret: &'a str,
        url: &'a str,
        /// Event kinds delivered, or `["*"]`.
        events: Vec<&'a str>,
        /// Campaign ids whose events are delivered; empty: every campaign.
        campaigns: Vec<&'a str>,
        description: Option<&'a str>,
    },
    /// A subscription's settings changed; `None` leaves one unchanged.
    WebhookUpdated {
        at: Timestamp,
        id: &'a str,
        url: Option<&'a str>,
        events: Option<Vec<&'a str>>,
        campaigns: Option<Vec<&'a str>>,
        status: Option<WebhookStatus>,
    },
    /// A subscription's cursor moved: forward after a delivery the
    /// receiver acknowledged (or over events it does not want), or
    /// anywhere back with `rewind`.
    WebhookCursor {
        at: Timestamp,
        id: &'a str,
        /// Every event at or below it was delivered (or is to be skipped).
        cursor: Lsn,
        /// Set by `rewind`: the cursor may move back.
        rewind: bool,
    },
    WebhookDeleted {
        at: Timestamp,
        id: &'a str,
    },
    /// Deliveries to a subscription stopped: three days of failures or a
    /// `410` from the receiver. Also the `webhook_disabled` event.
    WebhookDisabled {
        at: Timestamp,
        id: &'a str,
        /// Why, for people.
        reason: &'a str,
    },
}

/// Whether a webhook subscription delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WebhookStatus {
    Active = 0,
    /// Paused by an operator; resumes from its cursor.
    Paused = 1,
    /// Stopped by delivery failures; an operator may set it active again.
    Disabled = 2,
}

impl WebhookStatus {
    pub fn from_u8(byte: u8) -> Option<WebhookStatus> {
        [
            WebhookStatus::Active,
            WebhookStatus::Paused,
            WebhookStatus::Disabled,
        ]
        .into_iter()
        .find(|s| *s as u8 == byte)
    }

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Active => "active",
            WebhookStatus::Paused => "paused",
            WebhookStatus::Disabled => "disabled",
        }
    }
}

/// The type byte of each record kind, as stored in the log. Never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    CampaignCreated = 1,
    CampaignUpdated = 2,
    CodesGenerated = 3,
    CodesImported = 4,
    Assigned = 5,
    Reserved = 6,
    Released = 7,
    Redeemed = 8,
    RolledBack = 9,
    Voided = 10,
    IdempotentResponse = 11,
    LowStock = 12,
    Counters = 13,
    GuessingSuspected = 14,
    // Kinds from 20 on belong to the email-campaign work, so kinds added on
    // other branches (15 and up) never clash with them.
    Unassigned = 20,
    // Kinds from 30 on belong to webhooks (21 to 29 are kept clear).
    WebhookCreated = 30,
    WebhookUpdated = 31,
    WebhookCursor = 32,
    WebhookDeleted = 33,
    WebhookDisabled = 34,
}

impl RecordKind {
    pub fn from_u8(byte: u8) -> Option<RecordKind> {
        use RecordKind::*;
        [
            CampaignCreated,
            CampaignUpdated,
            CodesGenerated,
            CodesImported,
            Assigned,
            Reserved,
            Released,
            Redeemed,
            RolledBack,
            Voided,
            IdempotentResponse,
            LowStock,
            Counters,
            GuessingSuspected,
            Unassigned,
            WebhookCreated,
            WebhookUpdated,
            WebhookCursor,
            WebhookDeleted,
            WebhookDisabled,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }

    /// The event name `/v1/events` reports.
    pub fn event_name(self) -> &'static str {
        match self {
            RecordKind::CampaignCreated => "campaign_created",
            RecordKind::CampaignUpdated => "campaign_updated",
            RecordKind::CodesGenerated | RecordKind::CodesImported => "codes_added",
            RecordKind::Assigned => "assigned",
            RecordKind::Reserved => "reserved",
            RecordKind::Released => "released",
            RecordKind::Redeemed => "redeemed",
            RecordKind::RolledBack => "rolled_back",
            RecordKind::Voided => "voided",
            RecordKind::IdempotentResponse => "idempotent_response",
            RecordKind::LowStock => "low_stock",
            RecordKind::Counters => "counters",
            RecordKind::GuessingSuspected => "guessing_suspected",
            RecordKind::Unassigned => "unassigned",
            RecordKind::WebhookCreated => "webhook_created",
            RecordKind::WebhookUpdated => "webhook_updated",
            RecordKind::WebhookCursor => "webhook_cursor",
            RecordKind::WebhookDeleted => "webhook_deleted",
            RecordKind::WebhookDisabled => "webhook_disabled",
        }
    }
}

/// The journal the engine writes through. The server backs it with the WAL;
/// tests with memory.
///
/// `append` is called while the affected code is locked, so it must be
/// quick and must not wait for durability: the caller waits afterwards.
pub trait Journal: Send + Sync {
    fn append(&self, record: &Record<'_>) -> Result<Lsn, JournalError>;
}

/// The journal could not take a record; the change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalError {
    pub message: String,
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the journal refused a record: {}", self.message)
    }
}

impl std::error::Error for JournalError {}

/// A record's bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub kind: u8,
    pub reason: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record of type {} does not decode: {}",
            self.kind, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

impl<'a> Record<'a> {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::CampaignCreated { .. } => RecordKind::CampaignCreated,
            Record::CampaignUpdated { .. } => RecordKind::CampaignUpdated,
            Record::CodesGenerated { .. } => RecordKind::CodesGenerated,
            Record::CodesImported { .. } => RecordKind::CodesImported,
            Record::Assigned { .. } => RecordKind::Assigned,
            Record::Reserved { .. } => RecordKind::Reserved,
            Record::Released { .. } => RecordKind::Released,
            Record::Redeemed { .. } => RecordKind::Redeemed,
            Record::RolledBack { .. } => RecordKind::RolledBack,
            Record::Voided { .. } => RecordKind::Voided,
            Record::IdempotentResponse { .. } => RecordKind::IdempotentResponse,
            Record::LowStock { .. } => RecordKind::LowStock,
            Record::GuessingSuspected { .. } => RecordKind::GuessingSuspected,
            Record::Counters { .. } => RecordKind::Counters,
            Record::Unassigned { .. } => RecordKind::Unassigned,
            Record::WebhookCreated { .. } => RecordKind::WebhookCreated,
            Record::WebhookUpdated { .. } => RecordKind::WebhookUpdated,
            Record::WebhookCursor { .. } => RecordKind::WebhookCursor,
            Record::WebhookDeleted { .. } => RecordKind::WebhookDeleted,
            Record::WebhookDisabled { .. } => RecordKind::WebhookDisabled,
        }
    }

    pub fn at(&self) -> Timestamp {
        match self {
            Record::CampaignCreated { at, .. }
            | Record::CampaignUpdated { at, .. }
            | Record::CodesGenerated { at, .. }
            | Record::CodesImported { at, .. }
            | Record::Assigned { at, .. }
            | Record::Reserved { at, .. }
            | Record::Released { at, .. }
            | Record::Redeemed { at, .. }
            | Record::RolledBack { at, .. }
            | Record::Voided { at, .. }
            | Record::IdempotentResponse { at, .. }
            | Record::LowStock { at, .. }
            | Record::GuessingSuspected { at, .. }
            | Record::Counters { at, .. }
            | Record::Unassigned { at, .. }
            | Record::WebhookCreated { at, .. }
            | Record::WebhookUpdated { at, .. }
            | Record::WebhookCursor { at, .. }
            | Record::WebhookDeleted { at, .. }
            | Record::WebhookDisabled { at, .. } => *at,
        }
    }

    /// The campaign and code a record is about, when it is about one code.
    pub fn code(&self) -> Option<(CampaignNo, Slot)> {
        match *self {
            Record::Assigned { campaign, slot, .. }
            | Record::Reserved { campaign, slot, .. }
            | Record::Released { campaign, slot, .. }
            | Record::Redeemed { campaign, slot, .. }
            | Record::RolledBack { campaign, slot, .. }
            | Record::Voided { campaign, slot, .. }
            | Record::Unassigned { campaign, slot, .. } => Some((campaign, slot)),
            _ => None,
        }
    }

    pub fn campaign(&self) -> Option<CampaignNo> {
        match *self {
            Record::CampaignCreated { campaign, .. }
            | Record::CampaignUpdated { campaign, .. }
            | Record::CodesGenerated { campaign, .. }
            | Record::CodesImported { campaign, .. }
            | Record::LowStock { campaign, .. }
            | Record::GuessingSuspected { campaign, .. } => Some(campaign),
            Record::IdempotentResponse { .. }
            | Record::Counters { .. }
            | Record::WebhookCreated { .. }
            | Record::WebhookUpdated { .. }
            | Record::WebhookCursor { .. }
            | Record::WebhookDeleted { .. }
            | Record::WebhookDisabled { .. } => None,
            _ => self.code().map(|(c, _)| c),
        }
    }

    pub fn idem(&self) -> Option<IdemTag<'a>> {
        match *self {
            Record::CampaignCreated { idem, .. }
            | Record::CampaignUpdated { idem, .. }
            | Record::CodesGenerated { idem, .. }
            | Record::Assigned { idem, .. }
            | Record::Reserved { idem, .. }
            | Record::Released { idem, .. }
            | Record::Redeemed { idem, .. }
            | Record::RolledBack { idem, .. }
            | Record::Voided { idem, .. } => idem,
            _ => None,
        }
    }

    /// Appends the record's payload (without its kind byte) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u64(self.at().0);
        match self {
            Record::CampaignCreated {
                campaign,
                key,
                spec,
                idem,
                ..
            } => {
                w.u32(*campaign);
                w.0.extend_from_slice(key);
                w.str(&spec.id);
                w.u64(spec.generate);
                w.str(&spec.prefix);
                w.0.push(spec.length);
                w.opt_time(spec.starts_at);
                w.opt_time(spec.expires_at);
                w.u32(spec.per_user_limit);
                w.u32(spec.per_recipient_limit);
                w.opt_u64(spec.code_valid_seconds_after_assignment);
                w.u64(spec.reservation_ttl_seconds);
                w.u64(spec.low_stock_threshold);
                w.strs(spec.test_recipients.iter().map(String::as_str));
                w.idem(idem);
                // Fields added after the first format go last, and only
                // when not at their default: a record written before them
                // decodes with the default, and every record has one
                // encoding (the log's bytes are canonical).
                if spec.guessing_alert_per_minute != GUESSING_ALERT_PER_MINUTE_DEFAULT {
                    w.u64(spec.guessing_alert_per_minute);
                }
            }
            Record::CampaignUpdated {
                campaign,
                patch,
                idem,
                ..
            } => {
                w.u32(*campaign);
                match patch.starts_at {
                    None => w.0.push(0),
                    Some(t) => {
                        w.0.push(1);
                        w.opt_time(t);
                    }
                }
                match patch.expires_at {
                    None => w.0.push(0),
                    Some(t) => {
                        w.0.push(1);
                        w.opt_time(t);
                    }
                }
                w.0.push(match patch.paused {
                    None => 0,
                    Some(false) => 1,
                    Some(true) => 2,
                });
                match &patch.test_recipients {
                    None => w.0.push(0),
                    Some(list) => {
                        w.0.push(1);
                        w.strs(list.iter().map(String::as_str));
                    }
                }
                w.opt_u64(patch.low_stock_threshold);
                w.idem(idem);
                if let Some(alert) = patch.guessing_alert_per_minute {
                    w.u64(alert);
                }
            }
            Record::CodesGenerated {
                campaign,
                count,
                idem,
                ..
            } => {
                w.u32(*campaign);
                w.u64(*count);
                w.idem(idem);
            }
            Record::CodesImported {
                campaign,
                first,
                codes,
                ..
            } => {
                w.u32(*campaign);
                w.u64(*first);
                w.strs(codes.iter().copied());
            }
            Record::Assigned {
                campaign,
                slot,
                recipient,
                test,
                idem,
                ..
            } => {
                w.u32(*campaign);
                w.u64(slot.0);
                w.str(recipient);
                w.0.push(*test as u8);
                w.idem(idem);
            }
            Record::Reserved {
                campaign,
                slot,
                reservation,
                user,
                expires_at,
                idem,
                ..
            } => {
                w.u32(*campaign);
                w.u64(slot.0);
                w.u64(*reservation as u64);
                w.str(user);
                w.u64(expires_at.0);
                w.idem(idem);
                w.reservation_high(*reservation);
            }
            Record::Released {
                campaign,
                slot,
                reservation,
                expired,
                idem,
                ..
            } => {
                w.u32(*campaign);
                w.u64(slot.0);
                w.u64(*reservation as u64);
                w.0.push(*expired as u8);
                w.idem(idem);
                w.reservation_high(*reservation);
            }
            Record::Redeemed {
                campaign,
                slot,
                user,
                order,
                reservation,
                idem,
                ..
            } => {
                w.u32(*campaign);
                w.u64(slot.0);
                w.str(user);
                w.opt_str(*order);
                w.opt_u64(reservation.map(|id| id as u64));
                w.idem(idem);
                if let Some(id) = reservation {
                    w.reservation_high(*id);
                }
            }
            Record::RolledBack {
                campaign,
                slot,
                idem,
                ..
            }
            | Record::Voided {
                campaign,
                slot,
                idem,
                ..
            } => {
                w.u32(*campaign);
                w.u64(slot.0);
                w.idem(idem);
            }
            Record::IdempotentResponse {
                key,
                fingerprint,
                status,
                body,
                ..
            } => {
                w.str(key);
                w.u128(*fingerprint);
                w.u32(u32::from(*status));
                w.bytes(body);
            }
            Record::LowStock {
                campaign,
                available,
                ..
            } => {
                w.u32(*campaign);
                w.u64(*available);
            }
            Record::Counters {
                next_reservation, ..
            } => w.u64(*next_reservation),
            Record::GuessingSuspected {
                campaign, attempts, ..
            } => {
                w.u32(*campaign);
                w.u64(*attempts);
            }
            Record::Unassigned {
                campaign,
                slot,
                recipient,
                void,
                ..
            } => {
                w.u32(*campaign);
                w.u64(slot.0);
                w.str(recipient);
                w.0.push(*void as u8);
            }
            Record::WebhookCreated {
                id,
                secret,
                url,
                events,
                campaigns,
                description,
                ..
            } => {
                w.str(id);
                w.str(secret);
                w.str(url);
                w.strs(events.iter().copied());
                w.strs(campaigns.iter().copied());
                w.opt_str(*description);
            }
            Record::WebhookUpdated {
                id,
                url,
                events,
                campaigns,
                status,
                ..
            } => {
                w.str(id);
                w.opt_str(*url);
                w.opt_strs(events.as_deref());
                w.opt_strs(campaigns.as_deref());
                // 0: unchanged, else the status plus one.
                w.0.push(status.map_or(0, |s| s as u8 + 1));
            }
            Record::WebhookCursor {
                id, cursor, rewind, ..
            } => {
                w.str(id);
                w.u64(*cursor);
                w.0.push(*rewind as u8);
            }
            Record::WebhookDeleted { id, .. } => w.str(id),
            Record::WebhookDisabled { id, reason, .. } => {
                w.str(id);
                w.str(reason);
            }
        }
    }

    /// Decodes a payload written by [`Record::encode`]. Never panics on
    /// arbitrary bytes.
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<Record<'a>, DecodeError> {
        let Some(record_kind) = RecordKind::from_u8(kind) else {
            return Err(DecodeError {
                kind,
                reason: "unknown record type",
            });
        };
        let mut r = Reader {
            bytes: payload,
            kind,
        };
        let at = Timestamp(r.u64()?);
        let record = match record_kind {
            RecordKind::CampaignCreated => {
                let campaign = r.u32()?;
                let key: [u8; CODE_KEY_BYTES] =
                    r.take(CODE_KEY_BYTES)?.try_into().expect("key bytes taken");
                let spec = CampaignSpec {
                    id: r.str()?.to_owned(),
                    generate: r.u64()?,
                    prefix: r.str()?.to_owned(),
                    length: r.u8()?,
                    starts_at: r.opt_time()?,
                    expires_at: r.opt_time()?,
                    per_user_limit: r.u32()?,
                    per_recipient_limit: r.u32()?,
                    code_valid_seconds_after_assignment: r.opt_u64()?,
                    reservation_ttl_seconds: r.u64()?,
                    low_stock_threshold: r.u64()?,
                    test_recipients: r.strs()?.into_iter().map(str::to_owned).collect(),
                    guessing_alert_per_minute: GUESSING_ALERT_PER_MINUTE_DEFAULT,
                };
                let idem = r.idem()?;
                let spec = CampaignSpec {
                    guessing_alert_per_minute: match r.bytes.is_empty() {
                        true => GUESSING_ALERT_PER_MINUTE_DEFAULT,
                        false => match r.u64()? {
                            GUESSING_ALERT_PER_MINUTE_DEFAULT => {
                                return Err(r.error("a default written out"));
                            }
                            alert => alert,
                        },
                    },
                    ..spec
                };
                Record::CampaignCreated {
                    at,
                    campaign,
                    key,
                    spec,
                    idem,
                }
            }
            RecordKind::CampaignUpdated => {
                let campaign = r.u32()?;
                let starts_at = if r.flag()? { Some(r.opt_time()?) } else { None };
                let expires_at = if r.flag()? { Some(r.opt_time()?) } else { None };
                let paused = match r.u8()? {
                    0 => None,
                    1 => Some(false),
                    2 => Some(true),
                    _ => return Err(r.error("bad paused value")),
                };
                let test_recipients = if r.flag()? {
                    Some(r.strs()?.into_iter().map(str::to_owned).collect())
                } else {
                    None
                };
                let patch = CampaignPatch {
                    starts_at,
                    expires_at,
                    paused,
                    test_recipients,
                    low_stock_threshold: r.opt_u64()?,
                    guessing_alert_per_minute: None,
                };
                let idem = r.idem()?;
                let patch = CampaignPatch {
                    guessing_alert_per_minute: match r.bytes.is_empty() {
                        true => None,
                        false => Some(r.u64()?),
                    },
                    ..patch
                };
                Record::CampaignUpdated {
                    at,
                    campaign,
                    patch,
                    idem,
                }
            }
            RecordKind::CodesGenerated => Record::CodesGenerated {
                at,
                campaign: r.u32()?,
                count: r.u64()?,
                idem: r.idem()?,
            },
            RecordKind::CodesImported => Record::CodesImported {
                at,
                campaign: r.u32()?,
                first: r.u64()?,
                codes: r.strs()?,
            },
            RecordKind::Assigned => Record::Assigned {
                at,
                campaign: r.u32()?,
                slot: Slot(r.u64()?),
                recipient: r.str()?,
                test: r.flag()?,
                idem: r.idem()?,
            },
            RecordKind::Reserved => {
                let (campaign, slot, low) = (r.u32()?, Slot(r.u64()?), r.u64()?);
                let (user, expires_at, idem) = (r.str()?, Timestamp(r.u64()?), r.idem()?);
                Record::Reserved {
                    at,
                    campaign,
                    slot,
                    reservation: r.reservation_high(low)?,
                    user,
                    expires_at,
                    idem,
                }
            }
            RecordKind::Released => {
                let (campaign, slot, low) = (r.u32()?, Slot(r.u64()?), r.u64()?);
                let (expired, idem) = (r.flag()?, r.idem()?);
                Record::Released {
                    at,
                    campaign,
                    slot,
                    reservation: r.reservation_high(low)?,
                    expired,
                    idem,
                }
            }
            RecordKind::Redeemed => {
                let (campaign, slot) = (r.u32()?, Slot(r.u64()?));
                let (user, order, low, idem) = (r.str()?, r.opt_str()?, r.opt_u64()?, r.idem()?);
                let reservation = match low {
                    Some(low) => Some(r.reservation_high(low)?),
                    None => None,
                };
                Record::Redeemed {
                    at,
                    campaign,
                    slot,
                    user,
                    order,
                    reservation,
                    idem,
                }
            }
            RecordKind::RolledBack => Record::RolledBack {
                at,
                campaign: r.u32()?,
                slot: Slot(r.u64()?),
                idem: r.idem()?,
            },
            RecordKind::Voided => Record::Voided {
                at,
                campaign: r.u32()?,
                slot: Slot(r.u64()?),
                idem: r.idem()?,
            },
            RecordKind::IdempotentResponse => Record::IdempotentResponse {
                at,
                key: r.str()?,
                fingerprint: r.u128()?,
                status: u16::try_from(r.u32()?).map_err(|_| r.error("status out of range"))?,
                body: r.bytes()?,
            },
            RecordKind::LowStock => Record::LowStock {
                at,
                campaign: r.u32()?,
                available: r.u64()?,
            },
            RecordKind::Counters => Record::Counters {
                at,
                next_reservation: r.u64()?,
            },
            RecordKind::GuessingSuspected => Record::GuessingSuspected {
                at,
                campaign: r.u32()?,
                attempts: r.u64()?,
            },
            RecordKind::Unassigned => Record::Unassigned {
                at,
                campaign: r.u32()?,
                slot: Slot(r.u64()?),
                recipient: r.str()?,
                void: r.flag()?,
            },
            RecordKind::WebhookCreated => Record::WebhookCreated {
                at,
                id: r.str()?,
                secret: r.str()?,
                url: r.str()?,
                events: r.strs()?,
                campaigns: r.strs()?,
                description: r.opt_str()?,
            },
            RecordKind::WebhookUpdated => Record::WebhookUpdated {
                at,
                id: r.str()?,
                url: r.opt_str()?,
                events: r.opt_strs()?,
                campaigns: r.opt_strs()?,
                status: match r.u8()? {
                    0 => None,
                    n => Some(
                        WebhookStatus::from_u8(n - 1)
                            .ok_or_else(|| r.error("bad webhook status"))?,
                    ),
                },
            },
            RecordKind::WebhookCursor => Record::WebhookCursor {
                at,
                id: r.str()?,
                cursor: r.u64()?,
                rewind: r.flag()?,
            },
            RecordKind::WebhookDeleted => Record::WebhookDeleted { at, id: r.str()? },
            RecordKind::WebhookDisabled => Record::WebhookDisabled {
                at,
                id: r.str()?,
                reason: r.str()?,
            },
        };
        if !r.bytes.is_empty() {
            return Err(r.error("trailing bytes"));
        }
        Ok(record)
    }
}

/// A journal in memory: records kept as bytes, as a log would keep them.
/// For tests, the reference model and replay checks.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    records: crate::sync::Mutex<Vec<(u8, Vec<u8>)>>,
    /// When set, every append fails: a full or failing disk.
    failing: crate::sync::AtomicBool,
}

impl MemoryJournal {
    /// Records so far as (LSN, kind, payload), LSN from 1.
    pub fn records(&self) -> Vec<(Lsn, u8, Vec<u8>)> {
        let records = self.records.lock();
        records
            .iter()
            .enumerate()
            .map(|(i, (k, p))| (i as Lsn + 1, *k, p.clone()))
            .collect()
    }

    pub fn set_failing(&self, failing: bool) {
        // Relaxed: a test switch, read by the appender itself.
        self.failing.store(failing, crate::sync::Ordering::Relaxed);
    }
}

impl Journal for MemoryJournal {
    fn append(&self, record: &Record<'_>) -> Result<Lsn, JournalError> {
        // Relaxed: see `set_failing`.
        if self.failing.load(crate::sync::Ordering::Relaxed) {
            return Err(JournalError {
                message: "injected failure".into(),
            });
        }
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        let mut records = self.records.lock();
        records.push((record.kind() as u8, bytes));
        Ok(records.len() as Lsn)
    }
}

/// A journal that keeps nothing and counts LSNs: for benchmarks of the
/// engine alone, clearly not durable.
#[derive(Debug, Default)]
pub struct NullJournal {
    next: crate::sync::AtomicU64,
}

impl Journal for NullJournal {
    fn append(&self, _record: &Record<'_>) -> Result<Lsn, JournalError> {
        // Relaxed: LSNs need only be unique here.
        Ok(self.next.fetch_add(1, crate::sync::Ordering::Relaxed) + 1)
    }
}

#[cfg(test)]
mod tests;
