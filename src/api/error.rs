//! The one error type of the HTTP API, and the one place it becomes a
//! response: an RFC 9457 problem (`application/problem+json`).

use super::HttpReply;
use crate::domain::order::OrderError;
use crate::domain::stock::StockError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Whose attempts a rate limit counted: a client address (generous: a
/// carrier-grade NAT puts thousands of viewers behind one) or a buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateScope {
    Address,
    Buyer,
}

/// The rate limiters' window, in seconds: what a limited client is told to
/// wait.
pub const RATE_PERIOD_S: u64 = 10;

/// Why a new attempt is refused at the edge, while a retry of an attempt
/// already made (same Idempotency-Key) is still answered: sent along to the
/// object that holds the stored answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    RateLimited { scope: RateScope },
    HoldCap { max: usize },
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::RateLimited { scope } => ApiError::RateLimited {
                scope,
                retry_after_s: RATE_PERIOD_S,
            },
            Refusal::HoldCap { max } => ApiError::HoldCapExceeded { max },
        }
    }
}

impl RateScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RateScope::Address => "address",
            RateScope::Buyer => "buyer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The body is not JSON at all (syntax error, truncated).
    MalformedJson(String),
    /// JSON, but not the shape or values the route takes.
    InvalidBody(String),
    /// A path segment (SKU id) or query parameter is not acceptable.
    InvalidRequest(String),
    InvalidHeader(String),
    UnsupportedMediaType,
    PayloadTooLarge {
        max_bytes: usize,
    },
    /// No valid credential for the route: an admin token, a buyer session,
    /// or (for payment callbacks) a provider signature.
    Unauthorized(String),
    /// A valid credential that does not cover this request (a body naming
    /// another buyer than the session's).
    Forbidden(String),
    /// Too many attempts from one buyer or address; retry after this many
    /// seconds.
    RateLimited {
        scope: RateScope,
        retry_after_s: u64,
    },
    /// The buyer already has `max` live holds across all SKUs.
    HoldCapExceeded {
        max: usize,
    },
    /// A risk rule denied the request; `risk` is the decision (which rules
    /// fired, with what numbers).
    RiskDenied {
        risk: Value,
    },
    /// The admin API is off because no ADMIN_TOKEN secret is set.
    AdminDisabled,
    RouteNotFound,
    MethodNotAllowed {
        allowed: &'static [&'static str],
    },
    Stock(StockError),
    Order(OrderError),
    OrderNotFound,
    /// No LEDGER_SIGNING_KEY secret (64 hex digits) is set.
    LedgerKeyMissing,
    /// No webhook endpoint with this id.
    WebhookNotFound,
    /// No connected channel with this name.
    ChannelNotFound,
    /// No bulk job with this id.
    JobNotFound,
    /// A channel's message failed its platform's signature check.
    ChannelSignature(String),
    /// The endpoint has no delivery of this event.
    DeliveryNotFound,
    /// Some lines of a new order could not be had; nothing is held.
    /// `failed_lines` names each and why.
    LinesRefused {
        failed_lines: Value,
    },
    /// Paying found lines gone; the order is now `failed` and holds nothing.
    PaymentFailed {
        failed_lines: Value,
    },
    /// The same Idempotency-Key came with a different request.
    IdempotencyKeyReused,
    /// A step of ours was interrupted; the same request can be retried.
    Retry,
    /// A live route was asked for without a WebSocket upgrade.
    UpgradeRequired,
    /// A browser page from an origin not in ALLOWED_ORIGINS.
    OriginNotAllowed,
    /// Something on our side failed; the log has the cause, the client only
    /// learns that it was not their fault.
    Internal,
}

impl From<StockError> for ApiError {
    fn from(e: StockError) -> Self {
        ApiError::Stock(e)
    }
}

impl ApiError {
    /// (status, type slug, title, detail, extension members)
    fn parts(&self) -> (u16, &'static str, &'static str, String, Map<String, Value>) {
        let none = Map::new();
        match self {
            ApiError::MalformedJson(d) => (400, "malformed-json", "Body is not valid JSON", d.clone(), none),
            ApiError::InvalidBody(d) => (422, "invalid-body", "Body has invalid fields", d.clone(), none),
            ApiError::InvalidRequest(d) => (400, "invalid-request", "Invalid request", d.clone(), none),
            ApiError::InvalidHeader(d) => (400, "invalid-header", "Invalid header", d.clone(), none),
            ApiError::UnsupportedMediaType => (
                415,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as application/json".into(),
                none,
            ),
            ApiError::PayloadTooLarge { max_bytes } => (
                413,
                "payload-too-large",
                "Body too large",
                format!("bodies are at most {max_bytes} bytes"),
                none,
            ),
            ApiError::Unauthorized(d) => (401, "unauthorized", "Unauthorized", d.clone(), none),
            ApiError::Forbidden(d) => (403, "forbidden", "Forbidden", d.clone(), none),
            ApiError::RateLimited { scope, retry_after_s } => {
                let mut ext = Map::new();
                ext.insert("scope".into(), json!(scope.as_str()));
                ext.insert("retry_after".into(), json!(retry_after_s));
                (
                    429,
                    "rate-limited",
                    "Too many requests",
                    format!("too many attempts from this {}; retry in {retry_after_s} s (a retry with the same Idempotency-Key is not a new attempt)", scope.as_str()),
                    ext,
                )
            }
            ApiError::HoldCapExceeded { max } => {
                let mut ext = Map::new();
                ext.insert("max".into(), json!(max));
                (
                    409,
                    "hold-cap-exceeded",
                    "Too many live holds",
                    format!("a buyer holds at most {max} items across all products at once; pay for or release one first"),
                    ext,
                )
            }
            ApiError::RiskDenied { risk } => {
                let reasons: Vec<String> = risk["fired"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|f| f["action"] == "deny")
                    .map(|f| format!("{}: {}", f["rule"].as_str().unwrap_or(""), f["reason"].as_str().unwrap_or("")))
                    .collect();
                let mut ext = Map::new();
                ext.insert("risk".into(), risk.clone());
                (
                    403,
                    "risk-denied",
                    "Refused by risk control",
                    format!("refused by the merchant's risk rules ({})", reasons.join("; ")),
                    ext,
                )
            }
            ApiError::AdminDisabled => (
                503,
                "admin-disabled",
                "Admin API disabled",
                "the ADMIN_TOKEN secret is not set on this deployment".into(),
                none,
            ),
            ApiError::RouteNotFound => (404, "not-found", "Not found", "no such route".into(), none),
            ApiError::MethodNotAllowed { allowed } => (
                405,
                "method-not-allowed",
                "Method not allowed",
                format!("this route takes {}", allowed.join(", ")),
                none,
            ),
            ApiError::Internal => (
                500,
                "internal",
                "Internal error",
                "the request could not be completed; it is safe to retry with the same Idempotency-Key"
                    .into(),
                none,
            ),
            ApiError::Stock(e) => stock_parts(e),
            ApiError::Order(e) => order_parts(e),
            ApiError::OrderNotFound => (
                404,
                "order-not-found",
                "Order not found",
                "no order with this id".into(),
                none,
            ),
            ApiError::LedgerKeyMissing => (
                503,
                "ledger-key-missing",
                "No ledger signing key",
                "the LEDGER_SIGNING_KEY secret (64 hex digits, an Ed25519 seed) is not set on this deployment".into(),
                none,
            ),
            ApiError::WebhookNotFound => (
                404,
                "webhook-not-found",
                "Webhook endpoint not found",
                "no webhook endpoint with this id".into(),
                none,
            ),
            ApiError::JobNotFound => (
                404,
                "job-not-found",
                "Job not found",
                "no bulk job with this id".into(),
                none,
            ),
            ApiError::ChannelNotFound => (
                404,
                "channel-not-found",
                "Channel not connected",
                "no platform is connected under this channel name (PUT /api/channels/{channel})".into(),
                none,
            ),
            ApiError::ChannelSignature(d) => (
                401,
                "channel-signature-invalid",
                "Message signature invalid",
                d.clone(),
                none,
            ),
            ApiError::DeliveryNotFound => (
                404,
                "delivery-not-found",
                "Delivery not found",
                "this endpoint has no delivery of that event".into(),
                none,
            ),
            ApiError::LinesRefused { failed_lines } => {
                let mut ext = Map::new();
                ext.insert("failed_lines".into(), failed_lines.clone());
                (
                    409,
                    "lines-refused",
                    "Order lines refused",
                    "some lines could not be had, so nothing was held; failed_lines says which and why"
                        .into(),
                    ext,
                )
            }
            ApiError::PaymentFailed { failed_lines } => {
                let mut ext = Map::new();
                ext.insert("failed_lines".into(), failed_lines.clone());
                (
                    409,
                    "payment-failed",
                    "Payment could not take the stock",
                    "some lines were gone at payment; the order is failed and holds nothing".into(),
                    ext,
                )
            }
            ApiError::IdempotencyKeyReused => stock_parts(&StockError::IdempotencyKeyReused),
            ApiError::UpgradeRequired => (
                426,
                "upgrade-required",
                "WebSocket upgrade required",
                "connect with a WebSocket (Upgrade: websocket)".into(),
                none,
            ),
            ApiError::OriginNotAllowed => (
                403,
                "origin-not-allowed",
                "Origin not allowed",
                "this page's origin is not in ALLOWED_ORIGINS".into(),
                none,
            ),
            ApiError::Retry => (
                503,
                "retry",
                "Please retry",
                "the request was interrupted; retrying it is safe".into(),
                none,
            ),
        }
    }

    pub fn status(&self) -> u16 {
        self.parts().0
    }

    pub fn to_reply(&self) -> HttpReply {
        let (status, slug, title, detail, extensions) = self.parts();
        // Extensions first, so the standard members always win.
        let mut body = extensions;
        body.insert("type".into(), json!(format!("/problems/{slug}")));
        body.insert("title".into(), json!(title));
        body.insert("status".into(), json!(status));
        body.insert("detail".into(), json!(detail));
        let mut reply = HttpReply::problem(status, Value::Object(body));
        match self {
            ApiError::MethodNotAllowed { allowed } => {
                reply.headers.push(("Allow", allowed.join(", ")));
            }
            ApiError::Unauthorized(_) => {
                reply
                    .headers
                    .push(("WWW-Authenticate", "Bearer realm=\"edgestock\"".into()));
            }
            ApiError::RateLimited { retry_after_s, .. } => {
                reply
                    .headers
                    .push(("Retry-After", retry_after_s.to_string()));
            }
            _ => {}
        }
        reply
    }
}

fn stock_parts(e: &StockError) -> (u16, &'static str, &'static str, String, Map<String, Value>) {
    // The error's own fields (requested, available, limit, …) become
    // extension members, so a client can act on them without parsing prose.
    let extensions = match serde_json::to_value(e) {
        Ok(Value::Object(mut m)) => {
            m.remove("code");
            m
        }
        _ => Map::new(),
    };
    let (status, slug, title, detail) = match e {
        StockError::SkuNotFound => (404, "sku-not-found", "SKU not found", "this SKU has not been set up".to_owned()),
        StockError::InsufficientStock { requested, available } => (
            409,
            "insufficient-stock",
            "Not enough stock",
            format!("asked for {requested}, {available} available"),
        ),
        StockError::BuyerLimitExceeded { limit, held, bought, requested } => (
            409,
            "buyer-limit-exceeded",
            "Purchase limit reached",
            format!("the limit is {limit} per buyer; this buyer holds {held} and bought {bought}, and asked for {requested} more"),
        ),
        StockError::OverHoldMax { max, requested } => (
            422,
            "over-hold-max",
            "Too many units in one hold",
            format!("one hold takes at most {max} units of this SKU; asked for {requested}"),
        ),
        StockError::HoldNotFound => (404, "hold-not-found", "Reservation not found", "no reservation with this id on this SKU".to_owned()),
        StockError::HoldResolved { hold_status, attempted } => (
            409,
            "hold-resolved",
            "Reservation already resolved",
            format!("the reservation is {}; it cannot become {}", hold_status.as_str(), attempted.as_str()),
        ),
        StockError::OnHandBelowCommitted { requested, reserved, sold } => (
            409,
            "on-hand-below-committed",
            "on_hand below reserved and sold",
            format!("on_hand {requested} is below reserved {reserved} + sold {sold}"),
        ),
        StockError::AdjustmentBelowCommitted { on_hand, delta, reserved, sold } => (
            409,
            "adjustment-refused",
            "Adjustment would make stock negative",
            format!("on_hand {on_hand} {delta:+} would be below reserved {reserved} + sold {sold}"),
        ),
        StockError::StockLevelTooHigh { max } => (
            422,
            "stock-level-too-high",
            "Stock level too high",
            format!("on_hand may be at most {max}"),
        ),
        StockError::IdempotencyKeyReused => (
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            "this Idempotency-Key was used for a different request".to_owned(),
        ),
        StockError::ReplenishmentNotFound => (
            404,
            "replenishment-not-found",
            "Replenishment request not found",
            "this SKU has no replenishment request with this id".to_owned(),
        ),
        StockError::ReplenishmentClosed { status } => (
            409,
            "replenishment-closed",
            "Replenishment request closed",
            format!("the request is {}; it cannot move that way", serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()),
        ),
        StockError::Quarantined => (
            503,
            "sku-quarantined",
            "SKU refusing changes",
            "this SKU's stored counts do not add up, so it refuses changes rather than oversell; an operator has been alerted (see GET /api/skus/{sku}/audit)".to_owned(),
        ),
        StockError::HoldIdTaken => (
            503,
            "retry",
            "Please retry",
            "a reservation id collided; retrying draws another".to_owned(),
        ),
        StockError::SplitChange { buckets, requested } => (
            409,
            "split-change",
            "A split SKU stays split",
            format!(
                "this SKU is served by {buckets} stock buckets and stays so ({requested} asked; at most {}); 0 brings every unsold unit home",
                crate::domain::buckets::BUCKETS_MAX
            ),
        ),
        StockError::ChannelShort { channel, requested, sellable } => (
            409,
            "channel-allocation-exhausted",
            "Not enough stock for this channel",
            format!("asked for {requested}; the allocation of channel {channel} has {sellable} to sell"),
        ),
        StockError::PoolShort { requested, pool } => (
            409,
            "allocation-pool-short",
            "Not enough units in the shared pool",
            format!("a dedicated bucket can grow by {requested} only from the pool, which has {pool}"),
        ),
        StockError::AllocationInvalid { reason } => (
            422,
            "allocation-invalid",
            "Allocation not possible",
            reason.clone(),
        ),
        StockError::AllocationSplit => (
            409,
            "allocation-split",
            "Allocation and stock buckets do not mix",
            "channels are allocated on a whole SKU: a split SKU takes no allocation, and a SKU with dedicated buckets does not split".to_owned(),
        ),
        StockError::SplitAfterSales { reserved, sold } => (
            409,
            "split-refused",
            "Split a limited SKU before it sells",
            format!(
                "this SKU has a per-buyer limit and {reserved} units held, {sold} sold: buyers' tallies cannot follow them into buckets, so split before the sale starts"
            ),
        ),
    };
    (status, slug, title, detail, extensions)
}

fn order_parts(e: &OrderError) -> (u16, &'static str, &'static str, String, Map<String, Value>) {
    let mut extensions = Map::new();
    let (status, slug, title, detail) = match e {
        OrderError::IllegalTransition { from, to } => {
            extensions.insert("from".into(), json!(from));
            extensions.insert("to".into(), json!(to));
            (
                409,
                "illegal-transition",
                "Transition not allowed",
                format!("an order cannot go from {from} to {to}"),
            )
        }
        OrderError::AlreadyPaid => (
            409,
            "already-paid",
            "Already paid",
            "the order was paid with another payment reference".to_owned(),
        ),
        OrderError::PastDeadline => (
            409,
            "payment-deadline-passed",
            "Payment deadline passed",
            "the order was not paid in time; its stock has been or is being released".to_owned(),
        ),
        OrderError::Busy => (
            409,
            "order-busy",
            "Order busy",
            "another change to this order is under way; retry shortly".to_owned(),
        ),
    };
    (status, slug, title, detail, extensions)
}
