//! The order Durable Object: one per order id, a thin shell over [`Order`].
//! It persists the order with its pending transition before calling any SKU,
//! runs the plan against the SKU objects, settles, persists again, and keeps
//! an alarm: at the payment deadline to expire an unpaid order, or a few
//! seconds out while a transition is under way, so a crash mid-way is
//! finished by the alarm (every SKU call is idempotent, see domain/order.rs).

use super::automation_object;
use super::events;
use super::hooks;
use super::http::to_response;
use super::index_object;
use super::risk_object::{self, RiskClient, SubjectName};
use super::stubs::{
    BuyerClient, FeedCall, FeedClient, OrderCall, OrderOp, Signals, SkuCall, SkuClient, SkuOp,
};
use super::txn::{Atomic, Statement, Tables};
use crate::api::wire::{failed_lines_json, order_json, order_summary_json};
use crate::api::{ApiError, HttpReply};
use crate::channels::{MessageResult, PlatformStatus};
use crate::domain::automation::{self, OtherOrder, Rule};
use crate::domain::event::{AlertKind, Event};
use crate::domain::intake::{self, Next};
use crate::domain::live::FeedName;
use crate::domain::notice::Notice;
use crate::domain::order::{
    line_hold_id, Begin, Intent, Interruption, KeyedAsk, Order, OrderStatus, SkuStep,
};
use crate::domain::order_index::IndexRow;
use crate::domain::risk::{self, Decision, Facts, History, Judged, Seen, Subject, Verdict};
use crate::domain::room_stats::OrderFact;
use crate::domain::stock::{Actor, Reply, Request as StockRequest};
use crate::domain::types::{BuyerId, Channel, HoldSeconds, OrderId, Quantity, ReplayKey, SkuId};
use futures_util::future::join_all;
use futures_util::lock::Mutex;
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;
use worker::{
    console_error, durable_object, js_sys, Date, DurableObject, Env, Request, Response, Result,
    ScheduledTime, SqlStorageValue, State,
};

/// How soon the alarm looks again at a transition left under way.
const RESUME_AFTER_MS: u64 = 5_000;

/// How soon the alarm announces a change whose announcement is still owed.
const ANNOUNCE_WITHIN_MS: u64 = 60_000;

/// How long the automations wait before trying again when a switch or the
/// buyer's index could not be read.
const AUTOMATE_RETRY_MS: u64 = 5_000;

/// How many of the buyer's newest open orders `flag_repeat_buyer` looks at.
const OPEN_ORDERS_LOOKED_AT: usize = 50;

#[durable_object]
pub struct OrderObject {
    state: State,
    /// Each save (the order, with the answer it settles) is one transaction.
    atomic: Atomic,
    env: Env,
    /// None until loaded from storage (and after a failed transition, so the
    /// next call reloads what was really saved).
    order: Rc<RefCell<Option<Option<Order>>>>,
    /// One transition at a time: calls to the SKUs yield, and a second
    /// request must not interleave with the first.
    lock: Mutex<()>,
    /// Its tables, made by its first write.
    tables: Tables,
    /// How far the timeline's events have been handed to an after-reply
    /// task in this instance: a later change announces only its own
    /// entries, not again those a task still running covers (viewers saw
    /// "paid" twice). Announcing cannot fail, so this only runs ahead of
    /// the stored `announce_from` while a task is under way; after an
    /// eviction the alarm announces what the order still owes.
    announced_to: Rc<std::cell::Cell<usize>>,
    /// Not before then does the alarm run the automations again (a switch
    /// or the buyer's index could not be read).
    automate_after: std::cell::Cell<u64>,
    /// After-reply tasks under way in this instance: while one runs, the
    /// alarm leaves what is owed to it (it clears it, or the alarm armed
    /// within a minute does it).
    in_flight: Rc<std::cell::Cell<u32>>,
}

/// An order remembers at most this many keyed answers.
const REPLAYS_MAX: i64 = 1_000;

/// Why a transition stopped before its end.
struct Interrupted(String);

impl From<worker::Error> for Interrupted {
    fn from(e: worker::Error) -> Self {
        Interrupted(e.to_string())
    }
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// A subject's history with this attempt noted; none if there is no such
/// subject or it cannot be reached (judged without it, and logged).
async fn observe(env: &Env, seen: Seen, subject: Option<SubjectName<'_>>) -> Option<History> {
    match RiskClient::observe(env, subject?, seen).await {
        Ok(history) => Some(history),
        Err(e) => {
            console_error!("risk: a subject's history is unavailable: {e}");
            None
        }
    }
}

impl DurableObject for OrderObject {
    fn new(state: State, env: Env) -> Self {
        // Tables are made on the first write: asking for an order that does
        // not exist stores nothing.
        let tables = Tables::detect(&state.storage().sql(), "order_state", Self::SCHEMA)
            .unwrap_or_else(|_| Tables::unknown(Self::SCHEMA));
        let (state, atomic) = Atomic::from_state(state);
        OrderObject {
            state,
            atomic,
            env,
            order: Rc::new(RefCell::new(None)),
            lock: Mutex::new(()),
            tables,
            announced_to: Rc::new(std::cell::Cell::new(0)),
            automate_after: std::cell::Cell::new(0),
            in_flight: Rc::new(std::cell::Cell::new(0)),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<OrderCall>().await {
            Ok(call) => {
                let _turn = self.lock.lock().await;
                self.handle(call).await.unwrap_or_else(|e| e.to_reply())
            }
            Err(e) => {
                console_error!("order object: unreadable call: {e}");
                ApiError::Internal.to_reply()
            }
        };
        to_response(&reply)
    }

    async fn alarm(&self) -> Result<Response> {
        let _turn = self.lock.lock().await;
        // Unreadable storage is retried (the runtime retries a failed
        // alarm); an empty object has nothing to do.
        let Some(mut order) = self
            .load()
            .map_err(|e| worker::Error::RustError(format!("order alarm: load: {e:?}")))?
        else {
            return Response::ok("");
        };
        // Announcements and notices a reply left owed, if the object went
        // away first (or the webhooks could not take them).
        let owed = (order.announce_from, order.notify_from);
        let idle = self.in_flight.get() == 0;
        if let Some(from) = order.announce_from.filter(|_| idle) {
            // Not what a task after a reply in this instance is announcing
            // right now (viewers would see it twice).
            let from = from.max(self.announced_to.get());
            if from < order.timeline.len() {
                announce(&self.env, &order, from).await;
            }
            order.announce_from = None;
        }
        if let Some(from) = order.notify_from.filter(|_| idle) {
            if notify(&self.env, &order, from).await {
                order.notify_from = None;
            }
        }
        if owed != (order.announce_from, order.notify_from) {
            self.save(&order)
                .map_err(|e| worker::Error::RustError(format!("order alarm: save: {e:?}")))?;
        }
        // The merchant's automations, over the changes they have not seen.
        if order.pending.is_none()
            && order.automate_from.is_some()
            && now_ms() >= self.automate_after.get()
        {
            if let Err(e) = self.automate(&mut order).await {
                console_error!("order object {}: automations: {e}", order.id);
                self.automate_after.set(now_ms() + AUTOMATE_RETRY_MS);
                *self.order.borrow_mut() = None;
                order = match self.load() {
                    Ok(Some(order)) => order,
                    _ => return Err(worker::Error::RustError("order alarm: reload".into())),
                };
            }
        }
        let intent = match &order.pending {
            Some(intent) => Some(intent.clone()),
            None if matches!(
                order.status,
                OrderStatus::Reserved | OrderStatus::PendingReview
            ) && order.expires_at_ms.is_some_and(|at| now_ms() >= at) =>
            {
                Some(Intent::Expire)
            }
            None => None,
        };
        if let Some(intent) = intent {
            // Cut short: the transition has re-armed the alarm at its
            // backoff, and the error makes the runtime retry sooner too;
            // running it again is safe (every SKU call is idempotent).
            if let Err(e) = self.transition(&mut order, intent, &Actor::System).await {
                *self.order.borrow_mut() = None;
                return Err(worker::Error::RustError(format!(
                    "order {}: alarm: {}",
                    order.id, e.0
                )));
            }
        } else {
            self.arm(&order).await;
        }
        Response::ok("")
    }
}

impl OrderObject {
    /// The tables, made with the first write.
    const SCHEMA: &'static str = "CREATE TABLE IF NOT EXISTS order_state (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS replays (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL);";

    fn load(&self) -> std::result::Result<Option<Order>, ApiError> {
        if let Some(order) = self.order.borrow().as_ref() {
            return Ok(order.clone());
        }
        if !self.tables.made() {
            *self.order.borrow_mut() = Some(None);
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Row {
            body: String,
        }
        let rows: Vec<Row> = self
            .state
            .storage()
            .sql()
            .exec("SELECT body FROM order_state WHERE id = 1", None)
            .and_then(|c| c.to_array())
            .map_err(internal)?;
        let order = match rows.first() {
            Some(row) => Some(serde_json::from_str(&row.body).map_err(internal)?),
            None => None,
        };
        *self.order.borrow_mut() = Some(order.clone());
        Ok(order)
    }

    fn save(&self, order: &Order) -> std::result::Result<(), ApiError> {
        self.save_with(order, None)
    }

    /// Saves the order and, with `answer`, a keyed request's answer, in one
    /// transaction: a retry sees both or neither.
    fn save_with(
        &self,
        order: &Order,
        answer: Option<(&KeyedAsk, &HttpReply)>,
    ) -> std::result::Result<(), ApiError> {
        let body = serde_json::to_string(order).map_err(internal)?;
        let mut writes: Vec<Statement> = vec![(
            "INSERT OR REPLACE INTO order_state (id, body) VALUES (1, ?)",
            vec![SqlStorageValue::String(body)],
        )];
        if let Some((ask, reply)) = answer {
            writes.extend(replay_writes(&ask.key, &ask.fingerprint, reply));
        }
        if let Err(e) = self.tables.write(&self.atomic, writes) {
            *self.order.borrow_mut() = None;
            return Err(internal(e));
        }
        *self.order.borrow_mut() = Some(Some(order.clone()));
        Ok(())
    }

    async fn handle(&self, call: OrderCall) -> std::result::Result<HttpReply, ApiError> {
        match call.op {
            OrderOp::Create {
                buyer,
                channel,
                sells_from,
                lines,
                room,
                fingerprint,
                replay_only,
                signals,
            } => {
                let mut order = match (self.load()?, replay_only) {
                    (Some(existing), _) if existing.fingerprint != fingerprint => {
                        return Err(ApiError::IdempotencyKeyReused)
                    }
                    (Some(existing), _) => existing,
                    (None, Some(scope)) => return Err(super::limits::refusal(scope)),
                    (None, None) => {
                        let lines = lines
                            .into_iter()
                            .enumerate()
                            .map(|(i, (sku, qty))| (sku, qty, line_hold_id(&call.order, i)))
                            .collect();
                        let mut order =
                            Order::new(call.order, buyer, channel, lines, fingerprint, now_ms());
                        order.room = room;
                        order.sells_from = sells_from;
                        let (decision, review_hold) = self.judge(&order, &signals).await;
                        order.judge(decision, review_hold, now_ms());
                        // A denial is a change of its own, announced after.
                        Self::owe_announcement(&mut order, 0);
                        self.save(&order)?;
                        if order.announce_from.is_some() {
                            self.arm(&order).await;
                            self.after_reply(&order);
                        }
                        order
                    }
                };
                // A retry of a create that was interrupted finishes it.
                if order.pending.is_some() {
                    let buyer = Actor::Buyer(order.buyer.clone());
                    self.run(&mut order, &buyer).await?;
                }
                if order.denied_by_risk() {
                    return Err(ApiError::RiskDenied {
                        risk: serde_json::to_value(&order.risk).unwrap_or_default(),
                    });
                }
                Ok(match order.status {
                    OrderStatus::Rejected => ApiError::LinesRefused {
                        failed_lines: failed_lines_json(&order),
                    }
                    .to_reply(),
                    _ => {
                        let mut reply = HttpReply::json(201, order_json(&order));
                        reply
                            .headers
                            .push(("Location", format!("/api/orders/{}", order.id)));
                        reply
                    }
                })
            }
            OrderOp::Intake {
                channel,
                platform_order,
                message,
                status,
                buyer,
                lines,
                amount,
            } => {
                let key = ReplayKey::new(&format!("channel:{channel}"), &message);
                if let Some(mut reply) = self.replay(Some(&key), "")? {
                    // The same message again: what it did, as a duplicate.
                    if reply.body["result"] == "accepted" {
                        reply.body["result"] = serde_json::json!("duplicate");
                    }
                    return Ok(reply);
                }
                let result = self
                    .intake(
                        call.order,
                        channel,
                        platform_order,
                        status,
                        buyer,
                        lines,
                        amount,
                    )
                    .await?;
                let reply = HttpReply::json(200, result.to_json());
                // A message to retry later is not remembered: its retry runs.
                if !result.wants_retry() {
                    self.remember(Some(&key), "", &reply)?;
                }
                Ok(reply)
            }
            OrderOp::Get { caller } => {
                let order = self.visible_to(&caller)?;
                Ok(HttpReply::json(200, order_json(&order)))
            }
            OrderOp::Reindex => {
                let order = self.load()?.ok_or(ApiError::OrderNotFound)?;
                // Both or a retry: an index that cannot take it now is a 503.
                let row = IndexRow::of(&order);
                let (index, buyer) = futures_util::join!(
                    index_object::upsert(&self.env, &row),
                    BuyerClient::upsert(
                        &self.env,
                        &order.buyer,
                        &order.id,
                        order_summary_json(&order)
                    ),
                );
                if let Err(e) = index.and(buyer) {
                    console_error!("order object {}: reindex: {e}", order.id);
                    return Err(ApiError::Retry);
                }
                Ok(HttpReply::json(
                    200,
                    serde_json::json!({ "id": order.id, "status": order.status }),
                ))
            }
            OrderOp::Latest => {
                let order = self.visible_to(&Actor::System)?;
                let event = order
                    .timeline
                    .last()
                    .map(|e| Event::order_status(&order, e));
                Ok(HttpReply::json(
                    200,
                    serde_json::to_value(event).map_err(internal)?,
                ))
            }
            OrderOp::Transition {
                intent,
                actor,
                caller,
                key,
                fingerprint,
            } => {
                // Ownership before replays: a stranger learns nothing, not
                // even that a key was used.
                self.visible_to(&caller)?;
                // Replays live in the caller's scope, like a SKU's.
                let key = key.map(|k| ReplayKey::new(&caller.to_string(), &k));
                if let Some(reply) = self.replay(key.as_ref(), &fingerprint)? {
                    return Ok(reply);
                }
                let mut order = self.load()?.ok_or(ApiError::OrderNotFound)?;
                // An interrupted transition is finished before the next one,
                // except that a cancel may replace a placing that cannot
                // finish.
                if let Err(e) = self.run(&mut order, &Actor::System).await {
                    let cancels_placing = matches!(intent, Intent::Cancel { .. })
                        && order.pending == Some(Intent::Place);
                    if !cancels_placing {
                        return Err(e);
                    }
                    order = self.load()?.ok_or(ApiError::OrderNotFound)?;
                }
                // The transition just finished may have been this request's
                // own, started before a crash: its answer is stored now.
                if let Some(reply) = self.replay(key.as_ref(), &fingerprint)? {
                    return Ok(reply);
                }
                let (intent, decided) = self.refund_rules(&order, intent).await?;
                // As it is now: a task after an earlier reply may have
                // cleared what it announced while the rules were read.
                let mut order = self.load()?.ok_or(ApiError::OrderNotFound)?;
                match order.begin(intent, now_ms()) {
                    Err(e) => {
                        let reply = ApiError::Order(e).to_reply();
                        self.remember(key.as_ref(), &fingerprint, &reply)?;
                        Ok(reply)
                    }
                    Ok(Begin::AlreadyDone) => {
                        let reply = HttpReply::json(200, order_json(&order));
                        self.remember(key.as_ref(), &fingerprint, &reply)?;
                        Ok(reply)
                    }
                    Ok(Begin::Started) => {
                        if let Some(why) = decided {
                            order.record_rule(Rule::RestockUnopened, "restocked", why, now_ms());
                        }
                        // Whoever settles it stores the answer with it.
                        order.answer_to = key.map(|key| KeyedAsk { key, fingerprint });
                        self.save(&order)?;
                        self.run(&mut order, &actor).await?;
                        Ok(transition_answer(&order))
                    }
                }
            }
            OrderOp::Change {
                change,
                actor,
                key,
                fingerprint,
            } => {
                let key = key.map(|k| ReplayKey::new(&Actor::Admin.to_string(), &k));
                if let Some(reply) = self.replay(key.as_ref(), &fingerprint)? {
                    return Ok(reply);
                }
                let mut order = self.load()?.ok_or(ApiError::OrderNotFound)?;
                self.run(&mut order, &Actor::System).await?;
                let seen = order.timeline.len();
                match order.change(change, &actor, now_ms()) {
                    Err(e) => {
                        let reply = ApiError::Order(e).to_reply();
                        self.remember(key.as_ref(), &fingerprint, &reply)?;
                        Ok(reply)
                    }
                    Ok(()) => {
                        let reply = HttpReply::json(200, order_json(&order));
                        let ask = key.map(|key| KeyedAsk { key, fingerprint });
                        Self::owe_announcement(&mut order, seen);
                        self.save_with(&order, ask.as_ref().map(|a| (a, &reply)))?;
                        if order.timeline.len() == seen {
                            // A confirmation changes no status: the index
                            // row, which shows it, is refreshed here.
                            if let Err(e) =
                                index_object::upsert(&self.env, &IndexRow::of(&order)).await
                            {
                                console_error!("order object {}: order index: {e}", order.id);
                            }
                        }
                        self.arm(&order).await;
                        self.after_reply(&order);
                        Ok(reply)
                    }
                }
            }
        }
    }

    /// Brings the order to where its platform says it is (see
    /// `domain::intake`): created and placed from the message's lines,
    /// then paid, cancelled or refunded by its own transitions.
    #[allow(clippy::too_many_arguments)]
    async fn intake(
        &self,
        id: OrderId,
        channel: Channel,
        platform_order: String,
        status: PlatformStatus,
        buyer: BuyerId,
        lines: Vec<(SkuId, Quantity)>,
        amount: Option<u64>,
    ) -> std::result::Result<MessageResult, ApiError> {
        let actor = Actor::System;
        // Each round moves the order one transition; three reach any
        // status from none.
        for _ in 0..4 {
            let mut current = self.load()?;
            if let Some(order) = current.as_mut() {
                // An interrupted transition is finished first.
                self.run(order, &actor).await?;
            }
            let next = intake::next(
                current.as_ref(),
                status,
                !lines.is_empty(),
                channel.as_str(),
            );
            match next {
                Next::Done(result) => return Ok(result),
                Next::Place | Next::CloseUnseen => {
                    let held: Vec<_> = lines
                        .iter()
                        .enumerate()
                        .map(|(i, (sku, qty))| (sku.clone(), *qty, line_hold_id(&id, i)))
                        .collect();
                    let mut order = Order::new(
                        id.clone(),
                        buyer.clone(),
                        channel.clone(),
                        held,
                        format!("channel:{channel}:{platform_order}"),
                        now_ms(),
                    );
                    order.sells_from = Some(channel.clone());
                    order.platform_order = Some(platform_order.clone());
                    if next == Next::CloseUnseen {
                        order.close_unplaced(
                            &actor,
                            format!("closed on {channel} before edgestock saw it"),
                            now_ms(),
                        );
                        Self::owe_announcement(&mut order, 0);
                        self.save(&order)?;
                        self.arm(&order).await;
                        self.after_reply(&order);
                        continue;
                    }
                    self.save(&order)?;
                    self.run(&mut order, &actor).await?;
                }
                Next::Run(intent) => {
                    let Some(mut order) = current else {
                        return Err(ApiError::Internal);
                    };
                    let intent = match intent {
                        Intent::Pay { payment_ref, .. } => Intent::Pay {
                            payment_ref,
                            amount,
                        },
                        other => other,
                    };
                    match order.begin(intent, now_ms()) {
                        Ok(Begin::Started) => {
                            self.save(&order)?;
                            self.run(&mut order, &actor).await?;
                        }
                        Ok(Begin::AlreadyDone) => {}
                        Err(e) => {
                            return Ok(MessageResult::Refused {
                                reason: format!("{e:?}"),
                                order: order.id.to_string(),
                            })
                        }
                    }
                }
            }
        }
        Ok(MessageResult::Retry {
            reason: "the order did not settle; send again shortly".into(),
        })
    }

    /// The order if `caller` may see it: its buyer, an admin, or the
    /// system (a payment callback, the alarm). For anyone else it does not
    /// exist.
    fn visible_to(&self, caller: &Actor) -> std::result::Result<Order, ApiError> {
        let order = self.load()?.ok_or(ApiError::OrderNotFound)?;
        let visible = match caller {
            Actor::Admin | Actor::System | Actor::Payment => true,
            Actor::Buyer(buyer) => order.buyer == *buyer,
            Actor::Order(_) | Actor::Risk | Actor::Rule(_) => false,
        };
        if visible {
            Ok(order)
        } else {
            Err(ApiError::OrderNotFound)
        }
    }

    /// Runs the pending transition; on interruption the pending intent stays
    /// saved, the alarm resumes it, and the client is told to retry.
    async fn run(&self, order: &mut Order, actor: &Actor) -> std::result::Result<(), ApiError> {
        let Some(intent) = order.pending.clone() else {
            return Ok(());
        };
        self.transition(order, intent, actor).await.map_err(|e| {
            console_error!("order object {}: {}", order.id, e.0);
            *self.order.borrow_mut() = None;
            ApiError::Retry
        })
    }

    async fn transition(
        &self,
        order: &mut Order,
        intent: Intent,
        actor: &Actor,
    ) -> std::result::Result<(), Interrupted> {
        let saved = |order: &Order| self.save(order).map_err(|_| Interrupted("save".into()));
        if order.pending.is_none() {
            order
                .begin(intent, now_ms())
                .map_err(|e| Interrupted(format!("{e:?}")))?;
            saved(order)?;
        }
        self.set_alarm(now_ms() + RESUME_AFTER_MS).await;
        let seen = order.timeline.len();
        for round in 0.. {
            let plan = order.plan();
            if plan.is_empty() {
                break;
            }
            // Progress is saved before each round after the first (the last
            // round's is in the settling save, with no await between).
            if round > 0 {
                saved(order)?;
            }
            // The steps of one round go out together: each SKU object
            // serializes what reaches it, and each step is idempotent, so
            // an interrupted round is simply run again.
            let replies = join_all(plan.iter().map(|step| self.call_sku(order, step))).await;
            let mut unreachable = Vec::new();
            for (step, reply) in plan.iter().zip(replies) {
                match reply {
                    Ok(reply) => order.observe(step, &reply),
                    Err(e) => {
                        console_error!("order object {}: {}", order.id, e.0);
                        unreachable.push(step.line);
                    }
                }
            }
            if unreachable.is_empty() {
                continue;
            }
            let next = order.interrupted(&unreachable);
            saved(order)?;
            let retry_in = match next {
                Interruption::RetryIn(ms) => ms,
                Interruption::GaveUp { note } => {
                    self.alert(order, &unreachable, AlertKind::OrderCompensated, &note);
                    continue;
                }
                Interruption::Stuck { note, retry_in_ms } => {
                    self.alert(order, &unreachable, AlertKind::OrderStuck, &note);
                    retry_in_ms
                }
            };
            self.set_alarm(now_ms() + retry_in).await;
            return Err(Interrupted(format!(
                "{} line(s) unanswered; attempt {}, again in {} s",
                unreachable.len(),
                order.attempts,
                retry_in / 1000
            )));
        }
        order.settle(actor, now_ms());
        // The answer to the request that started it, in the same save.
        let answer = order
            .answer_to
            .take()
            .map(|ask| (ask, transition_answer(order)));
        // What follows (events, indexes) is owed in the same save, and done
        // after the reply: the reply waits for the SKU calls only.
        Self::owe_announcement(order, seen);
        self.save_with(order, answer.as_ref().map(|(ask, reply)| (ask, reply)))
            .map_err(|_| Interrupted("save".into()))?;
        self.arm(order).await;
        self.after_reply(order);
        Ok(())
    }

    /// Tells the operator an order stopped waiting for (or keeps failing
    /// at) the SKUs of `lines`.
    fn alert(&self, order: &Order, lines: &[usize], kind: AlertKind, note: &str) {
        for line in lines.iter().filter_map(|i| order.lines.get(*i)) {
            events::emit(&Event::order_alert(order, &line.sku, kind, note));
        }
    }

    async fn call_sku(
        &self,
        order: &Order,
        step: &SkuStep,
    ) -> std::result::Result<Reply, Interrupted> {
        let request = StockRequest {
            key: Some(step.key.clone()),
            fingerprint: serde_json::to_string(&step.command).unwrap_or_default(),
            actor: Actor::Order(order.id.clone()),
            command: step.command.clone(),
        };
        // On a split SKU the parent passes the line to the buyer's bucket.
        let call = SkuCall {
            sku: step.sku.clone(),
            bucket: None,
            buyer: Some(order.buyer.clone()),
            op: SkuOp::Apply { request },
        };
        let mut response = SkuClient::new(&self.env, &step.sku)?.call(&call).await?;
        if response.status_code() != 200 {
            return Err(Interrupted(format!(
                "SKU {} answered {}",
                step.sku,
                response.status_code()
            )));
        }
        Ok(response.json::<Reply>().await?)
    }

    /// Marks what the change leaves to announce (and for the automations
    /// to look at), saved with the change.
    fn owe_announcement(order: &mut Order, seen: usize) {
        if order.timeline.len() > seen {
            order.announce_from = Some(order.announce_from.map_or(seen, |from| from.min(seen)));
            order.notify_from = Some(order.notify_from.map_or(seen, |from| from.min(seen)));
            if automation::concerns(order, seen) {
                order.automate_from = Some(order.automate_from.map_or(seen, |from| from.min(seen)));
            }
        }
    }

    /// A refund that leaves restocking to the rules (`unopened`): the
    /// restock_unopened automation decides now, so the pending refund says
    /// what was decided; the reason is recorded if it began.
    async fn refund_rules(
        &self,
        order: &Order,
        intent: Intent,
    ) -> std::result::Result<(Intent, Option<String>), ApiError> {
        let Intent::Refund {
            restock: false,
            reason,
            unopened: true,
        } = intent
        else {
            return Ok((intent, None));
        };
        let rules = automation_object::rules_for(&self.env, order)
            .await
            .map_err(|e| {
                console_error!("order object {}: automations: {e}", order.id);
                ApiError::Retry
            })?;
        let decided = automation::restock_unopened(order, &rules);
        let intent = Intent::Refund {
            restock: decided.is_some(),
            reason,
            unopened: true,
        };
        Ok((
            intent,
            decided.map(|why| format!("the item came back unopened; {why}")),
        ))
    }

    /// Runs the automations over the status changes they have not seen:
    /// reads the switches (and, for flags, the buyer's open orders), applies
    /// what the rules decide, and saves it with the mark cleared, in one
    /// save. An error leaves it owed, for the alarm to try again.
    async fn automate(&self, order: &mut Order) -> std::result::Result<(), String> {
        let Some(from) = order.automate_from else {
            return Ok(());
        };
        let rules = automation_object::rules_for(&self.env, order)
            .await
            .map_err(|e| e.to_string())?;
        let others = if automation::wants_other_orders(order, from, &rules).is_empty() {
            Vec::new()
        } else {
            BuyerClient::open(&self.env, &order.buyer, OPEN_ORDERS_LOOKED_AT)
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|summary| OtherOrder {
                    id: summary["id"].as_str().unwrap_or_default().to_owned(),
                    status: summary["status"].as_str().unwrap_or_default().to_owned(),
                    skus: summary["lines"]
                        .as_array()
                        .map(|lines| {
                            lines
                                .iter()
                                .filter_map(|l| l["sku"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        };
        // The order as it is now (under the lock nothing else changes its
        // status, but a task after an earlier reply may have cleared what
        // it announced while the switches were read): saving the copy from
        // before the reads would owe those announcements again.
        *order = self
            .load()
            .map_err(|e| format!("reload: {e:?}"))?
            .ok_or("the order is gone")?;
        let now = now_ms();
        let seen = order.timeline.len();
        let acted = order.automations.len();
        for action in automation::decide(order, from, &rules, &others) {
            order.automate(action, now);
        }
        order.automate_from = None;
        // A rule's shipment is a change like any other: announced, told
        // to the webhooks and the index.
        Self::owe_announcement(order, seen);
        self.save(order).map_err(|e| format!("save: {e:?}"))?;
        if order.automations.len() > acted && order.timeline.len() == seen {
            // A flag or a confirmation changes no status: the index row is
            // refreshed here (it carries both).
            if let Err(e) = index_object::upsert(&self.env, &IndexRow::of(order)).await {
                console_error!("order object {}: order index: {e}", order.id);
            }
        }
        self.arm(order).await;
        if order.timeline.len() > seen {
            self.after_reply(order);
        }
        Ok(())
    }

    /// Announces after the reply: the runtime keeps the object for the
    /// task (`waitUntil`), and the order, saved with `announce_from`, is
    /// cleared when it is done; the alarm (armed within a minute while
    /// anything is owed) does it otherwise.
    fn after_reply(&self, order: &Order) {
        let owed = (order.announce_from, order.notify_from);
        if owed == (None, None) {
            return;
        }
        let (env, order, cache, atomic) = (
            self.env.clone(),
            order.clone(),
            self.order.clone(),
            self.atomic.clone(),
        );
        let covered = order.timeline.len();
        let announce_from = owed
            .0
            .map(|from| from.max(self.announced_to.get()))
            .filter(|from| *from < covered);
        if owed.0.is_some() {
            self.announced_to.set(self.announced_to.get().max(covered));
        }
        let in_flight = self.in_flight.clone();
        in_flight.set(in_flight.get() + 1);
        let task = async move {
            if let Some(from) = announce_from {
                announce(&env, &order, from).await;
            }
            // Not handed off: still owed, and the alarm (armed while it is)
            // tries again.
            let notified = match owed.1 {
                Some(from) => notify(&env, &order, from).await,
                None => true,
            };
            let mut cache = cache.borrow_mut();
            if let Some(Some(current)) = cache.as_mut() {
                let before = (current.announce_from, current.notify_from);
                // This task covered the timeline as it was; entries a later
                // change added stay owed (their own task, or the alarm).
                let rest = (current.timeline.len() > covered).then_some(covered);
                // Cleared if what is still owed starts within what this
                // task covered (a task that finished first may have moved
                // the mark to where this one began).
                let within = |mark: Option<usize>, from: Option<usize>| {
                    mark.zip(from).is_some_and(|(m, f)| m >= f && m <= covered)
                };
                if within(current.announce_from, owed.0) {
                    current.announce_from = rest;
                }
                if notified && within(current.notify_from, owed.1) {
                    current.notify_from = rest;
                }
                if before != (current.announce_from, current.notify_from) {
                    let saved = serde_json::to_string(&*current)
                        .map_err(|e| worker::Error::RustError(e.to_string()))
                        .and_then(|body| {
                            atomic.run(vec![(
                                "UPDATE order_state SET body = ? WHERE id = 1",
                                vec![SqlStorageValue::String(body)],
                            )])
                        });
                    if let Err(e) = saved {
                        // Still owed: the alarm announces again.
                        (current.announce_from, current.notify_from) = before;
                        console_error!("order object {}: announced, not saved: {e}", order.id);
                    }
                }
            }
        };
        let promise = worker::wasm_bindgen_futures::future_to_promise(async move {
            task.await;
            in_flight.set(in_flight.get().saturating_sub(1));
            Ok(worker::wasm_bindgen::JsValue::UNDEFINED)
        });
        if let Err(e) = self.state.as_raw().wait_until(&promise) {
            console_error!("order object: wait_until: {e:?}");
        }
    }

    /// What the risk rules say of a new order: the subjects' histories are
    /// fetched together (only those some rule counts), with the attempt
    /// noted. A subject that cannot be reached is judged without its
    /// history: risk never stops the sale.
    async fn judge(&self, order: &Order, signals: &Signals) -> (Decision, HoldSeconds) {
        let rules = risk_object::rules(&self.env).await;
        let now = now_ms();
        let seen = Seen {
            at_ms: now,
            buyer: risk_object::digest(order.buyer.as_str()),
        };
        let wanted = |subject: Subject| rules.counts(subject);
        let env = &self.env;
        let (buyer_history, device_history, address_history) = futures_util::join!(
            observe(
                env,
                seen.clone(),
                wanted(Subject::Buyer).then_some(SubjectName::Buyer(&order.buyer))
            ),
            observe(
                env,
                seen.clone(),
                signals
                    .device
                    .as_deref()
                    .filter(|_| wanted(Subject::Device))
                    .map(SubjectName::Device)
            ),
            observe(
                env,
                seen.clone(),
                signals
                    .address
                    .as_deref()
                    .filter(|_| wanted(Subject::Address))
                    .map(SubjectName::Address)
            ),
        );
        let facts = Facts {
            now_ms: now,
            buyer: Some(order.buyer.clone()),
            device: signals.device.clone(),
            address: signals.address.clone(),
            account_created_s: signals.account_created,
            units: order.lines.iter().map(|l| l.qty.get()).sum(),
            room: order.room.clone(),
            buyer_history,
            device_history,
            address_history,
        };
        let review_hold = HoldSeconds::parse(rules.review_hold_s).unwrap_or(HoldSeconds::DEFAULT);
        (risk::evaluate(&rules, &facts, Judged::Order), review_hold)
    }

    /// Points the alarm at what this order waits for next, if anything.
    /// While an announcement is owed, at most a minute out, so the alarm
    /// does it if the task after the reply did not.
    async fn arm(&self, order: &Order) {
        let next = match (order.status, order.expires_at_ms) {
            (OrderStatus::Reserved | OrderStatus::PendingReview, Some(at)) => Some(at),
            _ if order.pending.is_some() => Some(now_ms() + RESUME_AFTER_MS),
            _ => None,
        };
        // The automations run from the alarm (under the object's lock), at
        // once unless they are backing off.
        let automate = (order.automate_from.is_some() && order.pending.is_none())
            .then(|| now_ms().max(self.automate_after.get()));
        let next = next.into_iter().chain(automate).min();
        let owed = order
            .announce_from
            .or(order.notify_from)
            .map(|_| now_ms() + ANNOUNCE_WITHIN_MS);
        match next.into_iter().chain(owed).min() {
            Some(at) => self.set_alarm(at).await,
            None => {
                if let Err(e) = self.state.storage().delete_alarm().await {
                    console_error!("order object: delete alarm: {e}");
                }
            }
        }
    }

    async fn set_alarm(&self, at_ms: u64) {
        let date = js_sys::Date::new(&(at_ms as f64).into());
        if let Err(e) = self
            .state
            .storage()
            .set_alarm(ScheduledTime::new(date))
            .await
        {
            console_error!("order object: set alarm: {e}");
        }
    }

    fn replay(
        &self,
        key: Option<&ReplayKey>,
        fingerprint: &str,
    ) -> std::result::Result<Option<HttpReply>, ApiError> {
        let Some(key) = key else { return Ok(None) };
        if !self.tables.made() {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Row {
            fingerprint: String,
            status: i64,
            body: String,
        }
        let rows: Vec<Row> = self
            .state
            .storage()
            .sql()
            .exec(
                "SELECT fingerprint, status, body FROM replays WHERE key = ?",
                vec![SqlStorageValue::String(key.as_str().to_owned())],
            )
            .and_then(|c| c.to_array())
            .map_err(internal)?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        if row.fingerprint != fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        let body = serde_json::from_str(&row.body).map_err(internal)?;
        let status = row.status as u16;
        Ok(Some(if status >= 400 {
            HttpReply::problem(status, body)
        } else {
            HttpReply::json(status, body)
        }))
    }

    fn remember(
        &self,
        key: Option<&ReplayKey>,
        fingerprint: &str,
        reply: &HttpReply,
    ) -> std::result::Result<(), ApiError> {
        let Some(key) = key else {
            return Ok(());
        };
        self.tables
            .write(&self.atomic, replay_writes(key, fingerprint, reply))
            .map_err(internal)
    }
}

/// A keyed answer and the trim that bounds them (503s are not answers: a
/// retry must run again).
fn replay_writes(key: &ReplayKey, fingerprint: &str, reply: &HttpReply) -> Vec<Statement> {
    if reply.status == 503 {
        return Vec::new();
    }
    vec![
        (
            "INSERT OR REPLACE INTO replays (key, fingerprint, status, body) VALUES (?, ?, ?, ?)",
            vec![
                SqlStorageValue::String(key.as_str().to_owned()),
                SqlStorageValue::String(fingerprint.to_owned()),
                SqlStorageValue::Integer(i64::from(reply.status)),
                SqlStorageValue::String(reply.body.to_string()),
            ],
        ),
        // Bounded: past the cap, the oldest answers go.
        (
            "DELETE FROM replays WHERE rowid <= (SELECT max(rowid) FROM replays) - ?",
            vec![SqlStorageValue::Integer(REPLAYS_MAX)],
        ),
    ]
}

/// The answer to a keyed transition, from the order it settled into: the
/// same whether the request itself, its retry or the alarm settled it.
fn transition_answer(order: &Order) -> HttpReply {
    if order.status == OrderStatus::Failed {
        ApiError::PaymentFailed {
            failed_lines: failed_lines_json(order),
        }
        .to_reply()
    } else {
        HttpReply::json(200, order_json(order))
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    console_error!("order object: {e}");
    ApiError::Internal
}

/// What follows a change, after the reply: the events for each new timeline
/// entry (the order's feed, its room's), the risk history, the review
/// queue, and the buyer's index. At least once: the order carries
/// `announce_from` until this is done, and the alarm does it again if the
/// object went away first.
async fn announce(env: &Env, order: &Order, seen: usize) {
    for entry in &order.timeline[seen.min(order.timeline.len())..] {
        let event = Event::order_status(order, entry);
        events::emit(&event);
        FeedClient::publish(env, &FeedName::Order(order.id.clone()), &event).await;
        if let Some(room) = &order.room {
            let masked = Event::room_order(order, entry);
            FeedClient::publish(env, &FeedName::Room(room.clone()), &masked).await;
        }
    }
    let new = &order.timeline[seen.min(order.timeline.len())..];
    // Held and never paid: the buyer's record for the risk rules (not
    // an order that expired waiting for the merchant's review).
    let unpaid = order
        .timeline
        .windows(2)
        .rev()
        .take(new.len())
        .find(|pair| {
            pair[1].status == OrderStatus::Expired && pair[0].status == OrderStatus::Reserved
        });
    if let Some(pair) = unpaid {
        if let Err(e) = RiskClient::expired(env, &order.buyer, pair[1].at_ms).await {
            console_error!("order object {}: risk history: {e}", order.id);
        }
    }
    let reviewed = order
        .risk
        .as_ref()
        .is_some_and(|d| d.verdict == Verdict::Review);
    if reviewed && !new.is_empty() {
        let mut entry = order_summary_json(order);
        entry["buyer"] = serde_json::json!(order.buyer);
        entry["risk"] = serde_json::to_value(&order.risk).unwrap_or_default();
        RiskClient::track_review(env, &order.id, order.status, entry).await;
    }
    if order.timeline.len() > seen {
        if let Err(e) =
            BuyerClient::upsert(env, &order.buyer, &order.id, order_summary_json(order)).await
        {
            console_error!("order object {}: buyer index: {e}", order.id);
        }
    }
}

/// Hands the order's merchant notices from timeline entry `from` on to the
/// webhook queues: the one part of what follows a change that must arrive,
/// so it stays owed (`notify_from`) until this answers true.
/// The room's numbers are told here too (counted once each by the room's
/// first feed shard), so they are not lost when a call fails.
async fn notify(env: &Env, order: &Order, from: usize) -> bool {
    let notices: Vec<Notice> = (from..order.timeline.len())
        .filter_map(|i| Notice::order_status(order, i))
        .collect();
    let mut done = match hooks::hand_off(env, &notices).await {
        Ok(()) => true,
        Err(e) => {
            console_error!("order object {}: webhooks not handed off: {e}", order.id);
            false
        }
    };
    if let Some(room) = &order.room {
        for index in from..order.timeline.len() {
            let entry = &order.timeline[index];
            let fact = OrderFact {
                order: order.id.clone(),
                index: index as u64,
                status: entry.status,
                after: index.checked_sub(1).map(|i| order.timeline[i].status),
                at_ms: entry.at_ms,
                lines: order
                    .lines
                    .iter()
                    .map(|l| (l.sku.clone(), l.qty.get()))
                    .collect(),
                amount: (entry.status == OrderStatus::Paid)
                    .then_some(order.payment_amount)
                    .flatten(),
            };
            let told = FeedClient::call_first(env, room, &FeedCall::Tally { fact }).await;
            if !told.is_ok_and(|r| r.status_code() == 200) {
                console_error!("order object {}: room {room} numbers not told", order.id);
                done = false;
            }
        }
    }
    // The merchant's order index: this order's row in its partitions.
    if from < order.timeline.len() {
        let row = IndexRow::of(order);
        if let Err(e) = index_object::upsert(env, &row).await {
            console_error!("order object {}: order index: {e}", order.id);
            done = false;
        }
    }
    done
}
