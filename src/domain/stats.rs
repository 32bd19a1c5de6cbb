//! A SKU's sales in time buckets, kept inside its object: per second for
//! the last 10 minutes, per minute for 48 hours, per hour for 90 days.
//! Each bucket counts units held, sold, released and expired, from the
//! ledger entries of the step that moved them (and is written in that
//! step's transaction), so the numbers and the ledger never disagree.

use super::ledger::{LedgerEntry, Movement};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Second,
    Minute,
    Hour,
}

impl Resolution {
    pub const ALL: [Resolution; 3] = [Resolution::Second, Resolution::Minute, Resolution::Hour];

    pub fn ms(self) -> u64 {
        match self {
            Resolution::Second => 1_000,
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
        }
    }

    /// How long buckets of this size are kept.
    pub fn kept_ms(self) -> u64 {
        match self {
            Resolution::Second => 10 * 60_000,
            Resolution::Minute => 48 * 3_600_000,
            Resolution::Hour => 90 * 24 * 3_600_000,
        }
    }

    /// The number stored for it (a column).
    pub fn code(self) -> u64 {
        match self {
            Resolution::Second => 1,
            Resolution::Minute => 2,
            Resolution::Hour => 3,
        }
    }

    pub fn parse(raw: &str) -> Option<Resolution> {
        match raw {
            "second" => Some(Resolution::Second),
            "minute" => Some(Resolution::Minute),
            "hour" => Some(Resolution::Hour),
            _ => None,
        }
    }
}

/// Units moved in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub held: u64,
    pub sold: u64,
    pub released: u64,
    pub expired: u64,
}

impl Tally {
    fn count(&mut self, entry: &LedgerEntry) -> bool {
        let units = entry.qty.unsigned_abs();
        let field = match entry.movement {
            Movement::Reserve => &mut self.held,
            // A sale in one step was never held; a commit sells a hold.
            Movement::Sell | Movement::Commit => &mut self.sold,
            Movement::Release => &mut self.released,
            Movement::Expire => &mut self.expired,
            _ => return false,
        };
        *field = field.saturating_add(units);
        true
    }

    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}

/// One bucket's change from a step: (resolution, bucket start in ms, units).
pub type BucketDelta = (Resolution, u64, Tally);

/// What a step's ledger entries add to each bucket they fall in.
pub fn tally(entries: &[LedgerEntry]) -> Vec<BucketDelta> {
    let mut out: Vec<BucketDelta> = Vec::new();
    for entry in entries {
        for res in Resolution::ALL {
            let start = entry.at_ms - entry.at_ms % res.ms();
            let slot = match out.iter_mut().find(|(r, s, _)| *r == res && *s == start) {
                Some(slot) => slot,
                None => {
                    out.push((res, start, Tally::default()));
                    out.last_mut().expect("just pushed")
                }
            };
            if !slot.2.count(entry) {
                break;
            }
        }
    }
    out.retain(|(_, _, t)| !t.is_empty());
    out
}

/// Buckets as CSV: `start_ms,held,sold,released,expired`.
pub fn csv(buckets: &[(u64, Tally)]) -> String {
    let mut out = String::from("start_ms,held,sold,released,expired\n");
    for (start, t) in buckets {
        out.push_str(&format!(
            "{start},{},{},{},{}\n",
            t.held, t.sold, t.released, t.expired
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(movement: Movement, qty: i64, at_ms: u64) -> LedgerEntry {
        LedgerEntry {
            seq: 1,
            at_ms,
            movement,
            qty,
            hold: None,
            buyer: None,
            order: None,
            actor: "admin".into(),
            reason: None,
            reference: None,
            on_hand: 0,
            reserved: 0,
            sold: 0,
            available: 0,
            version: 1,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_steps_entries_land_in_their_second_minute_and_hour() {
        let deltas = tally(&[
            entry(Movement::Reserve, 2, 61_500),
            entry(Movement::Commit, 2, 61_900),
            entry(Movement::Reserve, 1, 62_100),
            entry(Movement::Restock, 50, 62_200),
            entry(Movement::Expire, 1, 62_300),
        ]);
        let find = |res, start| {
            deltas
                .iter()
                .find(|(r, s, _)| *r == res && *s == start)
                .map(|(_, _, t)| *t)
        };
        let t = |held, sold, released, expired| Tally {
            held,
            sold,
            released,
            expired,
        };
        assert_eq!(find(Resolution::Second, 61_000), Some(t(2, 2, 0, 0)));
        assert_eq!(find(Resolution::Second, 62_000), Some(t(1, 0, 0, 1)));
        assert_eq!(find(Resolution::Minute, 60_000), Some(t(3, 2, 0, 1)));
        assert_eq!(find(Resolution::Hour, 0), Some(t(3, 2, 0, 1)));
        assert_eq!(deltas.len(), 4, "a restock is not a sale: {deltas:?}");
        assert!(csv(&[(61_000, t(2, 2, 0, 0))]).ends_with("61000,2,2,0,0\n"));
    }
}
