//! The ledger: one entry per movement, with the state it left behind, so any
//! number on a SKU can be explained by reading its entries in order.
//!
//! Entries are hash-chained: each carries `prev_hash` and `hash =
//! SHA-256(prev_hash ‖ canonical bytes of the entry)`, written in the same
//! transaction as the movement. Changing, dropping or inserting a stored
//! entry breaks the chain at that entry ([`verify_chain`]); rewriting the
//! whole chain from there on is caught by a signed checkpoint of an
//! earlier head (see shell/checkpoints.rs and `examples/verify_ledger.rs`).

use super::stock::{Actor, Hold, HoldStatus, SkuRecord};
use super::types::{hex, unhex, BuyerId, Note, OrderId, ReservationId, SkuId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest, as stored and shown: 64 lowercase hex digits.
pub type Hash = [u8; 32];

/// The `prev_hash` of a SKU's first entry.
pub const GENESIS: Hash = [0; 32];

pub fn to_hex(hash: &Hash) -> String {
    hex(hash)
}

pub fn from_hex(raw: &str) -> Option<Hash> {
    unhex(raw)?.try_into().ok()
}

/// Where the next entry goes: its sequence number and the hash it chains
/// to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub next_seq: u64,
    pub last_hash: Hash,
}

impl Tail {
    /// A SKU with no entries yet.
    pub const EMPTY: Tail = Tail {
        next_seq: 1,
        last_hash: GENESIS,
    };

    /// After `last`, the newest stored entry (None: no entries).
    pub fn after(last: Option<&LedgerEntry>) -> Tail {
        match last {
            Some(entry) => Tail {
                next_seq: entry.seq + 1,
                last_hash: from_hex(&entry.hash).unwrap_or(GENESIS),
            },
            None => Tail::EMPTY,
        }
    }
}

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

    pub fn qty(&self) -> i64 {
        self.qty
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

    /// The entry at `seq`, chained to `prev`.
    pub fn finish(self, seq: u64, at_ms: u64, state: &SkuRecord, prev: &Hash) -> LedgerEntry {
        let mut entry = LedgerEntry {
            prev_hash: to_hex(prev),
            hash: String::new(),
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
        };
        entry.hash = to_hex(&entry.digest(&state.sku, prev));
        entry
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
    /// The previous entry's `hash` (64 zeros for the first).
    #[serde(default)]
    pub prev_hash: String,
    /// SHA-256 of the previous hash and [`LedgerEntry::canonical`].
    #[serde(default)]
    pub hash: String,
}

impl LedgerEntry {
    /// The bytes the hash covers: every field but the two hashes, in a
    /// fixed order, each as `<byte length>:<value>\n` (an absent one as
    /// `0:\n`), after the line `edgestock-ledger-v1` and the SKU id. Plain
    /// enough to recompute in any language (README, "Verification").
    pub fn canonical(&self, sku: &SkuId) -> Vec<u8> {
        let movement = serde_json::to_value(self.movement)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let fields: [String; 16] = [
            sku.as_str().to_owned(),
            self.seq.to_string(),
            self.at_ms.to_string(),
            movement,
            self.qty.to_string(),
            self.hold
                .as_ref()
                .map_or(String::new(), |h| h.as_str().to_owned()),
            self.buyer
                .as_ref()
                .map_or(String::new(), |b| b.as_str().to_owned()),
            self.order
                .as_ref()
                .map_or(String::new(), |o| o.as_str().to_owned()),
            self.actor.clone(),
            self.reason.clone().unwrap_or_default(),
            self.reference
                .as_ref()
                .map_or(String::new(), |r| r.as_str().to_owned()),
            self.on_hand.to_string(),
            self.reserved.to_string(),
            self.sold.to_string(),
            self.available.to_string(),
            self.version.to_string(),
        ];
        let mut out = b"edgestock-ledger-v1\n".to_vec();
        for field in fields {
            out.extend_from_slice(format!("{}:", field.len()).as_bytes());
            out.extend_from_slice(field.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// SHA-256(prev ‖ canonical bytes).
    pub fn digest(&self, sku: &SkuId, prev: &Hash) -> Hash {
        Sha256::new()
            .chain_update(prev)
            .chain_update(self.canonical(sku))
            .finalize()
            .into()
    }
}

/// What [`verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub ok: bool,
    /// Entries checked.
    pub checked: u64,
    /// The first entry that does not hold, and why.
    pub first_bad: Option<BadEntry>,
    /// The last good entry's sequence number and hash (the head, when ok).
    pub head_seq: u64,
    pub head_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEntry {
    pub seq: u64,
    pub reason: String,
}

/// Recomputes the chain over `entries` (in sequence order). The first
/// entry must chain to `anchor` if given (a checkpoint's hash, or the
/// genesis for an entry 1); otherwise a first entry past 1 (older ones
/// dropped by retention) is taken at its word and checked from there.
pub fn verify_chain(
    sku: &SkuId,
    entries: impl IntoIterator<Item = LedgerEntry>,
    anchor: Option<Hash>,
) -> ChainReport {
    let mut report = ChainReport {
        ok: true,
        checked: 0,
        first_bad: None,
        head_seq: 0,
        head_hash: String::new(),
    };
    let mut prev: Option<(u64, Hash)> = None;
    for entry in entries {
        let bad = |reason: String| BadEntry {
            seq: entry.seq,
            reason,
        };
        let expected_prev = match prev {
            Some((seq, hash)) => {
                if entry.seq != seq + 1 {
                    report.first_bad = Some(bad(format!(
                        "expected entry {} next, found {} (entries missing or inserted)",
                        seq + 1,
                        entry.seq
                    )));
                    break;
                }
                Some(hash)
            }
            None if entry.seq == 1 => Some(anchor.unwrap_or(GENESIS)),
            None => anchor,
        };
        let Some(stored_prev) = from_hex(&entry.prev_hash) else {
            report.first_bad = Some(bad("no prev_hash: written before the chain".into()));
            break;
        };
        if expected_prev.is_some_and(|p| p != stored_prev) {
            report.first_bad = Some(bad(
                "prev_hash is not the previous entry's hash (an entry before it was changed, dropped or inserted)".into(),
            ));
            break;
        }
        let hash = entry.digest(sku, &stored_prev);
        if to_hex(&hash) != entry.hash {
            report.first_bad = Some(bad(
                "hash does not match the entry's contents (the entry was changed)".into(),
            ));
            break;
        }
        report.checked += 1;
        report.head_seq = entry.seq;
        report.head_hash = entry.hash.clone();
        prev = Some((entry.seq, hash));
    }
    report.ok = report.first_bad.is_none();
    report
}
