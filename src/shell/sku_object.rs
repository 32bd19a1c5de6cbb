//! The SKU Durable Object: a thin shell over [`Stock`]. One instance per
//! SKU id serializes every operation on that SKU. Each call loads (once per
//! instance), runs the core through [`store::run`], persists, and answers;
//! the alarm returns expired holds with no traffic at all.
//!
//! Atomicity comes from the runtime: everything between reading the call and
//! answering runs synchronously (SQLite calls do not yield), so no other
//! event interleaves with a step, and its writes commit together before the
//! reply is released.

use super::events;
use super::http::to_response;
use super::order_object::internal_request;
use super::sql_store::{SqlStore, StoreError};
use crate::api::wire::{hold_json, holds_json, ledger_json, reply_to_http, sku_json};
use crate::api::{ApiError, HttpReply};
use crate::domain::event::Event;
use crate::domain::stock::Stock;
use crate::domain::stock::{Hold, Reply};
use crate::domain::stock::{Request as StockRequest, StockError};
use crate::domain::store;
use crate::domain::store::Store;
use crate::domain::types::{ReservationId, SkuId};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use worker::{
    console_error, durable_object, js_sys, Date, DurableObject, Env, Request, Response, Result,
    ScheduledTime, State, Stub,
};

/// What the router asks of a SKU object. Internal: only the router's stub
/// reaches it, with ids and bodies already checked.
#[derive(Debug, Serialize, Deserialize)]
pub struct SkuCall {
    pub sku: SkuId,
    pub op: SkuOp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkuOp {
    Step {
        request: StockRequest,
    },
    /// A step for another object (an order): answers the core's `Reply` as
    /// JSON, not HTTP.
    Apply {
        request: StockRequest,
    },
    /// The live holds, with the orders they belong to.
    Holds,
    Get,
    GetHold {
        hold: ReservationId,
    },
    Ledger {
        after: u64,
        limit: usize,
    },
}

/// A typed client for a SKU object's stub.
pub struct SkuClient(Stub);

impl SkuClient {
    pub fn new(env: &Env, sku: &SkuId) -> Result<SkuClient> {
        Ok(SkuClient(
            env.durable_object("SKU")?.get_by_name(sku.as_str())?,
        ))
    }

    pub async fn call(&self, call: &SkuCall) -> Result<Response> {
        self.0.fetch_with_request(internal_request(call)?).await
    }
}

#[durable_object]
pub struct SkuObject {
    state: State,
    store: RefCell<Option<SqlStore>>,
    stock: RefCell<Option<Stock>>,
    /// The alarm time this instance last asked for, to skip redundant
    /// `setAlarm` calls on the reservation path.
    armed: Cell<Option<u64>>,
}

impl DurableObject for SkuObject {
    fn new(state: State, _env: Env) -> Self {
        SkuObject {
            state,
            store: RefCell::new(None),
            stock: RefCell::new(None),
            armed: Cell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<SkuCall>().await {
            Ok(call) => self.handle(call),
            Err(e) => {
                console_error!("sku object: unreadable call: {e}");
                ApiError::Internal.to_reply()
            }
        };
        self.sync_alarm().await;
        to_response(&reply)
    }

    async fn alarm(&self) -> Result<Response> {
        self.armed.set(None);
        if let Err(e) = self.with_stock(None, |store, stock| run(store, stock, &[]).map(|_| ())) {
            console_error!("sku object: alarm failed: {}", e.0);
        }
        self.sync_alarm().await;
        Response::ok("")
    }
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Runs a step now and emits a stock event if the SKU changed.
fn run(
    store: &mut SqlStore,
    stock: &mut Stock,
    requests: &[StockRequest],
) -> std::result::Result<Vec<Reply>, StoreError> {
    let version = stock.record().map(|r| r.version);
    let replies = store::run(store, stock, now_ms(), requests)?;
    if let Some(record) = stock.record().filter(|r| Some(r.version) != version) {
        events::emit(&Event::stock(record));
    }
    Ok(replies)
}

impl SkuObject {
    fn handle(&self, call: SkuCall) -> HttpReply {
        let sku = call.sku.clone();
        let result = self.with_stock(Some(&sku), |store, stock| {
            // Every call runs a step, so holds past their time are returned
            // before anything is read or decided.
            let requests = match &call.op {
                SkuOp::Step { request } | SkuOp::Apply { request } => vec![request.clone()],
                _ => vec![],
            };
            let replies = run(store, stock, &requests)?;
            Ok(match call.op {
                SkuOp::Step { .. } => reply_to_http(&replies[0]),
                SkuOp::Apply { .. } => HttpReply::json(
                    200,
                    serde_json::to_value(&replies[0]).map_err(|e| StoreError(e.to_string()))?,
                ),
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
                SkuOp::GetHold { hold } => {
                    let found = match stock.hold(&hold) {
                        Some(h) => Some(h.clone()),
                        None => store.load_hold(&hold)?,
                    };
                    match (found, stock.record()) {
                        (Some(h), Some(record)) => HttpReply::json(200, hold_json(&h, record)),
                        (_, None) => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                        (None, _) => ApiError::Stock(StockError::HoldNotFound).to_reply(),
                    }
                }
                SkuOp::Ledger { after, limit } => match stock.record() {
                    Some(_) => {
                        HttpReply::json(200, ledger_json(&store.ledger(after, limit)?, limit))
                    }
                    None => ApiError::Stock(StockError::SkuNotFound).to_reply(),
                },
            })
        });
        result.unwrap_or_else(|e| {
            console_error!("sku object {sku}: {}", e.0);
            ApiError::Internal.to_reply()
        })
    }

    /// Runs `f` over the store and the loaded stock, loading both on first
    /// use. A storage error drops the in-memory stock, so the next call
    /// reloads what was really committed.
    fn with_stock<T>(
        &self,
        sku: Option<&SkuId>,
        f: impl FnOnce(&mut SqlStore, &mut Stock) -> std::result::Result<T, StoreError>,
    ) -> std::result::Result<T, StoreError> {
        let mut store_slot = self.store.borrow_mut();
        if store_slot.is_none() {
            *store_slot = Some(SqlStore::open(self.state.storage().sql())?);
        }
        let store = store_slot.as_mut().expect("opened above");
        let mut stock_slot = self.stock.borrow_mut();
        if stock_slot.is_none() {
            *stock_slot = store.load(sku)?;
        }
        let Some(stock) = stock_slot.as_mut() else {
            return Err(StoreError("nothing stored and no SKU named".into()));
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
    async fn sync_alarm(&self) {
        let next = self.stock.borrow().as_ref().and_then(Stock::next_expiry_ms);
        if next == self.armed.get() {
            return;
        }
        self.armed.set(next);
        let storage = self.state.storage();
        let result = match next {
            Some(at) => {
                let date = js_sys::Date::new(&(at as f64).into());
                storage.set_alarm(ScheduledTime::new(date)).await
            }
            None => storage.delete_alarm().await,
        };
        if let Err(e) = result {
            self.armed.set(None);
            console_error!("sku object: setting the alarm failed: {e}");
        }
    }
}
