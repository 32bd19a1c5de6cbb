//! Storefront reads at scale: `GET /api/skus/{sku}` served from a short-lived
//! cache in this isolate's memory, so ten thousand page loads are not ten
//! thousand calls to the SKU object. Per isolate, never shared state: each
//! isolate asks the object at most about once per `SKU_READ_CACHE_MS`
//! (default 500 ms, 0 turns the cache off) for a SKU it is asked about.
//!
//! How fresh an answer is:
//! - a cached answer was the object's at most the window ago, plus the time
//!   the object took to answer (its `Age` header says so in whole seconds;
//!   `Edgestock-Cache: hit` marks it). When it ages out, one
//!   request refreshes it while the others keep getting the old one, for at
//!   most one more second (a refresh that never comes back is retried);
//! - a write to the SKU through this isolate (reserve, commit, release,
//!   restock, adjust, setup, a new order) drops its entry: an isolate reads
//!   its own writes. What the edge does not see (a hold expiring, an order
//!   paid or cancelled, a write through another isolate) shows once the
//!   entry ages out;
//! - a request with `Cache-Control: no-cache` (an operator who must see the
//!   truth now) always asks the object;
//! - live viewers do not poll: the room feed pushes every change.
//!
//! Only 200 answers are kept: a SKU that does not exist yet is asked about
//! again, so it shows up as soon as it is set up.

use crate::domain::types::SkuId;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use worker::{Env, Request, Response, Result};

/// At most this many SKUs are kept per isolate (a storefront shows tens).
const MAX_ENTRIES: usize = 4_096;
/// How long past its window an entry may still be served while one request
/// refreshes it.
const STALE_GRACE_MS: u64 = 1_000;

struct Entry {
    /// None while a first read is on its way, or once the SKU was written
    /// through here (`written` then says when, so a read that set out
    /// before the write cannot keep the old state).
    body: Option<String>,
    /// This isolate's write count when it last wrote the SKU.
    written: u64,
    fetched_ms: u64,
    /// When a request set out to refresh it: others keep serving it.
    refreshing_since: Option<u64>,
}

thread_local! {
    static CACHE: RefCell<HashMap<SkuId, Entry>> = RefCell::new(HashMap::new());
    /// Writes through this isolate so far: orders a read against the writes
    /// (the clock cannot: it stands still within an I/O turn).
    static WRITES: Cell<u64> = const { Cell::new(0) };
    /// Bumped when entries (write markers too) are dropped to make room: a
    /// read that set out before keeps nothing.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// The cache window for this deployment; 0 when it is off.
pub fn window_ms(env: &Env) -> u64 {
    env.var("SKU_READ_CACHE_MS")
        .ok()
        .and_then(|v| v.to_string().parse::<u64>().ok())
        .unwrap_or(500)
        .min(10_000)
}

/// Whether the caller asked for the truth now.
pub fn bypassed(req: &Request) -> bool {
    req.headers()
        .get("Cache-Control")
        .ok()
        .flatten()
        .is_some_and(|v| v.contains("no-cache") || v.contains("no-store"))
}

/// What to do with a read of `sku` at `now`.
pub enum Lookup {
    /// Serve this cached answer.
    Hit(Response),
    /// Ask the object, then [`keep`] its answer with this ticket.
    Miss(Ticket),
}

/// When a read set out: after which of this isolate's writes.
#[derive(Clone, Copy)]
pub struct Ticket {
    after_writes: u64,
    generation: u64,
}

pub fn lookup(sku: &SkuId, now: u64, window: u64) -> Result<Lookup> {
    let served = CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(sku) {
            // A read on its way is an entry too, so a write can mark it.
            make_room(&mut cache, sku);
            let placeholder = Entry {
                body: None,
                written: 0,
                fetched_ms: now,
                refreshing_since: Some(now),
            };
            cache.insert(sku.clone(), placeholder);
            return None;
        }
        let entry = cache.get_mut(sku)?;
        let body = entry.body.as_ref()?;
        let age = now.saturating_sub(entry.fetched_ms);
        if age < window {
            return Some((body.clone(), age));
        }
        // Aged out: the first request refreshes it, the others keep the old
        // answer for a little longer (and retry a refresh lost on the way).
        let refreshing = entry
            .refreshing_since
            .is_some_and(|since| now.saturating_sub(since) < window.max(100));
        if refreshing && age < window + STALE_GRACE_MS {
            return Some((body.clone(), age));
        }
        entry.refreshing_since = Some(now);
        None
    });
    let Some((body, age)) = served else {
        return Ok(Lookup::Miss(Ticket {
            after_writes: WRITES.with(Cell::get),
            generation: GENERATION.with(Cell::get),
        }));
    };
    let mut response = Response::ok(body)?;
    let headers = response.headers_mut();
    headers.set("Content-Type", "application/json")?;
    headers.set("Cache-Control", "no-store")?;
    headers.set("Age", &(age / 1_000).to_string())?;
    headers.set("Edgestock-Cache", "hit")?;
    Ok(Lookup::Hit(response))
}

/// Keeps the object's answer to a read of `sku`, answered at `now` (unless
/// the SKU was written through here since the read set out), and hands it
/// on. Its age counts from the answer: under load the object may take a
/// while, and an entry born stale would send every reader to the object.
pub async fn keep(
    sku: &SkuId,
    ticket: Ticket,
    now: u64,
    mut response: Response,
) -> Result<Response> {
    if response.status_code() != 200 {
        // Not kept; a write marker stays.
        CACHE.with(|cache| {
            if let Some(entry) = cache.borrow_mut().get_mut(sku) {
                entry.body = None;
            }
        });
        return Ok(response);
    }
    let body = response.text().await?;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let written = cache.get(sku).map_or(0, |e| e.written);
        if written > ticket.after_writes || ticket.generation != GENERATION.with(Cell::get) {
            return;
        }
        make_room(&mut cache, sku);
        cache.insert(
            sku.clone(),
            Entry {
                body: Some(body.clone()),
                written,
                fetched_ms: now,
                refreshing_since: None,
            },
        );
    });
    let mut fresh = Response::ok(body)?;
    let headers = fresh.headers_mut();
    headers.set("Content-Type", "application/json")?;
    headers.set("Cache-Control", "no-store")?;
    headers.set("Edgestock-Cache", "miss")?;
    Ok(fresh)
}

/// At most [`MAX_ENTRIES`]: when full, the older half goes.
fn make_room(cache: &mut HashMap<SkuId, Entry>, sku: &SkuId) {
    if cache.len() < MAX_ENTRIES || cache.contains_key(sku) {
        return;
    }
    let mut times: Vec<u64> = cache.values().map(|e| e.fetched_ms).collect();
    times.sort_unstable();
    let cut = times[times.len() / 2];
    cache.retain(|_, e| e.fetched_ms > cut);
    // Write markers may have gone: reads already on their way keep nothing.
    GENERATION.with(|g| g.set(g.get() + 1));
}

/// Drops what this isolate knows of `sku`: it was just written through here.
/// Nothing is stored for a SKU this isolate has not read (every read
/// leaves an entry first): a reservation costs one map lookup here.
pub fn forget(sku: &SkuId) {
    CACHE.with(|cache| {
        if let Some(entry) = cache.borrow_mut().get_mut(sku) {
            entry.body = None;
            entry.written = next_write();
        }
    });
}

fn next_write() -> u64 {
    WRITES.with(|w| {
        w.set(w.get() + 1);
        w.get()
    })
}
