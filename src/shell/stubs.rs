//! The typed stubs every object and the router call each other through:
//! the call each object takes, a client that sends it, and the one way an
//! object-to-object request is made. Objects import this module, never each
//! other, so the shell has no import circles.

use crate::api::RateScope;
use crate::api::Refusal;
use crate::channels::PlatformStatus;
use crate::domain::event::Event;
use crate::domain::live::{FeedName, RoomId, RoomSetup};
use crate::domain::order::{Change, Channel, Intent};
use crate::domain::room_stats::OrderFact;
use crate::domain::stock::{Actor, Request as StockRequest};
use crate::domain::types::{BuyerId, IdempotencyKey, OrderId, Quantity, ReservationId, SkuId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::{console_error, Env, Method, Request, RequestInit, Response, Result, Stub};

// ---- SKU objects ----

/// What the router asks of a SKU object. Internal: only the router's stub
/// reaches it, with ids and bodies already checked.
#[derive(Debug, Serialize, Deserialize)]
pub struct SkuCall {
    pub sku: SkuId,
    /// Which of a split SKU's stock buckets the call is for (None: the
    /// SKU's own object, the parent). See domain/buckets.rs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<u16>,
    /// Whose bucket an order's call belongs to on a split SKU (its hold ids
    /// name no bucket): the order's buyer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer: Option<BuyerId>,
    pub op: SkuOp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkuOp {
    Step {
        request: StockRequest,
    },
    /// A step the edge refuses as a new attempt (a rate limit, the hold
    /// cap): answered only if its key has a stored answer (a retry is not a
    /// new attempt), else refused.
    Replay {
        request: StockRequest,
        refusal: Refusal,
    },
    /// A step for another object (an order): answers the core's `Reply` as
    /// JSON, not HTTP.
    Apply {
        request: StockRequest,
    },
    /// Several callers' requests, merged at the edge (shell/merge.rs): one
    /// step, one transaction; answers the core's `Reply` for each, in
    /// order, as a JSON array.
    Batch {
        requests: Vec<StockRequest>,
    },
    /// The live holds, with the orders they belong to.
    Holds,
    /// Push this SKU's changes to a feed (a room, the SKU's own feed);
    /// answers the current state. A SKU never set up refuses (404) unless
    /// `even_unknown` (a room the merchant set up with a SKU to come): an
    /// anonymous viewer's socket stores nothing.
    Subscribe {
        feed: FeedName,
        #[serde(default)]
        even_unknown: bool,
    },
    Unsubscribe {
        feed: FeedName,
    },
    Get,
    /// A hold, if `caller` may see it (a buyer: their own).
    GetHold {
        hold: ReservationId,
        caller: Actor,
    },
    Ledger {
        after: u64,
        limit: usize,
        #[serde(default)]
        filter: Option<crate::api::wire::LedgerFilter>,
    },
    /// The reconcile check (see domain/audit.rs).
    Audit,
    /// The ledger's hash chain recomputed (see domain/ledger.rs).
    VerifyLedger,
    /// The reorder policy and replenishment requests.
    Replenishments,
    /// Sales in time buckets.
    Stats {
        query: crate::api::wire::StatsQuery,
    },
    /// Entries after `after` (at most `limit`) with a signed checkpoint of
    /// the head, for offline verification.
    ExportLedger {
        after: u64,
        limit: usize,
    },
    /// Serve the SKU with `buckets` stock buckets, or (0) merge them back.
    Split {
        buckets: u16,
    },
    /// To a parent: send `bucket` at least `short` units if there are any
    /// (calling the other buckets' back first if need be).
    Lend {
        bucket: u16,
        short: u64,
    },
    /// To a bucket: send every available unit back to the parent.
    Yield,
    /// To a parent: a bucket's latest numbers (for the sums it pushes).
    BucketState {
        bucket: u16,
        record: crate::domain::stock::SkuRecord,
    },
}

impl SkuCall {
    /// A call to a SKU's own object (`bucket` None) or one of its buckets,
    /// on no buyer's behalf.
    pub fn new(sku: SkuId, bucket: Option<u16>, op: SkuOp) -> SkuCall {
        SkuCall {
            sku,
            bucket,
            buyer: None,
            op,
        }
    }
}

/// A typed client for a SKU object's stub.
pub struct SkuClient(Stub);

impl SkuClient {
    pub fn new(env: &Env, sku: &SkuId) -> Result<SkuClient> {
        Ok(SkuClient(
            env.durable_object("SKU")?.get_by_name(sku.as_str())?,
        ))
    }

    /// The object a call is for: the SKU's own, or one of its buckets.
    pub fn for_call(env: &Env, call: &SkuCall) -> Result<SkuClient> {
        let name = match call.bucket {
            None => return SkuClient::new(env, &call.sku),
            Some(b) => crate::domain::buckets::bucket_object_name(call.sku.as_str(), b),
        };
        Ok(SkuClient(env.durable_object("SKU")?.get_by_name(&name)?))
    }

    /// Sends `call` to the object it is for.
    pub async fn send(env: &Env, call: &SkuCall) -> Result<Response> {
        SkuClient::for_call(env, call)?.call(call).await
    }

    pub async fn call(&self, call: &SkuCall) -> Result<Response> {
        self.0.fetch_with_request(internal_request(call)?).await
    }
}

// ---- order objects ----

#[derive(Debug, Serialize, Deserialize)]
pub struct OrderCall {
    pub order: OrderId,
    pub op: OrderOp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OrderOp {
    Create {
        buyer: BuyerId,
        channel: Channel,
        /// The allocation its lines sell from (None: the storefront).
        #[serde(default)]
        sells_from: Option<Channel>,
        lines: Vec<(SkuId, Quantity)>,
        room: Option<RoomId>,
        fingerprint: String,
        /// Set when the caller is over a rate limit: a retry of a create
        /// already made is answered, a new order is refused.
        #[serde(default)]
        replay_only: Option<RateScope>,
        /// What the risk rules look at besides the order itself.
        #[serde(default)]
        signals: Signals,
    },
    /// A selling platform's message about its order (channel intake):
    /// created, paid, cancelled or refunded there. Keyed by the message id,
    /// so a resent message is answered as before.
    Intake {
        channel: Channel,
        platform_order: String,
        message: IdempotencyKey,
        status: PlatformStatus,
        buyer: BuyerId,
        lines: Vec<(SkuId, Quantity)>,
        amount: Option<u64>,
    },
    /// The order, for its buyer or an admin (anyone else: not found).
    Get { caller: Actor },
    /// The order's latest status as an event, for its feed's first viewer
    /// (the router has checked the viewer's session).
    Latest,
    /// List the order again in the merchant's index and its buyer's.
    Reindex,
    Transition {
        intent: Intent,
        actor: Actor,
        /// Who asked: a buyer may only touch their own order.
        caller: Actor,
        key: Option<IdempotencyKey>,
        fingerprint: String,
    },
    Change {
        change: Change,
        actor: Actor,
        key: Option<IdempotencyKey>,
        fingerprint: String,
    },
}

/// What the router knows about who is ordering, for the risk rules: from
/// the session's claims and the client's address.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Signals {
    pub device: Option<String>,
    pub address: Option<String>,
    /// The buyer's account creation time (seconds), from the session.
    pub account_created: Option<u64>,
}

pub struct OrderClient(Stub);

impl OrderClient {
    pub fn new(env: &Env, order: &OrderId) -> Result<OrderClient> {
        Ok(OrderClient(
            env.durable_object("ORDER")?.get_by_name(order.as_str())?,
        ))
    }

    pub async fn call(&self, call: &OrderCall) -> Result<Response> {
        self.0.fetch_with_request(internal_request(call)?).await
    }
}

/// A POST carrying `body` as JSON, for object-to-object calls.
pub fn internal_request(body: &impl Serialize) -> Result<Request> {
    let body = serde_json::to_string(body).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    Request::new_with_init("https://object.internal/call", &init)
}

// ---- feed objects ----

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedCall {
    Publish {
        feed: FeedName,
        event: Event,
    },
    SetupRoom {
        feed: FeedName,
        room: RoomSetup,
    },
    Snapshot {
        feed: FeedName,
    },
    /// An order status change in the room, for its numbers (shard 0 only).
    Tally {
        fact: OrderFact,
    },
    /// The room's numbers (shard 0), as JSON or CSV.
    RoomStats {
        csv: bool,
    },
}

pub struct FeedClient;

/// How many feed objects share one live room's viewers (`ROOM_FEED_SHARDS`,
/// 1–16, default 4). One object fans a change out to its sockets one after
/// another; shards fan out in parallel, each to its share of the room. A
/// deployment constant: every publish goes to every shard, and a viewer
/// joins one at random. Changing it, re-PUT the rooms (a new shard knows
/// a room only from its setup).
pub fn room_shards(env: &Env) -> u16 {
    env.var("ROOM_FEED_SHARDS")
        .ok()
        .and_then(|v| v.to_string().parse::<u16>().ok())
        .filter(|n| (1..=16).contains(n))
        .unwrap_or(4)
}

impl FeedClient {
    /// The objects holding `feed`'s viewers: one, or a room's shards
    /// (shard 0 is named by the feed alone, as before shards existed).
    fn names(env: &Env, feed: &FeedName) -> Vec<String> {
        let name = feed.to_string();
        match feed {
            FeedName::Room(_) => (0..room_shards(env))
                .map(|k| {
                    if k == 0 {
                        name.clone()
                    } else {
                        format!("{name}#{k}")
                    }
                })
                .collect(),
            _ => vec![name],
        }
    }

    fn stub_named(env: &Env, name: &str) -> Result<worker::Stub> {
        env.durable_object("FEED")?.get_by_name(name)
    }

    async fn call_named(env: &Env, name: &str, call: &FeedCall) -> Result<Response> {
        Self::stub_named(env, name)?
            .fetch_with_request(internal_request(call)?)
            .await
    }

    /// A call to the feed: a room's setup goes to every shard (the first
    /// one's answer is returned), a snapshot to the first.
    pub async fn call(env: &Env, feed: &FeedName, call: &FeedCall) -> Result<Response> {
        let names = Self::names(env, feed);
        match call {
            FeedCall::SetupRoom { .. } if names.len() > 1 => {
                let answers = futures_util::future::join_all(
                    names.iter().map(|name| Self::call_named(env, name, call)),
                )
                .await;
                let mut first = None;
                for (name, answer) in names.iter().zip(answers) {
                    match answer {
                        Ok(r) if first.is_none() => first = Some(r),
                        Ok(r) if r.status_code() != 200 => {
                            return Err(worker::Error::RustError(format!(
                                "room setup at {name} answered {}",
                                r.status_code()
                            )))
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
                first.ok_or_else(|| worker::Error::RustError("no feed shard".into()))
            }
            _ => Self::call_named(env, &names[0], call).await,
        }
    }

    /// Best effort: a viewer missing one push gets the next, or resumes.
    /// A room's shards get it at once, in parallel.
    pub async fn publish(env: &Env, feed: &FeedName, event: &Event) {
        let call = FeedCall::Publish {
            feed: feed.clone(),
            event: event.clone(),
        };
        let names = Self::names(env, feed);
        let sent = futures_util::future::join_all(
            names.iter().map(|name| Self::call_named(env, name, &call)),
        )
        .await;
        for (name, result) in names.iter().zip(sent) {
            if let Err(e) = result {
                console_error!("publish to {name}: {e}");
            }
        }
    }

    /// A call to a room's first shard only: where its numbers are kept.
    pub async fn call_first(env: &Env, room: &RoomId, call: &FeedCall) -> Result<Response> {
        let name = FeedName::Room(room.clone()).to_string();
        Self::call_named(env, &name, call).await
    }

    /// Hands a viewer's upgrade request to the feed's object (for a room,
    /// one of its shards at random, which the object names in the
    /// `Edgestock-Feed-Shard` header of its answer).
    pub async fn connect(env: &Env, feed: &FeedName, req: Request) -> Result<Response> {
        let names = Self::names(env, feed);
        let mut pick = [0u8; 2];
        let shard = match getrandom::fill(&mut pick) {
            Ok(()) => usize::from(u16::from_le_bytes(pick)) % names.len(),
            Err(_) => 0,
        };
        let mut req = req;
        req.headers_mut()?.set("X-Feed", &feed.to_string())?;
        req.headers_mut()?.set("X-Feed-Shard", &shard.to_string())?;
        Self::stub_named(env, &names[shard])?
            .fetch_with_request(req)
            .await
    }
}

// ---- buyer objects ----

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BuyerCall {
    Upsert {
        order: OrderId,
        summary: Value,
    },
    List {
        after: u64,
        limit: usize,
    },
    /// The buyer's newest open orders (placing, in review, reserved, paid).
    Open {
        limit: usize,
    },
}

pub struct BuyerClient;

impl BuyerClient {
    async fn call(env: &Env, buyer: &BuyerId, call: &BuyerCall) -> Result<Response> {
        let stub = env.durable_object("BUYER")?.get_by_name(buyer.as_str())?;
        stub.fetch_with_request(internal_request(call)?).await
    }

    pub async fn upsert(env: &Env, buyer: &BuyerId, order: &OrderId, summary: Value) -> Result<()> {
        let call = BuyerCall::Upsert {
            order: order.clone(),
            summary,
        };
        let response = Self::call(env, buyer, &call).await?;
        match response.status_code() {
            200 => Ok(()),
            status => Err(worker::Error::RustError(format!(
                "buyer index answered {status}"
            ))),
        }
    }

    pub async fn list(env: &Env, buyer: &BuyerId, after: u64, limit: usize) -> Result<Response> {
        Self::call(env, buyer, &BuyerCall::List { after, limit }).await
    }

    /// The buyer's newest open orders, as their summaries.
    pub async fn open(env: &Env, buyer: &BuyerId, limit: usize) -> Result<Vec<Value>> {
        let mut response = Self::call(env, buyer, &BuyerCall::Open { limit }).await?;
        if response.status_code() != 200 {
            return Err(worker::Error::RustError(format!(
                "buyer index answered {}",
                response.status_code()
            )));
        }
        let body: Value = response.json().await?;
        Ok(match body.get("orders") {
            Some(Value::Array(orders)) => orders.clone(),
            _ => Vec::new(),
        })
    }
}
