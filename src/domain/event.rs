//! The one event type: every stock change and every order status change is
//! described by an [`Event`], built here and emitted through one place in
//! the shell (shell/events.rs); live feeds send the same type to viewers,
//! with their own snapshot, alert and error variants. Versioned so clients
//! can tell shapes apart as they grow; www/assets/live.js reads it.

use super::live::{FeedName, RoomSetup};
use super::order::{Order, OrderStatus, TimelineEntry};
use super::stock::SkuRecord;
use super::types::{BuyerId, OrderId, SkuId};
use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning or disappears (adding one does not).
pub const EVENT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Stock {
        v: u32,
        sku: SkuId,
        on_hand: u64,
        reserved: u64,
        sold: u64,
        available: u64,
        low_stock: bool,
        version: u64,
        at_ms: u64,
        /// Seconds until sold out at the pace of the last moments (none
        /// when nothing is selling): "~40 s left".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sellout_s: Option<u64>,
        /// Units confirmed on their way from suppliers (not available).
        #[serde(default, skip_serializing_if = "is_zero")]
        incoming: u64,
        /// What the storefront may sell, when channel allocation sets
        /// units aside for other channels (absent: `available`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storefront: Option<u64>,
    },
    OrderStatus {
        v: u32,
        order: OrderId,
        buyer: BuyerId,
        status: OrderStatus,
        actor: String,
        note: Option<String>,
        at_ms: u64,
    },
    /// An order as a live room's viewers see it: "v***7 just bought 2". No
    /// order id and no buyer id: a room feed is public, and those are the
    /// keys to a buyer's orders. The buyer sees their own order in full on
    /// its own feed.
    RoomOrder {
        v: u32,
        /// The buyer id masked: its first and last character.
        buyer: String,
        status: OrderStatus,
        units: u64,
        skus: Vec<SkuId>,
        at_ms: u64,
    },
    /// Everything a feed knows, on connect and when a resume cannot be
    /// served from what changed.
    Snapshot {
        v: u32,
        feed: FeedName,
        room: Option<RoomSetup>,
        skus: Vec<Event>,
        orders: Vec<Event>,
    },
    /// A SKU crossed into low stock or sold out, or needs an operator
    /// (`detail` says why).
    Alert {
        v: u32,
        sku: SkuId,
        kind: AlertKind,
        available: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A bulk job's progress (its own feed, for the merchant's console):
    /// rows done of total, how many failed, `running` or `done`.
    Job {
        v: u32,
        job: String,
        kind: String,
        done: u64,
        total: u64,
        failed: u64,
        state: String,
        at_ms: u64,
    },
    /// Why a feed refused what a viewer sent (before closing, for caps).
    Error {
        v: u32,
        code: String,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    LowStock,
    SoldOut,
    /// The SKU's counts do not add up; it refuses changes.
    Quarantined,
    /// An order gave up on this SKU after its retries and gave back what it
    /// had taken.
    OrderCompensated,
    /// An order keeps failing to reach this SKU (a payment or refund still
    /// being retried).
    OrderStuck,
}

impl Event {
    pub fn stock(record: &SkuRecord) -> Event {
        Event::Stock {
            v: EVENT_VERSION,
            sku: record.sku.clone(),
            on_hand: record.on_hand,
            reserved: record.reserved,
            sold: record.sold,
            available: record.available(),
            low_stock: record.is_low(),
            version: record.version,
            at_ms: record.updated_at_ms,
            sellout_s: record.sellout_s(),
            incoming: record.incoming(),
            storefront: (!record.channels.is_empty()).then(|| record.sellable(None)),
        }
    }

    /// The SKU refuses changes: its counts broke (`why`).
    pub fn quarantined(record: &SkuRecord, why: &[String]) -> Event {
        Event::Alert {
            v: EVENT_VERSION,
            sku: record.sku.clone(),
            kind: AlertKind::Quarantined,
            available: record.available(),
            detail: Some(why.join("; ")),
        }
    }

    /// An order could not reach `sku` after its retries (`detail` says what
    /// it did about it).
    pub fn order_alert(order: &Order, sku: &SkuId, kind: AlertKind, note: &str) -> Event {
        Event::Alert {
            v: EVENT_VERSION,
            sku: sku.clone(),
            kind,
            available: 0,
            detail: Some(format!("order {}: {note}", order.id)),
        }
    }

    pub fn room_order(order: &Order, entry: &TimelineEntry) -> Event {
        Event::RoomOrder {
            v: EVENT_VERSION,
            buyer: mask(order.buyer.as_str()),
            status: entry.status,
            units: order.lines.iter().map(|l| l.qty.get()).sum(),
            skus: order.lines.iter().map(|l| l.sku.clone()).collect(),
            at_ms: entry.at_ms,
        }
    }

    pub fn order_status(order: &Order, entry: &TimelineEntry) -> Event {
        Event::OrderStatus {
            v: EVENT_VERSION,
            order: order.id.clone(),
            buyer: order.buyer.clone(),
            status: entry.status,
            actor: entry.actor.clone(),
            note: entry.note.clone(),
            at_ms: entry.at_ms,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `viewer-7` → `v***7`: enough for viewers to tell buyers apart in a
/// scrolling feed, not enough to name one.
pub fn mask(id: &str) -> String {
    let mut chars = id.chars();
    match (chars.next(), chars.next_back()) {
        (Some(first), Some(last)) if id.chars().count() > 2 => format!("{first}***{last}"),
        _ => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn buyer_ids_are_masked() {
        assert_eq!(mask("viewer-7"), "v***7");
        assert_eq!(mask("abc"), "a***c");
        assert_eq!(mask("ab"), "***");
        assert_eq!(mask("a"), "***");
    }
}
