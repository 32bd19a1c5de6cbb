//! The buyer's order index: one object per buyer id, listing that buyer's
//! orders with their latest status, so `GET /api/buyers/{buyer}/orders`
//! needs no scan across orders. Order objects keep it up to date.

use super::http::to_response;
use super::stubs::BuyerCall;
use crate::api::wire::ledger_page_json;
use crate::api::{ApiError, HttpReply};
use serde::Deserialize;
use serde_json::Value;
use worker::{
    console_error, durable_object, DurableObject, Env, Request, Response, Result, SqlStorageValue,
    State,
};

/// A buyer's index lists at most this many orders (the newest).
const BUYER_ORDERS_MAX: i64 = 1_000;

#[durable_object]
pub struct BuyerObject {
    state: State,
}

#[derive(Deserialize)]
struct Row {
    seq: i64,
    body: String,
}

impl DurableObject for BuyerObject {
    fn new(state: State, _env: Env) -> Self {
        let schema = "CREATE TABLE IF NOT EXISTS orders (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL);";
        if let Err(e) = state.storage().sql().exec(schema, None) {
            console_error!("buyer object: schema: {e}");
        }
        BuyerObject { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<BuyerCall>().await {
            Ok(call) => self.handle(call).unwrap_or_else(|e| {
                console_error!("buyer object: {e}");
                ApiError::Internal.to_reply()
            }),
            Err(_) => ApiError::Internal.to_reply(),
        };
        to_response(&reply)
    }
}

impl BuyerObject {
    fn handle(&self, call: BuyerCall) -> Result<HttpReply> {
        let sql = self.state.storage().sql();
        match call {
            BuyerCall::Upsert { order, summary } => {
                // Keeps the order's place (seq) in the list; replaces its body.
                sql.exec(
                    // Forward only: a late retry of an older status does not
                    // undo a newer one (the repeat-buyer rule reads these).
                    "INSERT INTO orders (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body \
                     WHERE coalesce(json_extract(excluded.body, '$.updated_at'), 0) >= coalesce(json_extract(orders.body, '$.updated_at'), 0)",
                    vec![
                        SqlStorageValue::String(order.to_string()),
                        SqlStorageValue::String(summary.to_string()),
                    ],
                )?;
                // Bounded: the newest orders are listed, the oldest go.
                sql.exec(
                    "DELETE FROM orders WHERE seq <= (SELECT max(seq) FROM orders) - ?",
                    vec![SqlStorageValue::Integer(BUYER_ORDERS_MAX)],
                )?;
                Ok(HttpReply::json(200, serde_json::json!({ "ok": true })))
            }
            BuyerCall::List { after, limit } => {
                let rows: Vec<Row> = sql
                    .exec(
                        "SELECT seq, body FROM orders WHERE seq > ? ORDER BY seq LIMIT ?",
                        vec![
                            SqlStorageValue::Integer(after as i64),
                            SqlStorageValue::Integer(limit as i64),
                        ],
                    )?
                    .to_array()?;
                let entries: Vec<(u64, Value)> = rows
                    .iter()
                    .map(|r| {
                        (
                            r.seq as u64,
                            serde_json::from_str(&r.body).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                Ok(HttpReply::json(
                    200,
                    ledger_page_json("orders", &entries, limit),
                ))
            }
            BuyerCall::Open { limit } => {
                // The buyer's newest orders not yet shipped or ended, for the
                // flag_repeat_buyer automation.
                let rows: Vec<Row> = sql
                    .exec(
                        "SELECT seq, body FROM orders WHERE json_extract(body, '$.status') IN ('placing', 'pending_review', 'reserved', 'paid') ORDER BY seq DESC LIMIT ?",
                        vec![SqlStorageValue::Integer(limit as i64)],
                    )?
                    .to_array()?;
                let orders: Vec<Value> = rows
                    .iter()
                    .filter_map(|r| serde_json::from_str(&r.body).ok())
                    .collect();
                Ok(HttpReply::json(
                    200,
                    serde_json::json!({ "orders": orders }),
                ))
            }
        }
    }
}
