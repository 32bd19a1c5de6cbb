//! Automation switches (自动化), one object per scope (`room:<id>`,
//! `sku:<id>`: no global rule object), and the order objects' side: the
//! switches concerning an order, read through a short per-isolate cache
//! (a change is in force everywhere within [`SWITCHES_TTL_MS`]). The rules
//! themselves are `domain::automation`'s.

use super::http::to_response;
use super::stubs::internal_request;
use crate::api::{ApiError, HttpReply};
use crate::domain::automation::{OrderRules, Rule, Scope, SwitchPatch, Switches};
use crate::domain::order::Order;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{
    console_error, durable_object, Date, DurableObject, Env, Request, Response, Result,
    SqlStorageValue, State,
};

/// How long an isolate uses switches it read.
pub const SWITCHES_TTL_MS: u64 = 2_000;
/// Scopes an isolate remembers at most (then it starts over).
const CACHE_MAX: usize = 4_096;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AutomationCall {
    Get { scope: Scope },
    Put { scope: Scope, patch: SwitchPatch },
}

/// What a scope keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    switches: Switches,
    version: u64,
    updated_at: u64,
}

pub async fn call(env: &Env, call: &AutomationCall) -> Result<Response> {
    let scope = match call {
        AutomationCall::Get { scope } | AutomationCall::Put { scope, .. } => scope,
    };
    env.durable_object("AUTOMATION")?
        .get_by_name(&scope.to_string())?
        .fetch_with_request(internal_request(call)?)
        .await
}

thread_local! {
    static CACHE: RefCell<HashMap<String, (Switches, u64)>> = RefCell::new(HashMap::new());
}

/// Forgets a scope's cached switches (this isolate just changed them).
pub fn forget(scope: &Scope) {
    CACHE.with(|c| c.borrow_mut().remove(&scope.to_string()));
}

/// One scope's switches, from this isolate's cache when fresh.
async fn switches(env: &Env, scope: Scope) -> Result<Switches> {
    let name = scope.to_string();
    let now = Date::now().as_millis();
    if let Some((switches, at)) = CACHE.with(|c| c.borrow().get(&name).cloned()) {
        if now.saturating_sub(at) < SWITCHES_TTL_MS {
            return Ok(switches);
        }
    }
    let mut response = call(env, &AutomationCall::Get { scope }).await?;
    if response.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "automations {name} answered {}",
            response.status_code()
        )));
    }
    let body: Value = response.json().await?;
    let switches: Switches = serde_json::from_value(body["switches"].clone())
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(name, (switches.clone(), now));
    });
    Ok(switches)
}

/// The switches concerning `order`: its room's and its SKUs', read
/// together. An error if any scope cannot be read (the caller tries
/// again later: a rule is never skipped because its switch was unread).
pub async fn rules_for(env: &Env, order: &Order) -> Result<OrderRules> {
    let mut skus: Vec<_> = order.lines.iter().map(|l| l.sku.clone()).collect();
    skus.sort();
    skus.dedup();
    let room = async {
        match &order.room {
            Some(room) => switches(env, Scope::Room(room.clone()))
                .await
                .map(|s| Some((room.clone(), s))),
            None => Ok(None),
        }
    };
    let per_sku = futures_util::future::join_all(skus.iter().map(|sku| async move {
        switches(env, Scope::Sku(sku.clone()))
            .await
            .map(|s| (sku.clone(), s))
    }));
    let (room, per_sku) = futures_util::join!(room, per_sku);
    Ok(OrderRules {
        room: room?,
        skus: per_sku.into_iter().collect::<Result<Vec<_>>>()?,
    })
}

/// The public view of a scope's switches.
fn view(scope: &Scope, stored: &Stored) -> Value {
    let rules: Vec<Value> = Rule::ALL
        .iter()
        .map(|r| json!({ "rule": r, "on": stored.switches.is_on(*r), "about": r.about() }))
        .collect();
    json!({
        "scope": scope.to_string(),
        "version": stored.version,
        "updated_at": (stored.updated_at > 0).then_some(stored.updated_at),
        "switches": stored.switches,
        "rules": rules,
        "always_on": [{
            "rule": "expire_unpaid",
            "about": "cancel orders not paid by their deadline (status expired), giving their units back",
        }],
    })
}

#[durable_object]
pub struct AutomationObject {
    state: State,
}

impl DurableObject for AutomationObject {
    fn new(state: State, _env: Env) -> Self {
        AutomationObject { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let reply = match req.json::<AutomationCall>().await {
            Ok(call) => self.handle(call).unwrap_or_else(|e| {
                console_error!("automation object: {e}");
                ApiError::Internal.to_reply()
            }),
            Err(_) => ApiError::Internal.to_reply(),
        };
        to_response(&reply)
    }
}

#[derive(Deserialize)]
struct Row {
    body: String,
}

impl AutomationObject {
    fn load(&self) -> Result<Stored> {
        let sql = self.state.storage().sql();
        // Asking for switches never set stores nothing.
        let made: Vec<Value> = sql
            .exec(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'switches'",
                None,
            )?
            .to_array()?;
        if made.is_empty() {
            return Ok(Stored::default());
        }
        let rows: Vec<Row> = sql
            .exec("SELECT body FROM switches WHERE id = 1", None)?
            .to_array()?;
        match rows.first() {
            Some(row) => {
                serde_json::from_str(&row.body).map_err(|e| worker::Error::RustError(e.to_string()))
            }
            None => Ok(Stored::default()),
        }
    }

    fn handle(&self, call: AutomationCall) -> Result<HttpReply> {
        match call {
            AutomationCall::Get { scope } => Ok(HttpReply::json(200, view(&scope, &self.load()?))),
            AutomationCall::Put { scope, patch } => {
                let mut stored = self.load()?;
                let before = stored.switches.clone();
                stored.switches.apply(&patch);
                if stored.switches != before {
                    stored.version += 1;
                    stored.updated_at = Date::now().as_millis();
                    let body = serde_json::to_string(&stored)
                        .map_err(|e| worker::Error::RustError(e.to_string()))?;
                    // One statement each; the row is the whole state.
                    let sql = self.state.storage().sql();
                    sql.exec(
                        "CREATE TABLE IF NOT EXISTS switches (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL)",
                        None,
                    )?;
                    sql.exec(
                        "INSERT OR REPLACE INTO switches (id, body) VALUES (1, ?)",
                        vec![SqlStorageValue::String(body)],
                    )?;
                }
                Ok(HttpReply::json(200, view(&scope, &stored)))
            }
        }
    }
}
