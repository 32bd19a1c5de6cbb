//! The route table: (method, path) → [`Route`], with ids parsed. Unknown
//! paths are 404, known paths with another method 405 (with `Allow`), and a
//! bad id is refused here, before any Durable Object is addressed.

use super::ApiError;
use crate::domain::automation::Scope;
use crate::domain::live::{FeedName, RoomId};
use crate::domain::notice::EndpointId;
use crate::domain::stock::StockError;
use crate::domain::types::{BuyerId, Channel, OrderId, ReservationId, SkuId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    GetSku(SkuId),
    PutSku(SkuId),
    Reserve(SkuId),
    GetHold(SkuId, ReservationId),
    Release(SkuId, ReservationId),
    Commit(SkuId, ReservationId),
    Restock(SkuId),
    Adjust(SkuId),
    Ledger(SkuId),
    /// The ledger's hash chain recomputed, and its newest checkpoint.
    VerifyLedger(SkuId),
    /// A page of the ledger with a signed checkpoint of its head.
    ExportLedger(SkuId),
    /// The public key that signs ledger checkpoints (anyone).
    LedgerKey,
    /// The SKU's sales in time buckets, JSON or CSV (admin).
    SkuStats(SkuId),
    /// A live room's numbers, JSON or CSV (admin).
    RoomStats(RoomId),
    /// Set the SKU's reorder policy (admin).
    PutReorder(SkuId),
    /// The SKU's policy, incoming units and replenishment requests (admin).
    Replenishments(SkuId),
    /// Confirm, receive or cancel a replenishment request (admin).
    ReplenishmentAction(SkuId, String, ReplenishmentAction),
    /// Set or remove a channel's allocation on the SKU (admin).
    PutAllocation(SkuId, Channel),
    DeleteAllocation(SkuId, Channel),
    /// The reconcile check: counters recomputed from ledger and holds.
    Audit(SkuId),
    /// Split a hot SKU into stock buckets, or merge them back (admin).
    Split(SkuId),
    SkuHolds(SkuId),
    CreateOrder,
    /// The merchant's order query: filters, cursor, counts (admin).
    ListOrders,
    /// The orders of a query as CSV (UTF-8 with BOM) or JSON (admin).
    ExportOrders,
    /// Units per SKU over a query's orders: the picking list (admin).
    PickingList,
    /// A bulk job: ship, cancel or refund the uploaded orders (admin).
    CreateJob,
    /// A job's progress and per-row results (admin).
    GetJob(String),
    /// A carrier's signed delivery updates (the payment signature scheme).
    CarrierDeliveries,
    GetOrder(OrderId),
    OrderAction(OrderId, OrderAction),
    BuyerOrders(BuyerId),
    PutRoom(RoomId),
    GetRoom(RoomId),
    /// WebSocket upgrades: a live room, one SKU, one order.
    Live(FeedName),
    /// Dev mode only (`DEV_SESSIONS=1`): a session for a chosen buyer.
    DevSession,
    /// Dev mode only: plays the payment provider, signing a pay callback.
    DevPayment,
    /// The risk rule set in force (admin).
    GetRiskRules,
    /// Replace the risk rule set (admin): checked, then a new version.
    PutRiskRules,
    /// Orders waiting for a merchant's review, oldest first (admin).
    Reviews,
    /// The merchant's webhook endpoints (admin).
    ListWebhooks,
    CreateWebhook,
    GetWebhook(EndpointId),
    DeleteWebhook(EndpointId),
    /// An endpoint's delivery log, newest first.
    WebhookDeliveries(EndpointId),
    /// Deliver one event to the endpoint again.
    ResendDelivery(EndpointId, String),
    /// The connected selling platforms (admin).
    ListChannels,
    /// Connect (or reconfigure) a platform, see its sync state, disconnect.
    PutChannel(Channel),
    GetChannel(Channel),
    DeleteChannel(Channel),
    /// A platform's signed order messages (the channel's signature).
    ChannelMessages(Channel),
    /// The outbound stock sync's log for a channel (admin).
    ChannelSync(Channel),
    /// A room's or a SKU's automation switches (admin).
    GetAutomations(Scope),
    /// Switch automations on or off for a room or a SKU (admin).
    PutAutomations(Scope),
}

/// Which credential a route takes. Checked at the router, before any
/// object is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, anonymous included.
    Public,
    /// A buyer session (the buyer's own things only) or the admin token.
    Buyer,
    /// The admin token.
    Admin,
    /// A payment provider's signed callback (`Edgestock-Signature`).
    Payment,
    /// Only exists in dev mode.
    Dev,
    /// Signed by the channel's platform with its own scheme: the router
    /// verifies it with the channel's adapter and secret.
    Channel,
    /// A carrier's `Edgestock-Signature` (CARRIER_WEBHOOK_SECRET).
    Carrier,
}

/// What the merchant does with a replenishment request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplenishmentAction {
    Confirm,
    Receive,
    Cancel,
}

/// The order transitions a client asks for by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderAction {
    Pay,
    Ship,
    Deliver,
    Cancel,
    Refund,
    /// A merchant lets an order in review go on to payment.
    Approve,
    /// A merchant turns an order in review down; its holds go back.
    Reject,
    /// A merchant confirms a paid order for fulfilment (审单).
    Confirm,
}

impl OrderAction {
    fn parse(raw: &str) -> Option<OrderAction> {
        Some(match raw {
            "pay" => OrderAction::Pay,
            "ship" => OrderAction::Ship,
            "deliver" => OrderAction::Deliver,
            "cancel" => OrderAction::Cancel,
            "refund" => OrderAction::Refund,
            "approve" => OrderAction::Approve,
            "reject" => OrderAction::Reject,
            "confirm" => OrderAction::Confirm,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Health,
    Sku,
    Reservations,
    Hold,
    Commit,
    Restock,
    Adjust,
    Ledger,
    VerifyLedger,
    ExportLedger,
    Reorder,
    Stats,
    RoomStats,
    Allocation,
    ExportOrders,
    Picking,
    Jobs,
    Job,
    Carrier,
    Channels,
    ChannelOne,
    ChannelMessages,
    ChannelSync,
    Replenishments,
    ReplenishmentAction(ReplenishmentAction),
    Audit,
    Split,
    SkuHolds,
    Orders,
    Order,
    OrderAction(OrderAction),
    BuyerOrders,
    Room,
    RoomLive,
    SkuLive,
    OrderLive,
    DevSession,
    DevPayment,
    RiskRules,
    Reviews,
    Webhooks,
    Webhook,
    Deliveries,
    Resend,
    SkuAutomations,
    RoomAutomations,
    JobLive,
}

/// Where the ledger's public key is published.
pub const LEDGER_KEY_PATH: &str = "/.well-known/edgestock-ledger-key";

fn not_found_hold() -> ApiError {
    ApiError::Stock(StockError::HoldNotFound)
}

impl Route {
    pub fn parse(method: &str, path: &str) -> Result<Route, ApiError> {
        if path == LEDGER_KEY_PATH {
            return match method {
                "GET" => Ok(Route::LedgerKey),
                _ => Err(ApiError::MethodNotAllowed { allowed: &["GET"] }),
            };
        }
        let segments: Vec<&str> = path
            .strip_prefix("/api/")
            .ok_or(ApiError::RouteNotFound)?
            .split('/')
            .collect();
        // Shape first, so a wrong method on a real route is a 405 even when
        // the ids in it are bad.
        let (shape, allowed): (Shape, &'static [&'static str]) = match segments.as_slice() {
            ["health"] => (Shape::Health, &["GET"]),
            ["skus", _] => (Shape::Sku, &["GET", "PUT"]),
            ["skus", _, "reservations"] => (Shape::Reservations, &["POST"]),
            ["skus", _, "reservations", _] => (Shape::Hold, &["GET", "DELETE"]),
            ["skus", _, "reservations", _, "commit"] => (Shape::Commit, &["POST"]),
            ["skus", _, "restock"] => (Shape::Restock, &["POST"]),
            ["skus", _, "adjustments"] => (Shape::Adjust, &["POST"]),
            ["skus", _, "ledger"] => (Shape::Ledger, &["GET"]),
            ["skus", _, "ledger", "verify"] => (Shape::VerifyLedger, &["GET"]),
            ["skus", _, "ledger", "export"] => (Shape::ExportLedger, &["GET"]),
            ["skus", _, "replenishment"] => (Shape::Reorder, &["PUT"]),
            ["skus", _, "stats"] => (Shape::Stats, &["GET"]),
            ["skus", _, "replenishments"] => (Shape::Replenishments, &["GET"]),
            ["skus", _, "replenishments", _, action] => {
                let action = match *action {
                    "confirm" => ReplenishmentAction::Confirm,
                    "receive" => ReplenishmentAction::Receive,
                    "cancel" => ReplenishmentAction::Cancel,
                    _ => return Err(ApiError::RouteNotFound),
                };
                (Shape::ReplenishmentAction(action), &["POST"])
            }
            ["skus", _, "channels", _] => (Shape::Allocation, &["PUT", "DELETE"]),
            ["skus", _, "audit"] => (Shape::Audit, &["GET"]),
            ["skus", _, "automations"] => (Shape::SkuAutomations, &["GET", "PUT"]),
            ["rooms", _, "automations"] => (Shape::RoomAutomations, &["GET", "PUT"]),
            ["skus", _, "split"] => (Shape::Split, &["POST"]),
            ["skus", _, "holds"] => (Shape::SkuHolds, &["GET"]),
            ["skus", _, "live"] => (Shape::SkuLive, &["GET"]),
            ["rooms", _] => (Shape::Room, &["GET", "PUT"]),
            ["rooms", _, "live"] => (Shape::RoomLive, &["GET"]),
            ["rooms", _, "stats"] => (Shape::RoomStats, &["GET"]),
            ["orders", _, "live"] => (Shape::OrderLive, &["GET"]),
            ["orders"] => (Shape::Orders, &["GET", "POST"]),
            ["exports", "orders"] => (Shape::ExportOrders, &["GET"]),
            ["exports", "picking"] => (Shape::Picking, &["GET"]),
            ["jobs"] => (Shape::Jobs, &["POST"]),
            ["carriers", "deliveries"] => (Shape::Carrier, &["POST"]),
            ["jobs", _] => (Shape::Job, &["GET"]),
            ["jobs", _, "live"] => (Shape::JobLive, &["GET"]),
            ["orders", _] => (Shape::Order, &["GET"]),
            ["orders", _, action] => match OrderAction::parse(action) {
                Some(a) => (Shape::OrderAction(a), &["POST"]),
                None => return Err(ApiError::RouteNotFound),
            },
            ["buyers", _, "orders"] => (Shape::BuyerOrders, &["GET"]),
            ["dev", "session"] => (Shape::DevSession, &["POST"]),
            ["dev", "payments"] => (Shape::DevPayment, &["POST"]),
            ["risk", "rules"] => (Shape::RiskRules, &["GET", "PUT"]),
            ["risk", "reviews"] => (Shape::Reviews, &["GET"]),
            ["webhooks"] => (Shape::Webhooks, &["GET", "POST"]),
            ["webhooks", _] => (Shape::Webhook, &["GET", "DELETE"]),
            ["webhooks", _, "deliveries"] => (Shape::Deliveries, &["GET"]),
            ["webhooks", _, "deliveries", _, "resend"] => (Shape::Resend, &["POST"]),
            ["channels"] => (Shape::Channels, &["GET"]),
            ["channels", _] => (Shape::ChannelOne, &["GET", "PUT", "DELETE"]),
            ["channels", _, "messages"] => (Shape::ChannelMessages, &["POST"]),
            ["channels", _, "sync"] => (Shape::ChannelSync, &["GET"]),
            _ => return Err(ApiError::RouteNotFound),
        };
        if !allowed.contains(&method) {
            return Err(ApiError::MethodNotAllowed { allowed });
        }
        let invalid = |e: crate::domain::types::Invalid| ApiError::InvalidRequest(e.0);
        let sku = || SkuId::parse(segments[1]).map_err(invalid);
        let hold = || ReservationId::parse(segments[3]).map_err(|_| not_found_hold());
        let order = || OrderId::parse(segments[1]).map_err(|_| ApiError::OrderNotFound);
        let room = || RoomId::parse(segments[1]).map_err(invalid);
        let endpoint = || EndpointId::parse(segments[1]).map_err(|_| ApiError::WebhookNotFound);
        let channel = |i: usize| Channel::parse(segments[i]).map_err(invalid);
        Ok(match (shape, method) {
            (Shape::Health, _) => Route::Health,
            (Shape::Sku, "GET") => Route::GetSku(sku()?),
            (Shape::Sku, _) => Route::PutSku(sku()?),
            (Shape::Reservations, _) => Route::Reserve(sku()?),
            (Shape::Hold, "GET") => Route::GetHold(sku()?, hold()?),
            (Shape::Hold, _) => Route::Release(sku()?, hold()?),
            (Shape::Commit, _) => Route::Commit(sku()?, hold()?),
            (Shape::Restock, _) => Route::Restock(sku()?),
            (Shape::Adjust, _) => Route::Adjust(sku()?),
            (Shape::Ledger, _) => Route::Ledger(sku()?),
            (Shape::VerifyLedger, _) => Route::VerifyLedger(sku()?),
            (Shape::ExportLedger, _) => Route::ExportLedger(sku()?),
            (Shape::Reorder, _) => Route::PutReorder(sku()?),
            (Shape::Stats, _) => Route::SkuStats(sku()?),
            (Shape::RoomStats, _) => Route::RoomStats(room()?),
            (Shape::Replenishments, _) => Route::Replenishments(sku()?),
            (Shape::ReplenishmentAction(action), _) => {
                let sku = sku()?;
                let id = segments[3];
                if !crate::domain::replenish::Replenishment::is_id(id) {
                    return Err(ApiError::Stock(StockError::ReplenishmentNotFound));
                }
                Route::ReplenishmentAction(sku, id.to_owned(), action)
            }
            (Shape::Allocation, "PUT") => Route::PutAllocation(sku()?, channel(3)?),
            (Shape::Allocation, _) => Route::DeleteAllocation(sku()?, channel(3)?),
            (Shape::Channels, _) => Route::ListChannels,
            (Shape::ChannelOne, "GET") => Route::GetChannel(channel(1)?),
            (Shape::ChannelOne, "PUT") => Route::PutChannel(channel(1)?),
            (Shape::ChannelOne, _) => Route::DeleteChannel(channel(1)?),
            (Shape::ChannelMessages, _) => Route::ChannelMessages(channel(1)?),
            (Shape::ChannelSync, _) => Route::ChannelSync(channel(1)?),
            (Shape::Audit, _) => Route::Audit(sku()?),
            (Shape::SkuAutomations, "GET") => Route::GetAutomations(Scope::Sku(sku()?)),
            (Shape::SkuAutomations, _) => Route::PutAutomations(Scope::Sku(sku()?)),
            (Shape::RoomAutomations, "GET") => Route::GetAutomations(Scope::Room(room()?)),
            (Shape::RoomAutomations, _) => Route::PutAutomations(Scope::Room(room()?)),
            (Shape::Split, _) => Route::Split(sku()?),
            (Shape::SkuHolds, _) => Route::SkuHolds(sku()?),
            (Shape::Orders, "GET") => Route::ListOrders,
            (Shape::Orders, _) => Route::CreateOrder,
            (Shape::ExportOrders, _) => Route::ExportOrders,
            (Shape::Picking, _) => Route::PickingList,
            (Shape::Jobs, _) => Route::CreateJob,
            (Shape::Carrier, _) => Route::CarrierDeliveries,
            (Shape::JobLive, _) if crate::domain::live::is_job_id(segments[1]) => {
                Route::Live(FeedName::Job(segments[1].to_owned()))
            }
            (Shape::JobLive, _) => return Err(ApiError::JobNotFound),
            (Shape::Job, _) if crate::domain::live::is_job_id(segments[1]) => {
                Route::GetJob(segments[1].to_owned())
            }
            (Shape::Job, _) => return Err(ApiError::JobNotFound),
            (Shape::Order, _) => Route::GetOrder(order()?),
            (Shape::OrderAction(a), _) => Route::OrderAction(order()?, a),
            (Shape::BuyerOrders, _) => {
                Route::BuyerOrders(BuyerId::parse(segments[1]).map_err(invalid)?)
            }
            (Shape::Room, "GET") => Route::GetRoom(room()?),
            (Shape::Room, _) => Route::PutRoom(room()?),
            (Shape::RoomLive, _) => Route::Live(FeedName::Room(room()?)),
            (Shape::SkuLive, _) => Route::Live(FeedName::Sku(sku()?)),
            (Shape::OrderLive, _) => Route::Live(FeedName::Order(order()?)),
            (Shape::DevSession, _) => Route::DevSession,
            (Shape::DevPayment, _) => Route::DevPayment,
            (Shape::RiskRules, "GET") => Route::GetRiskRules,
            (Shape::RiskRules, _) => Route::PutRiskRules,
            (Shape::Reviews, _) => Route::Reviews,
            (Shape::Webhooks, "GET") => Route::ListWebhooks,
            (Shape::Webhooks, _) => Route::CreateWebhook,
            (Shape::Webhook, "GET") => Route::GetWebhook(endpoint()?),
            (Shape::Webhook, _) => Route::DeleteWebhook(endpoint()?),
            (Shape::Deliveries, _) => Route::WebhookDeliveries(endpoint()?),
            (Shape::Resend, _) => {
                let event = segments[3];
                let hex = event.strip_prefix("evt_").unwrap_or("");
                if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ApiError::DeliveryNotFound);
                }
                Route::ResendDelivery(endpoint()?, event.to_owned())
            }
        })
    }

    /// Who may call this route. Ownership (a buyer's own holds and orders)
    /// is checked by the object that knows the owner.
    pub fn access(&self) -> Access {
        match self {
            Route::Health | Route::GetSku(_) | Route::GetRoom(_) | Route::LedgerKey => {
                Access::Public
            }
            Route::Live(FeedName::Room(_) | FeedName::Sku(_)) => Access::Public,
            // The order feed's session comes in a subprotocol (browsers
            // cannot set headers on an upgrade); the router checks it.
            Route::Live(FeedName::Order(_)) => Access::Public,
            // A job's feed takes the admin token the same way.
            Route::Live(FeedName::Job(_)) => Access::Public,
            Route::Reserve(_)
            | Route::GetHold(..)
            | Route::Release(..)
            | Route::CreateOrder
            | Route::GetOrder(_)
            | Route::OrderAction(_, OrderAction::Cancel)
            | Route::BuyerOrders(_) => Access::Buyer,
            Route::OrderAction(_, OrderAction::Pay) => Access::Payment,
            Route::ChannelMessages(_) => Access::Channel,
            Route::CarrierDeliveries => Access::Carrier,
            Route::PutSku(_)
            | Route::Restock(_)
            | Route::Adjust(_)
            | Route::Ledger(_)
            | Route::VerifyLedger(_)
            | Route::ExportLedger(_)
            | Route::PutReorder(_)
            | Route::SkuStats(_)
            | Route::RoomStats(_)
            | Route::Replenishments(_)
            | Route::ReplenishmentAction(..)
            | Route::Audit(_)
            | Route::PutAllocation(..)
            | Route::DeleteAllocation(..)
            | Route::ListOrders
            | Route::ExportOrders
            | Route::PickingList
            | Route::CreateJob
            | Route::GetJob(_)
            | Route::ListChannels
            | Route::PutChannel(_)
            | Route::GetChannel(_)
            | Route::DeleteChannel(_)
            | Route::ChannelSync(_)
            | Route::GetAutomations(_)
            | Route::PutAutomations(_)
            | Route::Split(_)
            | Route::SkuHolds(_)
            | Route::PutRoom(_)
            | Route::Commit(..)
            | Route::GetRiskRules
            | Route::PutRiskRules
            | Route::Reviews
            | Route::ListWebhooks
            | Route::CreateWebhook
            | Route::GetWebhook(_)
            | Route::DeleteWebhook(_)
            | Route::WebhookDeliveries(_)
            | Route::ResendDelivery(..)
            | Route::OrderAction(
                _,
                OrderAction::Ship
                | OrderAction::Deliver
                | OrderAction::Refund
                | OrderAction::Approve
                | OrderAction::Reject
                | OrderAction::Confirm,
            ) => Access::Admin,
            Route::DevSession | Route::DevPayment => Access::Dev,
        }
    }

    /// Routes that need the admin bearer token.
    pub fn is_admin(&self) -> bool {
        self.access() == Access::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, expected: Result<&str, u16>) {
        let got = Route::parse(method, path);
        match (got, expected) {
            (Ok(route), Ok(name)) => assert!(
                format!("{route:?}").starts_with(name),
                "{method} {path}: {route:?}"
            ),
            (Err(e), Err(status)) => assert_eq!(e.status(), status, "{method} {path}: {e:?}"),
            (got, expected) => panic!("{method} {path}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn routes_resolve_or_refuse() {
        let hold = "h_0123456789abcdef0123456789abcdef";
        let cases: Vec<(&str, String, Result<&str, u16>)> = vec![
            ("GET", "/api/health".into(), Ok("Health")),
            ("GET", "/api/skus/tee-1".into(), Ok("GetSku")),
            ("PUT", "/api/skus/tee-1".into(), Ok("PutSku")),
            ("POST", "/api/skus/tee-1".into(), Err(405)),
            ("POST", "/api/skus/tee-1/reservations".into(), Ok("Reserve")),
            ("GET", "/api/skus/tee-1/reservations".into(), Err(405)),
            (
                "GET",
                format!("/api/skus/tee-1/reservations/{hold}"),
                Ok("GetHold"),
            ),
            (
                "DELETE",
                format!("/api/skus/tee-1/reservations/{hold}"),
                Ok("Release"),
            ),
            (
                "POST",
                format!("/api/skus/tee-1/reservations/{hold}/commit"),
                Ok("Commit"),
            ),
            ("GET", "/api/skus/tee-1/reservations/nope".into(), Err(404)),
            ("POST", "/api/skus/tee-1/restock".into(), Ok("Restock")),
            ("POST", "/api/skus/tee-1/adjustments".into(), Ok("Adjust")),
            ("GET", "/api/skus/tee-1/ledger".into(), Ok("Ledger")),
            ("GET", "/api/skus/tee-1/audit".into(), Ok("Audit")),
            ("POST", "/api/skus/tee-1/split".into(), Ok("Split")),
            ("GET", "/api/skus/tee-1/split".into(), Err(405)),
            ("GET", "/api/skus/bad%20id".into(), Err(400)),
            ("GET", format!("/api/skus/{}", "x".repeat(65)), Err(400)),
            ("GET", "/api/skus/".into(), Err(400)),
            ("GET", "/api/skus/a/b/c".into(), Err(404)),
            ("POST", "/api/webhooks".into(), Ok("CreateWebhook")),
            ("GET", "/api/webhooks".into(), Ok("ListWebhooks")),
            ("PUT", "/api/webhooks".into(), Err(405)),
            (
                "DELETE",
                "/api/webhooks/we_0123456789abcdef0123456789abcdef".into(),
                Ok("DeleteWebhook"),
            ),
            ("GET", "/api/webhooks/we_nope".into(), Err(404)),
            (
                "GET",
                "/api/webhooks/we_0123456789abcdef0123456789abcdef/deliveries".into(),
                Ok("WebhookDeliveries"),
            ),
            (
                "POST",
                "/api/webhooks/we_0123456789abcdef0123456789abcdef/deliveries/evt_0123456789abcdef0123456789abcdef/resend".into(),
                Ok("ResendDelivery"),
            ),
            (
                "POST",
                "/api/webhooks/we_0123456789abcdef0123456789abcdef/deliveries/evt_x/resend".into(),
                Err(404),
            ),
            ("GET", "/api/nothing".into(), Err(404)),
            ("GET", "/elsewhere".into(), Err(404)),
            ("PATCH", "/api/skus/bad id".into(), Err(405)),
            ("GET", "/api/skus/tee-1/holds".into(), Ok("SkuHolds")),
            ("POST", "/api/orders".into(), Ok("CreateOrder")),
            ("GET", "/api/orders".into(), Ok("ListOrders")),
            (
                "GET",
                format!("/api/orders/o_{}", "a".repeat(32)),
                Ok("GetOrder"),
            ),
            ("GET", "/api/orders/o_nope".into(), Err(404)),
            (
                "POST",
                format!("/api/orders/o_{}/pay", "a".repeat(32)),
                Ok("OrderAction"),
            ),
            (
                "POST",
                format!("/api/orders/o_{}/teleport", "a".repeat(32)),
                Err(404),
            ),
            (
                "GET",
                format!("/api/orders/o_{}/pay", "a".repeat(32)),
                Err(405),
            ),
            ("GET", "/api/buyers/fan-1/orders".into(), Ok("BuyerOrders")),
            ("GET", "/api/rooms/r1/automations".into(), Ok("GetAutomations")),
            ("PUT", "/api/skus/tee-1/automations".into(), Ok("PutAutomations")),
            ("POST", "/api/skus/tee-1/automations".into(), Err(405)),
            ("PUT", "/api/rooms/bad room/automations".into(), Err(400)),
            (
                "POST",
                format!("/api/orders/o_{}/confirm", "a".repeat(32)),
                Ok("OrderAction"),
            ),
            ("GET", "/api/buyers/bad buyer/orders".into(), Err(400)),
            // Methods the runtime's own enum does not know are refused, not
            // read as GET.
            ("PROPFIND", "/api/skus/tee-1".into(), Err(405)),
            ("PURGE", "/api/skus/tee-1".into(), Err(405)),
            ("POST", "/api/dev/session".into(), Ok("DevSession")),
            ("GET", "/api/dev/session".into(), Err(405)),
        ];
        for (method, path, expected) in cases {
            check(method, &path, expected);
        }
    }

    /// The storefront kit's typed client (www/kit/edgestock.js) calls only
    /// documented storefront routes, and its declarations name each.
    #[test]
    fn the_kit_calls_documented_storefront_routes() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../../www/openapi.json")).unwrap();
        let kit = include_str!("../../www/kit/edgestock.js");
        let types = include_str!("../../www/kit/edgestock.d.ts");
        let table = kit
            .split("export const routes = {")
            .nth(1)
            .and_then(|rest| rest.split("};").next())
            .expect("the kit's route table");
        let mut names = Vec::new();
        for line in table.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // name: ["METHOD", "/api/…"],
            let (name, rest) = line.split_once(':').expect(line);
            let parts: Vec<&str> = rest.split('"').collect();
            let (method, path) = (parts[1], parts[3]);
            let operation = &spec["paths"][path][method.to_lowercase()];
            assert!(
                operation.is_object(),
                "{name}: {method} {path} is not documented"
            );
            let concrete = path
                .replace("{sku}", "tee")
                .replace("{hold}", &format!("h_{}", "a".repeat(32)))
                .replace("{order}", &format!("o_{}", "b".repeat(32)))
                .replace("{buyer}", "fan")
                .replace("{room}", "live-1");
            let route = Route::parse(method, &concrete).unwrap();
            assert!(
                matches!(route.access(), Access::Public | Access::Buyer),
                "{name}: {method} {path} is not a storefront route"
            );
            assert!(
                types.contains(&format!("\"{name}\"")),
                "{name} missing from edgestock.d.ts"
            );
            names.push(name.to_owned());
        }
        assert!(names.len() >= 10, "{names:?}");
        // Every client function is in the table.
        for name in [
            "getSku",
            "reserve",
            "createOrder",
            "getOrder",
            "cancelOrder",
        ] {
            assert!(names.iter().any(|n| n == name), "{name}");
            assert!(kit.contains(&format!("  {name}: (")), "client.{name}");
        }
    }

    /// Every path and method in the OpenAPI document resolves to a route,
    /// admin-only exactly where the document asks for the bearer token.
    #[test]
    fn the_openapi_document_matches_the_route_table() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../../www/openapi.json")).unwrap();
        let mut operations = 0;
        for (template, item) in spec["paths"].as_object().unwrap() {
            let path = template
                .replace("{sku}", "tee")
                .replace("{hold}", &format!("h_{}", "a".repeat(32)))
                .replace("{order}", &format!("o_{}", "b".repeat(32)))
                .replace("{buyer}", "fan")
                .replace("{room}", "live-1")
                .replace("{webhook}", &format!("we_{}", "c".repeat(32)))
                .replace("{event}", &format!("evt_{}", "d".repeat(32)))
                .replace("{request}", &format!("rp_{}", "e".repeat(32)))
                .replace("{channel}", "douyin")
                .replace("{job}", &format!("j_{}", "f".repeat(32)));
            for (method, operation) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let route = Route::parse(&method.to_uppercase(), &path)
                    .unwrap_or_else(|e| panic!("{method} {template}: {e:?}"));
                // The document's security schemes say who may call.
                let schemes: Vec<&str> = operation["security"]
                    .as_array()
                    .map(|alternatives| {
                        alternatives
                            .iter()
                            .flat_map(|a| a.as_object().unwrap().keys().map(String::as_str))
                            .collect()
                    })
                    .unwrap_or_default();
                let documented = match schemes.as_slice() {
                    [] => Access::Public,
                    ["bearer"] => Access::Admin,
                    ["buyerSession", "bearer"] => Access::Buyer,
                    ["paymentSignature"] => Access::Payment,
                    ["channelSignature"] => Access::Channel,
                    ["carrierSignature"] => Access::Carrier,
                    other => panic!("{method} {template}: schemes {other:?}"),
                };
                let expected = match route.access() {
                    // The order feed checks its session itself (a subprotocol).
                    _ if template.ends_with("/orders/{order}/live") => Access::Public,
                    _ if template.ends_with("/jobs/{job}/live") => Access::Public,
                    access => access,
                };
                assert_eq!(expected, documented, "{method} {template}");
                operations += 1;
            }
        }
        // Every route the server has is in the document: 52 variants, with
        // OrderAction's eight actions and Live's four feeds each a path of
        // their own (dev mode's two routes are not documented).
        assert_eq!(operations, 67);
    }

    #[test]
    fn admin_routes_are_the_writes_of_stock_levels_and_the_ledger() {
        let sku = || SkuId::parse("a").unwrap();
        let hold = || ReservationId::parse(&format!("h_{}", "a".repeat(32))).unwrap();
        assert!(Route::PutSku(sku()).is_admin());
        assert!(Route::Ledger(sku()).is_admin());
        assert!(Route::Audit(sku()).is_admin());
        assert!(Route::Commit(sku(), hold()).is_admin());
        assert_eq!(Route::Reserve(sku()).access(), Access::Buyer);
        assert_eq!(Route::Release(sku(), hold()).access(), Access::Buyer);
        assert_eq!(Route::GetSku(sku()).access(), Access::Public);
    }
}
