//! Test support shared by the native test binaries: an in-memory store
//! that keeps what a crash keeps, and a world of SKUs that orders run
//! against.
#![allow(dead_code)]

use edgestock::domain::ledger::{LedgerEntry, Tail};
use edgestock::domain::notice::Notice;
use edgestock::domain::order::{Order, SkuStep};
use edgestock::domain::stock::{
    Actor, Changes, Hold, HoldStatus, Replay, Reply, Request, SkuRecord, Stock,
};
use edgestock::domain::store::{self, Store};
use edgestock::domain::types::{BuyerId, ReplayKey, ReservationId, SkuId};
use std::collections::{BTreeMap, HashMap};

/// Through JSON and back, as every call to the object and every stored row
/// goes in the real shell.
pub fn wire<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

/// The store the simulation persists to: what a crash keeps.
#[derive(Default)]
pub struct MemoryStore {
    pub record: Option<SkuRecord>,
    pub holds: BTreeMap<ReservationId, Hold>,
    pub bought: HashMap<BuyerId, u64>,
    pub ledger: Vec<LedgerEntry>,
    pub replays: HashMap<ReplayKey, Replay>,
    /// The outbox of merchant notices (never handed off here).
    pub notices: Vec<Notice>,
    /// Saves that fail on purpose; None never fails.
    pub faults: Option<Faults>,
    /// How many saves failed.
    pub failed: u64,
}

/// Seeded save failures: a save fails `percent` of the time, after a
/// random number of its statements. `atomic` is the real store's contract
/// (a transaction: a failed save leaves nothing); without it the
/// statements before the failure stay written, as separate statements
/// did before the transaction.
pub struct Faults {
    pub rng: Rng,
    pub percent: u64,
    pub atomic: bool,
}

/// One row write of a save, in the order the SQL store issues them.
#[allow(clippy::large_enum_variant)] // test-only, short-lived
enum Write {
    Record(Option<SkuRecord>),
    Hold(Hold),
    Bought(BuyerId, u64),
    Ledger(LedgerEntry),
    Replay(ReplayKey, Replay),
    Notice(Notice),
}

impl Store for MemoryStore {
    type Error = ();
    fn load_hold(&self, id: &ReservationId) -> Result<Option<Hold>, ()> {
        Ok(self.holds.get(id).cloned())
    }
    fn load_replay(&self, key: &ReplayKey) -> Result<Option<Replay>, ()> {
        Ok(self.replays.get(key).cloned())
    }
    fn load_bought(&self, buyer: &BuyerId) -> Result<u64, ()> {
        Ok(self.bought.get(buyer).copied().unwrap_or(0))
    }
    fn save(&mut self, stock: &Stock, changes: &Changes) -> Result<(), ()> {
        let mut writes = Vec::new();
        if changes.record {
            writes.push(Write::Record(stock.record().map(wire)));
        }
        for id in &changes.holds {
            writes.push(Write::Hold(wire(stock.hold(id).unwrap())));
        }
        for b in &changes.bought {
            writes.push(Write::Bought(b.clone(), stock.bought(b)));
        }
        for entry in &changes.ledger {
            writes.push(Write::Ledger(wire(entry)));
        }
        for k in &changes.replays {
            writes.push(Write::Replay(k.clone(), wire(stock.replay(k).unwrap())));
        }
        for n in &changes.notices {
            writes.push(Write::Notice(wire(n)));
        }
        // Where this save fails, if it does: after `cut` statements.
        let cut = self.faults.as_mut().and_then(|f| {
            let fails = f.rng.chance(f.percent);
            let cut = f.rng.below(writes.len() as u64 + 1) as usize;
            fails.then_some(if f.atomic { 0 } else { cut })
        });
        let keep = cut.unwrap_or(writes.len());
        for write in writes.into_iter().take(keep) {
            match write {
                Write::Record(r) => self.record = r,
                Write::Hold(h) => {
                    self.holds.insert(h.id.clone(), h);
                }
                Write::Bought(b, n) => {
                    self.bought.insert(b, n);
                }
                Write::Ledger(e) => self.ledger.push(e),
                Write::Replay(k, r) => {
                    self.replays.insert(k, r);
                }
                Write::Notice(n) => self.notices.push(n),
            }
        }
        match cut {
            Some(_) => {
                self.failed += 1;
                Err(())
            }
            None => Ok(()),
        }
    }
}

impl MemoryStore {
    pub fn reload(&self, sku: &SkuId) -> Stock {
        let live = self
            .holds
            .values()
            .filter(|h| h.status == HoldStatus::Held)
            .cloned()
            .collect();
        Stock::load(
            sku.clone(),
            self.record.clone(),
            live,
            Tail::after(self.ledger.last()),
        )
    }
}

/// Every SKU an order may touch, each with its store and loaded stock.
#[derive(Default)]
pub struct World {
    pub skus: BTreeMap<SkuId, (MemoryStore, Stock)>,
    /// SKUs that answer no call (an outage, a SKU failing every step).
    pub down: std::collections::BTreeSet<SkuId>,
    /// The lines whose calls failed in the last cut-short run.
    pub unreachable: Vec<usize>,
}

impl World {
    pub fn sku(&mut self, sku: &SkuId) -> &mut (MemoryStore, Stock) {
        self.skus.entry(sku.clone()).or_insert_with(|| {
            let store = MemoryStore::default();
            let stock = store.reload(sku);
            (store, stock)
        })
    }

    /// Runs one request at a SKU through the same path as the object.
    pub fn run(&mut self, sku: &SkuId, now: u64, request: Request) -> Reply {
        let (store, stock) = self.sku(sku);
        let request = wire(&request);
        store::run(store, stock, now, &[request]).unwrap().remove(0)
    }

    /// One planned order step, sent as the order object sends it.
    pub fn call(&mut self, order: &Order, step: &SkuStep, now: u64) -> Reply {
        let request = Request {
            key: Some(step.key.clone()),
            fingerprint: serde_json::to_string(&step.command).unwrap(),
            actor: Actor::Order(order.id.clone()),
            command: step.command.clone(),
        };
        wire(&self.run(&step.sku, now, request))
    }

    /// Runs the order's pending transition to its end, as the object does:
    /// rounds of SKU calls, the order saved after each round. With `fault`,
    /// the run is cut short at a call; `order` is then what the object had
    /// saved (the caller's in-memory copy is gone with the crash), and
    /// false is returned.
    pub fn drive(&mut self, order: &mut Order, now: u64, fault: Option<Cut>) -> bool {
        let mut saved = order.clone();
        let mut calls = 0;
        loop {
            let plan = order.plan();
            if plan.is_empty() {
                order.settle(&Actor::System, now);
                return true;
            }
            self.unreachable.clear();
            for step in plan {
                if self.down.contains(&step.sku) {
                    self.unreachable.push(step.line);
                    continue;
                }
                if fault == Some(Cut::Before(calls)) {
                    *order = saved;
                    return false;
                }
                let reply = self.call(order, &step, now);
                calls += 1;
                if fault == Some(Cut::AnswerLost(calls)) {
                    // The SKU did it; the order never heard.
                    *order = saved;
                    return false;
                }
                order.observe(&step, &reply);
            }
            // The round's answers are saved, then the failed calls reported.
            saved = order.clone();
            if !self.unreachable.is_empty() {
                return false;
            }
        }
    }

    /// Every SKU forgets its idempotency answers (their retention passed).
    pub fn forget_answers(&mut self) {
        for (store, stock) in self.skus.values_mut() {
            store.replays.clear();
            *stock = store.reload(stock.sku());
        }
    }

    /// Every SKU's invariants, after expiring what is due at `now`.
    pub fn tick(&mut self, now: u64) {
        for (store, stock) in self.skus.values_mut() {
            store::run(store, stock, now, &[]).unwrap();
            let wrong = stock.check_invariants();
            assert!(wrong.is_empty(), "{wrong:?}");
        }
    }

    pub fn counts(&self, sku: &SkuId) -> (u64, u64, u64, u64) {
        let r = self.skus[sku].1.record().expect("set up");
        (r.on_hand, r.reserved, r.sold, r.available())
    }
}

pub fn live(store: &MemoryStore) -> usize {
    store
        .holds
        .values()
        .filter(|h| h.status == HoldStatus::Held)
        .count()
}

/// Where a run of an order's transition is cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A crash before the n-th SKU call (0-based) is made.
    Before(usize),
    /// The n-th call (1-based) is made, and its answer lost.
    AnswerLost(usize),
}

/// splitmix64: tiny, seedable, good enough to drive a workload.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
