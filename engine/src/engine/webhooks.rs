//! Webhook subscriptions: a small table that lives in the engine because it
//! is state built from records, so it replays, snapshots and is validated
//! like every campaign. The engine keeps what must survive a restart (the
//! settings, the secret, the delivery cursor, the status); the server keeps
//! what need not (failure counts, the last error, the backoff) and does all
//! delivery I/O, never holding this table's lock across it.
//!
//! Every change is decided and appended under the table's lock, so the
//! log's order of a subscription's records is the order they took effect,
//! and replay can check each against the state the ones before it built.

use std::collections::BTreeMap;

use crate::Timestamp;
use crate::record::{Journal, Lsn, Record, WebhookStatus};

use super::refusal::replay_err;
use super::{Engine, Refusal, ReplayError};

/// Most subscriptions at once: each has a delivery task and a connection.
pub const WEBHOOKS_MAX: usize = 100;
/// Longest `url`, in bytes.
pub const WEBHOOK_URL_BYTES_MAX: usize = 2048;
/// Most entries of `events` or `campaigns`.
pub const WEBHOOK_FILTER_ENTRIES_MAX: usize = 100;
/// Longest `description`, in bytes.
pub const WEBHOOK_DESCRIPTION_BYTES_MAX: usize = 256;

/// A subscription as it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    pub id: String,
    pub secret: String,
    pub url: String,
    pub events: Vec<String>,
    pub campaigns: Vec<String>,
    pub description: Option<String>,
}

/// Settings a PATCH may change; `None` leaves one unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub campaigns: Option<Vec<String>>,
    pub status: Option<WebhookStatus>,
}

/// One subscription's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub spec: WebhookSpec,
    pub status: WebhookStatus,
    pub created_at: Timestamp,
    /// Every event at or below it was delivered or is skipped.
    pub cursor: Lsn,
    /// The time of the latest record that gave its deliveries a fresh
    /// start: its creation, a cursor move (a delivery acknowledged, events
    /// skipped, a rewind), a new url or a resume. Failures in a row count
    /// from no earlier than this, across restarts too.
    pub delivery_since: Timestamp,
    /// Why it was disabled, while it is.
    pub disabled_reason: Option<String>,
}

/// The table: subscriptions by id.
#[derive(Debug, Default)]
pub(super) struct Webhooks {
    by_id: BTreeMap<String, Webhook>,
}

fn check_spec_fields(
    url: Option<&str>,
    events: Option<&[String]>,
    campaigns: Option<&[String]>,
) -> Result<(), Refusal> {
    let invalid = |field: &'static str, message: String| Refusal::InvalidRequest { field, message };
    if let Some(url) = url
        && (url.is_empty() || url.len() > WEBHOOK_URL_BYTES_MAX)
    {
        return Err(invalid(
            "url",
            format!("must be 1 to {WEBHOOK_URL_BYTES_MAX} bytes"),
        ));
    }
    if let Some(events) = events
        && (events.is_empty() || events.len() > WEBHOOK_FILTER_ENTRIES_MAX)
    {
        return Err(invalid(
            "events",
            format!("must list 1 to {WEBHOOK_FILTER_ENTRIES_MAX} kinds"),
        ));
    }
    if let Some(campaigns) = campaigns
        && campaigns.len() > WEBHOOK_FILTER_ENTRIES_MAX
    {
        return Err(invalid(
            "campaigns",
            format!("must list at most {WEBHOOK_FILTER_ENTRIES_MAX} campaigns"),
        ));
    }
    Ok(())
}

fn strs(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl<J: Journal> Engine<J> {
    /// Every subscription, by id.
    pub fn webhooks(&self) -> Vec<Webhook> {
        self.webhooks.lock().by_id.values().cloned().collect()
    }

    pub fn webhook(&self, id: &str) -> Option<Webhook> {
        self.webhooks.lock().by_id.get(id).cloned()
    }

    /// Creates a subscription whose delivery starts after its own record.
    pub fn create_webhook(&self, spec: WebhookSpec, now: Timestamp) -> Result<Webhook, Refusal> {
        check_spec_fields(Some(&spec.url), Some(&spec.events), Some(&spec.campaigns))?;
        if spec
            .description
            .as_ref()
            .is_some_and(|d| d.len() > WEBHOOK_DESCRIPTION_BYTES_MAX)
        {
            return Err(Refusal::InvalidRequest {
                field: "description",
                message: format!("must be at most {WEBHOOK_DESCRIPTION_BYTES_MAX} bytes"),
            });
        }
        let mut table = self.webhooks.lock();
        if table.by_id.len() >= WEBHOOKS_MAX {
            return Err(Refusal::TooManyWebhooks {
                limit: WEBHOOKS_MAX,
            });
        }
        if table.by_id.contains_key(&spec.id) {
            return Err(Refusal::WebhookExists);
        }
        let record = Record::WebhookCreated {
            at: now,
            id: &spec.id,
            secret: &spec.secret,
            url: &spec.url,
            events: strs(&spec.events),
            campaigns: strs(&spec.campaigns),
            description: spec.description.as_deref(),
        };
        let lsn = self.append(&record)?;
        Ok(effect_created(&mut table, lsn, &record))
    }

    /// Changes a subscription's settings; setting a disabled one active
    /// starts its deliveries again from its cursor.
    pub fn update_webhook(
        &self,
        id: &str,
        patch: WebhookPatch,
        now: Timestamp,
    ) -> Result<Webhook, Refusal> {
        check_spec_fields(
            patch.url.as_deref(),
            patch.events.as_deref(),
            patch.campaigns.as_deref(),
        )?;
        let mut table = self.webhooks.lock();
        if !table.by_id.contains_key(id) {
            return Err(Refusal::UnknownWebhook);
        }
        let record = Record::WebhookUpdated {
            at: now,
            id,
            url: patch.url.as_deref(),
            events: patch.events.as_deref().map(strs),
            campaigns: patch.campaigns.as_deref().map(strs),
            status: patch.status,
        };
        self.append(&record)?;
        effect_updated(&mut table, &record);
        Ok(table.by_id[id].clone())
    }

    /// Moves the cursor forward to `cursor` after a delivery, if it is
    /// still at `from` (where the delivery started): a rewind or a
    /// re-enable meanwhile wins, and `Ok(None)` says the move was dropped.
    pub fn advance_webhook(
        &self,
        id: &str,
        from: Lsn,
        cursor: Lsn,
        now: Timestamp,
    ) -> Result<Option<Lsn>, Refusal> {
        let mut table = self.webhooks.lock();
        let Some(hook) = table.by_id.get(id) else {
            return Err(Refusal::UnknownWebhook);
        };
        if hook.cursor != from || cursor <= from {
            return Ok(None);
        }
        let record = Record::WebhookCursor {
            at: now,
            id,
            cursor,
            rewind: false,
        };
        let lsn = self.append(&record)?;
        effect_cursor(&mut table, &record);
        Ok(Some(lsn))
    }

    /// Sets the cursor to `after`, wherever it is: events after it are
    /// delivered again. The caller bounds `after` by the durable log.
    pub fn rewind_webhook(&self, id: &str, after: Lsn, now: Timestamp) -> Result<Webhook, Refusal> {
        let mut table = self.webhooks.lock();
        if !table.by_id.contains_key(id) {
            return Err(Refusal::UnknownWebhook);
        }
        let record = Record::WebhookCursor {
            at: now,
            id,
            cursor: after,
            rewind: true,
        };
        self.append(&record)?;
        effect_cursor(&mut table, &record);
        Ok(table.by_id[id].clone())
    }

    pub fn delete_webhook(&self, id: &str, now: Timestamp) -> Result<Lsn, Refusal> {
        let mut table = self.webhooks.lock();
        if !table.by_id.contains_key(id) {
            return Err(Refusal::UnknownWebhook);
        }
        let record = Record::WebhookDeleted { at: now, id };
        let lsn = self.append(&record)?;
        table.by_id.remove(id);
        Ok(lsn)
    }

    /// Stops deliveries to an active subscription whose cursor is still
    /// `from`; `Ok(None)` when an operator changed it meanwhile (paused,
    /// rewound, deleted), so the failures that led here are stale.
    pub fn disable_webhook(
        &self,
        id: &str,
        from: Lsn,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<Lsn>, Refusal> {
        let mut table = self.webhooks.lock();
        match table.by_id.get(id) {
            Some(hook) if hook.status == WebhookStatus::Active && hook.cursor == from => {}
            _ => return Ok(None),
        }
        let record = Record::WebhookDisabled {
            at: now,
            id,
            reason,
        };
        let lsn = self.append(&record)?;
        effect_disabled(&mut table, &record);
        Ok(Some(lsn))
    }

    /// Re-applies a webhook record from the log, checking it against the
    /// table the records before it built.
    pub(super) fn replay_webhook(&self, lsn: Lsn, record: &Record<'_>) -> Result<(), ReplayError> {
        let mut table = self.webhooks.lock();
        let known = |table: &Webhooks, id: &str| {
            table
                .by_id
                .get(id)
                .cloned()
                .ok_or_else(|| replay_err(lsn, format!("unknown webhook {id:?}")))
        };
        match *record {
            Record::WebhookCreated { id, .. } => {
                if table.by_id.contains_key(id) {
                    return Err(replay_err(lsn, format!("webhook {id:?} exists already")));
                }
                if table.by_id.len() >= WEBHOOKS_MAX {
                    return Err(replay_err(lsn, "more webhooks than WEBHOOKS_MAX"));
                }
                effect_created(&mut table, lsn, record);
            }
            Record::WebhookUpdated { id, .. } => {
                known(&table, id)?;
                effect_updated(&mut table, record);
            }
            Record::WebhookCursor {
                id, cursor, rewind, ..
            } => {
                let hook = known(&table, id)?;
                // A cursor names records that were durable before this one.
                if cursor > lsn {
                    return Err(replay_err(
                        lsn,
                        format!("cursor {cursor} is past its record"),
                    ));
                }
                if !rewind && cursor <= hook.cursor {
                    return Err(replay_err(
                        lsn,
                        format!("cursor {cursor} does not advance from {}", hook.cursor),
                    ));
                }
                effect_cursor(&mut table, record);
            }
            Record::WebhookDeleted { id, .. } => {
                known(&table, id)?;
                table.by_id.remove(id);
            }
            Record::WebhookDisabled { id, .. } => {
                if known(&table, id)?.status == WebhookStatus::Disabled {
                    return Err(replay_err(
                        lsn,
                        format!("webhook {id:?} is disabled already"),
                    ));
                }
                effect_disabled(&mut table, record);
            }
            _ => unreachable!("only webhook records are dispatched here"),
        }
        Ok(())
    }

    /// The table's records for a snapshot at `lsn`: each subscription's
    /// creation, its cursor (at its `delivery_since`, which the cursor
    /// record restores), and its status when not active.
    pub(super) fn snapshot_webhooks(&self, lsn: Lsn, emit: &mut impl FnMut(Lsn, &Record<'_>)) {
        let table = self.webhooks.lock();
        for hook in table.by_id.values() {
            let spec = &hook.spec;
            let at = hook.created_at;
            emit(
                lsn,
                &Record::WebhookCreated {
                    at,
                    id: &spec.id,
                    secret: &spec.secret,
                    url: &spec.url,
                    events: strs(&spec.events),
                    campaigns: strs(&spec.campaigns),
                    description: spec.description.as_deref(),
                },
            );
            emit(
                lsn,
                &Record::WebhookCursor {
                    at: hook.delivery_since,
                    id: &spec.id,
                    cursor: hook.cursor,
                    rewind: true,
                },
            );
            match hook.status {
                WebhookStatus::Active => {}
                WebhookStatus::Paused => emit(
                    lsn,
                    &Record::WebhookUpdated {
                        at,
                        id: &spec.id,
                        url: None,
                        events: None,
                        campaigns: None,
                        status: Some(WebhookStatus::Paused),
                    },
                ),
                WebhookStatus::Disabled => emit(
                    lsn,
                    &Record::WebhookDisabled {
                        at,
                        id: &spec.id,
                        reason: hook.disabled_reason.as_deref().unwrap_or(""),
                    },
                ),
            }
        }
    }

    /// The table for `dump_state`; secrets are shown by length only.
    pub(super) fn dump_webhooks(&self) -> String {
        let table = self.webhooks.lock();
        let mut out = String::new();
        for hook in table.by_id.values() {
            let spec = &hook.spec;
            out.push_str(&format!(
                "webhook {} secret_len={} url={:?} events={:?} campaigns={:?} description={:?} status={:?} created_at={:?} cursor={} delivery_since={:?} disabled={:?}\n",
                spec.id,
                spec.secret.len(),
                spec.url,
                spec.events,
                spec.campaigns,
                spec.description,
                hook.status,
                hook.created_at,
                hook.cursor,
                hook.delivery_since,
                hook.disabled_reason,
            ));
        }
        out
    }
}

fn effect_created(table: &mut Webhooks, lsn: Lsn, record: &Record<'_>) -> Webhook {
    let Record::WebhookCreated {
        at,
        id,
        secret,
        url,
        ref events,
        ref campaigns,
        description,
    } = *record
    else {
        unreachable!("a creation record")
    };
    let hook = Webhook {
        spec: WebhookSpec {
            id: id.to_owned(),
            secret: secret.to_owned(),
            url: url.to_owned(),
            events: owned(events),
            campaigns: owned(campaigns),
            description: description.map(str::to_owned),
        },
        status: WebhookStatus::Active,
        created_at: at,
        cursor: lsn,
        delivery_since: at,
        disabled_reason: None,
    };
    table.by_id.insert(id.to_owned(), hook.clone());
    hook
}

fn effect_updated(table: &mut Webhooks, record: &Record<'_>) {
    let Record::WebhookUpdated {
        at,
        id,
        url,
        ref events,
        ref campaigns,
        status,
    } = *record
    else {
        unreachable!("an update record")
    };
    let hook = table.by_id.get_mut(id).expect("checked by the caller");
    if let Some(url) = url {
        hook.spec.url = url.to_owned();
        hook.delivery_since = at;
    }
    if let Some(events) = events {
        hook.spec.events = owned(events);
    }
    if let Some(campaigns) = campaigns {
        hook.spec.campaigns = owned(campaigns);
    }
    if let Some(status) = status {
        if status == WebhookStatus::Active {
            hook.delivery_since = at;
        }
        hook.status = status;
        if status != WebhookStatus::Disabled {
            hook.disabled_reason = None;
        }
    }
}

fn effect_cursor(table: &mut Webhooks, record: &Record<'_>) {
    let Record::WebhookCursor { at, id, cursor, .. } = *record else {
        unreachable!("a cursor record")
    };
    let hook = table.by_id.get_mut(id).expect("checked by the caller");
    hook.cursor = cursor;
    hook.delivery_since = at;
}

fn effect_disabled(table: &mut Webhooks, record: &Record<'_>) {
    let Record::WebhookDisabled { id, reason, .. } = *record else {
        unreachable!("a disable record")
    };
    let hook = table.by_id.get_mut(id).expect("checked by the caller");
    hook.status = WebhookStatus::Disabled;
    hook.disabled_reason = Some(reason.to_owned());
}
