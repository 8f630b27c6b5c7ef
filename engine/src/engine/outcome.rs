//! What the engine's operations return, and what they are configured with.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use crate::Timestamp;
use crate::campaign::Campaign;
use crate::codec;
use crate::record::{IdemTag, Lsn, Record, ReservationId, Slot};
use crate::state::PublicState;
use crate::sync::Arc;

/// An idempotency key sent with a request, scoped to its token by the
/// caller: the same pair a transition's record carries.
pub type IdemKey<'a> = IdemTag<'a>;

/// What the renderer sees of a transition that carried an idempotency key.
#[derive(Debug)]
pub struct Effect<'a> {
    /// The record's LSN: the stored response is durable with it.
    pub lsn: Lsn,
    /// The transition, as logged.
    pub record: &'a Record<'a>,
    /// The campaign it changed, just after the record.
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
    /// The printed code.
    pub code: String,
    /// Its campaign's id.
    pub campaign: String,
    /// `available`, `assigned`, `reserved`, `redeemed`, `voided`, `expired`
    /// or `not_started`.
    pub state: &'static str,
    /// Who it was assigned to, if anyone.
    pub recipient: Option<String>,
    /// When it was assigned.
    pub assigned_at: Option<Timestamp>,
    /// The live hold's deadline, if it is reserved.
    pub reserved_until: Option<Timestamp>,
    /// Who redeemed it, when, and under which order reference.
    pub redeemed_by: Option<String>,
    pub redeemed_at: Option<Timestamp>,
    pub order: Option<String>,
    /// The earlier of the code's own deadline and the campaign's end.
    pub expires_at: Option<Timestamp>,
}

/// A successful redemption. Borrows the campaign id from the engine and
/// the user and order from the request, so that answering one costs no
/// allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed<'a> {
    /// The printed code and its campaign's id.
    pub code: PrintedCode,
    pub campaign: &'a str,
    /// The redeemer (the hold's, for a confirmed reservation) and its
    /// order reference.
    pub user: Cow<'a, str>,
    pub order: Option<&'a str>,
    /// When it took effect.
    pub redeemed_at: Timestamp,
    /// The record to wait for before answering.
    pub lsn: Lsn,
}

/// A successful reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The id to confirm or release the hold with.
    pub reservation: ReservationId,
    /// The printed code and its holder.
    pub code: String,
    pub user: String,
    /// The hold's deadline.
    pub expires_at: Timestamp,
    /// The record to wait for before answering; 0 when the holder got its
    /// existing hold back and nothing was logged.
    pub lsn: Lsn,
}

/// A successful assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The printed code, its campaign's id and its recipient.
    pub code: String,
    pub campaign: String,
    pub recipient: String,
    /// The code's state now: a code given again may be redeemed since.
    pub state: PublicState,
    /// False when the recipient already held a code and got it again.
    pub new: bool,
    /// A test recipient's fresh code, which no count limits.
    pub test: bool,
    /// The record to wait for, when one was logged.
    pub lsn: Option<Lsn>,
}

/// What a code import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Codes added to the campaign.
    pub added: u64,
    /// Lines that repeat a code the campaign already has or the import
    /// already took.
    pub duplicates: u64,
    /// The first rejected lines: (1-based line number, reason code).
    pub rejected: Vec<(u64, &'static str)>,
    /// Every rejected line, reported in detail or not.
    pub rejected_total: u64,
    /// Codes in the campaign afterwards.
    pub total: u64,
}

/// A located code: its campaign and slot.
#[derive(Debug, Clone, Copy)]
pub struct CodeRef<'e> {
    /// The campaign the code belongs to.
    pub campaign: &'e Campaign,
    /// Where in it.
    pub slot: Slot,
    /// The printed form of a generated code, made from the input while it
    /// was parsed, so answers need not encrypt the index again.
    pub(super) printed: Option<codec::Code>,
}

impl CodeRef<'_> {
    /// The code's printed form.
    pub fn code_string(&self) -> String {
        self.printed_code().to_string()
    }

    /// The code's printed form, without a copy.
    pub fn printed_code(&self) -> PrintedCode {
        match self.printed {
            Some(code) => PrintedCode::Generated(code),
            None => self.campaign.printed_code(self.slot),
        }
    }
}

/// A code's printed form without a heap copy: a generated code's on the
/// stack, an imported code's shared with the campaign. Dereferences to
/// `&str`.
#[derive(Clone)]
pub enum PrintedCode {
    Generated(codec::Code),
    Imported(Arc<str>),
}

impl PrintedCode {
    /// The printed code.
    pub fn as_str(&self) -> &str {
        match self {
            PrintedCode::Generated(code) => code.as_str(),
            PrintedCode::Imported(code) => code,
        }
    }
}

impl Deref for PrintedCode {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// Equal when the printed text is: how the code is held does not matter.
impl PartialEq for PrintedCode {
    fn eq(&self, other: &PrintedCode) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PrintedCode {}

impl PartialEq<str> for PrintedCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for PrintedCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for PrintedCode {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl fmt::Display for PrintedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PrintedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Engine-wide configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most idempotency keys remembered at once.
    pub idempotency_entries_max: usize,
    /// Where the random part of reservation ids comes from. `None` numbers
    /// them in order (tests, models); the server passes the OS's
    /// randomness, so that an id cannot be guessed from another.
    pub reservation_ids: Option<RandomIds>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idempotency_entries_max: crate::idempotency::ENTRIES_MAX_DEFAULT,
            reservation_ids: None,
        }
    }
}

/// A source of random reservation-id bits, like `now`: the engine reads
/// no randomness of its own.
#[derive(Clone)]
pub struct RandomIds(pub std::sync::Arc<dyn Fn() -> u128 + Send + Sync>);

impl std::fmt::Debug for RandomIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RandomIds")
    }
}
