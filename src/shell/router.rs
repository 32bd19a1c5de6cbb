//! The stateless edge: route, authenticate, parse and check the body, then
//! hand one typed call to the object that owns the thing: a SKU, an order,
//! or a buyer's order index. Nothing invalid reaches an object, and nothing
//! here holds state.

use super::auth::{self, Caller};
use super::automation_object::{self, AutomationCall};
use super::channels::{self, ChannelCall};
use super::hold_gate;
use super::hooks::{self, HookCall};
use super::http::to_response;
use super::intake;
use super::job_object::{self, JobCall};
use super::limits;
use super::merge;
use super::order_queries;
use super::read_cache::{self, Lookup};
use super::risk_object::{self, RiskCall, RiskClient};
use super::routing;
use super::stubs::{
    BuyerClient, FeedCall, FeedClient, OrderCall, OrderClient, OrderOp, Signals, SkuCall,
    SkuClient, SkuOp,
};
use crate::api::routes::{Access, OrderAction, ReplenishmentAction};
use crate::api::session::{sign_session, Claims};
use crate::api::wire::RoomBody;
use crate::api::wire::{
    self, acting_buyer, parse_body, AdjustBody, AllocationBody, CancelBody, ChannelBody,
    CreateOrderBody, DeliverBody, DevPaymentBody, DevSessionBody, PayBody, ReceiveBody, RefundBody,
    ReorderBody, ReserveBody, RestockBody, SetupBody, ShipBody, SplitBody, WebhookBody,
};
use crate::api::{ApiError, HttpReply, Refusal, Route};
use crate::domain::allocation;
use crate::domain::automation::SwitchPatch;
use crate::domain::buckets;
use crate::domain::live::FeedName;
use crate::domain::notice::{DeliveryState, EndpointId};
use crate::domain::order::{order_id_for_key, Intent};
use crate::domain::risk::{self, Facts, Judged, RuleSet, Verdict};
use crate::domain::stock::{Actor, Command, Request as StockRequest};
use crate::domain::types::{BuyerId, Channel, IdempotencyKey, OrderId, ReservationId, SkuId};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use worker::{
    console_error, Context, Env, Headers, Method, Request, RequestInit, Response, Result,
};

type Outcome<T> = std::result::Result<T, ApiError>;

pub async fn handle(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let origin = cross_origin(&req)?;
    if let Some(origin) = &origin {
        if !origin_allowed(&env, origin) {
            return to_response(&ApiError::OriginNotAllowed.to_reply());
        }
        if req.method() == Method::Options {
            return preflight(origin);
        }
    }
    let response = match dispatch(&mut req, &env, &ctx).await {
        Ok(response) => response,
        Err(e) => to_response(&e.to_reply())?,
    };
    match origin {
        // A WebSocket upgrade's response carries no CORS headers.
        Some(origin) if response.status_code() != 101 => with_cors(response, &origin),
        _ => Ok(response),
    }
}

/// The request's Origin when it is another origin than this worker's own
/// (same-origin pages and non-browser clients need no check).
fn cross_origin(req: &Request) -> Result<Option<String>> {
    let Some(origin) = req.headers().get("Origin")? else {
        return Ok(None);
    };
    let url = req.url()?;
    let own = url.origin().ascii_serialization();
    Ok((origin != own).then_some(origin))
}

/// ALLOWED_ORIGINS: a comma-separated list of origins, or `*` for any.
fn origin_allowed(env: &Env, origin: &str) -> bool {
    let allowed = env
        .var("ALLOWED_ORIGINS")
        .map(|v| v.to_string())
        .unwrap_or_default();
    allowed
        .split(',')
        .map(str::trim)
        .any(|a| a == "*" || a == origin)
}

/// The response with CORS headers for `origin`. Rebuilt with fresh headers:
/// a response relayed from an object has immutable ones.
fn with_cors(response: Response, origin: &str) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in response.headers().entries() {
        headers.set(&name, &value)?;
    }
    headers.set("Access-Control-Allow-Origin", origin)?;
    headers.set("Vary", "Origin")?;
    let status = response.status_code();
    let (_, body) = response.into_parts();
    Ok(Response::from_body(body)?
        .with_status(status)
        .with_headers(headers))
}

fn preflight(origin: &str) -> Result<Response> {
    let mut response = Response::empty()?.with_status(204);
    let headers = response.headers_mut();
    headers.set("Access-Control-Allow-Origin", origin)?;
    headers.set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")?;
    headers.set(
        "Access-Control-Allow-Headers",
        "Content-Type, Authorization, Idempotency-Key",
    )?;
    headers.set("Access-Control-Max-Age", "600")?;
    headers.set("Vary", "Origin")?;
    Ok(response)
}

/// What a request carries besides its route: for idempotency and bodies.
struct Incoming<'a> {
    req: &'a mut Request,
    method: String,
    path: String,
}

impl Incoming<'_> {
    fn key(&self) -> Outcome<Option<IdempotencyKey>> {
        match self.req.headers().get("Idempotency-Key").ok().flatten() {
            None => Ok(None),
            Some(raw) => IdempotencyKey::parse(&raw)
                .map(Some)
                .map_err(|e| ApiError::InvalidHeader(e.0)),
        }
    }

    fn fingerprint(&self, body: &impl Serialize) -> String {
        wire::fingerprint(&self.method, &self.path, body)
    }

    /// A SKU step: the command with who asked and the idempotency key.
    fn step(&self, fingerprint: String, actor: Actor, command: Command) -> Outcome<SkuOp> {
        Ok(SkuOp::Step {
            request: StockRequest {
                key: self.key()?,
                fingerprint,
                actor,
                command,
            },
        })
    }
}

/// The method exactly as sent: `worker::Method` reads any method it does
/// not know (PROPFIND, PURGE) as GET.
fn raw_method(req: &Request) -> String {
    req.inner().method()
}

/// The stock actor for a caller that passed a route's access check.
fn actor(caller: &Caller) -> Actor {
    match caller {
        Caller::Buyer(claims) => Actor::Buyer(claims.sub.clone()),
        _ => Actor::Admin,
    }
}

async fn dispatch(req: &mut Request, env: &Env, ctx: &Context) -> Outcome<Response> {
    let url = req.url().map_err(|_| ApiError::RouteNotFound)?;
    let method = raw_method(req);
    let route = Route::parse(&method, url.path())?;
    // Public routes never look at credentials: reads stay one hop.
    let caller = match route.access() {
        // A platform's signature is checked by its adapter (intake.rs).
        Access::Public | Access::Payment | Access::Channel | Access::Carrier => Caller::Anonymous,
        Access::Admin => {
            let caller = auth::caller(req, env)?;
            auth::require_admin(&caller, env)?;
            caller
        }
        Access::Buyer => {
            let caller = auth::caller(req, env)?;
            auth::require_buyer_or_admin(&caller)?;
            caller
        }
        Access::Dev if auth::dev_mode(env) => Caller::Anonymous,
        Access::Dev => return Err(ApiError::RouteNotFound),
    };
    // Reservations and orders are what a rush (or a bot) makes; each is an
    // attempt against the caller's address and buyer.
    let limited = match route {
        Route::Reserve(_) | Route::CreateOrder => limits::attempt(env, req, &caller).await,
        _ => None,
    };
    // Over a limit, only a retry (a keyed request, within the retries'
    // own budget) goes on, to be answered from what was stored.
    if let Some(over) = &limited {
        let keyed = req
            .headers()
            .get("Idempotency-Key")
            .ok()
            .flatten()
            .is_some();
        if !keyed || !limits::retry_allowed(env, over).await {
            return Err(limits::refusal(over.scope));
        }
    }
    let limited = limited.map(|over| over.scope);
    let mut incoming = Incoming {
        method,
        path: url.path().to_owned(),
        req,
    };
    let query = url.query().unwrap_or("");
    // A write through this isolate drops what it cached of the SKU, once the
    // write is answered (a read racing the write cannot keep the old state).
    let written = match &route {
        Route::PutSku(sku)
        | Route::Restock(sku)
        | Route::Adjust(sku)
        | Route::Reserve(sku)
        | Route::Commit(sku, _)
        | Route::Release(sku, _)
        | Route::Split(sku)
        | Route::PutAllocation(sku, _)
        | Route::DeleteAllocation(sku, _) => Some(sku.clone()),
        _ => None,
    };
    let result = async {
        match route {
            Route::Health => reply(HttpReply::json(200, json!({ "ok": true }))),
            Route::GetSku(sku) => read_sku(incoming.req, env, sku).await,
            Route::GetHold(sku, hold) => {
                let caller = actor(&caller);
                sku_call(env, sku, SkuOp::GetHold { hold, caller }).await
            }
            Route::SkuHolds(sku) => sku_call(env, sku, SkuOp::Holds).await,
            Route::Audit(sku) => sku_call(env, sku, SkuOp::Audit).await,
            Route::Split(sku) => {
                let body: SplitBody = read_body(incoming.req).await?;
                let buckets = body.checked()?;
                let answer = sku_call(env, sku.clone(), SkuOp::Split { buckets }).await;
                routing::forget(&sku);
                answer
            }
            Route::Ledger(sku) => {
                let (after, limit) = wire::parse_page(query)?;
                let filter = wire::parse_ledger_filter(query)?;
                let op = SkuOp::Ledger {
                    after,
                    limit,
                    filter,
                };
                sku_call(env, sku, op).await
            }
            Route::VerifyLedger(sku) => sku_call(env, sku, SkuOp::VerifyLedger).await,
            Route::PutReorder(sku) => {
                admin_step(&mut incoming, env, sku, ReorderBody::into_command).await
            }
            Route::Replenishments(sku) => sku_call(env, sku, SkuOp::Replenishments).await,
            Route::SkuStats(sku) => {
                let query = wire::parse_stats_query(query)?;
                sku_call(env, sku, SkuOp::Stats { query }).await
            }
            Route::ReplenishmentAction(sku, id, action) => {
                let command = match action {
                    ReplenishmentAction::Confirm => Command::ConfirmReplenishment { id },
                    ReplenishmentAction::Cancel => Command::CancelReplenishment { id },
                    ReplenishmentAction::Receive => {
                        let body: ReceiveBody = read_optional_body(incoming.req).await?;
                        Command::ReceiveReplenishment { id, qty: body.qty }
                    }
                };
                let fingerprint = incoming.fingerprint(&command);
                let op = incoming.step(fingerprint, Actor::Admin, command)?;
                let answer = sku_call(env, sku.clone(), op).await;
                read_cache::forget(&sku);
                answer
            }
            Route::ExportLedger(sku) => {
                let (after, limit) = wire::parse_page(query)?;
                sku_call(env, sku, SkuOp::ExportLedger { after, limit }).await
            }
            Route::LedgerKey => {
                let secret = env.secret("LEDGER_SIGNING_KEY").map(|s| s.to_string());
                let key = secret
                    .ok()
                    .and_then(|s| crate::domain::checkpoint::signing_key(&s))
                    .ok_or(ApiError::LedgerKeyMissing)?;
                let public = key.verifying_key();
                reply(HttpReply::json(
                    200,
                    json!({
                        "alg": "Ed25519",
                        "public_key": crate::domain::checkpoint::hex(public.as_bytes()),
                        "key_id": crate::domain::checkpoint::key_id(&public),
                    }),
                ))
            }
            Route::PutSku(sku) => {
                admin_step(&mut incoming, env, sku, SetupBody::into_command).await
            }
            Route::Restock(sku) => {
                admin_step(&mut incoming, env, sku, |b: RestockBody| {
                    Ok(b.into_command())
                })
                .await
            }
            Route::Adjust(sku) => {
                admin_step(
                    &mut incoming,
                    env,
                    sku,
                    |b: AdjustBody| Ok(b.into_command()),
                )
                .await
            }
            Route::Reserve(sku) => {
                let body: ReserveBody = read_body(incoming.req).await?;
                let buyer = acting_buyer(caller.buyer(), body.buyer.as_ref())?;
                // A storefront's hold; the merchant's own are not screened.
                let storefront = !caller.is_admin();
                if storefront {
                    let signals = signals(incoming.req, &caller);
                    screen_hold(env, &buyer, body.qty.get(), signals).await?;
                }
                let fingerprint = incoming.fingerprint(&(&body, &buyer));
                // A split SKU's reservation goes straight to the buyer's bucket
                // (if this isolate knows of the split), with a hold id that
                // names it.
                let now = worker::Date::now().as_millis();
                let split = routing::buckets(&sku, now);
                let bucket = (split > 0).then(|| buckets::bucket_for(&buyer, split));
                let hold = match bucket {
                    Some(b) => buckets::mark_hold(&new_hold_id()?, b),
                    None => new_hold_id()?,
                };
                let mut refusal = limited.map(|scope| Refusal::RateLimited { scope });
                // The live-hold cap (0: off) is the storefront's only.
                let cap = if storefront { hold_gate::max(env) } else { 0 };
                let mut claimed_first = false;
                if cap > 0 && refusal.is_none() && hold_gate::noted(&buyer) {
                    let now = worker::Date::now().as_millis();
                    match hold_gate::claim_first(env, cap, &buyer, &sku, &hold, now).await {
                        Some(max) => refusal = Some(Refusal::HoldCap { max }),
                        None => claimed_first = true,
                    }
                }
                let command =
                    body.into_command(hold.clone(), buyer.clone(), sells_from(&caller, None));
                let op = match (
                    incoming.step(fingerprint, actor(&caller), command)?,
                    refusal,
                ) {
                    (op, None) => op,
                    // Refused as a new attempt: only a retry of an attempt
                    // already made gets through, answered from its stored reply.
                    (SkuOp::Step { request }, Some(refusal)) if request.key.is_some() => {
                        SkuOp::Replay { request, refusal }
                    }
                    (_, Some(refusal)) => return Err(refusal.into()),
                };
                let response = match (op, merge::window(env)) {
                    // Merged with the same SKU's other reservations arriving now.
                    (SkuOp::Step { request }, Some(window)) => {
                        let reply = merge::step(env, &sku, bucket, request, window)
                            .await
                            .ok_or(ApiError::Internal)?;
                        to_response(&wire::reply_to_http(&reply)).map_err(internal)?
                    }
                    (op, _) => sku_call_to(env, sku.clone(), bucket, op).await?,
                };
                if cap > 0 {
                    let answered = hold_gate::Answered {
                        cap,
                        buyer,
                        sku,
                        drawn: hold,
                        claimed_first,
                    };
                    hold_gate::after_sku(ctx, env, &response, answered);
                }
                Ok(response)
            }
            Route::Commit(sku, hold) => {
                let fingerprint = incoming.fingerprint(&());
                let op = incoming.step(fingerprint, Actor::Admin, Command::Commit { hold })?;
                sku_call(env, sku, op).await
            }
            Route::Release(sku, hold) => {
                let fingerprint = incoming.fingerprint(&());
                let op = incoming.step(fingerprint, actor(&caller), Command::Release { hold })?;
                sku_call(env, sku, op).await
            }
            Route::CreateOrder => {
                let body: CreateOrderBody = read_body(incoming.req).await?;
                let buyer = acting_buyer(caller.buyer(), body.buyer.as_ref())?;
                let lines = body.merged_lines()?;
                // With a key, a retried create reaches the same order object.
                // (Over a limit, only keyed requests got this far.)
                let order = match incoming.key()? {
                    Some(key) => order_id_for_key(&buyer, &key),
                    None => OrderId::from_bytes(random_bytes()?),
                };
                let op = OrderOp::Create {
                    fingerprint: incoming.fingerprint(&(&body, &buyer)),
                    buyer,
                    sells_from: sells_from(&caller, Some(&body.channel)),
                    channel: body.channel,
                    room: body.room,
                    lines: lines.clone(),
                    replay_only: limited,
                    signals: signals(incoming.req, &caller),
                };
                let answer = order_call(env, order, op).await;
                for (sku, _) in &lines {
                    read_cache::forget(sku);
                }
                answer
            }
            Route::GetOrder(order) => {
                let caller = actor(&caller);
                order_call(env, order, OrderOp::Get { caller }).await
            }
            Route::OrderAction(order, action) => {
                let op = order_action(&mut incoming, env, &order, action, actor(&caller)).await?;
                order_call(env, order, op).await
            }
            Route::GetRiskRules => desk(env, &RiskCall::Rules).await,
            Route::GetAutomations(scope) => {
                automation_object::call(env, &AutomationCall::Get { scope })
                    .await
                    .map_err(internal)
            }
            Route::PutAutomations(scope) => {
                let patch: SwitchPatch = read_body(incoming.req).await?;
                if patch.is_empty() {
                    return Err(ApiError::InvalidBody(
                        "name at least one rule to switch: auto_confirm, auto_ship_virtual, flag_repeat_buyer or restock_unopened".into(),
                    ));
                }
                let answer = automation_object::call(
                    env,
                    &AutomationCall::Put {
                        scope: scope.clone(),
                        patch,
                    },
                )
                .await
                .map_err(internal);
                // This isolate's orders use the new switches at once; others
                // within automation_object::SWITCHES_TTL_MS.
                automation_object::forget(&scope);
                answer
            }
            Route::PutRiskRules => {
                let raw = read_bytes(incoming.req).await?;
                // JSON first (a 400 if not); the desk checks the rules (422).
                parse_body::<serde_json::Value>(&raw)?;
                let body = String::from_utf8(raw)
                    .map_err(|_| ApiError::MalformedJson("the body is not UTF-8".into()))?;
                let mut response = desk(env, &RiskCall::PutRules { body }).await?;
                if response.status_code() == 200 {
                    // This isolate uses the new set at once; others within
                    // risk_object::RULES_TTL_MS.
                    let set: RuleSet = response.json().await.map_err(internal)?;
                    let set = risk_object::remember_rules(set);
                    let body = serde_json::to_value(&*set).map_err(|_| ApiError::Internal)?;
                    return reply(HttpReply::json(200, body));
                }
                Ok(response)
            }
            Route::Reviews => {
                let (_, limit) = wire::parse_page(query)?;
                desk(env, &RiskCall::Reviews { limit }).await
            }
            Route::ListWebhooks => hook_reply(env, hooks::REGISTRY, &HookCall::List).await,
            Route::CreateWebhook => {
                let body: WebhookBody = read_body(incoming.req).await?;
                let (url, events) = body.checked()?;
                let call = HookCall::Create { url, events };
                // Objects in this isolate see the new endpoint at once.
                hooks::forget_endpoints();
                hook_reply(env, hooks::REGISTRY, &call).await
            }
            Route::GetWebhook(id) => hook_reply(env, hooks::REGISTRY, &HookCall::Get { id }).await,
            Route::DeleteWebhook(id) => {
                hooks::forget_endpoints();
                hook_reply(env, hooks::REGISTRY, &HookCall::Delete { id }).await
            }
            Route::WebhookDeliveries(id) => {
                let (limit, state) = wire::parse_deliveries_query(query)?;
                webhook_deliveries(env, id, limit, state).await
            }
            Route::ResendDelivery(id, event) => resend(env, id, event).await,
            Route::PutAllocation(sku, channel) => {
                admin_step(&mut incoming, env, sku, |body: AllocationBody| {
                    body.into_command(channel)
                })
                .await
            }
            Route::DeleteAllocation(sku, channel) => {
                let fingerprint = incoming.fingerprint(&());
                let command = Command::Allocate {
                    channel,
                    spec: None,
                };
                let op = incoming.step(fingerprint, Actor::Admin, command)?;
                sku_call(env, sku, op).await
            }
            Route::ListChannels => {
                intake::channel_call(env, channels::REGISTRY, &ChannelCall::List).await
            }
            Route::PutChannel(channel) => {
                let body: ChannelBody = read_body(incoming.req).await?;
                let config = body.into_config(channel, worker::Date::now().as_millis())?;
                channels::forget_configs();
                intake::channel_call(env, channels::REGISTRY, &ChannelCall::Put { config }).await
            }
            Route::GetChannel(channel) => {
                let (_, limit) = wire::parse_page(query)?;
                intake::status(env, channel, limit).await
            }
            Route::DeleteChannel(channel) => {
                channels::forget_configs();
                intake::channel_call(env, channels::REGISTRY, &ChannelCall::Delete { channel })
                    .await
            }
            Route::ChannelSync(channel) => {
                let (_, limit) = wire::parse_page(query)?;
                intake::status(env, channel, limit).await
            }
            Route::ChannelMessages(channel) => intake::messages(incoming.req, env, channel).await,
            Route::ListOrders => {
                reply(order_queries::list(env, wire::parse_order_query(query)?).await?)
            }
            Route::ExportOrders => {
                reply(order_queries::export(env, wire::parse_order_query(query)?).await?)
            }
            Route::CreateJob => reply(create_job(incoming.req, env, query).await?),
            Route::CarrierDeliveries => reply(carrier_deliveries(incoming.req, env).await?),
            Route::GetJob(id) => {
                // Every row's result (a job has at most 20,000).
                let status = JobCall::Status { limit: 20_000 };
                job_object::call(env, &id, &status).await.map_err(internal)
            }
            Route::PickingList => {
                reply(order_queries::picking_list(env, wire::parse_order_query(query)?).await?)
            }
            Route::DevSession => dev_session(incoming.req, env).await,
            Route::DevPayment => dev_payment(incoming.req, env).await,
            Route::PutRoom(room) => {
                let body: RoomBody = read_body(incoming.req).await?;
                let feed = FeedName::Room(room);
                let call = FeedCall::SetupRoom {
                    feed: feed.clone(),
                    room: body.into_setup()?,
                };
                feed_call(env, &feed, call).await
            }
            Route::GetRoom(room) => {
                let feed = FeedName::Room(room);
                feed_call(env, &feed, FeedCall::Snapshot { feed: feed.clone() }).await
            }
            Route::RoomStats(room) => {
                let csv = wire::parse_format_csv(query)?;
                FeedClient::call_first(env, &room, &FeedCall::RoomStats { csv })
                    .await
                    .map_err(internal)
            }
            Route::Live(feed) => live(incoming.req, env, feed).await,
            Route::BuyerOrders(buyer) => {
                // Another buyer's list does not exist, as far as a buyer knows.
                if !caller.is_admin() && caller.buyer() != Some(&buyer) {
                    return Err(ApiError::RouteNotFound);
                }
                let (after, limit) = wire::parse_page(query)?;
                BuyerClient::list(env, &buyer, after, limit)
                    .await
                    .map_err(internal)
            }
        }
    }
    .await;
    if let Some(sku) = written {
        read_cache::forget(&sku);
    }
    result
}

/// What the risk rules may look at besides the request: the session's
/// device and account age, and the client's address.
/// The channel whose allocation a storefront write sells from: a buyer's
/// signed session claim (a shop issuing sessions for a channel), an
/// admin's word in the body, else the storefront. A buyer's own body never
/// picks another channel's units.
fn sells_from(caller: &Caller, admin_says: Option<&Channel>) -> Option<Channel> {
    match caller {
        Caller::Buyer(claims) => claims
            .channel
            .as_deref()
            .and_then(|c| Channel::parse(c).ok()),
        Caller::Admin => admin_says.cloned(),
        Caller::Anonymous => None,
    }
    .filter(|c| c.as_str() != allocation::STOREFRONT)
}

fn signals(req: &Request, caller: &Caller) -> Signals {
    // The merchant's own backend acting for a buyer is not that buyer's
    // device or address.
    let Caller::Buyer(claims) = caller else {
        return Signals::default();
    };
    Signals {
        device: claims.device.clone(),
        address: req.headers().get("CF-Connecting-IP").ok().flatten(),
        account_created: claims.account_created,
    }
}

/// A hold meets the rules that need no history (blocklists, new accounts):
/// microseconds from the cached rule set, no hop. Only `deny` applies; a
/// hold is reviewed when it becomes an order.
async fn screen_hold(env: &Env, buyer: &BuyerId, units: u64, signals: Signals) -> Outcome<()> {
    let rules = risk_object::rules(env).await;
    let facts = Facts {
        now_ms: worker::Date::now().as_millis(),
        buyer: Some(buyer.clone()),
        device: signals.device,
        address: signals.address,
        account_created_s: signals.account_created,
        units,
        ..Facts::default()
    };
    let decision = risk::evaluate(&rules, &facts, Judged::Reservation);
    if decision.verdict == Verdict::Deny {
        return Err(ApiError::RiskDenied {
            risk: serde_json::to_value(&decision).unwrap_or_default(),
        });
    }
    Ok(())
}

async fn hook_reply(env: &Env, name: &str, call: &HookCall) -> Outcome<Response> {
    hooks::call(env, name, call).await.map_err(internal)
}

/// An endpoint's deliveries, newest first, gathered from its queues.
async fn webhook_deliveries(
    env: &Env,
    id: EndpointId,
    limit: usize,
    state: Option<DeliveryState>,
) -> Outcome<Response> {
    let get = HookCall::Get { id: id.clone() };
    let found = hook_reply(env, hooks::REGISTRY, &get).await?;
    if found.status_code() != 200 {
        return Ok(found);
    }
    let call = HookCall::Deliveries { limit, state };
    let names: Vec<String> = (0..hooks::shards(env))
        .map(|k| hooks::queue_name(&id, k))
        .collect();
    let answers =
        futures_util::future::join_all(names.iter().map(|name| hooks::call(env, name, &call)))
            .await;
    let mut all: Vec<serde_json::Value> = Vec::new();
    for answer in answers {
        let mut answer = answer.map_err(internal)?;
        let body: serde_json::Value = answer.json().await.map_err(internal)?;
        all.extend(body["deliveries"].as_array().cloned().unwrap_or_default());
    }
    let at = |d: &serde_json::Value| d["queued_at"].as_u64().unwrap_or(0);
    all.sort_by_key(|d| std::cmp::Reverse(at(d)));
    all.truncate(limit);
    reply(HttpReply::json(
        200,
        serde_json::json!({ "endpoint": id, "deliveries": all }),
    ))
}

/// Queues one event again at whichever of the endpoint's queues has it.
async fn resend(env: &Env, id: EndpointId, event: String) -> Outcome<Response> {
    let get = HookCall::Get { id: id.clone() };
    let found = hook_reply(env, hooks::REGISTRY, &get).await?;
    if found.status_code() != 200 {
        return Ok(found);
    }
    let call = HookCall::Resend { event };
    for k in 0..hooks::shards(env) {
        let answer = hook_reply(env, &hooks::queue_name(&id, k), &call).await?;
        if answer.status_code() != 404 {
            return Ok(answer);
        }
    }
    Err(ApiError::DeliveryNotFound)
}

async fn desk(env: &Env, call: &RiskCall) -> Outcome<Response> {
    RiskClient::desk(env, call).await.map_err(internal)
}

/// A payment provider's callback: the signature over the raw body is
/// checked before the body is even parsed, and the order is told it was
/// paid by the provider, never by a buyer.
fn pay(
    env: &Env,
    order: &OrderId,
    key: Option<IdempotencyKey>,
    signature: &str,
    raw: &[u8],
) -> Outcome<OrderOp> {
    auth::verify_payment(signature, env, raw)?;
    let body: PayBody = parse_body(raw)?;
    let fingerprint = wire::fingerprint("POST", &format!("/api/orders/{order}/pay"), &body);
    Ok(OrderOp::Transition {
        intent: body.into_intent()?,
        actor: Actor::Payment,
        caller: Actor::System,
        key,
        fingerprint,
    })
}

/// Dev mode: a session for any buyer, so the pages and curl work locally.
async fn dev_session(req: &mut Request, env: &Env) -> Outcome<Response> {
    let body: DevSessionBody = read_body(req).await?;
    let secret = auth::session_secret(env).ok_or(ApiError::Internal)?;
    let now = auth::now_s();
    let claims = Claims {
        sub: body.buyer.clone(),
        iat: now,
        exp: now + body.ttl_s.unwrap_or(3600).clamp(1, 86_400),
        device: body.device.map(String::from),
        account_created: body.account_created,
        channel: None,
    };
    let token = sign_session(&claims, secret.as_bytes());
    reply(HttpReply::json(
        201,
        json!({ "token": token, "buyer": claims.sub, "expires_at": claims.exp * 1000 }),
    ))
}

/// Dev mode: plays the payment provider, signing the callback it then
/// delivers through the same path as a real one.
async fn dev_payment(req: &mut Request, env: &Env) -> Outcome<Response> {
    let body: DevPaymentBody = read_body(req).await?;
    let secret = auth::payment_secret(env).ok_or(ApiError::Internal)?;
    let callback = json!({ "payment_ref": body.payment_ref, "amount": body.amount }).to_string();
    let signature =
        crate::api::session::sign_body(auth::now_s(), callback.as_bytes(), secret.as_bytes());
    let op = pay(env, &body.order, None, &signature, callback.as_bytes())?;
    order_call(env, body.order, op).await
}

async fn order_action(
    incoming: &mut Incoming<'_>,
    env: &Env,
    order: &OrderId,
    action: OrderAction,
    caller: Actor,
) -> Outcome<OrderOp> {
    let key = incoming.key()?;
    let transition = |intent: Intent, actor: Actor, fingerprint: String| OrderOp::Transition {
        intent,
        actor,
        caller: caller.clone(),
        key: key.clone(),
        fingerprint,
    };
    Ok(match action {
        OrderAction::Pay => {
            let raw = read_bytes(incoming.req).await?;
            let signature = incoming
                .req
                .headers()
                .get("Edgestock-Signature")
                .ok()
                .flatten()
                .unwrap_or_default();
            return pay(env, order, key, &signature, &raw);
        }
        OrderAction::Cancel => {
            let body: CancelBody = read_optional_body(incoming.req).await?;
            let fingerprint = incoming.fingerprint(&body);
            let intent = Intent::Cancel {
                reason: body.reason.map(|r| r.to_string()),
            };
            transition(intent, caller.clone(), fingerprint)
        }
        OrderAction::Refund => {
            let body: RefundBody = read_body(incoming.req).await?;
            let fingerprint = incoming.fingerprint(&body);
            // An explicit `restock` is the merchant's decision; with only
            // `unopened: true` the restock_unopened rule decides.
            let (restock, unopened) = match (body.restock, body.unopened) {
                (Some(restock), _) => (restock, false),
                (None, Some(true)) => (false, true),
                (None, _) => {
                    return Err(ApiError::InvalidBody(
                        "say whether the units go back to stock (restock), or that the item came back unopened (unopened: true) for the restock_unopened rule to decide".into(),
                    ))
                }
            };
            let intent = Intent::Refund {
                unopened,
                restock,
                reason: body.reason.map(|r| r.to_string()),
            };
            transition(intent, Actor::Admin, fingerprint)
        }
        OrderAction::Ship => {
            let body: ShipBody = read_body(incoming.req).await?;
            OrderOp::Change {
                fingerprint: incoming.fingerprint(&body),
                change: body.into_change()?,
                actor: Actor::Admin,
                key,
            }
        }
        OrderAction::Approve => {
            let body: DeliverBody = read_optional_body(incoming.req).await?;
            OrderOp::Change {
                fingerprint: incoming.fingerprint(&body),
                change: crate::domain::order::Change::Approve,
                actor: Actor::Admin,
                key,
            }
        }
        OrderAction::Reject => {
            let body: CancelBody = read_optional_body(incoming.req).await?;
            let fingerprint = incoming.fingerprint(&body);
            let intent = Intent::Reject {
                reason: body.reason.map(|r| r.to_string()),
            };
            transition(intent, Actor::Admin, fingerprint)
        }
        OrderAction::Confirm => {
            let body: DeliverBody = read_optional_body(incoming.req).await?;
            OrderOp::Change {
                fingerprint: incoming.fingerprint(&body),
                change: crate::domain::order::Change::Confirm,
                actor: Actor::Admin,
                key,
            }
        }
        OrderAction::Deliver => {
            let body: DeliverBody = read_optional_body(incoming.req).await?;
            OrderOp::Change {
                fingerprint: incoming.fingerprint(&body),
                change: crate::domain::order::Change::Deliver,
                actor: Actor::Admin,
                key,
            }
        }
    })
}

/// An admin write to a SKU: its body, as a command, from the admin.
async fn admin_step<B: DeserializeOwned + Serialize>(
    incoming: &mut Incoming<'_>,
    env: &Env,
    sku: SkuId,
    command: impl FnOnce(B) -> Outcome<Command>,
) -> Outcome<Response> {
    let body: B = read_body(incoming.req).await?;
    let fingerprint = incoming.fingerprint(&body);
    let op = incoming.step(fingerprint, Actor::Admin, command(body)?)?;
    sku_call(env, sku, op).await
}

/// A viewer's WebSocket: handed, upgrade and all, to the feed's object.
/// The credential a WebSocket upgrade offers. Browsers cannot set headers
/// on an upgrade: it comes as a subprotocol, `bearer.<token>`, beside
/// `edgestock`, the one the server selects (the token is never echoed
/// back).
fn offered_token(req: &Request, needs: &str) -> Outcome<String> {
    let offered = req
        .headers()
        .get("Sec-WebSocket-Protocol")
        .ok()
        .flatten()
        .unwrap_or_default();
    offered
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("bearer.").map(str::to_owned))
        .ok_or_else(|| {
            ApiError::Unauthorized(format!("{needs} as the subprotocol 'bearer.<token>'"))
        })
}

async fn live(req: &Request, env: &Env, feed: FeedName) -> Outcome<Response> {
    let upgrade = req.headers().get("Upgrade").ok().flatten();
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(ApiError::UpgradeRequired);
    }
    let headers = Headers::new();
    headers.set("Upgrade", "websocket").map_err(internal)?;
    if let FeedName::Job(_) = &feed {
        // The merchant's console: the admin token, the same way.
        let token = offered_token(req, "a job's feed needs the admin token")?;
        if !auth::identify(&token, env)?.is_admin() {
            return Err(ApiError::Unauthorized(
                "a job's feed is the merchant's: the admin token".into(),
            ));
        }
        headers
            .set("Sec-WebSocket-Protocol", "edgestock")
            .map_err(internal)?;
    }
    if let FeedName::Order(order) = &feed {
        let token = offered_token(req, "an order feed needs the session")?;
        let caller = match auth::identify(&token, env)? {
            Caller::Anonymous => return Err(ApiError::OrderNotFound),
            caller => actor(&caller),
        };
        let seen = order_call(env, order.clone(), OrderOp::Get { caller }).await?;
        if seen.status_code() != 200 {
            return Err(ApiError::OrderNotFound);
        }
        headers
            .set("Sec-WebSocket-Protocol", "edgestock")
            .map_err(internal)?;
    }
    let mut init = RequestInit::new();
    init.with_headers(headers);
    let forwarded =
        Request::new_with_init("https://feed.internal/live", &init).map_err(internal)?;
    FeedClient::connect(env, &feed, forwarded)
        .await
        .map_err(internal)
}

async fn feed_call(env: &Env, feed: &FeedName, call: FeedCall) -> Outcome<Response> {
    FeedClient::call(env, feed, &call).await.map_err(internal)
}

/// `GET /api/skus/{sku}`: from this isolate's short-lived cache when it
/// has the SKU (see `read_cache` for how fresh), else from the object.
async fn read_sku(req: &Request, env: &Env, sku: SkuId) -> Outcome<Response> {
    let window = read_cache::window_ms(env);
    if window == 0 || read_cache::bypassed(req) {
        return sku_call(env, sku, SkuOp::Get).await;
    }
    let now = worker::Date::now().as_millis();
    let ticket = match read_cache::lookup(&sku, now, window).map_err(internal)? {
        Lookup::Hit(response) => return Ok(response),
        Lookup::Miss(ticket) => ticket,
    };
    let response = sku_call(env, sku.clone(), SkuOp::Get).await?;
    let answered = worker::Date::now().as_millis();
    read_cache::keep(&sku, ticket, answered, response)
        .await
        .map_err(internal)
}

async fn sku_call(env: &Env, sku: SkuId, op: SkuOp) -> Outcome<Response> {
    sku_call_to(env, sku, None, op).await
}

/// A call to a SKU's own object or (Some) one of its stock buckets; what
/// the answer says of a split is kept for the next call.
async fn sku_call_to(env: &Env, sku: SkuId, bucket: Option<u16>, op: SkuOp) -> Outcome<Response> {
    let call = SkuCall {
        sku,
        bucket,
        buyer: None,
        op,
    };
    let response = SkuClient::send(env, &call).await.map_err(internal)?;
    routing::learn(&call.sku, &response, worker::Date::now().as_millis());
    Ok(response)
}

async fn order_call(env: &Env, order: OrderId, op: OrderOp) -> Outcome<Response> {
    let client = OrderClient::new(env, &order).map_err(internal)?;
    client
        .call(&OrderCall { order, op })
        .await
        .map_err(internal)
}

pub(super) fn reply(r: HttpReply) -> Outcome<Response> {
    to_response(&r).map_err(internal)
}

fn internal(e: worker::Error) -> ApiError {
    console_error!("router: {e}");
    ApiError::Internal
}

/// Reads a JSON body: 415 for a media type that is not JSON (or text/plain),
/// 413 past the cap (by Content-Length before reading, and by size after),
/// then [`parse_body`].
async fn read_body<T: DeserializeOwned>(req: &mut Request) -> Outcome<T> {
    let bytes = read_bytes(req).await?;
    parse_body(&bytes)
}

/// As [`read_body`], but an empty body means `{}` (cancel, deliver).
async fn read_optional_body<T: DeserializeOwned + Default>(req: &mut Request) -> Outcome<T> {
    let bytes = read_bytes(req).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_body(&bytes)
}

async fn read_bytes(req: &mut Request) -> Outcome<Vec<u8>> {
    if let Some(ct) = req.headers().get("Content-Type").ok().flatten() {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // text/plain is what a browser's fetch sends for a string body, and
        // it spares cross-origin storefronts a preflight.
        let json_like = media == "application/json" || media.ends_with("+json");
        if !json_like && media != "text/plain" {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    read_capped(req).await
}

/// The body as bytes, whatever its media type (a platform's form or JSON),
/// within the body cap.
pub(super) async fn read_capped(req: &mut Request) -> Outcome<Vec<u8>> {
    read_capped_to(req, wire::BODY_BYTES_MAX).await
}

/// As [`read_capped`], with another cap (a bulk job's upload).
pub(super) async fn read_capped_to(req: &mut Request, max: usize) -> Outcome<Vec<u8>> {
    let headers = req.headers();
    let too_large = ApiError::PayloadTooLarge { max_bytes: max };
    let unreadable = || ApiError::MalformedJson("the body could not be read".into());
    if let Some(length) = headers.get("Content-Length").ok().flatten() {
        if length.trim().parse::<usize>().map_or(true, |n| n > max) {
            return Err(too_large);
        }
        // A length within the cap: the runtime holds no more than that.
        return req.bytes().await.map_err(|_| unreadable());
    }
    // No length (chunked): streamed with a running count, so a body past
    // the cap is cut off instead of being buffered whole first.
    let mut bytes = Vec::new();
    let Ok(mut stream) = req.stream() else {
        return Ok(bytes);
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| unreadable())?;
        if bytes.len() + chunk.len() > max {
            return Err(too_large);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// `POST /api/jobs?kind=ship|cancel|refund|reindex&reason=&restock=`: the body is
/// the rows, CSV (`order,carrier,tracking_number`) or a JSON array, up to
/// 2 MiB. Answers 202 with the job's id; the job runs by itself.
async fn create_job(req: &mut Request, env: &Env, query: &str) -> Outcome<HttpReply> {
    use crate::domain::jobs::{parse_rows, JobKind};
    let mut kind = None;
    let mut reason = None;
    let mut restock = true;
    for (name, value) in crate::channels::form_pairs(query) {
        match name.as_str() {
            "kind" => {
                kind = Some(match value.as_str() {
                    "ship" => JobKind::Ship,
                    "cancel" => JobKind::Cancel,
                    "refund" => JobKind::Refund,
                    "reindex" => JobKind::Reindex,
                    _ => {
                        return Err(ApiError::InvalidRequest(
                            "kind is ship, cancel, refund or reindex".into(),
                        ))
                    }
                })
            }
            "reason" => {
                let note = crate::domain::types::Note::parse(&value)
                    .map_err(|e| ApiError::InvalidRequest(e.0))?;
                reason = Some(note.to_string());
            }
            "restock" => {
                restock = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::InvalidRequest("restock is true or false".into())),
                }
            }
            _ => {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown query parameter {name}"
                )))
            }
        }
    }
    let kind = kind.ok_or_else(|| {
        ApiError::InvalidRequest("kind is required: ship, cancel or refund".into())
    })?;
    let bytes = read_capped_to(req, JOB_BODY_MAX).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::MalformedJson("the upload is not UTF-8".into()))?;
    let rows = parse_rows(text).map_err(ApiError::InvalidBody)?;
    let id = format!("j_{}", crate::domain::types::hex(&random_bytes()?));
    let call = JobCall::Create {
        id: id.clone(),
        kind,
        reason,
        restock,
        rows,
    };
    let mut answer = job_object::call(env, &id, &call).await.map_err(internal)?;
    let status = answer.status_code();
    let body: serde_json::Value = answer.json().await.map_err(internal)?;
    let mut reply = HttpReply::json(status, body);
    reply.headers.push(("Location", format!("/api/jobs/{id}")));
    Ok(reply)
}

/// `POST /api/carriers/deliveries`: a carrier's signed updates, `{"events":
/// [{"order", "tracking_number", "status"}]}` (1–100); `delivered` moves a
/// shipped order to delivered (idempotent), anything else is noted and
/// ignored. One result per event.
async fn carrier_deliveries(req: &mut Request, env: &Env) -> Outcome<HttpReply> {
    let raw = read_bytes(req).await?;
    let signature = req
        .headers()
        .get("Edgestock-Signature")
        .ok()
        .flatten()
        .unwrap_or_default();
    auth::verify_carrier(&signature, env, &raw)?;
    let body: wire::CarrierBody = parse_body(&raw)?;
    let events = body.checked()?;
    let runs = events.iter().map(|e| async move {
        let Ok(order) = OrderId::parse(&e.order) else {
            return json!({"order": e.order, "result": "unknown_order"});
        };
        if e.status != "delivered" {
            return json!({"order": e.order, "result": "ignored", "status": e.status});
        }
        let key = IdempotencyKey::parse(&format!("carrier-delivered-{}", e.tracking_number)).ok();
        let op = OrderOp::Change {
            change: crate::domain::order::Change::Deliver,
            actor: Actor::System,
            key,
            fingerprint: format!("carrier:{}", e.tracking_number),
        };
        let answer = match OrderClient::new(env, &order) {
            Ok(client) => {
                client
                    .call(&OrderCall {
                        order: order.clone(),
                        op,
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        let result = match answer {
            Ok(mut r) => {
                let status = r.status_code();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                match (status, body["from"].as_str()) {
                    (200, _) => "delivered",
                    (404, _) => "unknown_order",
                    (409, Some("delivered")) => "already_delivered",
                    (409, _) if body["type"] == "/problems/illegal-transition" => "not_shipped",
                    _ => "retry",
                }
            }
            Err(_) => "retry",
        };
        json!({"order": e.order, "result": result})
    });
    let results = futures_util::future::join_all(runs).await;
    let retry = results.iter().any(|r| r["result"] == "retry");
    Ok(HttpReply::json(
        if retry { 503 } else { 200 },
        json!({ "results": results }),
    ))
}

/// A bulk job's upload may be this big (thousands of rows).
const JOB_BODY_MAX: usize = 2 * 1024 * 1024;

fn random_bytes() -> Outcome<[u8; 16]> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        console_error!("router: no randomness: {e}");
        ApiError::Internal
    })?;
    Ok(bytes)
}

fn new_hold_id() -> Outcome<ReservationId> {
    Ok(ReservationId::from_random(random_bytes()?))
}
