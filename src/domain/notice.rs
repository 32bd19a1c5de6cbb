//! Merchant notices: what a merchant's systems are told by webhook (low
//! stock, sold out, back in stock, an order's status). A notice is made by
//! the step that caused it and written in the same transaction as that
//! change (an outbox), so a change is never told without having happened
//! and never happens without being told. Delivery rules live here too:
//! which endpoints want which notices, the retry schedule, dead letters.

use super::order::Order;
use super::replenish::Replenishment;
use super::stock::SkuRecord;
use super::types::{hex, Invalid, SkuId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a notice is about; the webhook's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Available fell to the SKU's `low_stock_threshold` (from above it).
    LowStock,
    /// Available reached 0.
    SoldOut,
    /// Available rose from 0.
    BackInStock,
    /// An order changed status (`data.status`).
    OrderStatus,
    /// A replenishment request was made (`suggest`: for the merchant to
    /// confirm; `auto`: confirmed at once, see the next).
    ReplenishmentRequested,
    /// A request is confirmed: for the supplier.
    ReplenishmentConfirmed,
    /// The goods came; the SKU was restocked.
    ReplenishmentReceived,
    ReplenishmentCancelled,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 8] = [
        NoticeKind::LowStock,
        NoticeKind::SoldOut,
        NoticeKind::BackInStock,
        NoticeKind::OrderStatus,
        NoticeKind::ReplenishmentRequested,
        NoticeKind::ReplenishmentConfirmed,
        NoticeKind::ReplenishmentReceived,
        NoticeKind::ReplenishmentCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::LowStock => "low_stock",
            NoticeKind::SoldOut => "sold_out",
            NoticeKind::BackInStock => "back_in_stock",
            NoticeKind::OrderStatus => "order_status",
            NoticeKind::ReplenishmentRequested => "replenishment_requested",
            NoticeKind::ReplenishmentConfirmed => "replenishment_confirmed",
            NoticeKind::ReplenishmentReceived => "replenishment_received",
            NoticeKind::ReplenishmentCancelled => "replenishment_cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// One notice, as it is stored in an outbox and sent as a webhook's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// `evt_` and 32 hex digits, derived from what caused it: the same
    /// change always makes the same id, so a receiver drops repeats by it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: NoticeKind,
    pub created_at: u64,
    /// What orders deliveries: one source's notices (`sku:<id>`,
    /// `order:<id>`) reach an endpoint in the order they were made.
    pub source: String,
    pub data: serde_json::Value,
}

impl Notice {
    /// The id of the notice of `kind` caused by `cause` (a SKU and its
    /// version, an order and its timeline index).
    pub fn id_for(source: &str, cause: u64, kind: NoticeKind) -> String {
        let digest = Sha256::new()
            .chain_update(source.as_bytes())
            .chain_update(b"\0")
            .chain_update(cause.to_be_bytes())
            .chain_update(kind.as_str().as_bytes())
            .finalize();
        format!("evt_{}", hex(&digest[..16]))
    }

    /// A stock notice: the SKU's numbers after the change that crossed.
    pub fn stock(kind: NoticeKind, record: &SkuRecord) -> Notice {
        let source = format!("sku:{}", record.sku);
        Notice {
            id: Notice::id_for(&source, record.version, kind),
            kind,
            created_at: record.updated_at_ms,
            source,
            data: serde_json::json!({
                "sku": record.sku,
                "on_hand": record.on_hand,
                "reserved": record.reserved,
                "sold": record.sold,
                "available": record.available(),
                "low_stock_threshold": record.settings.low_stock_threshold.get(),
                "version": record.version,
            }),
        }
    }

    /// A replenishment request's step, with the SKU's numbers.
    pub fn replenishment(kind: NoticeKind, record: &SkuRecord, request: &Replenishment) -> Notice {
        let source = format!("sku:{}", record.sku);
        let cause = format!("{source}/{}", request.id);
        Notice {
            id: Notice::id_for(&cause, record.version, kind),
            kind,
            created_at: request.updated_at,
            source,
            data: serde_json::json!({
                "sku": record.sku,
                "request": request,
                "available": record.available(),
                "incoming": record.incoming(),
                "on_hand": record.on_hand,
            }),
        }
    }

    /// An order's status change: timeline entry `index` of `order`.
    pub fn order_status(order: &Order, index: usize) -> Option<Notice> {
        let entry = order.timeline.get(index)?;
        let source = format!("order:{}", order.id);
        let lines: Vec<serde_json::Value> = order
            .lines
            .iter()
            .map(|l| serde_json::json!({"sku": l.sku, "qty": l.qty.get(), "hold": l.hold}))
            .collect();
        Some(Notice {
            id: Notice::id_for(&source, index as u64, NoticeKind::OrderStatus),
            kind: NoticeKind::OrderStatus,
            created_at: entry.at_ms,
            source,
            data: serde_json::json!({
                "order": order.id,
                "buyer": order.buyer,
                "status": entry.status,
                "actor": entry.actor,
                "note": entry.note,
                "room": order.room,
                "channel": order.channel,
                "lines": lines,
                "risk": order.risk.as_ref().map(|d| d.verdict),
            }),
        })
    }

    /// The SKU this notice is about, if any (for the console's filter).
    pub fn sku(&self) -> Option<SkuId> {
        self.source
            .strip_prefix("sku:")
            .and_then(|s| SkuId::parse(s).ok())
    }
}

/// Which stock notice, if any, a change of `available` from `before` to
/// `after` makes, under `threshold` (the SKU's low-stock level).
pub fn crossing(before: u64, after: u64, threshold: u64) -> Option<NoticeKind> {
    if before > 0 && after == 0 {
        Some(NoticeKind::SoldOut)
    } else if before == 0 && after > 0 {
        Some(NoticeKind::BackInStock)
    } else if before > threshold && after <= threshold {
        Some(NoticeKind::LowStock)
    } else {
        None
    }
}

/// An endpoint's id: `we_` and 32 lowercase hex digits, drawn at random.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointId(String);

impl EndpointId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let hex = raw.strip_prefix("we_").unwrap_or("");
        let ok = hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(Invalid(
                "a webhook endpoint id is 'we_' followed by 32 lowercase hex digits".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(format!("we_{}", hex(&bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EndpointId {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        EndpointId::parse(&raw)
    }
}

impl From<EndpointId> for String {
    fn from(id: EndpointId) -> String {
        id.0
    }
}

impl std::fmt::Display for EndpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A merchant's webhook endpoint. The secret signs every delivery; it is
/// shown once, when the endpoint is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub url: String,
    /// The notices it wants (empty: none; see [`Endpoint::wants`]).
    pub events: Vec<NoticeKind>,
    pub secret: String,
    pub created_at: u64,
}

impl Endpoint {
    pub fn wants(&self, kind: NoticeKind) -> bool {
        self.events.contains(&kind)
    }
}

/// A checked `url` for an endpoint: absolute http(s), at most 2,048
/// characters, no spaces or control characters.
pub fn check_url(raw: &str) -> Result<(), Invalid> {
    let scheme_ok = raw.starts_with("https://") || raw.starts_with("http://");
    let host = raw.split("://").nth(1).unwrap_or("");
    let clean = raw.bytes().all(|b| b.is_ascii_graphic());
    if !scheme_ok || host.is_empty() || host.starts_with('/') || !clean || raw.len() > 2048 {
        return Err(Invalid(
            "url must be an absolute http:// or https:// URL of at most 2048 characters".into(),
        ));
    }
    Ok(())
}

/// Parses the `events` an endpoint subscribes to: known types, or `"*"`
/// for all of them; at least one.
pub fn parse_events(raw: &[String]) -> Result<Vec<NoticeKind>, Invalid> {
    if raw.is_empty() {
        return Err(Invalid("events must name at least one event type".into()));
    }
    let mut kinds = Vec::new();
    for name in raw {
        if name == "*" {
            return Ok(NoticeKind::ALL.to_vec());
        }
        let kind = NoticeKind::parse(name).ok_or_else(|| {
            let known: Vec<&str> = NoticeKind::ALL.iter().map(|k| k.as_str()).collect();
            Invalid(format!(
                "unknown event type {name:?}; known: {} or \"*\"",
                known.join(", ")
            ))
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its first try or its next retry (`next_at`).
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Retried for [`GIVE_UP_AFTER_MS`] without success; kept for a resend.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

/// One try: when, what came back (an HTTP status, or none and an error for
/// a timeout or a refused connection), how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: u64,
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ms: u64,
}

/// One notice on its way to one endpoint, with its tries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub notice: Notice,
    pub state: DeliveryState,
    /// When it was queued (the retry window counts from here).
    pub queued_at: u64,
    pub next_at: Option<u64>,
    pub attempts: u32,
    /// The latest tries, newest last (at most [`ATTEMPTS_KEPT`]).
    pub log: Vec<Attempt>,
}

/// Tries kept per delivery for the log (the count goes on).
pub const ATTEMPTS_KEPT: usize = 20;
/// A delivery failing for this long is dead-lettered.
pub const GIVE_UP_AFTER_MS: u64 = 24 * 60 * 60 * 1000;
/// The first retry comes after about this long; each doubles, up to
/// [`RETRY_MAX_MS`].
pub const RETRY_BASE_MS: u64 = 1_000;
pub const RETRY_MAX_MS: u64 = 60 * 60 * 1000;

impl Delivery {
    pub fn new(notice: Notice, now: u64) -> Delivery {
        Delivery {
            notice,
            state: DeliveryState::Pending,
            queued_at: now,
            next_at: Some(now),
            attempts: 0,
            log: Vec::new(),
        }
    }

    /// Records a try. `jitter` in [0, 1) spreads retries of many failing
    /// deliveries apart (full jitter over the upper half of the backoff).
    pub fn record(&mut self, attempt: Attempt, jitter: f64) {
        let ok = attempt.status.is_some_and(|s| (200..300).contains(&s));
        let now = attempt.at;
        self.attempts = self.attempts.saturating_add(1);
        self.log.push(attempt);
        if self.log.len() > ATTEMPTS_KEPT {
            self.log.remove(0);
        }
        if ok {
            self.state = DeliveryState::Delivered;
            self.next_at = None;
            return;
        }
        if !self.give_up_if_old(now) {
            self.next_at = Some(now + backoff(self.attempts, jitter));
        }
    }

    /// Dead-letters a delivery still failing (or never tried, its endpoint
    /// paused) [`GIVE_UP_AFTER_MS`] after it was queued. True if it is dead.
    pub fn give_up_if_old(&mut self, now: u64) -> bool {
        if self.state == DeliveryState::Pending
            && now.saturating_sub(self.queued_at) >= GIVE_UP_AFTER_MS
        {
            self.state = DeliveryState::Dead;
            self.next_at = None;
        }
        self.state == DeliveryState::Dead
    }

    /// Queues it again from now (the merchant's "resend"): a new window.
    pub fn resend(&mut self, now: u64) {
        self.state = DeliveryState::Pending;
        self.queued_at = now;
        self.next_at = Some(now);
    }
}

/// The wait after the `failures`-th failure in a row: the base doubling up
/// to the cap, spread over its upper half by `jitter` in [0, 1).
pub fn backoff(failures: u32, jitter: f64) -> u64 {
    let full = RETRY_BASE_MS
        .saturating_mul(1u64 << failures.saturating_sub(1).min(32))
        .min(RETRY_MAX_MS);
    ((full as f64 * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))) as u64).max(1)
}

/// An endpoint's health as its queue sees it: after a failed try the whole
/// queue waits (doubling, like a delivery), so an endpoint that is down
/// gets one try per wait, not one per waiting notice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub failures: u32,
    pub paused_until: u64,
}

impl Health {
    pub fn record(&mut self, ok: bool, now: u64, jitter: f64) {
        if ok {
            *self = Health::default();
        } else {
            self.failures = self.failures.saturating_add(1);
            self.paused_until = now + backoff(self.failures, jitter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            id: Notice::id_for("sku:cap", 3, NoticeKind::SoldOut),
            kind: NoticeKind::SoldOut,
            created_at: 0,
            source: "sku:cap".into(),
            data: serde_json::json!({}),
        }
    }

    fn failed(at: u64) -> Attempt {
        Attempt {
            at,
            status: Some(500),
            error: None,
            ms: 3,
        }
    }

    #[test]
    fn crossings_make_one_notice_each() {
        assert_eq!(crossing(5, 0, 2), Some(NoticeKind::SoldOut));
        assert_eq!(crossing(0, 3, 2), Some(NoticeKind::BackInStock));
        assert_eq!(crossing(5, 2, 2), Some(NoticeKind::LowStock));
        assert_eq!(crossing(2, 1, 2), None, "already low");
        assert_eq!(crossing(9, 8, 2), None);
        assert_eq!(crossing(0, 0, 2), None);
        assert_eq!(crossing(1, 3, 2), None, "rising above is not a notice");
    }

    #[test]
    fn ids_follow_their_cause() {
        let a = Notice::id_for("sku:cap", 3, NoticeKind::SoldOut);
        assert_eq!(a, Notice::id_for("sku:cap", 3, NoticeKind::SoldOut));
        assert_ne!(a, Notice::id_for("sku:cap", 4, NoticeKind::SoldOut));
        assert_ne!(a, Notice::id_for("sku:cap", 3, NoticeKind::LowStock));
        assert_ne!(a, Notice::id_for("sku:cat", 3, NoticeKind::SoldOut));
        assert!(a.starts_with("evt_") && a.len() == 36, "{a}");
    }

    #[test]
    fn retries_back_off_with_jitter_then_dead_letter_after_a_day() {
        let mut d = Delivery::new(notice(), 0);
        d.record(failed(0), 0.0);
        assert_eq!(
            d.next_at,
            Some(500),
            "first retry: half the base at no jitter"
        );
        d.record(failed(500), 0.999);
        let second = d.next_at.unwrap() - 500;
        assert!((1_990..=2_000).contains(&second), "{second}");
        let mut at = 2_500;
        for _ in 0..20 {
            d.record(failed(at), 1.0);
            let gap = d.next_at.map_or(0, |n| n - at);
            assert!(gap <= RETRY_MAX_MS, "capped: {gap}");
            at = d.next_at.unwrap_or(at);
        }
        assert_eq!(d.state, DeliveryState::Pending, "20 tries are under a day");
        d.record(failed(GIVE_UP_AFTER_MS), 0.5);
        assert_eq!(d.state, DeliveryState::Dead);
        assert_eq!(d.next_at, None);
        assert_eq!(d.log.len(), ATTEMPTS_KEPT);
        assert_eq!(d.attempts, 23);
        d.resend(GIVE_UP_AFTER_MS + 5);
        assert_eq!(d.state, DeliveryState::Pending);
        assert_eq!(d.next_at, Some(GIVE_UP_AFTER_MS + 5));
        d.record(
            Attempt {
                at: GIVE_UP_AFTER_MS + 6,
                status: Some(204),
                error: None,
                ms: 1,
            },
            0.5,
        );
        assert_eq!(d.state, DeliveryState::Delivered);
    }

    #[test]
    fn a_failing_endpoint_pauses_its_queue_and_a_success_resumes_it() {
        let mut health = Health::default();
        health.record(false, 1_000, 0.0);
        assert_eq!(health.paused_until, 1_500);
        health.record(false, 1_500, 0.0);
        assert_eq!(health.paused_until, 2_500);
        health.record(true, 2_500, 0.0);
        assert_eq!(health, Health::default());
        // Never tried for a day (its endpoint paused): dead all the same.
        let mut d = Delivery::new(notice(), 0);
        assert!(!d.give_up_if_old(GIVE_UP_AFTER_MS - 1));
        assert!(d.give_up_if_old(GIVE_UP_AFTER_MS));
        assert_eq!(d.attempts, 0);
    }

    #[test]
    fn endpoints_take_known_events_and_real_urls() {
        assert_eq!(
            parse_events(&["*".into()]).unwrap(),
            NoticeKind::ALL.to_vec()
        );
        assert_eq!(
            parse_events(&["sold_out".into(), "sold_out".into()]).unwrap(),
            vec![NoticeKind::SoldOut]
        );
        assert!(parse_events(&[]).is_err());
        assert!(parse_events(&["sold-out".into()]).is_err());
        assert!(check_url("https://merchant.example/hooks").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        for bad in ["ftp://x", "https://", "http:///x", "https://a b", "hooks"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(EndpointId::parse("we_0123456789abcdef0123456789abcdef").is_ok());
        assert!(EndpointId::parse("we_0123").is_err());
    }
}
