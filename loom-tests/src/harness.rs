//! Runs models, counts their interleavings, and sets up engines for them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use redeem_engine::codec::CodeKey;
pub use redeem_engine::mutations::Mutation;
use redeem_engine::{
    CampaignSpec, Config, Effect, Engine, Journal, MemoryJournal, PublicState, Record, Refusal,
    Renderer, Slot, Timestamp,
};

/// Preemptions per interleaving when `LOOM_MAX_PREEMPTIONS` is not set:
/// every model here fails within two under each of its mutations.
pub const PREEMPTIONS_DEFAULT: usize = 2;
/// Scheduling points one interleaving may take: setting up an engine and a
/// campaign alone passes loom's default of 1000.
pub const BRANCHES_MAX: usize = 100_000;

/// One model runs at a time: the mutation switch is process-wide, and a
/// test binary runs its tests on several threads.
static MODEL_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Clears the mutation switch however the model ended.
struct MutationGuard;

impl Drop for MutationGuard {
    fn drop(&mut self) {
        redeem_engine::mutations::set(None);
    }
}

/// Preemptions for models of three racing threads: at two, their
/// interleavings run to millions (over ten minutes on two cores); every pair
/// of their operations also has a two-thread model checked at the full bound.
pub const PREEMPTIONS_THREE_THREADS: usize = 1;

fn builder(preemptions_max: usize) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    let bound = builder.preemption_bound.unwrap_or(PREEMPTIONS_DEFAULT);
    builder.preemption_bound = Some(bound.min(preemptions_max));
    builder.max_branches = builder.max_branches.max(BRANCHES_MAX);
    builder
}

/// Runs `model` with `mutation` active; returns how many interleavings
/// loom explored, or the panic that ended the run.
fn run<F>(mutation: Option<Mutation>, preemptions_max: usize, model: F) -> Result<usize, String>
where
    F: Fn() + Sync + Send + 'static,
{
    let _serial = MODEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _reset = MutationGuard;
    redeem_engine::mutations::set(mutation);
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let builder = builder(preemptions_max);
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        builder.check(move || {
            // Relaxed: a plain tally, read after the model returns.
            counter.fetch_add(1, Ordering::Relaxed);
            model();
        })
    }));
    match outcome {
        // Relaxed: every increment happened on this thread.
        Ok(()) => Ok(count.load(Ordering::Relaxed)),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).into()))
            .unwrap_or_else(|| "a panic without a message".into())),
    }
}

/// Checks `model` in every interleaving within the bounds; panics on the
/// first failing one. Prints the number of interleavings explored.
pub fn check<F>(name: &str, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    check_bounded(name, usize::MAX, model);
}

/// [`check`] with at most `preemptions_max` preemptions per interleaving.
pub fn check_bounded<F>(name: &str, preemptions_max: usize, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    match run(None, preemptions_max, model) {
        Ok(count) => println!("loom: {name}: {count} interleavings, all correct"),
        Err(message) => panic!("loom: {name} failed: {message}"),
    }
}

/// Asserts that loom finds a failing interleaving of `model` with
/// `mutation` switched on: the model can tell the bug from the protocol.
pub fn check_caught<F>(name: &str, mutation: Mutation, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    // The expected panic would print a backtrace per mutation; the message
    // is printed below instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = run(Some(mutation), usize::MAX, model);
    std::panic::set_hook(hook);
    match result {
        Ok(count) => panic!(
            "loom: {name} with {mutation:?} passed all {count} interleavings: the model cannot see the bug"
        ),
        Err(message) => println!("loom: {name} with {mutation:?} caught: {message}"),
    }
}

/// The time every model's requests carry unless they say otherwise.
pub const T0: Timestamp = Timestamp(1_800_000_000_000);

/// Renders a keyed transition as the server would: the same bytes live and
/// in replay.
pub fn renderer() -> Renderer {
    Box::new(|effect: &Effect<'_>| {
        (
            201,
            render(
                effect.record.kind().event_name(),
                effect.lsn,
                effect.status.map(|s| s.code.as_str()),
            )
            .into_bytes(),
        )
    })
}

/// The body `renderer` gives a transition: what a live request answers.
pub fn render(event: &str, lsn: u64, code: Option<&str>) -> String {
    format!("{event}:{lsn}:{code:?}")
}

pub fn engine() -> Engine<MemoryJournal> {
    engine_with(MemoryJournal::default())
}

pub fn engine_with<J: Journal>(journal: J) -> Engine<J> {
    Engine::new(journal, Config::default(), renderer())
}

/// Creates campaign `id` with `generate` codes and `per_user_limit`;
/// returns its codes.
pub fn campaign<J: Journal>(
    engine: &Engine<J>,
    id: &str,
    generate: u64,
    per_user_limit: u32,
) -> Vec<String> {
    let spec = CampaignSpec {
        id: id.into(),
        prefix: "L".into(),
        generate,
        per_user_limit,
        ..CampaignSpec::default()
    };
    engine
        .create_campaign(spec, CodeKey::from_bytes([1; 16]), T0, None)
        .expect("campaign");
    codes(engine, id)
}

/// The display form of every generated code of campaign `id`.
pub fn codes<J: Journal>(engine: &Engine<J>, id: &str) -> Vec<String> {
    let campaign = engine.campaign(id).expect("campaign exists");
    (0..campaign.view(T0).stats.total)
        .map(|i| campaign.code_of(Slot::generated(i)))
        .collect()
}

/// A code's public state, read from its bitmap slot.
pub fn state<J: Journal>(engine: &Engine<J>, code: &str) -> &'static str {
    engine.status(code, None, T0).expect("code exists").state
}

/// The API error code of a refusal, or "ok".
pub fn outcome<T>(result: &Result<T, Refusal>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(refusal) => refusal_code(refusal),
    }
}

/// The API's error code for a refusal, as the models name outcomes. The
/// engine has no API strings; this mirrors the server's table.
pub fn refusal_code(refusal: &Refusal) -> &'static str {
    match refusal {
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
        Refusal::PoolExhausted => "pool_exhausted",
        Refusal::UnknownRecipient => "unknown_recipient",
        Refusal::PoolShort { .. } => "pool_exhausted",
        Refusal::NotRedeemed => "not_redeemed",
        Refusal::UnknownReservation => "unknown_reservation",
        Refusal::UnknownWebhook => "unknown_webhook",
        Refusal::WebhookExists => "webhook_exists",
        Refusal::TooManyWebhooks { .. } => "too_many_webhooks",
        Refusal::ReservationExpired => "reservation_expired",
        Refusal::IdempotencyTableFull(_) => "idempotency_table_full",
        Refusal::Unavailable(_) => "unavailable",
    }
}

/// The per-state counters of campaign `id` equal a count of its bitmap.
#[track_caller]
pub fn check_counters<J: Journal>(engine: &Engine<J>, id: &str) {
    let stats = engine.campaign(id).expect("campaign exists").view(T0).stats;
    let counted = stats.available + stats.assigned + stats.reserved + stats.redeemed + stats.voided;
    assert_eq!(counted, stats.total, "counters do not add up: {stats:?}");
    for public in PublicState::ALL {
        let in_bitmap = codes(engine, id)
            .iter()
            .filter(|code| state(engine, code) == public.as_str())
            .count() as u64;
        let counter = match public {
            PublicState::Available => stats.available,
            PublicState::Assigned => stats.assigned,
            PublicState::Reserved => stats.reserved,
            PublicState::Redeemed => stats.redeemed,
            PublicState::Voided => stats.voided,
        };
        assert_eq!(counter, in_bitmap, "{} counter vs bitmap", public.as_str());
    }
}

/// Replays `engine`'s journal into a fresh engine: every record must apply
/// and the two must hold the same state.
#[track_caller]
pub fn check_replay(engine: &Engine<MemoryJournal>) {
    let fresh = self::engine();
    for (lsn, kind, payload) in engine.journal().records() {
        let record = Record::decode(kind, &payload).expect("record decodes");
        if let Err(err) = fresh.apply_replayed(lsn, &record) {
            panic!("replay failed: {err}");
        }
    }
    assert_eq!(
        fresh.dump_state(),
        engine.dump_state(),
        "replayed state differs"
    );
}

/// The kinds of the journal's records about one code, in log order. Models
/// have one campaign, so the slot names the code.
pub fn code_records(engine: &Engine<MemoryJournal>, code: &str) -> Vec<&'static str> {
    let want = engine.resolve(code).expect("code exists").slot;
    engine
        .journal()
        .records()
        .into_iter()
        .filter_map(|(_, kind, payload)| {
            let record = Record::decode(kind, &payload).expect("record decodes");
            (record.code().map(|(_, slot)| slot) == Some(want)).then(|| record.kind().event_name())
        })
        .collect()
}

/// One request in a race on one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Redeem(&'static str),
    Reserve(&'static str),
    Void,
    Rollback,
    /// Assign the campaign's (one) code to this recipient.
    Assign(&'static str),
    /// Reclaim the recipient's unused codes, voiding them or not.
    Reclaim(&'static str, bool),
}

impl Op {
    /// Sends the request; returns "ok" or the refusal's API code.
    pub fn apply(self, engine: &Engine<MemoryJournal>, code: &str) -> &'static str {
        match self {
            Op::Redeem(user) => outcome(&engine.redeem(code, user, None, T0, None)),
            Op::Reserve(user) => outcome(&engine.reserve(code, user, None, T0, None)),
            Op::Void => outcome(&engine.void(code, T0, None)),
            Op::Rollback => outcome(&engine.rollback(code, T0, None)),
            Op::Assign(recipient) => outcome(&engine.assign("race", recipient, T0, None)),
            Op::Reclaim(recipient, void) => match engine.reclaim("race", recipient, void, T0) {
                Ok(r) if !r.released.is_empty() => "released",
                Ok(_) => "kept",
                Err(refusal) => refusal_code(&refusal),
            },
        }
    }

    fn user(self) -> Option<&'static str> {
        match self {
            Op::Redeem(user) | Op::Reserve(user) => Some(user),
            Op::Void | Op::Rollback | Op::Assign(_) | Op::Reclaim(..) => None,
        }
    }
}

/// How a race on one code ended: what each request was told (in the order
/// the ops were given), the code's state, each user's count, and the kinds
/// of the code's records in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub told: Vec<&'static str>,
    pub state: &'static str,
    pub claims: Vec<(&'static str, u32)>,
    pub records: Vec<&'static str>,
}

/// A one-code campaign "race", with `setup` applied to its code.
fn race_engine(setup: &[Op]) -> (Engine<MemoryJournal>, String) {
    let engine = self::engine();
    let code = campaign(&engine, "race", 1, 1).remove(0);
    for op in setup {
        assert_eq!(op.apply(&engine, &code), "ok", "setup {op:?}");
    }
    (engine, code)
}

fn ending(
    engine: &Engine<MemoryJournal>,
    code: &str,
    ops: &[Op],
    told: Vec<&'static str>,
) -> Ending {
    let campaign = engine.campaign("race").expect("campaign exists");
    let mut users: Vec<_> = ops.iter().filter_map(|op| op.user()).collect();
    users.sort();
    users.dedup();
    Ending {
        told,
        state: state(engine, code),
        claims: users
            .into_iter()
            .map(|u| (u, campaign.user_claimed(u)))
            .collect(),
        records: code_records(engine, code),
    }
}

/// Every ending some serial order of `ops` gives, each order run on a
/// fresh engine: the definition of a legal outcome of the race.
fn serial_endings(setup: &[Op], ops: &[Op]) -> Vec<Ending> {
    fn orders(n: usize, prefix: Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if prefix.len() == n {
            out.push(prefix);
            return;
        }
        for i in (0..n).filter(|i| !prefix.contains(i)) {
            orders(n, [&prefix[..], &[i]].concat(), out);
        }
    }
    let mut all = Vec::new();
    orders(ops.len(), Vec::new(), &mut all);
    all.into_iter()
        .map(|order| {
            let (engine, code) = race_engine(setup);
            let mut told = vec![""; ops.len()];
            for i in order {
                told[i] = ops[i].apply(&engine, &code);
            }
            ending(&engine, &code, ops, told)
        })
        .collect()
}

/// A model: after `setup`, every op of `ops` runs at once on one code (the
/// first on the model's main thread, each other on a thread of its own).
/// The ending must be one that a serial order gives, the counters must
/// agree with the bitmap, and the journal must replay to the same state.
pub fn race_one_code(
    setup: &'static [Op],
    ops: &'static [Op],
) -> impl Fn() + Sync + Send + 'static {
    move || {
        let (engine, code) = race_engine(setup);
        let engine = std::sync::Arc::new(engine);
        let others: Vec<_> = ops[1..]
            .iter()
            .map(|&op| {
                let (engine, code) = (engine.clone(), code.clone());
                loom::thread::spawn(move || op.apply(&engine, &code))
            })
            .collect();
        let mut told = vec![ops[0].apply(&engine, &code)];
        told.extend(others.into_iter().map(|t| t.join().expect("no panic")));
        let seen = ending(&engine, &code, ops, told);
        let legal = serial_endings(setup, ops);
        assert!(
            legal.contains(&seen),
            "no serial order of {ops:?} gives {seen:?}"
        );
        check_counters(&engine, "race");
        check_replay(&engine);
    }
}
