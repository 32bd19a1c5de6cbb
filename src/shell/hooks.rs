//! Webhooks from the callers' side: the calls the hook object takes, the
//! endpoint registry read through a short per-isolate cache, and the
//! hand-off of notices from an object's outbox to each endpoint's delivery
//! queue. The queues deliver (shell/hook_object.rs); an outbox row is
//! dropped only once every endpoint that wants it has queued it.

use super::stubs::internal_request;
use crate::domain::notice::{DeliveryState, Endpoint, EndpointId, Notice, NoticeKind};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use worker::{Date, Env, Response, Result};

/// The registry's object name (one per deployment: it is read by outboxes
/// through [`ENDPOINTS_TTL_MS`] caches, never on a buyer's request).
pub const REGISTRY: &str = "registry";
/// How long an isolate uses the endpoints it read: a new endpoint gets the
/// notices made from this long after it was registered.
pub const ENDPOINTS_TTL_MS: u64 = 2_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HookCall {
    /// Registry: a new endpoint (its id and secret drawn by the registry).
    Create {
        url: String,
        events: Vec<NoticeKind>,
    },
    /// Registry: every endpoint, without secrets.
    List,
    Get {
        id: EndpointId,
    },
    Delete {
        id: EndpointId,
    },
    /// Registry: every endpoint with its secret, for the hand-off.
    Endpoints,
    /// A delivery queue: notices for its endpoint (repeats by id ignored).
    Enqueue {
        endpoint: Endpoint,
        notices: Vec<Notice>,
    },
    /// A delivery queue: its latest deliveries, newest first.
    Deliveries {
        limit: usize,
        state: Option<DeliveryState>,
    },
    /// A delivery queue: send one notice again.
    Resend {
        event: String,
    },
    /// A delivery queue: its endpoint was deleted; what waits ends dead.
    Forget,
}

/// How many delivery queues share one endpoint (`WEBHOOK_SHARDS`, 1–16,
/// default 4): each delivers one source's notices in order, and the queues
/// deliver in parallel.
pub fn shards(env: &Env) -> u16 {
    env.var("WEBHOOK_SHARDS")
        .ok()
        .and_then(|v| v.to_string().parse::<u16>().ok())
        .filter(|n| (1..=16).contains(n))
        .unwrap_or(4)
}

/// The queue a source's notices go to (FNV-1a: every object agrees).
pub fn shard_of(source: &str, shards: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in source.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u16
}

pub fn queue_name(endpoint: &EndpointId, shard: u16) -> String {
    format!("{endpoint}#{shard}")
}

pub async fn call(env: &Env, name: &str, call: &HookCall) -> Result<Response> {
    env.durable_object("HOOK")?
        .get_by_name(name)?
        .fetch_with_request(internal_request(call)?)
        .await
}

thread_local! {
    static ENDPOINTS: RefCell<Option<(Rc<Vec<Endpoint>>, u64)>> = const { RefCell::new(None) };
}

/// Every endpoint, from this isolate's cache when fresh.
pub async fn endpoints(env: &Env) -> Result<Rc<Vec<Endpoint>>> {
    let now = Date::now().as_millis();
    if let Some((list, at)) = ENDPOINTS.with(|e| e.borrow().clone()) {
        if now.saturating_sub(at) < ENDPOINTS_TTL_MS {
            return Ok(list);
        }
    }
    let mut response = call(env, REGISTRY, &HookCall::Endpoints).await?;
    if response.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "webhook registry answered {}",
            response.status_code()
        )));
    }
    let list = Rc::new(response.json::<Vec<Endpoint>>().await?);
    ENDPOINTS.with(|e| *e.borrow_mut() = Some((list.clone(), now)));
    Ok(list)
}

/// Forgets the cached endpoints (this isolate just changed them).
pub fn forget_endpoints() {
    ENDPOINTS.with(|e| *e.borrow_mut() = None);
}

/// Queues `notices` (in the order made) at every endpoint that wants them.
/// Ok only if every queue took its share: then the outbox may drop them.
/// A queue that took them before takes them again harmlessly (by id).
pub async fn hand_off(env: &Env, notices: &[Notice]) -> Result<()> {
    if notices.is_empty() {
        return Ok(());
    }
    let endpoints = endpoints(env).await?;
    let shards = shards(env);
    let mut calls = Vec::new();
    for endpoint in endpoints.iter() {
        for shard in 0..shards {
            let share: Vec<Notice> = notices
                .iter()
                .filter(|n| endpoint.wants(n.kind) && shard_of(&n.source, shards) == shard)
                .cloned()
                .collect();
            if !share.is_empty() {
                let name = queue_name(&endpoint.id, shard);
                let enqueue = HookCall::Enqueue {
                    endpoint: endpoint.clone(),
                    notices: share,
                };
                calls.push(async move { (call(env, &name, &enqueue).await, name) });
            }
        }
    }
    for (answer, name) in futures_util::future::join_all(calls).await {
        match answer {
            Ok(r) if r.status_code() == 200 => {}
            Ok(r) => {
                return Err(worker::Error::RustError(format!(
                    "webhook queue {name} answered {}",
                    r.status_code()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
