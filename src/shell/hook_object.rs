//! The hook object, in two roles by name: the **registry** (`registry`:
//! the merchant's endpoints) and an endpoint's **delivery queues**
//! (`<endpoint>#<k>`: notices queued for it, delivered by the alarm,
//! signed, retried with backoff and jitter for a day, then dead-lettered,
//! each try logged). A queue delivers one source's notices in the order
//! they were queued: while one waits for a retry, that source's later ones
//! wait behind it; other sources go on.

use super::hooks::{self, HookCall};
use super::http::to_response;
use super::txn::{Atomic, Statement, Tables};
use crate::api::session::sign_body;
use crate::api::{ApiError, HttpReply};
use crate::domain::notice::{Attempt, Delivery, DeliveryState, Endpoint, EndpointId, Health};
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::HashSet;
use std::time::Duration;
use worker::{
    console_error, durable_object, js_sys, Date, Delay, DurableObject, Env, Fetch, Headers, Method,
    Request, RequestInit, Response, Result, ScheduledTime, SqlStorageValue, State,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS endpoints (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoint (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL UNIQUE, state TEXT NOT NULL, next_at INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, seq);
";

/// What a queue's endpoint row holds once its endpoint is deleted.
const FORGOTTEN: &str = "forgotten";
/// Deliveries a queue keeps once delivered (the newest); older ones go.
const DELIVERED_KEPT: u64 = 10_000;
/// Tries per alarm run: a long backlog is worked through over several
/// runs, each re-armed at once.
const TRIES_PER_RUN: usize = 50;
/// A try that has no answer after this long is a failure (a timeout).
fn timeout_ms(env: &Env) -> u64 {
    env.var("WEBHOOK_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.to_string().parse::<u64>().ok())
        .filter(|n| (100..=60_000).contains(n))
        .unwrap_or(10_000)
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

fn text(s: impl Into<String>) -> SqlStorageValue {
    SqlStorageValue::String(s.into())
}

fn int(n: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(n.min(i64::MAX as u64) as i64)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    console_error!("hook object: {e}");
    ApiError::Internal
}

#[derive(Deserialize)]
struct Row {
    body: String,
}

#[derive(Deserialize)]
struct SeqRow {
    seq: i64,
    body: String,
}

/// An endpoint as the merchant sees it after creation: no secret.
fn public(endpoint: &Endpoint) -> Value {
    json!({
        "id": endpoint.id,
        "url": endpoint.url,
        "events": endpoint.events,
        "created_at": endpoint.created_at,
    })
}

fn delivery_json(seq: i64, d: &Delivery) -> Value {
    json!({
        "seq": seq,
        "event": d.notice.id,
        "type": d.notice.kind,
        "source": d.notice.source,
        "created_at": d.notice.created_at,
        "state": d.state,
        "attempts": d.attempts,
        "next_retry_at": d.next_at.filter(|_| d.state == DeliveryState::Pending),
        "queued_at": d.queued_at,
        "log": d.log,
    })
}

/// A number in [0, 1) for retry jitter.
fn jitter() -> f64 {
    let mut raw = [0u8; 2];
    match getrandom::fill(&mut raw) {
        Ok(()) => f64::from(u16::from_le_bytes(raw)) / 65_536.0,
        Err(_) => 0.5,
    }
}

fn random_hex(bytes: usize) -> std::result::Result<String, ApiError> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|_| ApiError::Internal)?;
    Ok(crate::domain::types::hex(&raw))
}

#[durable_object]
pub struct HookObject {
    state: State,
    atomic: Atomic,
    env: Env,
    tables: Tables,
    /// As a queue: its endpoint's recent failures (in memory: after an
    /// eviction the first due try simply runs).
    health: Cell<Health>,
    /// A delivery run is under way, and something was queued or resent
    /// during it: the run ends by arming the alarm at once, not at its
    /// own next retry (which could be an hour out).
    running: Cell<bool>,
    kicked: Cell<bool>,
}

impl DurableObject for HookObject {
    fn new(state: State, env: Env) -> Self {
        let tables = Tables::detect(&state.storage().sql(), "deliveries", SCHEMA)
            .unwrap_or_else(|_| Tables::unknown(SCHEMA));
        let (state, atomic) = Atomic::from_state(state);
        HookObject {
            state,
            atomic,
            env,
            tables,
            health: Cell::new(Health::default()),
            running: Cell::new(false),
            kicked: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<HookCall>().await {
            Ok(call) => self.handle(call).await.unwrap_or_else(|e| e.to_reply()),
            Err(e) => {
                console_error!("hook object: unreadable call: {e}");
                ApiError::Internal.to_reply()
            }
        };
        to_response(&reply)
    }

    async fn alarm(&self) -> Result<Response> {
        self.running.set(true);
        self.kicked.set(false);
        let delivered = self.deliver().await;
        self.running.set(false);
        if self.kicked.replace(false) {
            self.arm_at(now_ms()).await;
        }
        if let Err(e) = delivered {
            // Re-armed soon; the runtime retries a failed alarm as well.
            self.arm(now_ms() + 5_000).await;
            return Err(worker::Error::RustError(format!("hook alarm: {e:?}")));
        }
        Response::ok("")
    }
}

impl HookObject {
    fn write(&self, writes: Vec<Statement>) -> std::result::Result<(), ApiError> {
        self.tables.write(&self.atomic, writes).map_err(internal)
    }

    fn rows<T: for<'de> Deserialize<'de>>(
        &self,
        query: &str,
        args: Vec<SqlStorageValue>,
    ) -> std::result::Result<Vec<T>, ApiError> {
        if !self.tables.made() {
            return Ok(Vec::new());
        }
        self.state
            .storage()
            .sql()
            .exec(query, args)
            .and_then(|c| c.to_array())
            .map_err(internal)
    }

    fn endpoints(&self) -> std::result::Result<Vec<Endpoint>, ApiError> {
        let rows: Vec<Row> = self.rows("SELECT body FROM endpoints", vec![])?;
        let mut list: Vec<Endpoint> = rows
            .iter()
            .map(|r| serde_json::from_str(&r.body).map_err(internal))
            .collect::<std::result::Result<_, _>>()?;
        list.sort_by_key(|e| e.created_at);
        Ok(list)
    }

    fn endpoint(&self, id: &EndpointId) -> std::result::Result<Endpoint, ApiError> {
        self.endpoints()?
            .into_iter()
            .find(|e| e.id == *id)
            .ok_or(ApiError::WebhookNotFound)
    }

    async fn handle(&self, call: HookCall) -> std::result::Result<HttpReply, ApiError> {
        match call {
            HookCall::Create { url, events } => {
                let mut id = [0u8; 16];
                getrandom::fill(&mut id).map_err(|_| ApiError::Internal)?;
                let endpoint = Endpoint {
                    id: EndpointId::from_random(id),
                    url,
                    events,
                    secret: format!("whsec_{}", random_hex(32)?),
                    created_at: now_ms(),
                };
                let body = serde_json::to_string(&endpoint).map_err(internal)?;
                self.write(vec![(
                    "INSERT INTO endpoints (id, body) VALUES (?, ?)",
                    vec![text(endpoint.id.as_str()), text(body)],
                )])?;
                // The only time the secret is shown.
                let mut shown = public(&endpoint);
                shown["secret"] = json!(endpoint.secret);
                Ok(HttpReply::json(201, shown))
            }
            HookCall::List => {
                let list: Vec<Value> = self.endpoints()?.iter().map(public).collect();
                Ok(HttpReply::json(200, json!({ "endpoints": list })))
            }
            HookCall::Get { id } => Ok(HttpReply::json(200, public(&self.endpoint(&id)?))),
            HookCall::Endpoints => Ok(HttpReply::json(
                200,
                serde_json::to_value(self.endpoints()?).map_err(internal)?,
            )),
            HookCall::Delete { id } => {
                let endpoint = self.endpoint(&id)?;
                self.write(vec![(
                    "DELETE FROM endpoints WHERE id = ?",
                    vec![text(id.as_str())],
                )])?;
                let shards = hooks::shards(&self.env);
                let forget = (0..shards).map(|k| {
                    let name = hooks::queue_name(&id, k);
                    async move { hooks::call(&self.env, &name, &HookCall::Forget).await }
                });
                for answer in futures_util::future::join_all(forget).await {
                    if let Err(e) = answer {
                        console_error!("hook registry: {id}: a queue missed the deletion: {e}");
                    }
                }
                Ok(HttpReply::json(200, public(&endpoint)))
            }
            HookCall::Enqueue { endpoint, notices } => {
                let forgotten = self
                    .rows::<Row>("SELECT body FROM endpoint WHERE id = 1", vec![])?
                    .first()
                    .is_some_and(|r| r.body == FORGOTTEN);
                if forgotten {
                    return Ok(HttpReply::json(200, json!({ "queued": false })));
                }
                let now = now_ms();
                let mut writes: Vec<Statement> = vec![(
                    "INSERT OR REPLACE INTO endpoint (id, body) VALUES (1, ?)",
                    vec![text(serde_json::to_string(&endpoint).map_err(internal)?)],
                )];
                for notice in notices {
                    let event = notice.id.clone();
                    let delivery = Delivery::new(notice, now);
                    writes.push((
                        "INSERT OR IGNORE INTO deliveries (event, state, next_at, body) VALUES (?, ?, ?, ?)",
                        vec![
                            text(event),
                            text(DeliveryState::Pending.as_str()),
                            int(now),
                            text(serde_json::to_string(&delivery).map_err(internal)?),
                        ],
                    ));
                }
                writes.push((
                    "DELETE FROM deliveries WHERE state = ? AND seq < (SELECT MAX(seq) FROM deliveries) - ?",
                    vec![text(DeliveryState::Delivered.as_str()), int(DELIVERED_KEPT)],
                ));
                self.write(writes)?;
                if self.running.get() {
                    self.kicked.set(true);
                }
                self.arm(now).await;
                Ok(HttpReply::json(200, json!({ "queued": true })))
            }
            HookCall::Deliveries { limit, state } => {
                let rows: Vec<SeqRow> = match state {
                    Some(state) => self.rows(
                        "SELECT seq, body FROM deliveries WHERE state = ? ORDER BY seq DESC LIMIT ?",
                        vec![text(state.as_str()), int(limit as u64)],
                    )?,
                    None => self.rows(
                        "SELECT seq, body FROM deliveries ORDER BY seq DESC LIMIT ?",
                        vec![int(limit as u64)],
                    )?,
                };
                let list: Vec<Value> = rows
                    .iter()
                    .filter_map(|r| {
                        let d: Delivery = serde_json::from_str(&r.body).ok()?;
                        Some(delivery_json(r.seq, &d))
                    })
                    .collect();
                Ok(HttpReply::json(200, json!({ "deliveries": list })))
            }
            HookCall::Resend { event } => {
                let rows: Vec<SeqRow> = self.rows(
                    "SELECT seq, body FROM deliveries WHERE event = ?",
                    vec![text(event)],
                )?;
                let row = rows.first().ok_or(ApiError::DeliveryNotFound)?;
                let mut delivery: Delivery = serde_json::from_str(&row.body).map_err(internal)?;
                let now = now_ms();
                delivery.resend(now);
                self.save(row.seq, &delivery)?;
                if self.running.get() {
                    self.kicked.set(true);
                }
                self.arm(now).await;
                Ok(HttpReply::json(200, delivery_json(row.seq, &delivery)))
            }
            HookCall::Forget => {
                let pending: Vec<SeqRow> = self.rows(
                    "SELECT seq, body FROM deliveries WHERE state = ?",
                    vec![text(DeliveryState::Pending.as_str())],
                )?;
                let now = now_ms();
                // A mark, not a delete: a hand-off from an isolate whose
                // cache still lists the endpoint must not bring it back.
                let mut writes: Vec<Statement> = vec![(
                    "INSERT OR REPLACE INTO endpoint (id, body) VALUES (1, ?)",
                    vec![text(FORGOTTEN)],
                )];
                for row in pending {
                    let Ok(mut d) = serde_json::from_str::<Delivery>(&row.body) else {
                        continue;
                    };
                    d.state = DeliveryState::Dead;
                    d.next_at = None;
                    d.log.push(Attempt {
                        at: now,
                        status: None,
                        error: Some("the endpoint was deleted".into()),
                        ms: 0,
                    });
                    writes.extend(save_writes(row.seq, &d)?);
                }
                self.write(writes)?;
                Ok(HttpReply::json(200, json!({ "forgotten": true })))
            }
        }
    }

    fn save(&self, seq: i64, delivery: &Delivery) -> std::result::Result<(), ApiError> {
        self.write(save_writes(seq, delivery)?)
    }

    /// Tries what is due, oldest first, one source's notices in order; then
    /// points the alarm at the next retry.
    async fn deliver(&self) -> std::result::Result<(), ApiError> {
        let endpoint: Option<Endpoint> = self
            .rows::<Row>("SELECT body FROM endpoint WHERE id = 1", vec![])?
            .first()
            .and_then(|r| serde_json::from_str(&r.body).ok());
        let Some(endpoint) = endpoint else {
            return Ok(());
        };
        let pending: Vec<SeqRow> = self.rows(
            "SELECT seq, body FROM deliveries WHERE state = ? ORDER BY seq LIMIT 500",
            vec![text(DeliveryState::Pending.as_str())],
        )?;
        let mut waiting: HashSet<String> = HashSet::new();
        let mut tried = 0;
        let mut next: Option<u64> = None;
        for row in pending {
            let Ok(mut delivery) = serde_json::from_str::<Delivery>(&row.body) else {
                continue;
            };
            let source = delivery.notice.source.clone();
            if waiting.contains(&source) {
                continue;
            }
            let now = now_ms();
            if delivery.give_up_if_old(now) {
                self.save(row.seq, &delivery)?;
                continue;
            }
            // The endpoint failed lately: nothing goes until its pause ends.
            let paused_until = self.health.get().paused_until;
            let due = delivery.next_at.unwrap_or(0).max(paused_until);
            if due > now || tried >= TRIES_PER_RUN {
                waiting.insert(source);
                next = Some(next.map_or(due, |n: u64| n.min(due)));
                continue;
            }
            tried += 1;
            let attempt = self.try_once(&endpoint, &delivery).await;
            // The endpoint may have been deleted (its deliveries dead) or
            // the delivery resent while this try was out: the stored row
            // wins over this run's copy.
            let still: Vec<SeqRow> = self.rows(
                "SELECT seq, body FROM deliveries WHERE seq = ? AND state = ?",
                vec![
                    SqlStorageValue::Integer(row.seq),
                    text(DeliveryState::Pending.as_str()),
                ],
            )?;
            let gone = self
                .rows::<Row>("SELECT body FROM endpoint WHERE id = 1", vec![])?
                .first()
                .and_then(|r| serde_json::from_str::<Endpoint>(&r.body).ok())
                .is_none();
            if gone {
                return Ok(());
            }
            if still.first().is_none_or(|r| r.body != row.body) {
                continue;
            }
            let ok = attempt.status.is_some_and(|s| (200..300).contains(&s));
            let jitter = jitter();
            delivery.record(attempt, jitter);
            self.save(row.seq, &delivery)?;
            let mut health = self.health.get();
            health.record(ok, now_ms(), jitter);
            self.health.set(health);
            if let (DeliveryState::Pending, Some(at)) = (delivery.state, delivery.next_at) {
                waiting.insert(source);
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            if !ok {
                // The rest wait for the pause (the loop ends the run).
                next = Some(next.map_or(health.paused_until, |n| n.max(health.paused_until)));
                break;
            }
        }
        if let Some(at) = next {
            // In the alarm: set, whatever the runtime says is pending.
            self.arm_at(at).await;
        }
        Ok(())
    }

    /// One signed POST of the notice, with a time limit.
    async fn try_once(&self, endpoint: &Endpoint, delivery: &Delivery) -> Attempt {
        let started = now_ms();
        let failed = |error: String| Attempt {
            at: started,
            status: None,
            error: Some(error),
            ms: now_ms().saturating_sub(started),
        };
        let body = match serde_json::to_string(&delivery.notice) {
            Ok(body) => body,
            Err(e) => return failed(e.to_string()),
        };
        let request = (|| -> Result<Request> {
            let headers = Headers::new();
            headers.set("Content-Type", "application/json")?;
            headers.set("User-Agent", "edgestock-webhooks/1")?;
            headers.set("Edgestock-Event-Id", &delivery.notice.id)?;
            headers.set("Edgestock-Event-Type", delivery.notice.kind.as_str())?;
            headers.set(
                "Edgestock-Delivery-Attempt",
                &(delivery.attempts + 1).to_string(),
            )?;
            let signature = sign_body(started / 1000, body.as_bytes(), endpoint.secret.as_bytes());
            headers.set("Edgestock-Signature", &signature)?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post)
                .with_headers(headers)
                .with_body(Some(body.clone().into()));
            Request::new_with_init(&endpoint.url, &init)
        })();
        let request = match request {
            Ok(r) => r,
            Err(e) => return failed(e.to_string()),
        };
        let limit = timeout_ms(&self.env);
        let fetch = Fetch::Request(request);
        let sent = Box::pin(fetch.send());
        let timer = Box::pin(Delay::from(Duration::from_millis(limit)));
        let answer = match futures_util::future::select(sent, timer).await {
            futures_util::future::Either::Left((Ok(response), _)) => Attempt {
                at: started,
                status: Some(response.status_code()),
                error: None,
                ms: now_ms().saturating_sub(started),
            },
            futures_util::future::Either::Left((Err(e), _)) => failed(e.to_string()),
            futures_util::future::Either::Right(_) => {
                failed(format!("no answer within {limit} ms"))
            }
        };
        answer
    }

    /// Asks for the alarm at `at`, unless one is due sooner.
    async fn arm(&self, at: u64) {
        let storage = self.state.storage();
        if let Ok(Some(current)) = storage.get_alarm().await {
            if (current.max(0) as u64) <= at {
                return;
            }
        }
        self.arm_at(at).await;
    }

    async fn arm_at(&self, at: u64) {
        let storage = self.state.storage();
        let date = js_sys::Date::new(&(at as f64).into());
        if let Err(e) = storage.set_alarm(ScheduledTime::new(date)).await {
            console_error!("hook object: setting the alarm failed: {e}");
        }
    }
}

fn save_writes(seq: i64, d: &Delivery) -> std::result::Result<Vec<Statement>, ApiError> {
    Ok(vec![(
        "UPDATE deliveries SET state = ?, next_at = ?, body = ? WHERE seq = ?",
        vec![
            text(d.state.as_str()),
            d.next_at.map_or(SqlStorageValue::Null, int),
            text(serde_json::to_string(d).map_err(internal)?),
            SqlStorageValue::Integer(seq),
        ],
    )])
}
