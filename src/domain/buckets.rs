//! Stock buckets (分桶库存): one hot SKU served by several objects.
//!
//! One object serializes a SKU, and one object serves a few hundred writes
//! a second. A SKU split into `n` buckets is served by its parent object and
//! `n` bucket objects, each a [`Stock`](super::stock::Stock) of the same SKU
//! with its own share of the units:
//!
//! - **Routing.** A buyer always lands in the same bucket
//!   ([`bucket_for`]), so a per-buyer limit is checked by one object and
//!   stays exact. A hold's id names its bucket ([`hold_in_bucket`],
//!   [`bucket_of_hold`]), so a commit or release finds it.
//! - **Units move by transfer.** The sender takes units off its own
//!   `on_hand` and records them in its outbox in one step
//!   (`Command::Send`); the receiver adds them, keyed by the transfer's id,
//!   so a redelivery adds nothing (`Command::Receive`); the sender then
//!   drops the outbox entry (`Command::Delivered`). A crash anywhere leaves
//!   the units in an outbox, which the sender's alarm delivers again. So
//!   every unit is always in exactly one place: some object's counts, or one
//!   outbox entry not yet received ([`family_total`]).
//! - **Borrowing.** A bucket that cannot fill a reservation asks its parent
//!   for units ([`grant`]); a parent short of units first calls the others'
//!   available back. So a reservation is refused only when the whole SKU has
//!   too few units: the last units of a sell-out are all sold.
//! - **Merging back.** When the rush ends the parent calls every bucket's
//!   available back; the buckets keep only their holds and sales, and
//!   borrow again if asked.
//!
//! Plain Rust: the decisions, not the calls. The shell makes the calls, and
//! `tests/buckets.rs` plays them with crashes between any two.

use super::stock::SkuRecord;
use super::types::{BuyerId, ReservationId};
use serde::{Deserialize, Serialize};

/// The most buckets a SKU splits into.
pub const BUCKETS_MAX: u16 = 128;

/// One object of a split SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    Parent,
    Bucket(u16),
}

/// The bucket a buyer's reservations go to: FNV-1a of the buyer id, so
/// every router isolate agrees with no shared state.
pub fn bucket_for(buyer: &BuyerId, buckets: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in buyer.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(buckets.max(1))) as u16
}

/// A hold id for a hold made in `bucket`: the first two of the 16 random
/// bytes carry the bucket's number.
pub fn hold_in_bucket(mut random: [u8; 16], bucket: u16) -> ReservationId {
    random[..2].copy_from_slice(&bucket.to_be_bytes());
    ReservationId::from_random(random)
}

/// `hold` made to name `bucket` (its first four hex digits replaced): for
/// a reservation the parent passes on to a bucket after the edge drew its
/// id without knowing of the split.
pub fn mark_hold(hold: &ReservationId, bucket: u16) -> ReservationId {
    let hex = hold.as_str().strip_prefix("h_").unwrap_or_default();
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .unwrap_or(0);
    }
    hold_in_bucket(bytes, bucket)
}

/// The bucket a hold id names, for a SKU split `buckets` ways (None for a
/// number no bucket has: a hold made by the parent before the split).
pub fn bucket_of_hold(hold: &ReservationId, buckets: u16) -> Option<u16> {
    let hex = hold.as_str().strip_prefix("h_")?.get(..4)?;
    let n = u16::from_str_radix(hex, 16).ok()?;
    (n < buckets).then_some(n)
}

/// The Durable Object name of a SKU's bucket: `#` never appears in a SKU
/// id, so no SKU's own object can be a bucket of another.
pub fn bucket_object_name(sku: &str, bucket: u16) -> String {
    format!("{sku}#b{bucket}")
}

/// What each bucket gets when a SKU is split: the parent keeps a reserve
/// (one bucket's share, at least) to lend from, so the first bucket to run
/// dry borrows without calling the others back.
pub fn initial_share(available: u64, buckets: u16) -> u64 {
    available / (u64::from(buckets) + 1)
}

/// How many units a parent with `pool` available sends a bucket that is
/// `short` units short: what it needs, plus a refill so it does not come
/// back for every reservation (an eighth of the pool per bucket, at least
/// one), never more than the pool.
pub fn grant(pool: u64, short: u64, buckets: u16) -> u64 {
    let refill = (pool / (8 * u64::from(buckets.max(1)))).max(1);
    short.saturating_add(refill).min(pool)
}

/// The SKU's units wherever they are: the sum of every object's `on_hand`
/// and of the outbox entries their receivers have not yet added. Constant
/// under transfers; only restocks, adjustments and setups change it.
pub fn family_total(on_hand: impl IntoIterator<Item = u64>, in_flight: u64) -> u64 {
    on_hand.into_iter().sum::<u64>() + in_flight
}

/// A split SKU's numbers: the parent's record with every bucket's counts
/// added. The version is the sum of the objects' versions, so it rises with
/// every change anywhere (what a live badge orders its updates by). Exact
/// when the records are of one moment; the shell reads them one after the
/// other, so while units move a sum can miss them (in an outbox, in
/// nobody's counts) or count units coming home twice.
pub fn aggregate<'a>(
    parent: &SkuRecord,
    buckets: impl IntoIterator<Item = &'a SkuRecord>,
) -> SkuRecord {
    let mut total = parent.clone();
    total.outbox.clear();
    for bucket in buckets {
        total.on_hand = total.on_hand.saturating_add(bucket.on_hand);
        total.reserved = total.reserved.saturating_add(bucket.reserved);
        total.sold = total.sold.saturating_add(bucket.sold);
        total.version = total.version.saturating_add(bucket.version);
        total.updated_at_ms = total.updated_at_ms.max(bucket.updated_at_ms);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buyer(s: &str) -> BuyerId {
        BuyerId::parse(s).unwrap()
    }

    #[test]
    fn a_buyer_always_lands_in_the_same_bucket_and_buyers_spread() {
        let mut counts = [0u32; 8];
        for i in 0..8_000 {
            let b = buyer(&format!("viewer-{i}"));
            let n = bucket_for(&b, 8);
            assert_eq!(bucket_for(&b, 8), n);
            counts[n as usize] += 1;
        }
        // Each bucket within 15 % of an even share.
        for c in counts {
            assert!((850..=1150).contains(&c), "{counts:?}");
        }
        assert_eq!(bucket_for(&buyer("x"), 1), 0);
        assert_eq!(bucket_for(&buyer("x"), 0), 0);
    }

    #[test]
    fn a_hold_id_names_its_bucket() {
        for bucket in [0u16, 1, 7, 63] {
            let id = hold_in_bucket([0xab; 16], bucket);
            assert!(ReservationId::parse(id.as_str()).is_ok());
            assert_eq!(bucket_of_hold(&id, 64), Some(bucket));
        }
        let marked = mark_hold(&ReservationId::from_random([0xcd; 16]), 5);
        assert_eq!(bucket_of_hold(&marked, 8), Some(5));
        assert!(marked.as_str().ends_with(&"cd".repeat(14)));
        // A parent's hold from before the split names no bucket of 8.
        let old = ReservationId::from_random([0xff; 16]);
        assert_eq!(bucket_of_hold(&old, 8), None);
    }

    #[test]
    fn grants_cover_the_shortfall_with_a_refill_within_the_pool() {
        assert_eq!(grant(1_000, 3, 4), 3 + 31);
        assert_eq!(grant(10, 3, 4), 4);
        assert_eq!(grant(2, 3, 4), 2);
        assert_eq!(grant(0, 3, 4), 0);
        assert_eq!(initial_share(1_000, 4), 200);
        assert_eq!(bucket_object_name("tee", 3), "tee#b3");
    }
}
