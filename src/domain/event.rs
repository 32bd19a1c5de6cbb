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
    /// Everything a feed knows, on connect and when a resume cannot be
    /// served from what changed.
    Snapshot {
        v: u32,
        feed: FeedName,
        room: Option<RoomSetup>,
        skus: Vec<Event>,
        orders: Vec<Event>,
    },
    /// A SKU crossed into low stock or sold out.
    Alert {
        v: u32,
        sku: SkuId,
        kind: AlertKind,
        available: u64,
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
