//! Channel allocation (库存分配): how a SKU's available units are shared
//! between the platforms that sell it (抖店, 快手, 淘宝, 视频号, the
//! storefront, …).
//!
//! Every channel sells from the common **pool** unless the SKU gives it a
//! **dedicated** bucket (专属库存): units set aside that only that channel
//! may sell, still counted in `available` (they are not held for anyone)
//! but never in the pool. So the sum over channels can never exceed
//! `on_hand`: dedicated buckets are carved out of available units, and
//! every shared channel sells from what is left.
//!
//! A shared channel may also be limited: a **safety floor** (it may sell
//! only what the pool has above the floor, so it shows 0 once the pool
//! falls to it), a **percentage** of the pool, and a **maximum to list**.
//! [`sellable`] is the one place those rules are applied: the core checks
//! a hold against it, and the outbound sync pushes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Channel, Units};

/// The channel a storefront buyer sells from unless their session names
/// another: the merchant's own shop is a channel like the others.
pub const STOREFRONT: &str = "storefront";

/// At most this many channels have rules on one SKU.
pub const CHANNELS_MAX: usize = 32;

/// One channel's rules on one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Units in the channel's dedicated bucket (None: it sells from the
    /// pool). Holds taken from the bucket come back to it when released or
    /// expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated: Option<u64>,
    /// A shared channel shows and sells only the pool above this.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub safety_floor: u64,
    /// At most this many units listed (and sold) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_listed: Option<u64>,
    /// At most this share of the pool (1–100), rounded down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What an allocation request asks for (`PUT …/channels/{channel}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationSpec {
    /// Some(n): a dedicated bucket of exactly n units (taken from or given
    /// back to the pool); None: shared (a bucket it had goes back).
    pub dedicated: Option<Units>,
    pub safety_floor: Units,
    pub max_listed: Option<Units>,
    pub percent: Option<u8>,
}

/// Every channel with rules on a SKU, by name. Channels without rules
/// sell from the pool without limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Allocations(pub BTreeMap<Channel, Allocation>);

impl Allocations {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, channel: &Channel) -> Option<&Allocation> {
        self.0.get(channel)
    }

    /// Units set aside in dedicated buckets.
    pub fn dedicated(&self) -> u64 {
        self.0
            .values()
            .filter_map(|a| a.dedicated)
            .fold(0u64, u64::saturating_add)
    }

    /// The pool: available units no channel has to itself.
    pub fn pool(&self, available: u64) -> u64 {
        available.saturating_sub(self.dedicated())
    }

    /// Takes `qty` from the channel's dedicated bucket, if it has one.
    /// None when the bucket is short (the caller checked [`sellable`]).
    pub fn take(&mut self, channel: Option<&Channel>, qty: u64) -> Option<()> {
        if let Some(bucket) = self.bucket_mut(channel) {
            *bucket = bucket.checked_sub(qty)?;
        }
        Some(())
    }

    /// A hold from the channel came back (released, expired): to its
    /// bucket if the channel still has one, else to the pool.
    pub fn give_back(&mut self, channel: Option<&Channel>, qty: u64) {
        if let Some(bucket) = self.bucket_mut(channel) {
            *bucket = bucket.saturating_add(qty);
        }
    }

    fn bucket_mut(&mut self, channel: Option<&Channel>) -> Option<&mut u64> {
        self.0.get_mut(channel?)?.dedicated.as_mut()
    }

    /// After units left without a channel (a loss, a lower count): the
    /// pool gives first, then the buckets, in name order, so dedicated
    /// units never exceed available. Answers what the buckets lost.
    pub fn fit(&mut self, available: u64) -> u64 {
        let mut over = self.dedicated().saturating_sub(available);
        let lost = over;
        for allocation in self.0.values_mut() {
            if over == 0 {
                break;
            }
            if let Some(bucket) = allocation.dedicated.as_mut() {
                let cut = over.min(*bucket);
                *bucket -= cut;
                over -= cut;
            }
        }
        lost
    }

    /// Sets (or with None, removes) a channel's rules. A bucket grows only
    /// from the pool; shrinking or removing it gives its units back.
    pub fn set(
        &mut self,
        channel: &Channel,
        spec: Option<&AllocationSpec>,
        available: u64,
    ) -> Result<(), AllocationError> {
        let Some(spec) = spec else {
            self.0.remove(channel);
            return Ok(());
        };
        if let Some(p) = spec.percent {
            if !(1..=100).contains(&p) {
                return Err(AllocationError::Percent(p));
            }
        }
        if !self.0.contains_key(channel) && self.0.len() >= CHANNELS_MAX {
            return Err(AllocationError::TooMany { max: CHANNELS_MAX });
        }
        let current = self.0.get(channel).and_then(|a| a.dedicated).unwrap_or(0);
        if let Some(wanted) = spec.dedicated {
            let wanted = wanted.get();
            let pool = self.pool(available);
            if wanted > current && wanted - current > pool {
                return Err(AllocationError::PoolShort {
                    requested: wanted - current,
                    pool,
                });
            }
        }
        self.0.insert(
            channel.clone(),
            Allocation {
                dedicated: spec.dedicated.map(Units::get),
                safety_floor: spec.safety_floor.get(),
                max_listed: spec.max_listed.map(Units::get),
                percent: spec.percent,
            },
        );
        Ok(())
    }
}

/// Why an allocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationError {
    /// A bucket can only grow by units the pool has.
    PoolShort {
        requested: u64,
        pool: u64,
    },
    Percent(u8),
    TooMany {
        max: usize,
    },
}

/// How many units `channel` may sell (and is shown) right now, with
/// `available` units on the SKU. The storefront is `None` or
/// [`STOREFRONT`]; a channel without rules sells the whole pool.
pub fn sellable(allocations: &Allocations, available: u64, channel: Option<&Channel>) -> u64 {
    let pool = allocations.pool(available);
    let rules = channel.and_then(|c| allocations.get(c));
    let Some(rules) = rules else {
        return pool;
    };
    let mut n = match rules.dedicated {
        Some(bucket) => bucket.min(available),
        None => {
            let mut n = pool.saturating_sub(rules.safety_floor);
            if let Some(p) = rules.percent {
                n = n.min(pool.saturating_mul(u64::from(p)) / 100);
            }
            n
        }
    };
    if let Some(max) = rules.max_listed {
        n = n.min(max);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }

    fn spec(
        dedicated: Option<u64>,
        floor: u64,
        max: Option<u64>,
        pct: Option<u8>,
    ) -> AllocationSpec {
        AllocationSpec {
            dedicated: dedicated.map(|n| Units::parse(n).unwrap()),
            safety_floor: Units::parse(floor).unwrap(),
            max_listed: max.map(|n| Units::parse(n).unwrap()),
            percent: pct,
        }
    }

    #[test]
    fn shared_channels_see_the_pool_within_their_limits() {
        let mut a = Allocations::default();
        a.set(&ch("douyin"), Some(&spec(Some(30), 0, None, None)), 100)
            .unwrap();
        a.set(&ch("taobao"), Some(&spec(None, 10, None, None)), 100)
            .unwrap();
        a.set(
            &ch("kuaishou"),
            Some(&spec(None, 0, Some(25), Some(50))),
            100,
        )
        .unwrap();
        assert_eq!(a.pool(100), 70);
        assert_eq!(sellable(&a, 100, Some(&ch("douyin"))), 30);
        assert_eq!(sellable(&a, 100, Some(&ch("taobao"))), 60);
        assert_eq!(sellable(&a, 100, Some(&ch("kuaishou"))), 25);
        assert_eq!(sellable(&a, 100, None), 70);
        assert_eq!(sellable(&a, 100, Some(&ch("wechat"))), 70);
        // The pool at the floor: taobao shows 0, the others still sell.
        assert_eq!(sellable(&a, 40, Some(&ch("taobao"))), 0);
        assert_eq!(sellable(&a, 40, Some(&ch("kuaishou"))), 5);
    }

    #[test]
    fn a_bucket_grows_only_from_the_pool_and_gives_back() {
        let mut a = Allocations::default();
        a.set(&ch("douyin"), Some(&spec(Some(60), 0, None, None)), 100)
            .unwrap();
        let err = a
            .set(&ch("taobao"), Some(&spec(Some(50), 0, None, None)), 100)
            .unwrap_err();
        assert_eq!(
            err,
            AllocationError::PoolShort {
                requested: 50,
                pool: 40
            }
        );
        // Shrinking douyin's bucket returns units to the pool.
        a.set(&ch("douyin"), Some(&spec(Some(20), 0, None, None)), 100)
            .unwrap();
        assert_eq!(a.pool(100), 80);
        a.set(&ch("douyin"), None, 100).unwrap();
        assert_eq!(a.pool(100), 100);
    }

    #[test]
    fn losses_come_from_the_pool_first() {
        let mut a = Allocations::default();
        a.set(&ch("a"), Some(&spec(Some(30), 0, None, None)), 100)
            .unwrap();
        a.set(&ch("b"), Some(&spec(Some(30), 0, None, None)), 100)
            .unwrap();
        assert_eq!(a.fit(70), 0);
        assert_eq!(a.dedicated(), 60);
        assert_eq!(a.fit(50), 10);
        assert_eq!(a.get(&ch("a")).unwrap().dedicated, Some(20));
        assert_eq!(a.dedicated(), 50);
    }
}
