//! Risk's state, in small objects that each scale on their own:
//!
//! - one per **subject** (`buyer:<id>`, `device:<digest>`,
//!   `address:<digest>`): the subject's recent order attempts and expired
//!   unpaid orders ([`History`], bounded in count and age). An order object
//!   notes its attempt and gets the history back in one call.
//! - one per **hold ledger shard** (`holds:<n>`): the live holds of the
//!   buyers whose digest falls in the shard, for the cap on a buyer's live
//!   holds across SKUs (domain/hold_cap.rs). Shards, not one object per
//!   buyer: a stampede of new viewers reports to a few warm objects instead
//!   of creating one per viewer, and no shard is the only one.
//! - the **desk** (`desk`): the merchant's rule set and the review queue.
//!   Rules are read through a per-isolate cache ([`rules`]), so the desk sees
//!   one read per isolate per [`RULES_TTL_MS`], not one per order; the queue
//!   is written only by orders that need review.
//!
//! Device ids and client addresses are stored as digests, never raw.

use super::http::to_response;
use super::stubs::{internal_request, SkuCall, SkuClient, SkuOp};
use crate::api::{ApiError, HttpReply};
use crate::domain::hold_cap::{Claim, LiveHold, LiveHolds, Moment};
use crate::domain::order::OrderStatus;
use crate::domain::risk::{History, RuleSet, Seen};
use crate::domain::stock::{Actor, Command, Request as StockRequest};
use crate::domain::types::{digest16, BuyerId, OrderId, ReservationId};
use futures_util::future::join_all;
use futures_util::lock::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use worker::{
    console_error, durable_object, Date, DurableObject, Env, Request, Response, Result,
    SqlStorageValue, State,
};

/// How long an isolate trusts the rule set it read.
pub const RULES_TTL_MS: u64 = 5_000;
const READ_STALE_MS: u64 = 2_000;
/// The review queue keeps at most this many orders (oldest first out).
const REVIEWS_MAX: i64 = 10_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RiskCall {
    /// Subject: note an attempt, answer the history (including it).
    Observe { seen: Seen },
    /// Subject (a buyer): an unpaid order of theirs expired.
    Expired { at_ms: u64 },
    /// Desk: the rule set in force.
    Rules,
    /// Desk: replace the rule set with this (raw JSON, checked here with
    /// the next version number).
    PutRules { body: String },
    /// Desk: an order waits for review (or its entry changed).
    Review { order: OrderId, entry: Value },
    /// Desk: an order no longer waits.
    Reviewed { order: OrderId },
    /// Desk: the queue, oldest first.
    Reviews { limit: usize },
    /// Hold ledger: count buyers' holds against the cap, in order; one
    /// answer per claim.
    ClaimHolds { claims: Vec<HoldClaim> },
    /// Hold ledger: a hold claimed before its SKU was asked, which the SKU
    /// refused.
    ForgetHold { buyer: BuyerId, hold: ReservationId },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldClaim {
    pub buyer: BuyerId,
    pub hold: LiveHold,
    pub moment: Moment,
    pub max: usize,
}

/// How many hold ledger shards a deployment spreads buyers over.
pub const HOLD_SHARDS: u64 = 16;

pub fn hold_shard(buyer: &BuyerId) -> String {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest16(&[buyer.as_str()])[..8]);
    format!("holds:{}", u64::from_be_bytes(first) % HOLD_SHARDS)
}

/// A subject's object name.
pub enum SubjectName<'a> {
    Buyer(&'a BuyerId),
    Device(&'a str),
    Address(&'a str),
}

impl SubjectName<'_> {
    fn object_name(&self) -> String {
        match self {
            SubjectName::Buyer(b) => format!("buyer:{b}"),
            SubjectName::Device(d) => format!("device:{}", digest(d)),
            SubjectName::Address(a) => format!("address:{}", digest(a)),
        }
    }
}

/// A short digest (16 hex digits): enough to tell subjects apart, not to
/// recover them.
pub fn digest(value: &str) -> String {
    digest16(&[value])[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct RiskClient;

impl RiskClient {
    async fn call(env: &Env, name: &str, call: &RiskCall) -> Result<Response> {
        let stub = env.durable_object("RISK")?.get_by_name(name)?;
        stub.fetch_with_request(internal_request(call)?).await
    }

    async fn call_ok(env: &Env, name: &str, call: &RiskCall) -> Result<Response> {
        let response = Self::call(env, name, call).await?;
        match response.status_code() {
            200 => Ok(response),
            status => Err(worker::Error::RustError(format!(
                "risk object {name} answered {status}"
            ))),
        }
    }

    pub async fn observe(env: &Env, subject: SubjectName<'_>, seen: Seen) -> Result<History> {
        let name = subject.object_name();
        Self::call_ok(env, &name, &RiskCall::Observe { seen })
            .await?
            .json()
            .await
    }

    pub async fn expired(env: &Env, buyer: &BuyerId, at_ms: u64) -> Result<()> {
        let name = SubjectName::Buyer(buyer).object_name();
        Self::call_ok(env, &name, &RiskCall::Expired { at_ms }).await?;
        Ok(())
    }

    /// Claims, all for buyers of one shard; one answer each.
    pub async fn claim_holds(env: &Env, shard: &str, claims: Vec<HoldClaim>) -> Result<Vec<Claim>> {
        Self::call_ok(env, shard, &RiskCall::ClaimHolds { claims })
            .await?
            .json()
            .await
    }

    pub async fn forget_hold(env: &Env, buyer: &BuyerId, hold: ReservationId) -> Result<()> {
        let call = RiskCall::ForgetHold {
            buyer: buyer.clone(),
            hold,
        };
        Self::call_ok(env, &hold_shard(buyer), &call).await?;
        Ok(())
    }

    /// The desk's answer to an admin call, as is.
    pub async fn desk(env: &Env, call: &RiskCall) -> Result<Response> {
        Self::call(env, "desk", call).await
    }

    /// Keeps the review queue in step with an order that was sent to
    /// review: listed while it waits, gone once it does not.
    pub async fn track_review(env: &Env, order: &OrderId, status: OrderStatus, entry: Value) {
        let call = if status == OrderStatus::PendingReview {
            RiskCall::Review {
                order: order.clone(),
                entry,
            }
        } else {
            RiskCall::Reviewed {
                order: order.clone(),
            }
        };
        if let Err(e) = Self::call_ok(env, "desk", &call).await {
            console_error!("risk: review queue for {order}: {e}");
        }
    }
}

thread_local! {
    static RULES: RefCell<Option<(Rc<RuleSet>, u64)>> = const { RefCell::new(None) };
    /// When a read of the desk began, if one is under way: the others
    /// meanwhile use the set they have (one read per isolate, not one per
    /// request). A read older than [`READ_STALE_MS`] is taken to have died
    /// (its request gone) and another may start.
    static READING: Cell<u64> = const { Cell::new(0) };
}

/// The rule set in force, from this isolate's cache when it is fresh. If
/// the desk cannot be read, the last set read is used (or the defaults):
/// a risk outage never stops the sale.
pub async fn rules(env: &Env) -> Rc<RuleSet> {
    let now = Date::now().as_millis();
    // A shared handle: the hot path copies nothing.
    let cached = RULES.with(|r| r.borrow().clone());
    if let Some((set, at)) = &cached {
        let reading = READING.with(Cell::get);
        let read_under_way = reading > 0 && now.saturating_sub(reading) < READ_STALE_MS;
        if now.saturating_sub(*at) < RULES_TTL_MS || read_under_way {
            return set.clone();
        }
    }
    READING.with(|r| r.set(now.max(1)));
    let fetched = async {
        RiskClient::call_ok(env, "desk", &RiskCall::Rules)
            .await?
            .json::<RuleSet>()
            .await
    }
    .await;
    READING.with(|r| r.set(0));
    match fetched {
        Ok(set) => remember_rules(set),
        Err(e) => {
            console_error!("risk: rules unavailable, using the last known: {e}");
            cached.map_or_else(|| Rc::new(RuleSet::defaults()), |(set, _)| set)
        }
    }
}

/// Puts a set just written into this isolate's cache.
pub fn remember_rules(set: RuleSet) -> Rc<RuleSet> {
    let now = Date::now().as_millis();
    let set = Rc::new(set);
    RULES.with(|r| *r.borrow_mut() = Some((set.clone(), now)));
    set
}

#[durable_object]
pub struct RiskObject {
    state: State,
    env: Env,
    /// Hold claims ask SKUs about holds (they yield): one at a time.
    claims: Mutex<()>,
    /// Whether this instance knows its tables exist (created or seen).
    tables: Cell<bool>,
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

impl DurableObject for RiskObject {
    fn new(state: State, env: Env) -> Self {
        RiskObject {
            state,
            env,
            claims: Mutex::new(()),
            tables: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<RiskCall>().await {
            Ok(RiskCall::ClaimHolds { claims }) => {
                let _turn = self.claims.lock().await;
                match self.claim_all(claims).await {
                    Ok(answers) => HttpReply::json(200, serde_json::to_value(&answers)?),
                    Err(e) => {
                        console_error!("hold ledger: claim: {e}");
                        ApiError::Internal.to_reply()
                    }
                }
            }
            Ok(call) => {
                // Under the claims' lock: a claim may be awaiting the SKUs
                // between its read and its write of the same ledger.
                let _turn = match call {
                    RiskCall::ForgetHold { .. } => Some(self.claims.lock().await),
                    _ => None,
                };
                self.handle(call).unwrap_or_else(|e| {
                    console_error!("risk object: {e}");
                    ApiError::Internal.to_reply()
                })
            }
            Err(_) => ApiError::Internal.to_reply(),
        };
        to_response(&reply)
    }
}

impl RiskObject {
    /// Tables are made on the first write, so a read of a subject or desk
    /// that never wrote leaves nothing behind.
    fn schema(&self) -> Result<()> {
        if self.tables.get() {
            return Ok(());
        }
        self.state.storage().sql().exec(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, body TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS reviews (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL);",
            None,
        )?;
        self.tables.set(true);
        Ok(())
    }

    fn has_schema(&self) -> Result<bool> {
        if self.tables.get() {
            return Ok(true);
        }
        #[derive(Deserialize)]
        struct Row {
            n: i64,
        }
        let rows: Vec<Row> = self
            .state
            .storage()
            .sql()
            .exec(
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'kv'",
                None,
            )?
            .to_array()?;
        let exists = rows.first().is_some_and(|r| r.n > 0);
        self.tables.set(exists);
        Ok(exists)
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        if !self.has_schema()? {
            return Ok(None);
        }
        let rows: Vec<Body> = self
            .state
            .storage()
            .sql()
            .exec(
                "SELECT body FROM kv WHERE key = ?",
                vec![SqlStorageValue::String(key.to_owned())],
            )?
            .to_array()?;
        match rows.first() {
            Some(row) => Ok(Some(serde_json::from_str(&row.body)?)),
            None => Ok(None),
        }
    }

    fn put(&self, key: &str, value: &impl Serialize) -> Result<()> {
        self.schema()?;
        self.state.storage().sql().exec(
            "INSERT OR REPLACE INTO kv (key, body) VALUES (?, ?)",
            vec![
                SqlStorageValue::String(key.to_owned()),
                SqlStorageValue::String(serde_json::to_string(value)?),
            ],
        )?;
        Ok(())
    }

    /// Counts holds against their buyers' caps, in order. The common case
    /// (no buyer at the cap) reads and writes with no await in between, so
    /// a whole batch commits as one write. A claim at the cap then asks the
    /// SKUs which of the buyer's counted holds they still hold (released or
    /// paid ones free their slot); a hold reported past the cap is given
    /// back at its SKU.
    async fn claim_all(&self, claims: Vec<HoldClaim>) -> Result<Vec<Claim>> {
        let now = Date::now().as_millis();
        let mut ledgers: HashMap<BuyerId, LiveHolds> = HashMap::new();
        let mut answers = Vec::with_capacity(claims.len());
        for c in &claims {
            if !ledgers.contains_key(&c.buyer) {
                let live = self.get(&format!("holds:{}", c.buyer))?.unwrap_or_default();
                ledgers.insert(c.buyer.clone(), live);
            }
            let live = ledgers.get_mut(&c.buyer).expect("inserted above");
            answers.push(live.claim(c.hold.clone(), now, c.max));
        }
        for (buyer, live) in &ledgers {
            self.put(&format!("holds:{buyer}"), live)?;
        }
        for (c, answer) in claims.iter().zip(answers.iter_mut()) {
            if !matches!(answer, Claim::Over { .. }) {
                continue;
            }
            let key = format!("holds:{}", c.buyer);
            let mut live: LiveHolds = self.get(&key)?.unwrap_or_default();
            let checks = live.seen().map(|h| still_held(&self.env, h));
            let held: Vec<bool> = join_all(checks).await;
            // keep_only asks only about seen holds, in the same order.
            let mut still = held.into_iter();
            live.keep_only(|_| still.next().unwrap_or(true));
            *answer = live.claim(c.hold.clone(), now, c.max);
            self.put(&key, &live)?;
            if matches!(answer, Claim::Over { .. }) && c.moment == Moment::After && !c.hold.unseen {
                give_back(&self.env, &c.hold).await;
            }
        }
        Ok(answers)
    }

    fn handle(&self, call: RiskCall) -> Result<HttpReply> {
        let ok = || HttpReply::json(200, json!({ "ok": true }));
        match call {
            RiskCall::ClaimHolds { .. } => Err(worker::Error::RustError(
                "claims are handled by claim()".into(),
            )),
            RiskCall::ForgetHold { buyer, hold } => {
                let key = format!("holds:{buyer}");
                let mut live: LiveHolds = self.get(&key)?.unwrap_or_default();
                live.forget(&hold);
                self.put(&key, &live)?;
                Ok(ok())
            }
            RiskCall::Observe { seen } => {
                let mut history: History = self.get("history")?.unwrap_or_default();
                history.note(seen);
                self.put("history", &history)?;
                Ok(HttpReply::json(200, serde_json::to_value(&history)?))
            }
            RiskCall::Expired { at_ms } => {
                let mut history: History = self.get("history")?.unwrap_or_default();
                history.note_expired(at_ms);
                self.put("history", &history)?;
                Ok(ok())
            }
            RiskCall::Rules => {
                let set: RuleSet = self.get("rules")?.unwrap_or_else(RuleSet::defaults);
                Ok(HttpReply::json(200, serde_json::to_value(&set)?))
            }
            RiskCall::PutRules { body } => {
                let current: RuleSet = self.get("rules")?.unwrap_or_else(RuleSet::defaults);
                match RuleSet::parse(body.as_bytes(), current.version + 1) {
                    Ok(set) => {
                        self.put("rules", &set)?;
                        Ok(HttpReply::json(200, serde_json::to_value(&set)?))
                    }
                    Err(e) => Ok(ApiError::InvalidBody(e.0).to_reply()),
                }
            }
            RiskCall::Review { order, entry } => {
                self.schema()?;
                let sql = self.state.storage().sql();
                sql.exec(
                    "INSERT INTO reviews (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    vec![
                        SqlStorageValue::String(order.to_string()),
                        SqlStorageValue::String(entry.to_string()),
                    ],
                )?;
                sql.exec(
                    "DELETE FROM reviews WHERE seq <= (SELECT max(seq) FROM reviews) - ?",
                    vec![SqlStorageValue::Integer(REVIEWS_MAX)],
                )?;
                Ok(ok())
            }
            RiskCall::Reviewed { order } => {
                if self.has_schema()? {
                    self.state.storage().sql().exec(
                        "DELETE FROM reviews WHERE id = ?",
                        vec![SqlStorageValue::String(order.to_string())],
                    )?;
                }
                Ok(ok())
            }
            RiskCall::Reviews { limit } => {
                let entries: Vec<Value> = if self.has_schema()? {
                    let rows: Vec<Body> = self
                        .state
                        .storage()
                        .sql()
                        .exec(
                            "SELECT body FROM reviews ORDER BY seq LIMIT ?",
                            vec![SqlStorageValue::Integer(limit as i64)],
                        )?
                        .to_array()?;
                    rows.iter()
                        .map(|r| serde_json::from_str(&r.body).unwrap_or(Value::Null))
                        .collect()
                } else {
                    Vec::new()
                };
                Ok(HttpReply::json(200, json!({ "orders": entries })))
            }
        }
    }
}

/// Whether the hold's SKU still holds it (a failed question counts as yes:
/// the cap errs on the side of the other buyers).
async fn still_held(env: &Env, hold: &LiveHold) -> bool {
    let call = SkuCall {
        sku: hold.sku.clone(),
        bucket: None,
        buyer: None,
        op: SkuOp::GetHold {
            hold: hold.hold.clone(),
            caller: Actor::System,
        },
    };
    let answer = async {
        let mut response = SkuClient::new(env, &hold.sku)?.call(&call).await?;
        let body: Value = response.json().await?;
        Ok::<_, worker::Error>((response.status_code(), body))
    };
    match answer.await {
        Ok((200, body)) => body["status"] == "held",
        Ok((404, _)) => false,
        _ => true,
    }
}

/// Releases a hold taken past the cap (a burst that beat the edge's note).
async fn give_back(env: &Env, hold: &LiveHold) {
    let call = SkuCall {
        sku: hold.sku.clone(),
        bucket: None,
        buyer: None,
        op: SkuOp::Step {
            request: StockRequest {
                key: None,
                fingerprint: String::new(),
                actor: Actor::System,
                command: Command::Release {
                    hold: hold.hold.clone(),
                },
            },
        },
    };
    let released = async { SkuClient::new(env, &hold.sku)?.call(&call).await };
    match released.await {
        Ok(r) if r.status_code() == 200 => {}
        Ok(r) => console_error!(
            "hold cap: releasing {} answered {}",
            hold.hold,
            r.status_code()
        ),
        Err(e) => console_error!("hold cap: releasing {}: {e}", hold.hold),
    }
}
