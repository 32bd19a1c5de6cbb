//! The ledger: one entry per movement, with the state it left behind, so any
//! number on a SKU can be explained by reading its entries in order.

use super::stock::{Actor, Hold, HoldStatus, SkuRecord};
use super::types::{BuyerId, Note, OrderId, ReservationId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Movement {
    Setup,
    Restock,
    Adjust,
    Reserve,
    /// Reserve and commit in one step (an order's at-order or at-payment line).
    Sell,
    Commit,
    Release,
    Expire,
    /// A sale's units back to available.
    Return,
    /// Units sent to another object of a split SKU (a stock bucket or its
    /// parent); `qty` is the negative change to on_hand.
    TransferOut,
    /// Units received from another object of a split SKU.
    TransferIn,
}

impl Movement {
    pub fn for_resolution(to: HoldStatus) -> Movement {
        match to {
            HoldStatus::Committed => Movement::Commit,
            HoldStatus::Released => Movement::Release,
            HoldStatus::Expired => Movement::Expire,
            HoldStatus::Returned => Movement::Return,
            HoldStatus::Held => Movement::Reserve,
        }
    }

    /// Starts an entry: `qty` is the signed change to on_hand for setup,
    /// restock and adjust, and the units moved for hold movements.
    pub fn entry(self, qty: i64, actor: &Actor) -> EntryDraft {
        EntryDraft {
            movement: self,
            qty,
            actor: actor.to_string(),
            hold: None,
            buyer: None,
            order: None,
            reason: None,
            reference: None,
        }
    }
}

/// An entry before the step gives it a sequence number, a time and the
/// resulting state.
pub struct EntryDraft {
    movement: Movement,
    qty: i64,
    actor: String,
    hold: Option<ReservationId>,
    buyer: Option<BuyerId>,
    order: Option<OrderId>,
    reason: Option<String>,
    reference: Option<Note>,
}

impl EntryDraft {
    pub fn movement(&self) -> Movement {
        self.movement
    }

    pub fn hold(mut self, hold: &Hold) -> Self {
        self.hold = Some(hold.id.clone());
        self.buyer = Some(hold.buyer.clone());
        self.order = hold.order.clone();
        self
    }

    pub fn reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    pub fn reference(mut self, reference: Option<Note>) -> Self {
        self.reference = reference;
        self
    }

    pub fn finish(self, seq: u64, at_ms: u64, state: &SkuRecord) -> LedgerEntry {
        LedgerEntry {
            seq,
            at_ms,
            movement: self.movement,
            qty: self.qty,
            hold: self.hold,
            buyer: self.buyer,
            order: self.order,
            actor: self.actor,
            reason: self.reason,
            reference: self.reference,
            on_hand: state.on_hand,
            reserved: state.reserved,
            sold: state.sold,
            available: state.available(),
            version: state.version,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// 1, 2, 3, … within the SKU, without gaps.
    pub seq: u64,
    pub at_ms: u64,
    pub movement: Movement,
    pub qty: i64,
    pub hold: Option<ReservationId>,
    pub buyer: Option<BuyerId>,
    /// The order the hold belongs to, for order lines.
    #[serde(default)]
    pub order: Option<OrderId>,
    pub actor: String,
    pub reason: Option<String>,
    pub reference: Option<Note>,
    pub on_hand: u64,
    pub reserved: u64,
    pub sold: u64,
    pub available: u64,
    pub version: u64,
}
