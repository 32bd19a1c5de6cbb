//! A buyer's live holds across every SKU, capped (hold-squatting,
//! 恶意占库存: one account holding a little of everything so nobody else
//! can buy). Each SKU knows only its own holds; the buyer's object keeps
//! this list of the buyer's holds everywhere, and decides here.
//!
//! A buyer far below the cap never waits for this: their holds are reported
//! after the reply. Only a buyer the edge has seen near the cap claims a
//! slot before the SKU is asked; and a hold reported past the cap (a burst
//! that beat the flag) is given back at once. So the cap holds within
//! milliseconds in every case, and exactly for a buyer at it.

use super::types::{ReservationId, SkuId};
use serde::{Deserialize, Serialize};

/// The default cap on a buyer's live holds across all SKUs.
pub const LIVE_HOLDS_MAX_DEFAULT: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveHold {
    pub hold: ReservationId,
    pub sku: SkuId,
    pub expires_at_ms: u64,
    /// Stands for a hold the edge did not report (a buyer's first in a
    /// minute): counted, but no SKU can be asked about it.
    #[serde(default)]
    pub unseen: bool,
}

/// When a hold is claimed: before its SKU is asked (a buyer near the cap)
/// or reported after it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    Before,
    After,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Claim {
    /// Counted; the buyer now has `live` holds.
    Counted { live: usize, max: usize },
    /// Past the cap: refused before, or to be given back after.
    Over { live: usize, max: usize },
}

/// A buyer's live holds, as far as the buyer's object knows: a hold may
/// have been released or committed early, so an `Over` is only final after
/// [`LiveHolds::keep_only`] has dropped those the SKUs no longer hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveHolds {
    pub holds: Vec<LiveHold>,
}

impl LiveHolds {
    /// Drops holds past their expiry.
    pub fn expire(&mut self, now_ms: u64) {
        self.holds.retain(|h| h.expires_at_ms > now_ms);
    }

    /// Counts `hold` unless that would pass `max`. The same hold claimed
    /// again (a replay, or the report after a claim before) is updated,
    /// not counted twice.
    pub fn claim(&mut self, hold: LiveHold, now_ms: u64, max: usize) -> Claim {
        self.expire(now_ms);
        if let Some(known) = self.holds.iter_mut().find(|h| h.hold == hold.hold) {
            *known = hold;
            return Claim::Counted {
                live: self.holds.len(),
                max,
            };
        }
        if self.holds.len() >= max {
            return Claim::Over {
                live: self.holds.len() + 1,
                max,
            };
        }
        self.holds.push(hold);
        Claim::Counted {
            live: self.holds.len(),
            max,
        }
    }

    /// Forgets a hold (its SKU refused it, or it was given back).
    pub fn forget(&mut self, hold: &ReservationId) {
        self.holds.retain(|h| h.hold != *hold);
    }

    /// Keeps only the holds for which `still_held` is true (asked of the
    /// SKUs when the count is at the cap); unseen ones stay until they
    /// expire.
    pub fn keep_only(&mut self, mut still_held: impl FnMut(&LiveHold) -> bool) {
        self.holds.retain(|h| h.unseen || still_held(h));
    }

    /// The holds the SKUs can be asked about.
    pub fn seen(&self) -> impl Iterator<Item = &LiveHold> {
        self.holds.iter().filter(|h| !h.unseen)
    }

    /// Whether the next claim would meet the cap: the edge then asks first.
    pub fn near(live: usize, max: usize) -> bool {
        live + 1 >= max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(n: u8, expires_at_ms: u64) -> LiveHold {
        LiveHold {
            hold: ReservationId::from_random([n; 16]),
            sku: SkuId::parse("tee").unwrap(),
            expires_at_ms,
            unseen: false,
        }
    }

    #[test]
    fn unseen_holds_count_and_are_not_asked_about() {
        let mut live = LiveHolds::default();
        let unseen = LiveHold {
            unseen: true,
            ..hold(7, 1_000)
        };
        live.claim(unseen.clone(), 0, 2);
        live.claim(unseen, 0, 2); // the same minute's stand-in, once
        live.claim(hold(1, 1_000), 0, 2);
        assert_eq!(
            live.claim(hold(2, 1_000), 0, 2),
            Claim::Over { live: 3, max: 2 }
        );
        assert_eq!(live.seen().count(), 1);
        live.keep_only(|_| false);
        assert_eq!(live.holds.len(), 1, "the unseen one stays until it expires");
    }

    #[test]
    fn the_cap_counts_live_holds_once_each() {
        let mut live = LiveHolds::default();
        for n in 0..3 {
            assert_eq!(
                live.claim(hold(n, 1_000), 0, 3),
                Claim::Counted {
                    live: n as usize + 1,
                    max: 3
                }
            );
        }
        assert_eq!(
            live.claim(hold(9, 1_000), 0, 3),
            Claim::Over { live: 4, max: 3 }
        );
        // A replay of a counted hold is not another hold.
        assert_eq!(
            live.claim(hold(1, 2_000), 0, 3),
            Claim::Counted { live: 3, max: 3 }
        );
        // Expired holds free their slots.
        assert_eq!(
            live.claim(hold(9, 5_000), 1_000, 3),
            Claim::Counted { live: 2, max: 3 }
        );
        live.forget(&hold(9, 0).hold);
        assert_eq!(live.holds.len(), 1);
        live.keep_only(|_| false);
        assert!(live.holds.is_empty());
    }

    #[test]
    fn near_means_the_next_hold_meets_the_cap() {
        assert!(!LiveHolds::near(1, 3));
        assert!(LiveHolds::near(2, 3));
        assert!(LiveHolds::near(3, 3));
    }
}
