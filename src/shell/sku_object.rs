//! The SKU Durable Object: a thin shell over [`Stock`]. One instance per
//! SKU id serializes every operation on that SKU. Each call loads (once per
//! instance), runs the core through [`store::run`], persists, and answers;
//! the alarm returns expired holds with no traffic at all.
//!
//! Atomicity comes from the runtime: everything between reading the call and
//! answering runs synchronously (SQLite calls do not yield), so no other
//! event interleaves with a step, and its writes commit together before the
//! reply is released.

#[path = "sku_buckets.rs"]
mod buckets;
#[path = "sku_ledger.rs"]
mod ledger;

use super::channels;
use super::events;
use super::hooks;
use super::http::to_response;
use super::sql_store::{SqlStore, StoreError};
use super::stubs::{FeedClient, SkuCall, SkuClient, SkuOp};
use super::txn::Atomic;
use crate::api::wire::{
    hold_json, holds_json, ledger_json, replenishments_json, reply_to_http, sku_json, stats_json,
};
use crate::api::{ApiError, HttpReply, Refusal};
use crate::domain::audit::audit;
use crate::domain::event::Event;
use crate::domain::live::FeedName;
use crate::domain::stats::csv as stats_csv;
use crate::domain::stock::Stock;
use crate::domain::stock::{Hold, Reply};
use crate::domain::stock::{Request as StockRequest, StockError};
use crate::domain::store::{self, RunError, Store};
use crate::domain::types::SkuId;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use worker::{
    console_error, durable_object, js_sys, wasm_bindgen_futures, Date, Delay, DurableObject, Env,
    Request, Response, Result, ScheduledTime, State,
};

#[durable_object]
pub struct SkuObject {
    state: State,
    /// A step's writes, all or nothing.
    atomic: Atomic,
    env: Env,
    store: RefCell<Option<SqlStore>>,
    stock: RefCell<Option<Stock>>,
    /// The alarm time this instance last asked for, to skip redundant
    /// `setAlarm` calls on the reservation path.
    armed: Cell<Option<u64>>,
    /// Alarm runs that failed in a row, for the backoff.
    alarm_failures: Cell<u32>,
    /// Hand-offs of merchant notices that failed in a row, for theirs.
    notice_failures: Cell<u32>,
    /// The version whose channel numbers the sync queues have (None: not
    /// read yet), and hand-offs to them that failed in a row.
    synced: Cell<Option<u64>>,
    sync_failures: Cell<u32>,
    /// Whether a ledger signing key is set (checkpoints are made).
    signs: bool,
    /// The newest checkpoint's (seq, at_ms), or the SKU's creation for
    /// none, once read; None: not read yet.
    checkpointed: Cell<Option<(u64, u64)>>,
    pusher: Rc<Pusher>,
    /// As the parent of a split SKU: what the buckets last told.
    split: RefCell<buckets::Buckets>,
    /// Group commit: single requests arriving together, run as one step.
    gather: Rc<RefCell<Gather>>,
    group_commit: bool,
}

/// Requests waiting for the next group step, and where each answer goes.
#[derive(Default)]
struct Gather {
    requests: Vec<StockRequest>,
    slots: Vec<Slot>,
    /// When the waiting leader gathered its first request: new requests
    /// join it.
    scheduled_at: Option<u64>,
}

/// Where a gathered request's answer is left: the core's reply, or the
/// failure of the step it was in.
type Slot = Rc<RefCell<Option<std::result::Result<Reply, HttpReply>>>>;

/// The most requests one group step takes (a bound on its work and on the
/// wait of each request in it).
const GROUP_MAX: usize = 64;
/// A group whose leader has not run it this long after it began is run by
/// whoever waits in it.
const STALE_GROUP_MS: u64 = 1_000;
/// How soon after a change its channel numbers are handed to the sync
/// queues (changes within it go as one).
const SYNC_AFTER_MS: u64 = 200;
/// Notices handed to the webhook queues per alarm run.
const NOTICES_PER_HAND_OFF: usize = 100;

/// Sends the SKU's latest state to its feeds at a bounded rate: a burst of
/// a thousand changes a second becomes at most `1000 / interval_ms` pushes,
/// and the last change is always sent (a change during a push schedules the
/// next one).
struct Pusher {
    feeds: RefCell<Option<Vec<FeedName>>>,
    latest: RefCell<Option<Event>>,
    /// As a bucket: the parent to tell (SKU, this bucket's number), and
    /// the latest numbers not yet told.
    parent: RefCell<Option<(SkuId, u16)>>,
    bucket_state: RefCell<Option<crate::domain::stock::SkuRecord>>,
    /// As the parent of a split SKU: its own counts changed, so the sum
    /// must be pushed.
    split_changed: Cell<bool>,
    /// Alerts not yet told to the feeds.
    alerts: RefCell<Vec<Event>>,
    /// Whether each stock change is logged too (`LOG_STOCK_EVENTS=1`).
    log_changes: bool,
    scheduled: Cell<bool>,
    last_push_ms: Cell<u64>,
    interval_ms: u64,
}

impl Pusher {
    /// An alert goes out now, to the log and to every feed, besides any
    /// state waiting to be pushed.
    fn alert(&self, event: Event) {
        events::emit(&event);
        // Told to the feeds by the next flush, after the latest state.
        self.alerts.borrow_mut().push(event);
    }

    fn note(&self, event: Event) {
        // A log line per change costs the hot path a JSON pass and a
        // console call; the feeds and the ledger carry every change anyway.
        if self.log_changes {
            events::emit(&event);
        }
        *self.latest.borrow_mut() = Some(event);
    }

    fn kick(self: &Rc<Self>, env: &Env) {
        let no_feeds = self.feeds.borrow().as_ref().is_none_or(Vec::is_empty)
            && self.parent.borrow().is_none();
        if no_feeds {
            self.latest.borrow_mut().take();
            self.alerts.borrow_mut().clear();
            return;
        }
        let nothing = self.latest.borrow().is_none()
            && self.alerts.borrow().is_empty()
            && self.bucket_state.borrow().is_none();
        if self.scheduled.get() || nothing {
            return;
        }
        self.scheduled.set(true);
        let due = self.last_push_ms.get() + self.interval_ms;
        let delay = due.saturating_sub(now_ms());
        let (pusher, env) = (self.clone(), env.clone());
        wasm_bindgen_futures::spawn_local(async move {
            if delay > 0 {
                Delay::from(Duration::from_millis(delay)).await;
            }
            pusher.flush(&env).await;
        });
    }

    async fn flush(self: Rc<Self>, env: &Env) {
        self.scheduled.set(false);
        let parent = self.parent.borrow().clone();
        let state = self.bucket_state.borrow_mut().take();
        if let (Some((sku, bucket)), Some(record)) = (parent, state) {
            let call = buckets::bucket_state_call(&sku, bucket, record);
            if let Err(e) = SkuClient::send(env, &call).await {
                console_error!("sku {sku}: bucket {bucket} could not tell its parent: {e}");
            }
        }
        let latest = self.latest.borrow_mut().take();
        let events: Vec<Event> = latest
            .into_iter()
            .chain(self.alerts.borrow_mut().drain(..))
            .collect();
        if events.is_empty() {
            return;
        }
        self.last_push_ms.set(now_ms());
        let feeds = self.feeds.borrow().clone().unwrap_or_default();
        for event in &events {
            for feed in &feeds {
                FeedClient::publish(env, feed, event).await;
            }
        }
        // Changes that came in while pushing go out on the next turn.
        self.kick(env);
    }
}

impl DurableObject for SkuObject {
    fn new(state: State, env: Env) -> Self {
        let per_second = env
            .var("LIVE_MAX_PER_SECOND")
            .ok()
            .and_then(|v| v.to_string().parse::<u64>().ok())
            .filter(|n| (1..=1000).contains(n))
            .unwrap_or(10);
        let log_changes = env
            .var("LOG_STOCK_EVENTS")
            .is_ok_and(|v| v.to_string() == "1");
        let group_commit = env
            .var("SKU_GROUP_COMMIT")
            .map_or(true, |v| v.to_string() != "0");
        let signs = ledger::signing_key(&env).is_some();
        let (state, atomic) = Atomic::from_state(state);
        SkuObject {
            state,
            atomic,
            env,
            store: RefCell::new(None),
            stock: RefCell::new(None),
            armed: Cell::new(None),
            alarm_failures: Cell::new(0),
            notice_failures: Cell::new(0),
            synced: Cell::new(None),
            sync_failures: Cell::new(0),
            signs,
            checkpointed: Cell::new(None),
            pusher: Rc::new(Pusher {
                feeds: RefCell::new(None),
                latest: RefCell::new(None),
                parent: RefCell::new(None),
                bucket_state: RefCell::new(None),
                split_changed: Cell::new(false),
                alerts: RefCell::new(Vec::new()),
                log_changes,
                scheduled: Cell::new(false),
                last_push_ms: Cell::new(0),
                interval_ms: 1000 / per_second,
            }),
            split: RefCell::new(buckets::Buckets::default()),
            gather: Rc::new(RefCell::new(Gather::default())),
            group_commit,
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let response = match req.json::<SkuCall>().await {
            Ok(call) => {
                if let Some(bucket) = call.bucket {
                    *self.pusher.parent.borrow_mut() = Some((call.sku.clone(), bucket));
                }
                let sku = call.sku.clone();
                let response = self.serve(call).await;
                self.push_split_total(&sku).await;
                response
            }
            Err(e) => {
                console_error!("sku object: unreadable call: {e}");
                to_response(&ApiError::Internal.to_reply())
            }
        };
        self.pusher.kick(&self.env);
        self.sync_alarm().await;
        response
    }

    async fn alarm(&self) -> Result<Response> {
        self.armed.set(None);
        let pusher = self.pusher.clone();
        let result = self.with_stock(None, |store, stock| {
            run(store, stock, &[], &pusher).map(|_| ())
        });
        self.pusher.kick(&self.env);
        if let Err(Failure::Store(e)) = result {
            // Expiring is idempotent: the runtime retries the alarm on the
            // error, and the alarm is re-armed at a backoff first, so the
            // holds still go back if those retries run out.
            let failures = self.alarm_failures.get().saturating_add(1);
            self.alarm_failures.set(failures);
            let backoff = 1_000u64.saturating_mul(1 << failures.min(8)).min(300_000);
            self.rearm(now_ms() + backoff).await;
            return Err(worker::Error::RustError(format!(
                "sku object: alarm failed ({failures} in a row): {}",
                e.0
            )));
        }
        self.alarm_failures.set(0);
        // Merchant notices, to the endpoints' delivery queues.
        self.hand_off_notices().await;
        // What each channel may sell now, to its sync queue.
        self.hand_off_sync().await;
        // A signed checkpoint of the ledger's head, if one is due.
        if self.signs {
            let made = self.with_stock(None, |store, stock| {
                let Some(record) = stock.record() else {
                    return Ok(None);
                };
                let tail = stock.tail();
                let head = tail.next_seq.saturating_sub(1);
                let made = ledger::checkpoint_head(
                    store,
                    record,
                    tail,
                    &self.env,
                    ledger::CHECKPOINT_EVERY_MS,
                )?;
                Ok(Some((head, made.map_or(0, |cp| cp.seq))))
            });
            match made {
                // Declined (a chain that does not verify, or one written
                // before the chain existed): tried again a minute after,
                // and only if entries came since, never in a loop.
                Ok(Some((head, signed))) if signed < head => {
                    self.checkpointed.set(Some((head, now_ms())));
                }
                Err(Failure::Store(e)) => {
                    console_error!("sku object: checkpoint: {}", e.0);
                    self.checkpointed.set(Some((0, now_ms())));
                }
                _ => self.checkpointed.set(None),
            }
        }
        // Transfers a crash left in the outbox.
        self.redeliver().await;
        let sku = self
            .stock
            .borrow()
            .as_ref()
            .and_then(|s| s.record())
            .map(|r| r.sku.clone());
        if let Some(sku) = sku {
            self.push_split_total(&sku).await;
        }
        self.pusher.kick(&self.env);
        self.sync_alarm().await;
        Response::ok("")
    }
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Why a call on the stock failed.
enum Failure {
    /// Storage failed; nothing of the step was written.
    Store(StoreError),
    /// The step would have broken the counts; nothing was written, and the
    /// operator was alerted.
    Quarantined,
    /// Nothing is stored here and no SKU was named (an alarm left on an
    /// empty object): nothing to do.
    Empty,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    fn reply(self, sku: &SkuId) -> HttpReply {
        match self {
            Failure::Store(e) => {
                console_error!("sku object {sku}: {}", e.0);
                ApiError::Internal.to_reply()
            }
            Failure::Quarantined => ApiError::Stock(StockError::Quarantined).to_reply(),
            Failure::Empty => ApiError::Stock(StockError::SkuNotFound).to_reply(),
        }
    }
}

/// An answer as JSON (which cannot fail for these types; a failure is
/// answered as a storage failure would be).
fn json_value(value: &impl serde::Serialize) -> std::result::Result<serde_json::Value, Failure> {
    serde_json::to_value(value).map_err(|e| Failure::Store(StoreError(e.to_string())))
}

/// Runs a step now and hands a changed SKU's state to the pusher.
fn run(
    store: &mut SqlStore,
    stock: &mut Stock,
    requests: &[StockRequest],
    pusher: &Pusher,
) -> std::result::Result<Vec<Reply>, Failure> {
    let version = stock.record().map(|r| r.version);
    let replies = match store::run(store, stock, now_ms(), requests) {
        Ok(replies) => replies,
        Err(RunError::Store(e)) => return Err(Failure::Store(e)),
        Err(RunError::Broken(why)) => {
            if let Some(record) = stock.record() {
                pusher.alert(Event::quarantined(record, &why));
            }
            return Err(Failure::Quarantined);
        }
    };
    if let Some(record) = stock.record().filter(|r| Some(r.version) != version) {
        if pusher.parent.borrow().is_some() {
            // A bucket: its parent adds it up and pushes the SKU's numbers.
            *pusher.bucket_state.borrow_mut() = Some(record.clone());
        } else if record.buckets > 0 {
            pusher.split_changed.set(true);
        } else {
            pusher.note(Event::stock(record));
        }
    }
    Ok(replies)
}

impl SkuObject {
    /// Answers a call this object serves itself. A single request goes
    /// through group commit: requests that arrive while one is waiting to
    /// run join it, and all run as one step, in one transaction, each with
    /// its own answer (the core takes a sequence; see `Stock::step`).
    /// Merged batches from the edge join too: one step for many isolates.
    async fn answer(&self, call: SkuCall) -> Result<Response> {
        match call.op {
            SkuOp::Step { request } if self.group_commit => {
                let mut replies = self.step_together(&call.sku, vec![request]).await;
                to_response(&match replies.pop() {
                    Some(Ok(reply)) => reply_to_http(&reply),
                    Some(Err(failure)) => failure,
                    None => ApiError::Internal.to_reply(),
                })
            }
            SkuOp::Batch { requests } if self.group_commit => {
                let replies = self.step_together(&call.sku, requests).await;
                let replies: std::result::Result<Vec<Reply>, HttpReply> =
                    replies.into_iter().collect();
                to_response(&match replies {
                    Ok(replies) => match json_value(&replies) {
                        Ok(body) => HttpReply::json(200, body),
                        Err(failure) => failure.reply(&call.sku),
                    },
                    Err(failure) => failure,
                })
            }
            _ => to_response(&self.handle(call)),
        }
    }

    async fn step_together(
        &self,
        sku: &SkuId,
        requests: Vec<StockRequest>,
    ) -> Vec<std::result::Result<Reply, HttpReply>> {
        let slots: Vec<Slot> = requests
            .iter()
            .map(|_| Rc::new(RefCell::new(None)))
            .collect();
        let leader = {
            let mut gather = self.gather.borrow_mut();
            gather.requests.extend(requests);
            gather.slots.extend(slots.iter().cloned());
            let leader = gather.scheduled_at.is_none();
            if leader {
                gather.scheduled_at = Some(now_ms());
            }
            leader
        };
        if leader {
            // One turn of the event loop: requests arriving now join.
            Delay::from(Duration::ZERO).await;
            self.run_gathered(sku);
        }
        loop {
            if slots.iter().all(|slot| slot.borrow().is_some()) {
                return slots
                    .iter()
                    .filter_map(|slot| slot.borrow_mut().take())
                    .collect();
            }
            Delay::from(Duration::from_millis(1)).await;
            // A leader that never came back (its request cancelled): the
            // waiting run themselves.
            let stale = self
                .gather
                .borrow()
                .scheduled_at
                .is_some_and(|at| now_ms().saturating_sub(at) > STALE_GROUP_MS);
            if stale {
                self.run_gathered(sku);
            }
        }
    }

    /// Runs what was gathered (at most [`GROUP_MAX`] at a time) as steps.
    fn run_gathered(&self, sku: &SkuId) {
        loop {
            let (requests, slots) = {
                let mut gather = self.gather.borrow_mut();
                if gather.requests.is_empty() {
                    gather.scheduled_at = None;
                    return;
                }
                let n = gather.requests.len().min(GROUP_MAX);
                let requests: Vec<StockRequest> = gather.requests.drain(..n).collect();
                let slots: Vec<Slot> = gather.slots.drain(..n).collect();
                (requests, slots)
            };
            let result = self.with_stock(Some(sku), |store, stock| {
                run(store, stock, &requests, &self.pusher)
            });
            match result {
                Ok(replies) => {
                    for (slot, reply) in slots.iter().zip(replies) {
                        *slot.borrow_mut() = Some(Ok(reply));
                    }
                }
                Err(failure) => {
                    let reply = failure.reply(sku);
                    for slot in &slots {
                        *slot.borrow_mut() = Some(Err(reply.clone()));
                    }
                }
            }
        }
    }

    fn handle(&self, call: SkuCall) -> HttpReply {
        let sku = call.sku.clone();
        if let SkuOp::Replay { request, refusal } = &call.op {
            return self.replay(&sku, request, *refusal);
        }
        let result = self.with_stock(Some(&sku), |store, stock| {
            // Every call runs a step, so holds past their time are returned
            // before anything is read or decided.
            // The call's own requests, borrowed: nothing is copied.
            let requests: &[StockRequest] = match &call.op {
                SkuOp::Step { request } | SkuOp::Apply { request } => std::slice::from_ref(request),
                SkuOp::Batch { requests } => requests,
                _ => &[],
            };
            let replies = run(store, stock, requests, &self.pusher)?;
            Ok(match call.op {
                SkuOp::Step { .. } => reply_to_http(&replies[0]),
                SkuOp::Apply { .. } => HttpReply::json(200, json_value(&replies[0])?),
                SkuOp::Batch { .. } => HttpReply::json(200, json_value(&replies)?),
                SkuOp::Replay { refusal, .. } => ApiError::from(refusal).to_reply(),
                SkuOp::Subscribe { feed, even_unknown } => {
                    if stock.record().is_none() && !even_unknown {
                        return Ok(ApiError::Stock(StockError::SkuNotFound).to_reply());
                    }
                    store.add_feed(&feed)?;
                    let mut feeds = self.pusher.feeds.borrow_mut();
                    let feeds = feeds.get_or_insert_with(Vec::new);
                    if !feeds.contains(&feed) {
                        feeds.push(feed);
                    }
                    let state = stock.record().map(Event::stock);
                    HttpReply::json(200, serde_json::to_value(state).unwrap_or_default())
                }
                SkuOp::Unsubscribe { feed } => {
                    store.remove_feed(&feed)?;
                    if let Some(feeds) = self.pusher.feeds.borrow_mut().as_mut() {
                        feeds.retain(|f| *f != feed);
                    }
                    HttpReply::json(200, serde_json::json!({ "ok": true }))
                }
                SkuOp::Holds => match stock.record() {
                    Some(record) => {
                        let holds: Vec<&Hold> = stock.live_holds().collect();
                        HttpReply::json(200, holds_json(record, &holds))
                    }
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
                SkuOp::Get => match stock.record() {
                    Some(record) => HttpReply::json(200, sku_json(record)),
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
                SkuOp::GetHold { hold, caller } => {
                    let found = match stock.hold(&hold) {
                        Some(h) => Some(h.clone()),
                        None => store.load_hold(&hold)?,
                    }
                    .filter(|h| h.belongs_to(&caller));
                    match (found, stock.record()) {
                        (Some(h), Some(record)) => HttpReply::json(200, hold_json(&h, record)),
                        (_, None) => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                        (None, _) => ApiError::Stock(StockError::HoldNotFound).to_reply(),
                    }
                }
                // Served before a step (sku_buckets.rs), never here.
                SkuOp::Split { .. }
                | SkuOp::Lend { .. }
                | SkuOp::Yield
                | SkuOp::BucketState { .. } => ApiError::Internal.to_reply(),
                SkuOp::Audit => match stock.record() {
                    Some(record) => {
                        let failed = RefCell::new(None);
                        let report = audit(record, store.walk_ledger(0, &failed), store.holds()?);
                        if let Some(e) = failed.into_inner() {
                            return Err(e.into());
                        }
                        let mut body = json_value(&report)?;
                        body["sku"] = serde_json::json!(record.sku);
                        body["ok"] = serde_json::json!(report.drift.is_empty());
                        body["quarantined"] = serde_json::json!(stock.quarantine());
                        HttpReply::json(200, body)
                    }
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
                SkuOp::Stats { query } => match stock.record() {
                    Some(record) => {
                        let to = query.to.unwrap_or(now_ms() + 1);
                        let from = query.from.unwrap_or(to.saturating_sub(query.res.kept_ms()));
                        let buckets = store.stats(query.res, from, to)?;
                        if query.csv {
                            HttpReply::csv(stats_csv(&buckets))
                        } else {
                            HttpReply::json(200, stats_json(record, query.res, &buckets))
                        }
                    }
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
                SkuOp::Replenishments => match stock.record() {
                    Some(record) => HttpReply::json(200, replenishments_json(record)),
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
                SkuOp::VerifyLedger => match stock.record() {
                    Some(record) => ledger::verify(store, record, &self.env)?,
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
                SkuOp::ExportLedger { after, limit } => match stock.record() {
                    Some(record) => {
                        let tail = stock.tail();
                        let reply = ledger::export(store, record, tail, after, limit, &self.env)?;
                        self.checkpointed.set(None);
                        reply
                    }
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
                SkuOp::Ledger {
                    after,
                    limit,
                    filter,
                } => match stock.record() {
                    Some(_) => {
                        let entries = match &filter {
                            None => store.ledger(after, limit)?,
                            Some(filter) => store.ledger_of(after, limit, filter)?,
                        };
                        HttpReply::json(200, ledger_json(&entries, limit))
                    }
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
            })
        });
        result.unwrap_or_else(|e| e.reply(&sku))
    }

    /// The stored answer to `request`'s key, or the edge's refusal:
    /// nothing runs, nothing is written.
    fn replay(&self, sku: &SkuId, request: &StockRequest, refusal: Refusal) -> HttpReply {
        let found = self.with_stock(Some(sku), |store, stock| {
            let Some(key) = request.replay_key() else {
                return Ok(None);
            };
            match stock.replay(&key).cloned() {
                Some(replay) => Ok(Some(replay)),
                None => Ok(store.load_replay(&key)?),
            }
        });
        match found {
            Ok(Some(replay)) if replay.fingerprint == request.fingerprint => {
                reply_to_http(&replay.reply)
            }
            Ok(Some(_)) => ApiError::IdempotencyKeyReused.to_reply(),
            Ok(None) => ApiError::from(refusal).to_reply(),
            Err(e) => e.reply(sku),
        }
    }

    /// Runs `f` over the store and the loaded stock, loading both on first
    /// use. A storage error drops the in-memory stock, so the next call
    /// reloads what was really committed.
    fn with_stock<T>(
        &self,
        sku: Option<&SkuId>,
        f: impl FnOnce(&mut SqlStore, &mut Stock) -> std::result::Result<T, Failure>,
    ) -> std::result::Result<T, Failure> {
        let mut store_slot = self.store.borrow_mut();
        if store_slot.is_none() {
            *store_slot = Some(SqlStore::open(
                self.state.storage().sql(),
                self.atomic.clone(),
            )?);
        }
        let store = store_slot.as_mut().expect("opened above");
        if self.pusher.feeds.borrow().is_none() {
            *self.pusher.feeds.borrow_mut() = Some(store.feeds()?);
        }
        let mut stock_slot = self.stock.borrow_mut();
        if stock_slot.is_none() {
            *stock_slot = store.load(sku)?;
            // Counts that did not add up in storage: the SKU refuses
            // changes from now on, and says so once per load.
            if let Some(stock) = stock_slot.as_ref() {
                if let (Some(record), [_, ..]) = (stock.record(), stock.quarantine()) {
                    self.pusher
                        .alert(Event::quarantined(record, stock.quarantine()));
                }
            }
        }
        let Some(stock) = stock_slot.as_mut() else {
            return Err(Failure::Empty);
        };
        let result = f(store, stock);
        if result.is_err() {
            *stock_slot = None;
        }
        result
    }

    /// Points the alarm at the earliest live hold's expiry. Called after each
    /// step; the JS call is issued before this yields, so calls from
    /// interleaved requests reach storage in step order.
    /// As the parent of a split SKU whose numbers changed: the sum goes to
    /// the feeds (asking the buckets first if it does not know them all,
    /// as after a restart).
    async fn push_split_total(&self, sku: &SkuId) {
        if !self.pusher.split_changed.replace(false) {
            return;
        }
        let split = self
            .stock
            .borrow()
            .as_ref()
            .and_then(|s| s.record())
            .map_or(0, |r| r.buckets);
        let known = self.split.borrow().states.len();
        let total = if known < usize::from(split) {
            self.total(sku, split).await
        } else {
            self.sum_known(sku)
        };
        // (Asking the buckets told this object their numbers again.)
        self.pusher.split_changed.set(false);
        if let Some(total) = total {
            self.pusher.note(Event::stock(&total));
        }
    }

    /// Hands the oldest notices in the outbox to the webhook queues, and
    /// drops them once every endpoint that wants them has them.
    async fn hand_off_notices(&self) {
        let batch = {
            let mut store = self.store.borrow_mut();
            let Some(store) = store.as_mut() else { return };
            match store.notices_waiting() {
                Ok(true) => store.notices(NOTICES_PER_HAND_OFF),
                Ok(false) => return,
                Err(e) => Err(e),
            }
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                console_error!("sku object: reading the notices failed: {}", e.0);
                self.notice_failures.set(self.notice_failures.get() + 1);
                return;
            }
        };
        let Some(last) = batch.last().map(|(seq, _)| *seq) else {
            return;
        };
        let notices: Vec<_> = batch.into_iter().map(|(_, n)| n).collect();
        let handed = match hooks::hand_off(&self.env, &notices).await {
            Ok(()) => self
                .store
                .borrow_mut()
                .as_mut()
                .map_or(Ok(()), |store| store.drop_notices(last))
                .map_err(|e| e.0),
            Err(e) => Err(e.to_string()),
        };
        match handed {
            Ok(()) => self.notice_failures.set(0),
            Err(e) => {
                console_error!("sku object: notices not handed off (retrying): {e}");
                self.notice_failures
                    .set(self.notice_failures.get().saturating_add(1));
            }
        }
    }

    /// The record, if its channel numbers are owed to the sync queues: a
    /// whole SKU (a split SKU's numbers are its sums', not synced) changed
    /// since the version they have.
    fn sync_owed(&self) -> Option<crate::domain::stock::SkuRecord> {
        let record = self.stock.borrow().as_ref()?.record()?.clone();
        if record.buckets > 0 || record.bucket {
            return None;
        }
        let synced = match self.synced.get() {
            Some(v) => v,
            None => {
                let v = self.store.borrow().as_ref()?.synced_version().ok()?;
                self.synced.set(Some(v));
                v
            }
        };
        (record.version > synced).then_some(record)
    }

    /// Hands the SKU's per-channel numbers to the channels' sync queues
    /// (each keeps the latest, so this is idempotent), then notes the
    /// version as synced.
    async fn hand_off_sync(&self) {
        let Some(record) = self.sync_owed() else {
            return;
        };
        match channels::hand_off(&self.env, &record).await {
            Ok(()) => {
                let saved = self
                    .store
                    .borrow_mut()
                    .as_mut()
                    .map(|s| s.set_synced_version(record.version));
                match saved {
                    Some(Ok(())) => {
                        self.synced.set(Some(record.version));
                        self.sync_failures.set(0);
                    }
                    Some(Err(e)) => console_error!("sku object: sync mark: {}", e.0),
                    None => {}
                }
            }
            Err(e) => {
                console_error!("sku object: channel numbers not handed off (retrying): {e}");
                self.sync_failures
                    .set(self.sync_failures.get().saturating_add(1));
            }
        }
    }

    /// When the ledger's head is due a signed checkpoint: a minute after
    /// the last one (or the SKU's creation), if entries came since.
    fn checkpoint_due(&self, now: u64, armed: Option<u64>) -> Option<u64> {
        if !self.signs {
            return None;
        }
        let stock = self.stock.borrow();
        let stock = stock.as_ref()?;
        let head = stock.tail().next_seq.saturating_sub(1);
        let (seq, at) = match self.checkpointed.get() {
            Some(known) => known,
            None => {
                let store = self.store.borrow();
                let last = store.as_ref()?.last_checkpoint().ok()?;
                let known =
                    last.map_or((0, stock.record()?.created_at_ms), |cp| (cp.seq, cp.at_ms));
                self.checkpointed.set(Some(known));
                known
            }
        };
        if head <= seq {
            return None;
        }
        let due = at + ledger::CHECKPOINT_EVERY_MS;
        Some(match armed {
            _ if due > now => due,
            Some(a) if a > now => a,
            _ => now,
        })
    }

    async fn sync_alarm(&self) {
        let now = now_ms();
        let armed = self.armed.get();
        // Notices in the outbox go now, or at a backoff after failures.
        let waiting = self
            .store
            .borrow_mut()
            .as_mut()
            .is_some_and(|s| s.notices_waiting().unwrap_or(true));
        // (An alarm already coming is kept: re-arming on every request
        // would push a retry out for as long as traffic lasts.)
        let notices = waiting.then(|| match (self.notice_failures.get(), armed) {
            (0, Some(a)) if a > now && a <= now + 100 => a,
            (0, _) => now,
            (_, Some(a)) if a > now => a,
            (n, _) => now + 1_000u64.saturating_mul(1 << n.min(8)).min(300_000),
        });
        let next = self.stock.borrow().as_ref().and_then(|stock| {
            // A transfer waiting in the outbox is delivered by the alarm;
            // one that keeps failing is retried every 5 s, not in a loop
            // (and an alarm already coming is kept, not pushed back).
            let outbox = stock
                .record()
                .and_then(|r| r.outbox.iter().map(|t| t.at_ms).min())
                .map(|at| at + buckets::REDELIVER_AFTER_MS + 1_000)
                .map(|due| match armed {
                    _ if due > now => due,
                    Some(armed) if armed > now => armed,
                    _ => now + 5_000,
                });
            [stock.next_expiry_ms(), outbox].into_iter().flatten().min()
        });
        let checkpoint = self.checkpoint_due(now, armed);
        // Channel numbers go a moment after a change (a burst is one
        // hand-off of the last numbers), or at a backoff after failures;
        // an alarm already coming within that moment is kept, so steady
        // traffic cannot push the hand-off out.
        let mut owed = self.sync_owed();
        if let Some(record) = &owed {
            // Listed on no syncing channel: nothing is owed (counted in
            // memory only; a restart looks again). A SKU with no channel
            // rules never asks the registry.
            let syncing = !record.channels.is_empty()
                && channels::configs(&self.env)
                    .await
                    .map_or(true, |c| c.iter().any(|c| channels::listed(c, record)));
            if !syncing {
                self.synced.set(Some(record.version));
                owed = None;
            }
        }
        let sync = owed.map(|_| match (self.sync_failures.get(), armed) {
            (0, Some(a)) if a > now && a <= now + SYNC_AFTER_MS => a,
            (0, _) => now + SYNC_AFTER_MS,
            (_, Some(a)) if a > now => a,
            (n, _) => now + 1_000u64.saturating_mul(1 << n.min(8)).min(300_000),
        });
        let next = [next, notices, checkpoint, sync]
            .into_iter()
            .flatten()
            .min();
        if next == self.armed.get() {
            return;
        }
        match next {
            Some(at) => self.rearm(at).await,
            None => {
                self.armed.set(None);
                if let Err(e) = self.state.storage().delete_alarm().await {
                    console_error!("sku object: deleting the alarm failed: {e}");
                }
            }
        }
    }

    async fn rearm(&self, at: u64) {
        self.armed.set(Some(at));
        let date = js_sys::Date::new(&(at as f64).into());
        if let Err(e) = self
            .state
            .storage()
            .set_alarm(ScheduledTime::new(date))
            .await
        {
            self.armed.set(None);
            console_error!("sku object: setting the alarm failed: {e}");
        }
    }
}
