//! The order index's partitions (`hour:<YYYYMMDDHH>`, `room:<room>`): one
//! row per order, upserted by order objects after their reply (a row only
//! moves forward), queried by the router with the merchant's filters and a
//! stable cursor. The rules are `domain::order_index`'s.

use super::http::to_response;
use super::stubs::internal_request;
use crate::api::{ApiError, HttpReply};
use crate::domain::order_index::{Cursor, Filter, IndexRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{
    console_error, durable_object, DurableObject, Env, Request, Response, Result, SqlStorageValue,
    State,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, status TEXT NOT NULL, room TEXT, channel TEXT NOT NULL, buyer TEXT NOT NULL, skus TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS orders_by_time ON orders (created_at, id);
";

/// Externally tagged (no buffering deserializer for an internal shape).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexCall {
    Upsert {
        row: IndexRow,
    },
    Query {
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
        counts: bool,
    },
}

pub async fn call(env: &Env, partition: &str, call: &IndexCall) -> Result<Response> {
    env.durable_object("INDEX")?
        .get_by_name(partition)?
        .fetch_with_request(internal_request(call)?)
        .await
}

/// Lists the order in each of its partitions. Ok only if all took it.
pub async fn upsert(env: &Env, row: &IndexRow) -> Result<()> {
    let calls = row.partitions().into_iter().map(|p| async move {
        let call = IndexCall::Upsert { row: row.clone() };
        (call_checked(env, &p, &call).await, p)
    });
    for (answer, partition) in futures_util::future::join_all(calls).await {
        if let Err(e) = answer {
            return Err(worker::Error::RustError(format!("index {partition}: {e}")));
        }
    }
    Ok(())
}

async fn call_checked(env: &Env, partition: &str, c: &IndexCall) -> Result<()> {
    let r = call(env, partition, c).await?;
    if r.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "answered {}",
            r.status_code()
        )));
    }
    Ok(())
}

#[durable_object]
pub struct IndexObject {
    state: State,
}

#[derive(Deserialize)]
struct Row {
    body: String,
}

#[derive(Deserialize)]
struct CountRow {
    status: String,
    n: i64,
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_owned())
}

fn int(n: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(n.min(i64::MAX as u64) as i64)
}

impl DurableObject for IndexObject {
    fn new(state: State, _env: Env) -> Self {
        if let Err(e) = state.storage().sql().exec(SCHEMA, None) {
            console_error!("index object: schema: {e}");
        }
        IndexObject { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<IndexCall>().await {
            Ok(call) => self.handle(call).unwrap_or_else(|e| {
                console_error!("index object: {e}");
                ApiError::Internal.to_reply()
            }),
            Err(_) => ApiError::Internal.to_reply(),
        };
        to_response(&reply)
    }
}

impl IndexObject {
    fn handle(&self, call: IndexCall) -> Result<HttpReply> {
        let sql = self.state.storage().sql();
        match call {
            IndexCall::Upsert { row } => {
                let skus: String = row
                    .lines
                    .iter()
                    .map(|(s, _)| format!(",{s}"))
                    .collect::<String>()
                    + ",";
                let body = serde_json::to_string(&row)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                // A row only moves forward: a late retry of an older status
                // does not undo a newer one.
                sql.exec(
                    "INSERT INTO orders (id, created_at, updated_at, status, room, channel, buyer, skus, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, status = excluded.status, body = excluded.body \
                     WHERE excluded.updated_at >= orders.updated_at",
                    vec![
                        text(&row.id),
                        int(row.created_at),
                        int(row.updated_at),
                        text(&row.status),
                        row.room.as_deref().map_or(SqlStorageValue::Null, text),
                        text(&row.channel),
                        text(&row.buyer),
                        text(&skus),
                        text(&body),
                    ],
                )?;
                Ok(HttpReply::json(200, json!({ "ok": true })))
            }
            IndexCall::Query {
                filter,
                after,
                limit,
                counts,
            } => {
                let (clause, args) = where_clause(&filter, after.as_ref(), true);
                let mut page_args = args;
                page_args.push(int(limit as u64));
                let rows: Vec<Row> = sql
                    .exec(
                        &format!(
                            "SELECT body FROM orders {clause} ORDER BY created_at, id LIMIT ?"
                        ),
                        page_args,
                    )?
                    .to_array()?;
                let rows: Vec<Value> = rows
                    .iter()
                    .filter_map(|r| serde_json::from_str(&r.body).ok())
                    .collect();
                let mut answer = json!({ "rows": rows });
                if counts {
                    // Per status, whatever status the filter asks for.
                    let (clause, args) = where_clause(&filter, None, false);
                    let per: Vec<CountRow> = sql
                        .exec(
                            &format!(
                                "SELECT status, count(*) AS n FROM orders {clause} GROUP BY status"
                            ),
                            args,
                        )?
                        .to_array()?;
                    let map: serde_json::Map<String, Value> =
                        per.into_iter().map(|c| (c.status, json!(c.n))).collect();
                    answer["counts"] = Value::Object(map);
                }
                Ok(HttpReply::json(200, answer))
            }
        }
    }
}

/// The WHERE clause for a filter (and cursor), with its arguments. SKUs
/// are matched with `instr` on ",sku," (ids may contain `_`, a LIKE
/// wildcard).
fn where_clause(
    f: &Filter,
    after: Option<&Cursor>,
    with_status: bool,
) -> (String, Vec<SqlStorageValue>) {
    let mut terms: Vec<&str> = Vec::new();
    let mut args = Vec::new();
    if let Some(room) = &f.room {
        terms.push("room = ?");
        args.push(text(room));
    }
    if let Some(from) = f.from {
        terms.push("created_at >= ?");
        args.push(int(from));
    }
    if let Some(to) = f.to {
        terms.push("created_at <= ?");
        args.push(int(to));
    }
    if let (Some(status), true) = (&f.status, with_status) {
        terms.push("status = ?");
        args.push(text(status));
    }
    if let Some(channel) = &f.channel {
        terms.push("channel = ?");
        args.push(text(channel));
    }
    if let Some(buyer) = &f.buyer {
        terms.push("buyer = ?");
        args.push(text(buyer));
    }
    if let Some(sku) = &f.sku {
        terms.push("instr(skus, ?) > 0");
        args.push(text(&format!(",{sku},")));
    }
    if let Some(c) = after {
        terms.push("(created_at > ? OR (created_at = ? AND id > ?))");
        args.push(int(c.created_at));
        args.push(int(c.created_at));
        args.push(text(&c.id));
    }
    if terms.is_empty() {
        return (String::new(), args);
    }
    (format!("WHERE {}", terms.join(" AND ")), args)
}
