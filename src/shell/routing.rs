//! What this router isolate knows of split SKUs (stock buckets, see
//! domain/buckets.rs): how many buckets each serves, learned from the
//! `Edgestock-Buckets` header a parent puts on every answer it passes on to
//! a bucket, and forgotten after a while. Per isolate memory, never shared
//! state. Knowing it lets a reservation go straight to the buyer's bucket;
//! not knowing it costs one hop through the parent, never a wrong answer
//! (the parent routes by the same rule).

use crate::domain::types::SkuId;
use std::cell::RefCell;
use std::collections::HashMap;
use worker::Response;

/// How long a learned split is trusted before the parent is asked again
/// (a merge back ends routing only for SKUs without a per-buyer limit, for
/// which a stale route is still a correct one).
const TRUST_MS: u64 = 10_000;
/// At most this many SKUs remembered.
const MAX_ENTRIES: usize = 4_096;

thread_local! {
    static SPLITS: RefCell<HashMap<SkuId, (u16, u64)>> = RefCell::new(HashMap::new());
}

/// The buckets serving `sku` as far as this isolate knows (0: the SKU's
/// own object).
pub fn buckets(sku: &SkuId, now: u64) -> u16 {
    SPLITS.with(|splits| {
        splits
            .borrow()
            .get(sku)
            .filter(|(_, at)| now.saturating_sub(*at) < TRUST_MS)
            .map_or(0, |(n, _)| *n)
    })
}

/// Learns from a SKU object's answer.
pub fn learn(sku: &SkuId, response: &Response, now: u64) {
    let told = response
        .headers()
        .get("Edgestock-Buckets")
        .ok()
        .flatten()
        .and_then(|n| n.parse::<u16>().ok());
    if let Some(n) = told {
        SPLITS.with(|splits| {
            let mut splits = splits.borrow_mut();
            if splits.len() >= MAX_ENTRIES {
                splits.clear();
            }
            splits.insert(sku.clone(), (n, now));
        });
    }
}

/// Forgets what it knew of `sku` (just split or merged through here).
pub fn forget(sku: &SkuId) {
    SPLITS.with(|splits| splits.borrow_mut().remove(sku));
}
