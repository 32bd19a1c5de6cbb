//! Wire formats: the JSON bodies the API accepts, turned into domain
//! commands, and the JSON it answers with. Kept apart from the domain types
//! so the contract can stay fixed while the core changes.

use super::{ApiError, HttpReply};
use crate::domain::ledger::LedgerEntry;
use crate::domain::live::{RoomId, RoomItem, RoomSetup};
use crate::domain::order::{failure_words, Change, Channel, Intent, Order, Shipment, LINES_MAX};
use crate::domain::stock::{
    Command, DeductionMode, Hold, LimitChange, Outcome, Reply, SetupSpec, SkuRecord,
};
use crate::domain::types::{
    AdjustReason, BuyerId, Delta, HoldSeconds, Note, Quantity, ReservationId, SkuId, Units,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The largest integer a JSON number keeps exactly on its way through
/// JavaScript (Number.MAX_SAFE_INTEGER).
pub const JSON_SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

/// Bodies larger than this are refused with 413 before parsing.
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// Parses a JSON body into `T`: 400 if it is not JSON, 422 if it is JSON of
/// the wrong shape (missing or unknown fields, wrong types, values out of
/// range: the message names which).
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.len() > BODY_BYTES_MAX {
        return Err(ApiError::PayloadTooLarge {
            max_bytes: BODY_BYTES_MAX,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::InvalidBody(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::MalformedJson(e.to_string())
            }
        }
    })
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    pub on_hand: Units,
    pub low_stock_threshold: Option<Units>,
    /// 0 removes the limit.
    pub per_buyer_limit: Option<u64>,
    pub hold_seconds: Option<HoldSeconds>,
    /// hold (预扣库存, the default), at_order (拍下减库存) or at_payment
    /// (付款减库存).
    pub deduction: Option<DeductionMode>,
    /// The most units one hold or order line may take (default 5).
    pub max_per_hold: Option<Quantity>,
}

impl SetupBody {
    pub fn into_command(self) -> Result<Command, ApiError> {
        let per_buyer_limit = match self.per_buyer_limit {
            None => LimitChange::Keep,
            Some(0) => LimitChange::Remove,
            Some(n) => LimitChange::Set(Quantity::parse(n).map_err(|e| {
                ApiError::InvalidBody(format!("per_buyer_limit: {e} (or 0 for none)"))
            })?),
        };
        Ok(Command::Setup(SetupSpec {
            on_hand: self.on_hand,
            low_stock_threshold: self.low_stock_threshold,
            per_buyer_limit,
            hold_seconds: self.hold_seconds,
            deduction: self.deduction,
            max_per_hold: self.max_per_hold,
        }))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveBody {
    pub qty: Quantity,
    /// Optional: the buyer is the session's. Only an admin reserving for a
    /// buyer must name one; a buyer naming another is refused.
    pub buyer: Option<BuyerId>,
}

impl ReserveBody {
    pub fn into_command(
        self,
        hold: ReservationId,
        buyer: BuyerId,
        channel: Option<Channel>,
    ) -> Command {
        Command::Reserve {
            hold,
            buyer,
            qty: self.qty,
            channel,
        }
    }
}

/// The buyer a storefront write is for: the session's, which a body may
/// repeat but not contradict; an admin names the buyer in the body.
pub fn acting_buyer(
    session: Option<&BuyerId>,
    body: Option<&BuyerId>,
) -> Result<BuyerId, ApiError> {
    match (session, body) {
        (Some(s), Some(b)) if s != b => Err(ApiError::Forbidden(
            "the body's buyer is not the session's buyer".into(),
        )),
        (Some(s), _) => Ok(s.clone()),
        (None, Some(b)) => Ok(b.clone()),
        (None, None) => Err(ApiError::InvalidBody(
            "missing field `buyer` (an admin acts for a named buyer)".into(),
        )),
    }
}

/// `PUT /api/skus/{sku}/replenishment`: the reorder policy.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReorderBody {
    pub mode: crate::domain::replenish::ReorderMode,
    pub reorder_point: Units,
    pub reorder_qty: Option<Quantity>,
    #[serde(default)]
    pub lead_time_s: u64,
    pub safety_stock: Option<Units>,
    pub supplier: Option<Note>,
}

impl ReorderBody {
    pub fn into_command(self) -> Result<Command, ApiError> {
        use crate::domain::replenish::{ReorderPolicy, LEAD_TIME_MAX_S};
        if self.lead_time_s > LEAD_TIME_MAX_S {
            return Err(ApiError::InvalidBody(format!(
                "lead_time_s is at most {LEAD_TIME_MAX_S} (a year)"
            )));
        }
        let none = Units::parse(0).map_err(|e| ApiError::InvalidBody(e.0))?;
        Ok(Command::SetReorder {
            policy: Some(ReorderPolicy {
                mode: self.mode,
                reorder_point: self.reorder_point,
                reorder_qty: self.reorder_qty,
                lead_time_s: self.lead_time_s,
                safety_stock: self.safety_stock.unwrap_or(none),
                supplier: self.supplier,
            }),
        })
    }
}

/// `PUT /api/skus/{sku}/channels/{channel}`: the channel's allocation.
/// `dedicated`: a bucket of exactly that many units only this channel
/// sells (absent: it sells from the shared pool).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationBody {
    pub dedicated: Option<Units>,
    pub safety_floor: Option<Units>,
    pub max_listed: Option<Units>,
    pub percent: Option<u8>,
}

impl AllocationBody {
    pub fn into_command(self, channel: Channel) -> Result<Command, ApiError> {
        if let Some(p) = self.percent {
            if !(1..=100).contains(&p) {
                return Err(ApiError::InvalidBody(format!(
                    "percent is 1 to 100, not {p}"
                )));
            }
        }
        let none = Units::parse(0).map_err(|e| ApiError::InvalidBody(e.0))?;
        Ok(Command::Allocate {
            channel,
            spec: Some(crate::domain::allocation::AllocationSpec {
                dedicated: self.dedicated,
                safety_floor: self.safety_floor.unwrap_or(none),
                max_listed: self.max_listed,
                percent: self.percent,
            }),
        })
    }
}

/// `PUT /api/channels/{channel}`: connect a platform. `secret` (the app
/// secret, or WeChat's token) is required the first time and kept when
/// absent later; it is never shown.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelBody {
    pub platform: crate::channels::Platform,
    #[serde(default)]
    pub app_key: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub access_token: String,
    pub sync_url: Option<String>,
    pub rate_per_s: Option<u32>,
}

impl ChannelBody {
    pub fn into_config(
        self,
        channel: Channel,
        now: u64,
    ) -> Result<crate::domain::channel_sync::ChannelConfig, ApiError> {
        use crate::domain::channel_sync::{ChannelConfig, RATE_DEFAULT, RATE_MAX};
        if let Some(url) = &self.sync_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 2_000
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(ApiError::InvalidBody(
                    "sync_url must be an http(s) URL of at most 2000 characters".into(),
                ));
            }
        }
        let rate = self.rate_per_s.unwrap_or(RATE_DEFAULT);
        if !(1..=RATE_MAX).contains(&rate) {
            return Err(ApiError::InvalidBody(format!(
                "rate_per_s is 1 to {RATE_MAX}"
            )));
        }
        for (name, value) in [
            ("app_key", &self.app_key),
            ("secret", &self.secret),
            ("access_token", &self.access_token),
        ] {
            if value.len() > 512 || value.chars().any(|c| c.is_control()) {
                return Err(ApiError::InvalidBody(format!(
                    "{name} is at most 512 characters, none of them control characters"
                )));
            }
        }
        Ok(ChannelConfig {
            channel,
            platform: self.platform,
            app_key: self.app_key,
            secret: self.secret,
            access_token: self.access_token,
            sync_url: self.sync_url,
            rate_per_s: rate,
            created_at: now,
            updated_at: now,
        })
    }
}

/// `POST /api/carriers/deliveries`: a carrier's delivery updates.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierBody {
    pub events: Vec<CarrierEvent>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CarrierEvent {
    pub order: String,
    pub tracking_number: String,
    pub status: String,
}

impl CarrierBody {
    pub fn checked(self) -> Result<Vec<CarrierEvent>, ApiError> {
        if self.events.is_empty() || self.events.len() > 100 {
            return Err(ApiError::InvalidBody("events: 1 to 100".into()));
        }
        for e in &self.events {
            short_text("tracking_number", &e.tracking_number, 64)?;
            short_text("status", &e.status, 32)?;
            if e.order.len() > 64 {
                return Err(ApiError::InvalidBody("order: at most 64 characters".into()));
            }
        }
        Ok(self.events)
    }
}

/// `POST …/replenishments/{id}/receive`: how many came (default: the
/// request's quantity).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveBody {
    pub qty: Option<Quantity>,
}

/// A SKU's sales buckets with its pace now: what the console charts.
pub fn stats_json(
    r: &SkuRecord,
    res: crate::domain::stats::Resolution,
    buckets: &[(u64, crate::domain::stats::Tally)],
) -> Value {
    let rows: Vec<Value> = buckets
        .iter()
        .map(|(start, t)| {
            json!({"start": start, "held": t.held, "sold": t.sold, "released": t.released, "expired": t.expired})
        })
        .collect();
    let total = |f: fn(&crate::domain::stats::Tally) -> u64| -> u64 {
        buckets.iter().map(|(_, t)| f(t)).sum()
    };
    let (held, sold) = (total(|t| t.held), total(|t| t.sold));
    json!({
        "sku": r.sku,
        "resolution": res,
        "buckets": rows,
        "totals": {
            "held": held,
            "sold": sold,
            "released": total(|t| t.released),
            "expired": total(|t| t.expired),
        },
        "available": r.available(),
        "incoming": r.incoming(),
        "sellout_s": r.sellout_s(),
    })
}

/// A SKU's replenishment view (admin): its policy, incoming units and
/// requests, newest first.
pub fn replenishments_json(r: &SkuRecord) -> Value {
    let requests: Vec<&crate::domain::replenish::Replenishment> =
        r.replenishments.iter().rev().collect();
    json!({
        "sku": r.sku,
        "policy": r.reorder,
        "available": r.available(),
        "incoming": r.incoming(),
        "requests": requests,
    })
}

/// `POST /api/webhooks`: where to send which notices.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    pub url: String,
    pub events: Vec<String>,
}

impl WebhookBody {
    pub fn checked(self) -> Result<(String, Vec<crate::domain::notice::NoticeKind>), ApiError> {
        use crate::domain::notice::{check_url, parse_events};
        check_url(&self.url).map_err(|e| ApiError::InvalidBody(e.0))?;
        let events = parse_events(&self.events).map_err(|e| ApiError::InvalidBody(e.0))?;
        Ok((self.url, events))
    }
}

/// `POST /api/skus/{sku}/split`: how many stock buckets (0: merge back).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBody {
    pub buckets: u16,
}

impl SplitBody {
    pub fn checked(&self) -> Result<u16, ApiError> {
        let max = crate::domain::buckets::BUCKETS_MAX;
        if self.buckets == 1 || self.buckets > max {
            return Err(ApiError::InvalidBody(format!(
                "buckets is 2 to {max} to split, or 0 to merge back"
            )));
        }
        Ok(self.buckets)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestockBody {
    pub qty: Quantity,
    pub reason: Option<Note>,
    pub reference: Option<Note>,
}

impl RestockBody {
    pub fn into_command(self) -> Command {
        Command::Restock {
            qty: self.qty,
            reason: self.reason,
            reference: self.reference,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    pub delta: Delta,
    pub reason: AdjustReason,
    pub note: Option<Note>,
    pub reference: Option<Note>,
}

impl AdjustBody {
    pub fn into_command(self) -> Command {
        Command::Adjust {
            delta: self.delta,
            reason: self.reason,
            note: self.note,
            reference: self.reference,
        }
    }
}

/// What identifies a request for idempotency: the route and the parsed body
/// (so whitespace or key order in a retry does not count as a change).
pub fn fingerprint(method: &str, path: &str, body: &impl Serialize) -> String {
    let body = serde_json::to_string(body).unwrap_or_default();
    format!("{method} {path} {body}")
}

pub fn sku_json(r: &SkuRecord) -> Value {
    json!({
        "sku": r.sku,
        "on_hand": r.on_hand,
        "reserved": r.reserved,
        "sold": r.sold,
        "available": r.available(),
        "version": r.version,
        "low_stock": r.is_low(),
        "low_stock_threshold": r.settings.low_stock_threshold,
        "per_buyer_limit": r.settings.per_buyer_limit.map_or(0, Quantity::get),
        "hold_seconds": r.settings.hold_seconds,
        "deduction": r.settings.deduction,
        "max_per_hold": r.settings.max_per_hold,
        "created_at": r.created_at_ms,
        "updated_at": r.updated_at_ms,
        "incoming": r.incoming(),
        "sellout_s": r.sellout_s(),
        "velocity": {
            "taken_per_min": r.velocity.taken_centi_per_min(r.updated_at_ms).div_ceil(100),
            "sold_per_hour": r.velocity.sold_centi_per_hour(r.updated_at_ms).div_ceil(100),
        },
        // What each channel with rules may sell, and the pool the others
        // share (the storefront's number unless its session names another).
        "pool": r.channels.pool(r.available()),
        "channels": r.channels.0.iter().map(|(name, a)| (name.to_string(), json!({
            "dedicated": a.dedicated,
            "safety_floor": a.safety_floor,
            "max_listed": a.max_listed,
            "percent": a.percent,
            "sellable": r.sellable(Some(name)),
        }))).collect::<serde_json::Map<String, Value>>(),
        // The policy without the supplier: this is also the public view.
        "replenishment": r.reorder.as_ref().map(|p| json!({
            "mode": p.mode,
            "reorder_point": p.reorder_point,
            "reorder_qty": p.reorder_qty,
            "lead_time_s": p.lead_time_s,
            "safety_stock": p.safety_stock,
        })),
    })
}

/// A hold with the SKU's numbers after the change, so a storefront can move
/// its badge from the same answer.
pub fn hold_json(h: &Hold, sku: &SkuRecord) -> Value {
    json!({
        "id": h.id,
        "sku": sku.sku,
        "qty": h.qty,
        "buyer": h.buyer,
        "status": h.status,
        "created_at": h.created_at_ms,
        "expires_at": h.expires_at_ms,
        "resolved_at": h.resolved_at_ms,
        "order": h.order,
        "available": sku.available(),
        "version": sku.version,
    })
}

pub fn ledger_json(entries: &[LedgerEntry], limit: usize) -> Value {
    let entries: Vec<(u64, Value)> = entries
        .iter()
        .map(|e| (e.seq, serde_json::to_value(e).unwrap_or(Value::Null)))
        .collect();
    ledger_page_json("entries", &entries, limit)
}

/// One page of a sequence-numbered list: `{<name>: [...], next_after}`,
/// where next_after is the last seq when the page is full (there may be
/// more), else null.
pub fn ledger_page_json(name: &str, entries: &[(u64, Value)], limit: usize) -> Value {
    let next_after = if entries.len() == limit {
        entries.last().map(|(seq, _)| *seq)
    } else {
        None
    };
    let items: Vec<&Value> = entries.iter().map(|(_, v)| v).collect();
    let mut page = serde_json::Map::new();
    page.insert(name.to_owned(), json!(items));
    page.insert("next_after".to_owned(), json!(next_after));
    Value::Object(page)
}

/// The HTTP answer to a core reply. The one place outcomes get statuses.
pub fn reply_to_http(reply: &Reply) -> HttpReply {
    match reply {
        Err(e) => ApiError::Stock(e.clone()).to_reply(),
        Ok(outcome) => match outcome {
            Outcome::SkuSet { sku, .. }
            | Outcome::Restocked { sku }
            | Outcome::Adjusted { sku } => HttpReply::json(200, sku_json(sku)),
            Outcome::Reserved { hold, sku } => {
                let mut reply = HttpReply::json(201, hold_json(hold, sku));
                let location = format!("/api/skus/{}/reservations/{}", sku.sku, hold.id);
                reply.headers.push(("Location", location));
                // The edge reads these without parsing the body (the hold
                // cap's report, after the reply).
                reply.headers.push(("Edgestock-Hold", hold.id.to_string()));
                reply
                    .headers
                    .push(("Edgestock-Hold-Expires", hold.expires_at_ms.to_string()));
                reply
            }
            Outcome::Committed { hold, sku, .. }
            | Outcome::Released { hold, sku, .. }
            | Outcome::Returned { hold, sku, .. } => HttpReply::json(200, hold_json(hold, sku)),
            Outcome::Sold { hold, sku } => HttpReply::json(201, hold_json(hold, sku)),
            Outcome::Deferred { sku, .. } | Outcome::Moved { sku, .. } => {
                HttpReply::json(200, sku_json(sku))
            }
            Outcome::Replenishment { sku, request } => {
                let mut body = json!(request);
                body["sku"] = sku_json(sku);
                HttpReply::json(200, body)
            }
        },
    }
}

/// `?res=second|minute|hour&from=&to=&format=json|csv` of a SKU's sales
/// buckets: res defaults to minute, from/to (ms) to what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsQuery {
    pub res: crate::domain::stats::Resolution,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub csv: bool,
}

/// Which entries of a SKU's ledger: all, or one order's, or one hold's
/// (`?order=o_…`, `?hold=h_…`): from an order's lines to the movements
/// they caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerFilter {
    Order(crate::domain::types::OrderId),
    Hold(crate::domain::types::ReservationId),
}

pub fn parse_ledger_filter(query: &str) -> Result<Option<LedgerFilter>, ApiError> {
    let mut filter = None;
    for pair in query.split('&') {
        let bad = |what: &str| ApiError::InvalidRequest(format!("{what} is not a valid id"));
        if let Some(v) = pair.strip_prefix("order=") {
            let id = crate::domain::types::OrderId::parse(v).map_err(|_| bad("order"))?;
            filter = Some(LedgerFilter::Order(id));
        } else if let Some(v) = pair.strip_prefix("hold=") {
            let id = ReservationId::parse(v).map_err(|_| bad("hold"))?;
            filter = Some(LedgerFilter::Hold(id));
        }
    }
    Ok(filter)
}

/// `?format=json|csv` (default json): whether CSV was asked for.
pub fn parse_format_csv(query: &str) -> Result<bool, ApiError> {
    Ok(parse_stats_query(query)?.csv)
}

pub fn parse_stats_query(query: &str) -> Result<StatsQuery, ApiError> {
    use crate::domain::stats::Resolution;
    let mut out = StatsQuery {
        res: Resolution::Minute,
        from: None,
        to: None,
        csv: false,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad =
            || ApiError::InvalidRequest(format!("query parameter {name}: '{value}' is not valid"));
        let ms = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= JSON_SAFE_INTEGER_MAX)
                .ok_or_else(bad)
        };
        match name {
            "res" => out.res = Resolution::parse(value).ok_or_else(bad)?,
            "from" => out.from = Some(ms()?),
            "to" => out.to = Some(ms()?),
            "format" => {
                out.csv = match value {
                    "csv" => true,
                    "json" => false,
                    _ => return Err(bad()),
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A merchant's order query: `?room=&from=&to=&status=&channel=&sku=&buyer=
/// &after=<cursor>&limit=&format=csv|json`. Every value is checked with the
/// type it names; unknown parameters are refused.
pub struct OrderQuery {
    pub filter: crate::domain::order_index::Filter,
    pub after: Option<crate::domain::order_index::Cursor>,
    pub limit: usize,
    pub csv: bool,
}

pub fn parse_order_query(query: &str) -> Result<OrderQuery, ApiError> {
    use crate::domain::order_index::{Cursor, Filter};
    let mut q = OrderQuery {
        filter: Filter::default(),
        after: None,
        limit: 100,
        csv: false,
    };
    let invalid = |e: crate::domain::types::Invalid| ApiError::InvalidRequest(e.0);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decoded(raw);
        let bad =
            || ApiError::InvalidRequest(format!("query parameter {name}: '{value}' is not valid"));
        let time = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= JSON_SAFE_INTEGER_MAX)
                .ok_or_else(bad)
        };
        match name {
            "room" => q.filter.room = Some(RoomId::parse(&value).map_err(invalid)?.to_string()),
            "from" => q.filter.from = Some(time()?),
            "to" => q.filter.to = Some(time()?),
            "status" => {
                let known = [
                    "placing",
                    "rejected",
                    "pending_review",
                    "reserved",
                    "paid",
                    "failed",
                    "shipped",
                    "delivered",
                    "cancelled",
                    "expired",
                    "refunded",
                ];
                if !known.contains(&value.as_str()) {
                    return Err(ApiError::InvalidRequest(format!(
                        "status is one of {}, not '{value}'",
                        known.join(", ")
                    )));
                }
                q.filter.status = Some(value.clone());
            }
            "channel" => {
                q.filter.channel = Some(Channel::parse(&value).map_err(invalid)?.to_string())
            }
            "sku" => q.filter.sku = Some(SkuId::parse(&value).map_err(invalid)?.to_string()),
            "buyer" => q.filter.buyer = Some(BuyerId::parse(&value).map_err(invalid)?.to_string()),
            "after" => q.after = Some(Cursor::decode(&value).ok_or_else(bad)?),
            "limit" => {
                q.limit = value.parse().map_err(|_| bad())?;
                if !(1..=1000).contains(&q.limit) {
                    return Err(ApiError::InvalidRequest("limit is 1 to 1000".into()));
                }
            }
            "format" => {
                q.csv = match value.as_str() {
                    "csv" => true,
                    "json" => false,
                    _ => return Err(ApiError::InvalidRequest("format is csv or json".into())),
                }
            }
            _ => {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown query parameter {name}"
                )))
            }
        }
    }
    if let (Some(from), Some(to)) = (q.filter.from, q.filter.to) {
        if to < from {
            return Err(ApiError::InvalidRequest("to is before from".into()));
        }
    }
    Ok(q)
}

/// `%XX` and `+` decoded (query values such as room ids need none, but a
/// client may encode them anyway).
fn percent_decoded(raw: &str) -> String {
    let pairs = crate::channels::form_pairs(&format!("v={raw}"));
    pairs.into_iter().next().map(|(_, v)| v).unwrap_or_default()
}

/// `?limit=&state=` of an endpoint's delivery log.
pub fn parse_deliveries_query(
    query: &str,
) -> Result<(usize, Option<crate::domain::notice::DeliveryState>), ApiError> {
    use crate::domain::notice::DeliveryState;
    let (_, limit) = parse_page(query)?;
    let mut state = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("state=") {
            state = Some(match value {
                "pending" => DeliveryState::Pending,
                "delivered" => DeliveryState::Delivered,
                "dead" => DeliveryState::Dead,
                _ => {
                    return Err(ApiError::InvalidRequest(format!(
                        "state is pending, delivered or dead, not '{value}'"
                    )))
                }
            });
        }
    }
    Ok((limit, state))
}

/// `?after=<seq>&limit=<n>` for the ledger: after defaults to 0, limit to 100
/// (at most 1000).
pub fn parse_page(query: &str) -> Result<(u64, usize), ApiError> {
    let mut after = 0u64;
    let mut limit = 100usize;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad =
            || ApiError::InvalidRequest(format!("query parameter {name}: '{value}' is not valid"));
        match name {
            // Integers cross into objects as JSON, which JavaScript reads as
            // doubles: nothing above 2^53 - 1 survives the trip.
            "after" => {
                after = value.parse().map_err(|_| bad())?;
                if after > JSON_SAFE_INTEGER_MAX {
                    return Err(ApiError::InvalidRequest(format!(
                        "after is at most {JSON_SAFE_INTEGER_MAX}"
                    )));
                }
            }
            "limit" => {
                limit = value.parse().map_err(|_| bad())?;
                if !(1..=1000).contains(&limit) {
                    return Err(ApiError::InvalidRequest("limit is from 1 to 1000".into()));
                }
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

// ---- rooms ----

/// A room's products are at most this many.
pub const ROOM_ITEMS_MAX: usize = 50;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomBody {
    pub title: String,
    pub items: Vec<RoomItem>,
}

impl RoomBody {
    pub fn into_setup(self) -> Result<RoomSetup, ApiError> {
        let title = short_text("title", &self.title, 100)?;
        if self.items.len() > ROOM_ITEMS_MAX {
            return Err(ApiError::InvalidBody(format!(
                "a room shows at most {ROOM_ITEMS_MAX} products"
            )));
        }
        let mut items: Vec<RoomItem> = Vec::new();
        for item in self.items {
            if items.iter().any(|i| i.sku == item.sku) {
                return Err(ApiError::InvalidBody(format!(
                    "{} is listed twice",
                    item.sku
                )));
            }
            items.push(RoomItem {
                title: short_text("item title", &item.title, 100)?,
                sku: item.sku,
            });
        }
        Ok(RoomSetup { title, items })
    }
}

// ---- orders ----

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    pub sku: SkuId,
    pub qty: Quantity,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderBody {
    /// Optional, as in [`ReserveBody`].
    pub buyer: Option<BuyerId>,
    pub channel: Channel,
    pub lines: Vec<LineBody>,
    /// The live room the order was placed from: its merchant feed shows it.
    pub room: Option<RoomId>,
}

impl CreateOrderBody {
    /// The lines with duplicate SKUs merged (one hold per SKU), in the order
    /// first given: 1 to [`LINES_MAX`] of them.
    pub fn merged_lines(&self) -> Result<Vec<(SkuId, Quantity)>, ApiError> {
        let mut merged: Vec<(SkuId, Quantity)> = Vec::new();
        for line in &self.lines {
            match merged.iter_mut().find(|(sku, _)| *sku == line.sku) {
                Some((_, qty)) => {
                    *qty = Quantity::parse(qty.get() + line.qty.get()).map_err(|e| {
                        ApiError::InvalidBody(format!("lines for {}: {e}", line.sku))
                    })?;
                }
                None => merged.push((line.sku.clone(), line.qty)),
            }
        }
        if merged.is_empty() || merged.len() > LINES_MAX {
            return Err(ApiError::InvalidBody(format!(
                "an order has 1 to {LINES_MAX} lines of distinct SKUs"
            )));
        }
        Ok(merged)
    }
}

fn short_text(field: &str, raw: &str, max: usize) -> Result<String, ApiError> {
    let ok =
        !raw.trim().is_empty() && raw.chars().count() <= max && !raw.chars().any(char::is_control);
    if !ok {
        return Err(ApiError::InvalidBody(format!(
            "{field} is 1 to {max} characters with no control characters"
        )));
    }
    Ok(raw.to_owned())
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayBody {
    /// The payment provider's reference: paying twice with the same one is
    /// one payment.
    pub payment_ref: String,
    /// The amount paid, in minor units (分), recorded on the order.
    pub amount: Option<u64>,
}

impl PayBody {
    pub fn into_intent(self) -> Result<Intent, ApiError> {
        if self.amount.is_some_and(|a| a > JSON_SAFE_INTEGER_MAX) {
            return Err(ApiError::InvalidBody(format!(
                "amount is at most {JSON_SAFE_INTEGER_MAX}"
            )));
        }
        Ok(Intent::Pay {
            payment_ref: short_text("payment_ref", &self.payment_ref, 128)?,
            amount: self.amount,
        })
    }
}

/// Dev mode: a session for this buyer (and claims the risk rules read).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevSessionBody {
    pub buyer: BuyerId,
    /// Seconds the session lasts (default 3600, at most a day).
    pub ttl_s: Option<u64>,
    pub device: Option<Note>,
    pub account_created: Option<u64>,
}

/// Dev mode: what the stand-in payment provider is asked to pay.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevPaymentBody {
    pub order: crate::domain::types::OrderId,
    pub payment_ref: String,
    pub amount: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipBody {
    pub carrier: String,
    pub tracking_number: String,
}

impl ShipBody {
    pub fn into_change(self) -> Result<Change, ApiError> {
        Ok(Change::Ship {
            shipment: Shipment {
                carrier: short_text("carrier", &self.carrier, 64)?,
                tracking_number: short_text("tracking_number", &self.tracking_number, 64)?,
            },
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub reason: Option<Note>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverBody {}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Whether the units go back to stock (a returned item may be damaged).
    pub restock: Option<bool>,
    /// The item came back unopened: without `restock`, the
    /// `restock_unopened` automation decides.
    pub unopened: Option<bool>,
    pub reason: Option<Note>,
}

pub fn order_json(o: &Order) -> Value {
    let lines: Vec<Value> = o
        .lines
        .iter()
        .map(|l| {
            let mut line = serde_json::to_value(&l.state).unwrap_or(Value::Null);
            let extra = json!({
                "sku": l.sku,
                "qty": l.qty,
                "hold": l.hold,
                "mode": l.mode,
            });
            if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
                line.extend(extra);
            }
            line
        })
        .collect();
    let timeline: Vec<Value> = o
        .timeline
        .iter()
        .map(|t| json!({ "at": t.at_ms, "status": t.status, "actor": t.actor, "note": t.note }))
        .collect();
    json!({
        "id": o.id,
        "status": o.status,
        "buyer": o.buyer,
        "channel": o.channel,
        "lines": lines,
        "created_at": o.created_at_ms,
        "expires_at": o.expires_at_ms,
        "payment_ref": o.payment_ref,
        "payment_amount": o.payment_amount,
        "shipment": o.shipment,
        "restocked": o.restocked,
        "room": o.room,
        "risk": o.risk,
        "timeline": timeline,
        "confirmed": o.confirmed.as_ref().map(|c| json!({ "at": c.at_ms, "by": c.by })),
        "flags": o.flags.iter().map(|f| json!({ "rule": f.rule, "at": f.at_ms, "reason": f.reason })).collect::<Vec<_>>(),
        "automations": o.automations.iter().map(|a| json!({ "rule": a.rule, "at": a.at_ms, "action": a.action, "why": a.why })).collect::<Vec<_>>(),
    })
}

/// Each refused line: which SKU, how many, why (a code and words).
pub fn failed_lines_json(o: &Order) -> Value {
    o.failed_lines()
        .into_iter()
        .map(|(line, failure)| {
            let mut reason = serde_json::to_value(failure).unwrap_or(Value::Null);
            let code = match &reason {
                Value::String(s) => s.clone(),
                Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
                _ => String::new(),
            };
            if let Value::Object(m) = &mut reason {
                reason = m.values().next().cloned().unwrap_or(Value::Null);
            }
            json!({
                "sku": line.sku,
                "qty": line.qty,
                "reason": code,
                "detail": failure_words(failure),
                "facts": reason,
            })
        })
        .collect()
}

/// A buyer's list entry for an order.
pub fn order_summary_json(o: &Order) -> Value {
    json!({
        "id": o.id,
        "status": o.status,
        "channel": o.channel,
        "created_at": o.created_at_ms,
        "updated_at": o.timeline.last().map_or(o.created_at_ms, |t| t.at_ms),
        "lines": o.lines.iter().map(|l| json!({"sku": l.sku, "qty": l.qty})).collect::<Vec<_>>(),
    })
}

/// A SKU's live holds, with the orders they belong to.
pub fn holds_json(sku: &SkuRecord, holds: &[&Hold]) -> Value {
    let holds: Vec<Value> = holds.iter().map(|h| hold_json(h, sku)).collect();
    json!({ "sku": sku.sku, "reserved": sku.reserved, "holds": holds })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of<T: DeserializeOwned>(body: &str) -> u16 {
        match parse_body::<T>(body.as_bytes()) {
            Ok(_) => 200,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn reserve_bodies_are_checked() {
        let cases = [
            (r#"{"qty": 2, "buyer": "v1"}"#, 200),
            (r#"{"qty": 2, "buyer": "v1""#, 400),
            ("not json", 400),
            ("", 400),
            (r#"{"qty": 0, "buyer": "v1"}"#, 422),
            (r#"{"qty": -1, "buyer": "v1"}"#, 422),
            (r#"{"qty": 1.5, "buyer": "v1"}"#, 422),
            (r#"{"qty": "2", "buyer": "v1"}"#, 422),
            (r#"{"qty": 99999999999999999999999, "buyer": "v1"}"#, 422),
            (r#"{"qty": 1000000001, "buyer": "v1"}"#, 422),
            (r#"{"buyer": "v1"}"#, 422),
            (r#"{"qty": 1}"#, 200),
            (r#"{"qty": 1, "buyer": "has space"}"#, 422),
            (r#"{"qty": 1, "buyer": "v1", "extra": true}"#, 422),
            (r#"[1, 2]"#, 422),
        ];
        for (body, status) in cases {
            assert_eq!(status_of::<ReserveBody>(body), status, "{body}");
        }
    }

    #[test]
    fn oversized_bodies_are_413() {
        let body = format!(r#"{{"qty": 1, "buyer": "{}"}}"#, "x".repeat(BODY_BYTES_MAX));
        assert_eq!(status_of::<ReserveBody>(&body), 413);
    }

    #[test]
    fn setup_limit_zero_means_none() {
        let body: SetupBody = parse_body(br#"{"on_hand": 5, "per_buyer_limit": 0}"#).unwrap();
        match body.into_command().unwrap() {
            Command::Setup(spec) => assert_eq!(spec.per_buyer_limit, LimitChange::Remove),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn setup_commands_survive_the_trip_to_the_object() {
        for limit in ["", r#", "per_buyer_limit": 0"#, r#", "per_buyer_limit": 4"#] {
            let body: SetupBody =
                parse_body(format!(r#"{{"on_hand": 5{limit}}}"#).as_bytes()).unwrap();
            let command = body.into_command().unwrap();
            let json = serde_json::to_string(&command).unwrap();
            assert_eq!(
                serde_json::from_str::<Command>(&json).unwrap(),
                command,
                "{json}"
            );
        }
    }

    #[test]
    fn adjust_reasons_are_a_closed_set() {
        assert_eq!(
            status_of::<AdjustBody>(r#"{"delta": -2, "reason": "damaged"}"#),
            200
        );
        assert_eq!(
            status_of::<AdjustBody>(r#"{"delta": -2, "reason": "stolen?"}"#),
            422
        );
        assert_eq!(
            status_of::<AdjustBody>(r#"{"delta": 0, "reason": "recount"}"#),
            422
        );
    }

    #[test]
    fn fingerprints_ignore_formatting() {
        let a: ReserveBody = parse_body(br#"{"qty":1,"buyer":"b"}"#).unwrap();
        let b: ReserveBody = parse_body(b"{ \"buyer\": \"b\",\n \"qty\": 1 }").unwrap();
        assert_eq!(fingerprint("POST", "/p", &a), fingerprint("POST", "/p", &b));
    }

    #[test]
    fn order_lines_merge_by_sku_and_are_bounded() {
        let body: CreateOrderBody = parse_body(
            br#"{"buyer": "b", "channel": "douyin", "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}, {"sku": "a", "qty": 3}]}"#,
        )
        .unwrap();
        let lines = body.merged_lines().unwrap();
        let lines: Vec<(String, u64)> = lines
            .iter()
            .map(|(s, q)| (s.to_string(), q.get()))
            .collect();
        assert_eq!(lines, [("a".to_string(), 4), ("b".to_string(), 2)]);
        let empty: CreateOrderBody =
            parse_body(br#"{"buyer": "b", "channel": "own", "lines": []}"#).unwrap();
        assert_eq!(empty.merged_lines().unwrap_err().status(), 422);
        let many: Vec<String> = (0..21)
            .map(|i| format!(r#"{{"sku": "s{i}", "qty": 1}}"#))
            .collect();
        let body = format!(
            r#"{{"buyer": "b", "channel": "own", "lines": [{}]}}"#,
            many.join(",")
        );
        let many: CreateOrderBody = parse_body(body.as_bytes()).unwrap();
        assert_eq!(many.merged_lines().unwrap_err().status(), 422);
        assert_eq!(
            status_of::<CreateOrderBody>(r#"{"buyer": "b", "channel": "TikTok!", "lines": []}"#),
            422
        );
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(parse_page("").unwrap(), (0, 100));
        assert_eq!(parse_page("after=7&limit=3").unwrap(), (7, 3));
        assert!(parse_page("limit=0").is_err());
        assert!(parse_page("limit=1001").is_err());
        assert!(parse_page("after=-1").is_err());
        assert_eq!(
            parse_page("after=9007199254740991").unwrap().0,
            JSON_SAFE_INTEGER_MAX
        );
        assert_eq!(
            parse_page("after=9007199254740992").unwrap_err().status(),
            400
        );
        assert_eq!(
            parse_page("after=18446744073709551616")
                .unwrap_err()
                .status(),
            400
        );
    }
}
