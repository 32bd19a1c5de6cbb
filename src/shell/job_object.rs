//! A bulk job (`j_<hex>`, one object per job: no global queue): its rows
//! stored with the job in one transaction, worked through by the alarm a
//! chunk at a time (each row one idempotent call to its order, keyed by job
//! and row, so a row run again after an eviction gets its first answer),
//! each result stored as it comes. A bad row is a result; the others go on.

use super::http::to_response;
use super::stubs::{internal_request, FeedClient, OrderCall, OrderClient, OrderOp};
use super::txn::{Atomic, Statement, Tables};
use crate::api::wire::ShipBody;
use crate::api::{ApiError, HttpReply};
use crate::domain::event::{Event, EVENT_VERSION};
use crate::domain::jobs::{classify, JobKind, JobRow, Outcome};
use crate::domain::live::FeedName;
use crate::domain::order::Intent;
use crate::domain::stock::Actor;
use crate::domain::types::{IdempotencyKey, OrderId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{
    console_error, durable_object, js_sys, Date, DurableObject, Env, Request, Response, Result,
    ScheduledTime, SqlStorageValue, State,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS job (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (idx INTEGER PRIMARY KEY, input TEXT NOT NULL, outcome TEXT, detail TEXT, tries INTEGER NOT NULL DEFAULT 0);
";

/// Rows one alarm run works on (then it re-arms at once), and how many go
/// to their orders at a time.
const CHUNK: u64 = 40;
const PARALLEL: usize = 10;
/// A row whose order cannot be reached after this many runs is refused.
const TRIES_MAX: i64 = 8;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobCall {
    Create {
        id: String,
        kind: JobKind,
        reason: Option<String>,
        restock: bool,
        rows: Vec<std::result::Result<JobRow, String>>,
    },
    Status {
        limit: usize,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    kind: JobKind,
    reason: Option<String>,
    restock: bool,
    total: u64,
    created_at: u64,
    finished_at: Option<u64>,
}

pub async fn call(env: &Env, id: &str, call: &JobCall) -> Result<Response> {
    env.durable_object("JOB")?
        .get_by_name(id)?
        .fetch_with_request(internal_request(call)?)
        .await
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_owned())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    console_error!("job object: {e}");
    ApiError::Internal
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

#[derive(Deserialize)]
struct RowState {
    idx: i64,
    input: String,
    outcome: Option<String>,
    detail: Option<String>,
    tries: i64,
}

#[durable_object]
pub struct JobObject {
    state: State,
    atomic: Atomic,
    env: Env,
    tables: Tables,
}

impl DurableObject for JobObject {
    fn new(state: State, env: Env) -> Self {
        let tables = Tables::detect(&state.storage().sql(), "job", SCHEMA)
            .unwrap_or_else(|_| Tables::unknown(SCHEMA));
        let (state, atomic) = Atomic::from_state(state);
        JobObject {
            state,
            atomic,
            env,
            tables,
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<JobCall>().await {
            Ok(call) => self.handle(call).await.unwrap_or_else(|e| e.to_reply()),
            Err(e) => {
                console_error!("job object: unreadable call: {e}");
                ApiError::Internal.to_reply()
            }
        };
        to_response(&reply)
    }

    async fn alarm(&self) -> Result<Response> {
        let worked = self.work().await;
        // Each turn's progress to the job's feed (the console watches it);
        // a viewer who missed one gets the next, or reads GET /api/jobs/{id}.
        if let Err(e) = self.publish_progress().await {
            console_error!("job object: progress not published: {e:?}");
        }
        match worked {
            Ok(true) => self.arm(now_ms()).await,
            Ok(false) => {}
            Err(e) => {
                self.arm(now_ms() + 2_000).await;
                return Err(worker::Error::RustError(format!("job alarm: {e:?}")));
            }
        }
        Response::ok("")
    }
}

impl JobObject {
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

    fn meta(&self) -> std::result::Result<Option<Meta>, ApiError> {
        let rows: Vec<Body> = self.rows("SELECT body FROM job WHERE id = 1", vec![])?;
        rows.first()
            .map(|r| serde_json::from_str(&r.body).map_err(internal))
            .transpose()
    }

    async fn handle(&self, call: JobCall) -> std::result::Result<HttpReply, ApiError> {
        match call {
            JobCall::Create {
                id,
                kind,
                reason,
                restock,
                rows,
            } => {
                if let Some(meta) = self.meta()? {
                    // The same job asked again (a retried upload call).
                    return Ok(HttpReply::json(
                        202,
                        json!({"id": meta.id, "total": meta.total}),
                    ));
                }
                let meta = Meta {
                    id: id.clone(),
                    kind,
                    reason,
                    restock,
                    total: rows.len() as u64,
                    created_at: now_ms(),
                    finished_at: None,
                };
                let mut writes: Vec<Statement> = vec![(
                    "INSERT INTO job (id, body) VALUES (1, ?)",
                    vec![text(&serde_json::to_string(&meta).map_err(internal)?)],
                )];
                for (i, row) in rows.iter().enumerate() {
                    let (input, outcome, detail) = match row {
                        Ok(r) => (serde_json::to_string(r).map_err(internal)?, None, None),
                        Err(why) => ("{}".to_owned(), Some("invalid"), Some(why.clone())),
                    };
                    writes.push((
                        "INSERT INTO rows (idx, input, outcome, detail) VALUES (?, ?, ?, ?)",
                        vec![
                            SqlStorageValue::Integer(i as i64),
                            text(&input),
                            outcome.map_or(SqlStorageValue::Null, text),
                            detail.as_deref().map_or(SqlStorageValue::Null, text),
                        ],
                    ));
                }
                self.tables.write(&self.atomic, writes).map_err(internal)?;
                self.arm(now_ms()).await;
                let mut reply = HttpReply::json(
                    202,
                    json!({"id": id, "kind": kind, "total": meta.total, "state": "running"}),
                );
                reply.headers.push(("Location", format!("/api/jobs/{id}")));
                Ok(reply)
            }
            JobCall::Status { limit } => {
                let meta = self.meta()?.ok_or(ApiError::JobNotFound)?;
                let rows: Vec<RowState> = self.rows(
                    "SELECT idx, input, outcome, detail, tries FROM rows ORDER BY idx",
                    vec![],
                )?;
                let mut counts = serde_json::Map::new();
                let (mut done, mut failed) = (0u64, 0u64);
                let mut results = Vec::new();
                for r in &rows {
                    if let Some(o) = &r.outcome {
                        done += 1;
                        let outcome: Option<Outcome> = serde_json::from_value(json!(o)).ok();
                        if outcome.is_some_and(Outcome::failed) {
                            failed += 1;
                        }
                        let n = counts.get(o).and_then(Value::as_u64).unwrap_or(0);
                        counts.insert(o.clone(), json!(n + 1));
                    }
                    if results.len() < limit {
                        let input: Value = serde_json::from_str(&r.input).unwrap_or_default();
                        results.push(json!({
                            "row": r.idx + 1,
                            "order": input["order"],
                            "outcome": r.outcome,
                            "detail": r.detail,
                        }));
                    }
                }
                Ok(HttpReply::json(
                    200,
                    json!({
                        "id": meta.id,
                        "kind": meta.kind,
                        "total": meta.total,
                        "done": done,
                        "failed": failed,
                        "state": if done == meta.total { "done" } else { "running" },
                        "created_at": meta.created_at,
                        "finished_at": meta.finished_at,
                        "counts": counts,
                        "results": results,
                    }),
                ))
            }
        }
    }

    /// Rows done and failed so far, by one count over the rows.
    fn progress(&self) -> std::result::Result<(u64, u64), ApiError> {
        #[derive(Deserialize)]
        struct Count {
            outcome: Option<String>,
            n: i64,
        }
        let counts: Vec<Count> = self
            .state
            .storage()
            .sql()
            .exec(
                "SELECT outcome, count(*) AS n FROM rows GROUP BY outcome",
                None,
            )
            .and_then(|c| c.to_array())
            .map_err(internal)?;
        let (mut done, mut failed) = (0u64, 0u64);
        for c in counts {
            let Some(o) = c.outcome else { continue };
            let n = c.n.max(0) as u64;
            done += n;
            let outcome: Option<Outcome> = serde_json::from_value(json!(o)).ok();
            if outcome.is_some_and(Outcome::failed) {
                failed += n;
            }
        }
        Ok((done, failed))
    }

    async fn publish_progress(&self) -> std::result::Result<(), ApiError> {
        let Some(meta) = self.meta()? else {
            return Ok(());
        };
        let (done, failed) = self.progress()?;
        let event = Event::Job {
            v: EVENT_VERSION,
            job: meta.id.clone(),
            kind: serde_json::to_value(meta.kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_owned))
                .unwrap_or_default(),
            done,
            total: meta.total,
            failed,
            state: if done == meta.total {
                "done"
            } else {
                "running"
            }
            .to_owned(),
            at_ms: now_ms(),
        };
        // At most a second's wait: a slow feed never holds the job back
        // (a viewer then sees the next turn's progress).
        let feed = FeedName::Job(meta.id);
        let publish = std::pin::pin!(FeedClient::publish(&self.env, &feed, &event));
        let limit = std::pin::pin!(worker::Delay::from(std::time::Duration::from_secs(1)));
        futures_util::future::select(publish, limit).await;
        Ok(())
    }

    /// Works through the next chunk of rows; true when more remain.
    async fn work(&self) -> std::result::Result<bool, ApiError> {
        let Some(mut meta) = self.meta()? else {
            return Ok(false);
        };
        let pending: Vec<RowState> = self.rows(
            "SELECT idx, input, outcome, detail, tries FROM rows WHERE outcome IS NULL ORDER BY idx LIMIT ?",
            vec![SqlStorageValue::Integer(CHUNK as i64)],
        )?;
        if pending.is_empty() {
            if meta.finished_at.is_none() {
                meta.finished_at = Some(now_ms());
                self.tables
                    .write(
                        &self.atomic,
                        vec![(
                            "UPDATE job SET body = ? WHERE id = 1",
                            vec![text(&serde_json::to_string(&meta).map_err(internal)?)],
                        )],
                    )
                    .map_err(internal)?;
            }
            return Ok(false);
        }
        for chunk in pending.chunks(PARALLEL) {
            let runs = chunk.iter().map(|r| self.run_row(&meta, r));
            let outcomes = futures_util::future::join_all(runs).await;
            let mut writes: Vec<Statement> = Vec::new();
            for (r, (outcome, detail)) in chunk.iter().zip(outcomes) {
                let tries = r.tries + 1;
                let outcome = match outcome {
                    Outcome::Retry if tries >= TRIES_MAX => Some(Outcome::Refused),
                    Outcome::Retry => None,
                    o => Some(o),
                };
                writes.push((
                    "UPDATE rows SET outcome = ?, detail = ?, tries = ? WHERE idx = ?",
                    vec![
                        outcome
                            .and_then(|o| serde_json::to_value(o).ok())
                            .and_then(|v| v.as_str().map(text))
                            .unwrap_or(SqlStorageValue::Null),
                        detail.as_deref().map_or(SqlStorageValue::Null, text),
                        SqlStorageValue::Integer(tries),
                        SqlStorageValue::Integer(r.idx),
                    ],
                ));
            }
            self.tables.write(&self.atomic, writes).map_err(internal)?;
        }
        Ok(true)
    }

    /// One row to its order: ship, cancel or refund, keyed by job and row.
    async fn run_row(&self, meta: &Meta, r: &RowState) -> (Outcome, Option<String>) {
        let Ok(row) = serde_json::from_str::<JobRow>(&r.input) else {
            return (Outcome::Invalid, Some("unreadable row".into()));
        };
        let Ok(order) = OrderId::parse(&row.order) else {
            return (
                Outcome::UnknownOrder,
                Some(format!("no order {:?}", row.order)),
            );
        };
        let Ok(key) = IdempotencyKey::parse(&format!("{}-row-{}", meta.id, r.idx)) else {
            return (Outcome::Invalid, None);
        };
        let op = match meta.kind {
            JobKind::Reindex => OrderOp::Reindex,
            JobKind::Ship => {
                let body = ShipBody {
                    carrier: row.carrier.clone(),
                    tracking_number: row.tracking_number.clone(),
                };
                match body.into_change() {
                    Ok(change) => OrderOp::Change {
                        change,
                        actor: Actor::Admin,
                        key: Some(key),
                        fingerprint: format!("job:{}", r.input),
                    },
                    Err(e) => {
                        return (
                            Outcome::Invalid,
                            Some(e.to_reply().body["detail"].to_string()),
                        )
                    }
                }
            }
            JobKind::Cancel | JobKind::Refund => {
                let intent = if meta.kind == JobKind::Cancel {
                    Intent::Cancel {
                        reason: meta.reason.clone(),
                    }
                } else {
                    Intent::Refund {
                        unopened: false,
                        restock: meta.restock,
                        reason: meta.reason.clone(),
                    }
                };
                OrderOp::Transition {
                    intent,
                    actor: Actor::Admin,
                    caller: Actor::Admin,
                    key: Some(key),
                    fingerprint: format!("job:{}", r.input),
                }
            }
        };
        let call = OrderCall {
            order: order.clone(),
            op,
        };
        let answer = match OrderClient::new(&self.env, &order) {
            Ok(client) => client.call(&call).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(mut response) => {
                let status = response.status_code();
                let body: Value = response.json().await.unwrap_or_default();
                let outcome = classify(meta.kind, status, &body);
                let detail = body["detail"].as_str().map(str::to_owned);
                (outcome, detail)
            }
            Err(e) => (Outcome::Retry, Some(e.to_string())),
        }
    }

    async fn arm(&self, at: u64) {
        let date = js_sys::Date::new(&(at as f64).into());
        if let Err(e) = self
            .state
            .storage()
            .set_alarm(ScheduledTime::new(date))
            .await
        {
            console_error!("job object: setting the alarm failed: {e}");
        }
    }
}
