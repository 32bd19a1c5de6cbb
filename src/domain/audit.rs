//! The reconcile check: a SKU's counters recomputed from what explains
//! them, independently of the record that carries them. The ledger, walked
//! in order, must be gap-free and arrive at the record; the holds must add
//! up to it (live holds to `reserved`, sales not returned to `sold`). Any
//! difference is drift, and is reported, never repaired here: a merchant
//! (or the kill test) reads it and decides.

use super::ledger::{LedgerEntry, Movement};
use super::stock::{Hold, HoldStatus, SkuRecord};
use serde::Serialize;

/// Counts as one source tells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub on_hand: i128,
    pub reserved: i128,
    pub sold: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub record: Counts,
    /// The ledger replayed from its first kept entry (older ones may have
    /// been trimmed; each entry carries the state it left behind).
    pub from_ledger: Counts,
    /// `reserved` from live holds, `sold` from committed holds.
    pub from_holds: Counts,
    pub ledger_entries: u64,
    pub live_holds: u64,
    /// Each difference found, in words; empty when everything agrees.
    pub drift: Vec<String>,
}

impl Counts {
    fn of(record: &SkuRecord) -> Counts {
        Counts {
            on_hand: record.on_hand.into(),
            reserved: record.reserved.into(),
            sold: record.sold.into(),
        }
    }

    fn of_entry(e: &LedgerEntry) -> Counts {
        Counts {
            on_hand: e.on_hand.into(),
            reserved: e.reserved.into(),
            sold: e.sold.into(),
        }
    }

    /// The counts after `movement` of `qty` (see [`Movement::entry`]).
    fn apply(mut self, movement: Movement, qty: i64) -> Counts {
        let q = i128::from(qty);
        match movement {
            Movement::Setup
            | Movement::Restock
            | Movement::Adjust
            | Movement::TransferOut
            | Movement::TransferIn => self.on_hand += q,
            Movement::Reserve => self.reserved += q,
            Movement::Sell => self.sold += q,
            Movement::Commit => {
                self.reserved -= q;
                self.sold += q;
            }
            Movement::Release | Movement::Expire => self.reserved -= q,
            Movement::Return => self.sold -= q,
        }
        self
    }

    fn before(self, movement: Movement, qty: i64) -> Counts {
        let undone = Counts::default().apply(movement, qty);
        Counts {
            on_hand: self.on_hand - undone.on_hand,
            reserved: self.reserved - undone.reserved,
            sold: self.sold - undone.sold,
        }
    }
}

/// Recomputes `record`'s counters from `ledger` (in sequence order) and
/// `holds` (every live and committed hold; others are ignored).
pub fn audit(
    record: &SkuRecord,
    ledger: impl IntoIterator<Item = LedgerEntry>,
    holds: impl IntoIterator<Item = Hold>,
) -> Audit {
    let mut drift = Vec::new();
    let mut running: Option<Counts> = None;
    let mut last_seq = None;
    let mut entries = 0u64;
    for entry in ledger {
        entries += 1;
        let start =
            running.unwrap_or_else(|| Counts::of_entry(&entry).before(entry.movement, entry.qty));
        if let Some(last) = last_seq {
            if entry.seq != last + 1 {
                drift.push(format!("ledger gap: {} follows {last}", entry.seq));
            }
        }
        last_seq = Some(entry.seq);
        let next = start.apply(entry.movement, entry.qty);
        if next != Counts::of_entry(&entry) && drift.len() < 20 {
            drift.push(format!(
                "ledger entry {} records {:?} but its movement gives {:?}",
                entry.seq,
                Counts::of_entry(&entry),
                next
            ));
        }
        running = Some(next);
    }
    let from_ledger = running.unwrap_or_default();
    let mut from_holds = Counts::default();
    let mut live_holds = 0;
    for hold in holds {
        match hold.status {
            HoldStatus::Held => {
                live_holds += 1;
                from_holds.reserved += i128::from(hold.qty.get());
            }
            HoldStatus::Committed => from_holds.sold += i128::from(hold.qty.get()),
            _ => {}
        }
    }
    from_holds.on_hand = i128::from(record.on_hand);
    let counted = Counts::of(record);
    if from_ledger != counted {
        drift.push(format!(
            "the ledger gives {from_ledger:?}, the record says {counted:?}"
        ));
    }
    if from_holds.reserved != counted.reserved {
        drift.push(format!(
            "live holds sum {}, the record reserves {}",
            from_holds.reserved, counted.reserved
        ));
    }
    if from_holds.sold != counted.sold {
        drift.push(format!(
            "committed holds sum {}, the record has sold {}",
            from_holds.sold, counted.sold
        ));
    }
    if counted.reserved + counted.sold > counted.on_hand {
        drift.push("reserved + sold exceed on_hand".into());
    }
    Audit {
        record: counted,
        from_ledger,
        from_holds,
        ledger_entries: entries,
        live_holds,
        drift,
    }
}
