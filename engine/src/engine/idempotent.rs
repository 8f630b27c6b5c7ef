//! Idempotency keys: a keyed transition's response is stored from its own
//! record, and a keyed refusal by an `IdempotentResponse` record.

use crate::Timestamp;
use crate::campaign::Campaign;
use crate::idempotency::{Begin, StoredResponse};
use crate::record::{Journal, Lsn, Record};

use super::{CodeStatus, Effect, Engine, IdemKey, Refusal, ReplayError};

impl<J: Journal> Engine<J> {
    /// Stores the rendered response of a keyed campaign-wide transition;
    /// a code's transitions store theirs while the code is held
    /// (`publish_logged`).
    pub(super) fn store_effect(&self, lsn: Lsn, record: &Record<'_>, campaign: &Campaign) {
        debug_assert!(record.code().is_none(), "code records render while held");
        self.store_rendered(lsn, record, campaign, None);
    }

    /// Renders a keyed record's response and stores it under its key.
    pub(super) fn store_rendered(
        &self,
        lsn: Lsn,
        record: &Record<'_>,
        campaign: &Campaign,
        code_status: Option<&CodeStatus>,
    ) {
        if let Some(tag) = record.idem() {
            let (status, body) = (self.render)(&Effect {
                lsn,
                record,
                campaign,
                status: code_status,
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

    /// Replays [`Engine::store_response`]: stores the response again.
    pub(super) fn replay_response(
        &self,
        lsn: Lsn,
        key: IdemKey<'_>,
        status: u16,
        body: &[u8],
        at: Timestamp,
    ) -> Result<(), ReplayError> {
        self.idempotency.complete(
            key.key,
            key.fingerprint,
            StoredResponse {
                status,
                body: body.into(),
                lsn,
            },
            at,
        );
        Ok(())
    }
}
