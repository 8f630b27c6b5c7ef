//! Why an operation changed nothing ([`Refusal`]), and why a record from
//! the log does not apply ([`ReplayError`]).

use crate::Timestamp;
use crate::idempotency::TableFull;
use crate::record::{JournalError, Lsn};

use super::GUESS_PROBABILITY_MAX;

/// Why an operation changed nothing. Typed, with no API strings: the
/// server maps each variant to its HTTP status and error code in one table.
/// Exhaustive on purpose (not `#[non_exhaustive]`): that table matches
/// every variant, so a new refusal without an answer fails to compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An input breaks a rule of its own.
    InvalidRequest {
        /// The API's name of the offending field.
        field: &'static str,
        /// What is wrong with it, for people.
        message: String,
    },
    UnknownCampaign,
    CampaignExists,
    /// The prefix and another campaign's could be mistaken for each other.
    PrefixConflict {
        /// The other campaign's id.
        other: String,
    },
    /// Too many codes for the format: a guess would hit one too often.
    CodeSpaceTooSmall {
        /// Codes the campaign would have issued.
        issued: u64,
        /// Distinct bodies of the format.
        space: u128,
    },
    TooManyCampaigns {
        /// `CAMPAIGNS_MAX`.
        limit: usize,
    },
    MalformedCode,
    UnknownCode,
    /// `lsn`: the record that redeemed it (as for the other refusals that
    /// report a code's state: an answer need wait for no later record).
    AlreadyRedeemed {
        /// When it was redeemed, for the answer.
        redeemed_at: Timestamp,
        /// The record to wait for before answering.
        lsn: Lsn,
    },
    CodeReserved {
        /// The record of the hold, to wait for before answering.
        lsn: Lsn,
    },
    CodeVoided {
        /// The record of the void, to wait for before answering.
        lsn: Lsn,
    },
    CodeExpired,
    CampaignNotStarted,
    CampaignPaused,
    UserLimitReached {
        /// The campaign's `per_user_limit`.
        limit: u32,
    },
    PoolExhausted,
    /// An all-or-nothing bulk assignment needs more new codes than the pool
    /// holds outside other files' pledges; nothing was assigned.
    PoolShort {
        /// New codes the file needs.
        needed: u64,
        /// Codes available to it.
        available: u64,
    },
    /// A reclaim named a recipient that holds no code of the campaign.
    UnknownRecipient,
    NotRedeemed,
    UnknownReservation,
    UnknownWebhook,
    /// Subscription ids are random: a clash is a retry with the same id.
    WebhookExists,
    TooManyWebhooks {
        /// `WEBHOOKS_MAX`.
        limit: usize,
    },
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
            Refusal::PoolExhausted => f.write_str("no code is left to assign"),
            Refusal::PoolShort { needed, available } => write!(
                f,
                "the file needs {needed} new codes and {available} are available; nothing was assigned"
            ),
            Refusal::UnknownRecipient => {
                f.write_str("the recipient holds no code of this campaign")
            }
            Refusal::NotRedeemed => f.write_str("the code is not redeemed"),
            Refusal::UnknownReservation => f.write_str("no such reservation"),
            Refusal::UnknownWebhook => f.write_str("no webhook has that id"),
            Refusal::WebhookExists => f.write_str("a webhook with that id already exists"),
            Refusal::TooManyWebhooks { limit } => write!(f, "at most {limit} webhooks"),
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
    /// The record's LSN; 0 for a snapshot entry that could not be read.
    pub lsn: Lsn,
    /// What does not apply, for the operator.
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

pub(super) fn replay_err(lsn: Lsn, reason: impl Into<String>) -> ReplayError {
    ReplayError {
        lsn,
        reason: reason.into(),
    }
}
