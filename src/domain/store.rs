//! The one path from a batch of requests to persisted state, shared by the
//! Durable Object (SQLite) and the simulation (memory): prefetch what the
//! core needs, step, save exactly what changed, evict.

use super::stock::{Changes, Hold, Replay, Reply, Request, Stock};
use super::types::{BuyerId, ReplayKey, ReservationId};

/// Where a SKU's state lives between steps.
pub trait Store {
    type Error;
    fn load_hold(&self, id: &ReservationId) -> Result<Option<Hold>, Self::Error>;
    fn load_replay(&self, key: &ReplayKey) -> Result<Option<Replay>, Self::Error>;
    fn load_bought(&self, buyer: &BuyerId) -> Result<u64, Self::Error>;
    /// Writes `changes` (read from `stock`) all or nothing.
    fn save(&mut self, stock: &Stock, changes: &Changes) -> Result<(), Self::Error>;
}

/// Why a step was not saved.
#[derive(Debug)]
pub enum RunError<E> {
    /// The store failed (nothing of the step was written: saves are atomic).
    Store(E),
    /// The step broke the SKU's count invariants: nothing was written, and
    /// the reasons are for the operator's alert.
    Broken(Vec<String>),
}

impl<E> From<E> for RunError<E> {
    fn from(e: E) -> Self {
        RunError::Store(e)
    }
}

/// Applies `requests` at `now_ms` and persists the result before returning
/// the replies: nothing is acknowledged that is not saved, and nothing is
/// saved from a step that broke the invariants. On error the in-memory
/// `stock` is ahead of storage and must be dropped and reloaded.
pub fn run<S: Store>(
    store: &mut S,
    stock: &mut Stock,
    now_ms: u64,
    requests: &[Request],
) -> Result<Vec<Reply>, RunError<S::Error>> {
    let quarantined = !stock.quarantine().is_empty();
    prefetch(store, stock, requests)?;
    let replies = stock.step(now_ms, requests);
    let changes = stock.take_changes();
    if !quarantined && !stock.quarantine().is_empty() {
        return Err(RunError::Broken(stock.quarantine().to_vec()));
    }
    if !changes.is_empty() {
        store.save(stock, &changes)?;
    }
    stock.evict();
    Ok(replies)
}

fn prefetch<S: Store>(store: &S, stock: &mut Stock, requests: &[Request]) -> Result<(), S::Error> {
    let needs = stock.needs(requests);
    for id in &needs.holds {
        if let Some(hold) = store.load_hold(id)? {
            stock.provide_hold(hold);
        }
    }
    for key in needs.replays {
        if let Some(replay) = store.load_replay(&key)? {
            stock.provide_replay(key, replay);
        }
    }
    // Asked again: the holds just loaded name buyers whose tallies a commit
    // updates.
    for buyer in stock.needs(requests).buyers {
        let bought = store.load_bought(&buyer)?;
        stock.provide_bought(buyer, bought);
    }
    Ok(())
}
