//! The channel object, in two roles by name: the **registry** (`registry`:
//! the connected platforms and their credentials) and a channel's **sync
//! queues** (`sync:<channel>#<k>`: the latest number of each of its SKUs,
//! pushed by the alarm through the platform's adapter, at most the queue's
//! share of the channel's rate each second, retried with backoff, each
//! push logged). The rules are `domain::channel_sync`'s.

use super::channels::{self, ChannelCall, Offer, SHARDS};
use super::http::to_response;
use super::txn::{Atomic, Statement, Tables};
use crate::api::{ApiError, HttpReply};
use crate::channels::{Credentials, StockUpdate};
use crate::domain::channel_sync::{share_per_s, ChannelConfig, SyncLog, Target, LOG_KEPT};
use crate::domain::types::Channel;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cell::Cell;
use std::time::Duration;
use worker::{
    console_error, durable_object, js_sys, Date, Delay, DurableObject, Env, Fetch, Headers, Method,
    Request, RequestInit, Response, Result, ScheduledTime, SqlStorageValue, State,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS config (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets (sku TEXT PRIMARY KEY, due_at INTEGER NOT NULL, pending INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sync_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exceptions (seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
";

/// Pushes one alarm run sends at most (then it re-arms).
const PUSHES_PER_RUN: u64 = 100;
/// A push with no answer after this long is a failure.
const PUSH_TIMEOUT_MS: u64 = 10_000;

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
    console_error!("channel object: {e}");
    ApiError::Internal
}

fn jitter() -> f64 {
    let mut raw = [0u8; 2];
    match getrandom::fill(&mut raw) {
        Ok(()) => f64::from(u16::from_le_bytes(raw)) / 65_536.0,
        Err(_) => 0.5,
    }
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

/// A channel as the merchant sees it: no secret, no token.
pub fn public(c: &ChannelConfig) -> Value {
    json!({
        "channel": c.channel,
        "platform": c.platform,
        "app_key": c.app_key,
        "sync_url": c.sync_url,
        "rate_per_s": c.rate_per_s,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}

fn target_json(t: &Target) -> Value {
    json!({
        "sku": t.sku,
        "quantity": t.quantity,
        "version": t.version,
        "pending": t.pending(),
        "synced_quantity": t.synced.map(|s| s.quantity),
        "synced_version": t.synced.map(|s| s.version),
        "synced_at": t.synced.map(|s| s.at),
        "attempts": t.attempts,
        "next_try_at": t.pending().then_some(t.due_at),
        "last_error": t.last_error,
    })
}

#[durable_object]
pub struct ChannelObject {
    state: State,
    atomic: Atomic,
    env: Env,
    tables: Tables,
    /// As a sync queue: the earliest time the next push may go (the rate
    /// limit; in memory, so after an eviction the first push goes at once).
    next_slot: Cell<u64>,
}

impl DurableObject for ChannelObject {
    fn new(state: State, env: Env) -> Self {
        let tables = Tables::detect(&state.storage().sql(), "targets", SCHEMA)
            .unwrap_or_else(|_| Tables::unknown(SCHEMA));
        let (state, atomic) = Atomic::from_state(state);
        ChannelObject {
            state,
            atomic,
            env,
            tables,
            next_slot: Cell::new(0),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<ChannelCall>().await {
            Ok(call) => self.handle(call).await.unwrap_or_else(|e| e.to_reply()),
            Err(e) => {
                console_error!("channel object: unreadable call: {e}");
                ApiError::Internal.to_reply()
            }
        };
        to_response(&reply)
    }

    async fn alarm(&self) -> Result<Response> {
        if let Err(e) = self.push_due().await {
            self.arm_at(now_ms() + 5_000).await;
            return Err(worker::Error::RustError(format!("sync alarm: {e:?}")));
        }
        Response::ok("")
    }
}

impl ChannelObject {
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

    fn configs(&self) -> std::result::Result<Vec<ChannelConfig>, ApiError> {
        let rows: Vec<Row> = self.rows("SELECT body FROM channels ORDER BY name", vec![])?;
        rows.iter()
            .map(|r| serde_json::from_str(&r.body).map_err(internal))
            .collect()
    }

    fn config(&self, channel: &Channel) -> std::result::Result<ChannelConfig, ApiError> {
        self.configs()?
            .into_iter()
            .find(|c| c.channel == *channel)
            .ok_or(ApiError::ChannelNotFound)
    }

    fn target(&self, sku: &str) -> std::result::Result<Option<Target>, ApiError> {
        let rows: Vec<Row> =
            self.rows("SELECT body FROM targets WHERE sku = ?", vec![text(sku)])?;
        rows.first()
            .map(|r| serde_json::from_str(&r.body).map_err(internal))
            .transpose()
    }

    async fn handle(&self, call: ChannelCall) -> std::result::Result<HttpReply, ApiError> {
        match call {
            ChannelCall::Put { mut config } => {
                let existing = self.config(&config.channel).ok();
                let created = existing.is_none();
                if let Some(old) = existing {
                    config.created_at = old.created_at;
                    // An absent secret or token keeps the current one.
                    if config.secret.is_empty() {
                        config.secret = old.secret;
                    }
                    if config.access_token.is_empty() {
                        config.access_token = old.access_token;
                    }
                }
                if config.secret.is_empty() {
                    return Err(ApiError::InvalidBody(
                        "secret is required when a channel is connected".into(),
                    ));
                }
                let body = serde_json::to_string(&config).map_err(internal)?;
                self.write(vec![(
                    "INSERT OR REPLACE INTO channels (name, body) VALUES (?, ?)",
                    vec![text(config.channel.as_str()), text(body)],
                )])?;
                Ok(HttpReply::json(
                    if created { 201 } else { 200 },
                    public(&config),
                ))
            }
            ChannelCall::List => {
                let list: Vec<Value> = self.configs()?.iter().map(public).collect();
                Ok(HttpReply::json(200, json!({ "channels": list })))
            }
            ChannelCall::Get { channel } => {
                Ok(HttpReply::json(200, public(&self.config(&channel)?)))
            }
            ChannelCall::Configs => Ok(HttpReply::json(
                200,
                serde_json::to_value(self.configs()?).map_err(internal)?,
            )),
            ChannelCall::Delete { channel } => {
                let config = self.config(&channel)?;
                self.write(vec![(
                    "DELETE FROM channels WHERE name = ?",
                    vec![text(channel.as_str())],
                )])?;
                let forget = (0..SHARDS).map(|k| {
                    let name = channels::queue_name(&channel, k);
                    async move { channels::call(&self.env, &name, &ChannelCall::Forget).await }
                });
                for answer in futures_util::future::join_all(forget).await {
                    if let Err(e) = answer {
                        console_error!(
                            "channel registry: {channel}: a queue missed the disconnect: {e}"
                        );
                    }
                }
                Ok(HttpReply::json(200, public(&config)))
            }
            ChannelCall::Offer { config, offers } => {
                let now = now_ms();
                let mut writes: Vec<Statement> = vec![(
                    "INSERT OR REPLACE INTO config (id, body) VALUES (1, ?)",
                    vec![text(serde_json::to_string(&config).map_err(internal)?)],
                )];
                for Offer {
                    sku,
                    quantity,
                    version,
                } in offers
                {
                    let target = match self.target(sku.as_str())? {
                        Some(mut t) => {
                            if !t.offer(quantity, version) {
                                continue;
                            }
                            t
                        }
                        None => Target::new(sku, quantity, version, now),
                    };
                    writes.push(save_target(&target)?);
                }
                self.write(writes)?;
                self.arm(now.max(self.next_slot.get())).await;
                Ok(HttpReply::json(200, json!({ "offered": true })))
            }
            ChannelCall::Status { limit } => {
                let targets: Vec<Row> =
                    self.rows("SELECT body FROM targets ORDER BY sku", vec![])?;
                let targets: Vec<Value> = targets
                    .iter()
                    .filter_map(|r| serde_json::from_str::<Target>(&r.body).ok())
                    .map(|t| target_json(&t))
                    .collect();
                let log: Vec<SeqRow> = self.rows(
                    "SELECT seq, body FROM sync_log ORDER BY seq DESC LIMIT ?",
                    vec![int(limit as u64)],
                )?;
                let log: Vec<Value> = log
                    .iter()
                    .filter_map(|r| {
                        let mut v: Value = serde_json::from_str(&r.body).ok()?;
                        v["seq"] = json!(r.seq);
                        Some(v)
                    })
                    .collect();
                let exceptions: Vec<SeqRow> = self.rows(
                    "SELECT seq, body FROM exceptions ORDER BY seq DESC LIMIT ?",
                    vec![int(limit as u64)],
                )?;
                let exceptions: Vec<Value> = exceptions
                    .iter()
                    .filter_map(|r| serde_json::from_str(&r.body).ok())
                    .collect();
                Ok(HttpReply::json(
                    200,
                    json!({ "targets": targets, "log": log, "exceptions": exceptions }),
                ))
            }
            ChannelCall::Exception { exception } => {
                self.write(vec![
                    // One row per order, however often its messages repeat.
                    (
                        "INSERT OR IGNORE INTO exceptions (order_id, body) VALUES (?, ?)",
                        vec![
                            text(exception["order"].as_str().unwrap_or("")),
                            text(exception.to_string()),
                        ],
                    ),
                    (
                        "DELETE FROM exceptions WHERE seq < (SELECT MAX(seq) FROM exceptions) - ?",
                        vec![int(LOG_KEPT)],
                    ),
                ])?;
                Ok(HttpReply::json(200, json!({ "recorded": true })))
            }
            ChannelCall::Forget => {
                if self.tables.made() {
                    self.write(vec![
                        ("DELETE FROM config", vec![]),
                        ("UPDATE targets SET pending = 0", vec![]),
                    ])?;
                }
                Ok(HttpReply::json(200, json!({ "forgotten": true })))
            }
        }
    }

    /// Pushes what is due, oldest due first, one push per slot of this
    /// queue's share of the channel's rate (slots are kept across alarm
    /// runs, so offers arriving between runs cannot make a burst); then
    /// points the alarm at the next slot or the next due try.
    async fn push_due(&self) -> std::result::Result<(), ApiError> {
        let config: Option<ChannelConfig> = self
            .rows::<Row>("SELECT body FROM config WHERE id = 1", vec![])?
            .first()
            .and_then(|r| serde_json::from_str(&r.body).ok());
        let Some(config) = config else {
            return Ok(());
        };
        let Some(base_url) = config.sync_url.clone() else {
            return Ok(());
        };
        let interval = 1_000 / u64::from(share_per_s(config.rate_per_s, SHARDS)).max(1);
        let due: Vec<Row> = self.rows(
            "SELECT body FROM targets WHERE pending = 1 ORDER BY due_at LIMIT ?",
            vec![int(PUSHES_PER_RUN)],
        )?;
        let mut next: Option<u64> = None;
        for row in &due {
            let Ok(target) = serde_json::from_str::<Target>(&row.body) else {
                continue;
            };
            let now = now_ms();
            if target.due_at > now {
                next = Some(target.due_at.max(self.next_slot.get()));
                break;
            }
            if self.next_slot.get() > now {
                next = Some(self.next_slot.get());
                break;
            }
            self.next_slot.set(now + interval);
            let pushed = (target.quantity, target.version);
            let log = self.push_once(&config, &base_url, &target).await;
            // The target may have been offered a newer number meanwhile.
            let mut current = self.target(target.sku.as_str())?.unwrap_or(target);
            let outcome = if log.ok {
                Ok(())
            } else {
                Err(log.error.clone().unwrap_or_else(|| "failed".into()))
            };
            current.record(pushed, outcome, now_ms(), jitter());
            let failed = !log.ok;
            self.write(vec![
                save_target(&current)?,
                (
                    "INSERT INTO sync_log (body) VALUES (?)",
                    vec![text(serde_json::to_string(&log).map_err(internal)?)],
                ),
                (
                    "DELETE FROM sync_log WHERE seq < (SELECT MAX(seq) FROM sync_log) - ?",
                    vec![int(LOG_KEPT)],
                ),
            ])?;
            if failed {
                // The platform is failing: the rest wait for this backoff.
                next = Some(current.due_at);
                break;
            }
        }
        if next.is_none() {
            let rows: Vec<DueRow> = self.rows(
                "SELECT due_at FROM targets WHERE pending = 1 ORDER BY due_at LIMIT 1",
                vec![],
            )?;
            next = rows
                .first()
                .map(|r| (r.due_at.max(0) as u64).max(self.next_slot.get()));
        }
        if let Some(at) = next {
            self.arm_at(at).await;
        }
        Ok(())
    }

    async fn push_once(&self, config: &ChannelConfig, base_url: &str, target: &Target) -> SyncLog {
        let started = now_ms();
        let idempotent_id = target.idempotent_id();
        let creds = Credentials {
            app_key: &config.app_key,
            secret: config.secret.as_bytes(),
            access_token: &config.access_token,
        };
        let adapter = config.platform.adapter();
        let push = adapter.push(
            &creds,
            base_url,
            &StockUpdate {
                sku: &target.sku,
                quantity: target.quantity,
                idempotent_id: &idempotent_id,
                now_s: started / 1000,
            },
        );
        let mut log = SyncLog {
            at: started,
            sku: target.sku.clone(),
            quantity: target.quantity,
            version: target.version,
            idempotent_id,
            ok: false,
            status: None,
            error: None,
            ms: 0,
        };
        let request = (|| -> Result<Request> {
            let headers = Headers::new();
            headers.set("Content-Type", &push.content_type)?;
            headers.set("User-Agent", "edgestock-sync/1")?;
            for (name, value) in &push.headers {
                headers.set(name, value)?;
            }
            let mut init = RequestInit::new();
            init.with_method(Method::Post)
                .with_headers(headers)
                .with_body(Some(push.body.clone().into()));
            Request::new_with_init(&push.url, &init)
        })();
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                log.error = Some(e.to_string());
                return log;
            }
        };
        let sent = Box::pin(async move {
            let mut response = Fetch::Request(request).send().await?;
            let status = response.status_code();
            let body = response.text().await.unwrap_or_default();
            Ok::<_, worker::Error>((status, body))
        });
        let timer = Box::pin(Delay::from(Duration::from_millis(PUSH_TIMEOUT_MS)));
        match futures_util::future::select(sent, timer).await {
            futures_util::future::Either::Left((Ok((status, body)), _)) => {
                log.status = Some(status);
                match adapter.pushed(status, &body) {
                    Ok(()) => log.ok = true,
                    Err(e) => log.error = Some(e),
                }
            }
            futures_util::future::Either::Left((Err(e), _)) => log.error = Some(e.to_string()),
            futures_util::future::Either::Right(_) => {
                log.error = Some(format!("no answer within {PUSH_TIMEOUT_MS} ms"))
            }
        }
        log.ms = now_ms().saturating_sub(started);
        log
    }

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
        let date = js_sys::Date::new(&(at as f64).into());
        if let Err(e) = self
            .state
            .storage()
            .set_alarm(ScheduledTime::new(date))
            .await
        {
            console_error!("channel object: setting the alarm failed: {e}");
        }
    }
}

#[derive(Deserialize)]
struct DueRow {
    due_at: i64,
}

fn save_target(t: &Target) -> std::result::Result<Statement, ApiError> {
    Ok((
        "INSERT OR REPLACE INTO targets (sku, due_at, pending, body) VALUES (?, ?, ?, ?)",
        vec![
            text(t.sku.as_str()),
            int(t.due_at),
            int(u64::from(t.pending())),
            text(serde_json::to_string(t).map_err(internal)?),
        ],
    ))
}
