//! Replenishment (补货) and sales velocity: a SKU's reorder policy, its
//! replenishment requests (`requested → confirmed → received | cancelled`),
//! and the two rates kept on the record (units taken from available, with a
//! half-life of seconds, for the sell-out estimate; units sold, with a
//! half-life of an hour, for a computed reorder quantity). Plain numbers,
//! the clock passed in, so the rules are tested natively.

use super::types::{hex, Note, Quantity, Units};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReorderMode {
    /// No requests are made.
    #[default]
    Off,
    /// A request waits for the merchant to confirm it.
    Suggest,
    /// A request is confirmed at once (sent to the supplier's webhook).
    Auto,
}

/// Per SKU: when to ask for more, and how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReorderPolicy {
    pub mode: ReorderMode,
    /// A request is made when available + incoming falls to this.
    pub reorder_point: Units,
    /// How much to ask for; None: computed (see [`reorder_qty`]).
    pub reorder_qty: Option<Quantity>,
    /// How long the supplier takes, in seconds.
    pub lead_time_s: u64,
    /// Units to have left when the delivery comes (computed quantities).
    pub safety_stock: Units,
    pub supplier: Option<Note>,
}

/// The longest lead time a policy takes: a year.
pub const LEAD_TIME_MAX_S: u64 = 365 * 24 * 60 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Requested,
    Confirmed,
    Received,
    Cancelled,
}

impl RequestStatus {
    /// Waiting for the goods: counts as incoming (once confirmed), and no
    /// second request is made while one is open.
    pub fn is_open(self) -> bool {
        matches!(self, RequestStatus::Requested | RequestStatus::Confirmed)
    }
}

/// One replenishment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replenishment {
    /// `rp_` and 32 hex digits, derived from the SKU and the version that
    /// crossed the reorder point.
    pub id: String,
    pub qty: u64,
    pub status: RequestStatus,
    pub created_at: u64,
    pub updated_at: u64,
    /// Why it was made: the numbers that crossed.
    pub reason: String,
    pub supplier: Option<Note>,
    /// Units received (set on receipt; may differ from `qty`).
    #[serde(default)]
    pub received: u64,
}

impl Replenishment {
    /// The id of the SKU's `n`th request (never reused).
    pub fn id_for(sku: &str, n: u64) -> String {
        let digest = Sha256::new()
            .chain_update(b"replenishment-n\0")
            .chain_update(sku.as_bytes())
            .chain_update(n.to_be_bytes())
            .finalize();
        format!("rp_{}", hex(&digest[..16]))
    }

    pub fn is_id(raw: &str) -> bool {
        raw.strip_prefix("rp_").is_some_and(|h| {
            h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    }
}

/// Requests kept on the record: the open one and the latest closed ones.
pub const REQUESTS_KEPT: usize = 20;

/// Units on their way: confirmed requests not yet received.
pub fn incoming(requests: &[Replenishment]) -> u64 {
    requests
        .iter()
        .filter(|r| r.status == RequestStatus::Confirmed)
        .map(|r| r.qty)
        .sum()
}

/// The quantity to ask for: the policy's, or what sells over the lead
/// time at the current pace plus the safety stock, never less than one
/// unit.
pub fn reorder_qty(policy: &ReorderPolicy, sold_micro_per_s: u64) -> u64 {
    if let Some(qty) = policy.reorder_qty {
        return qty.get();
    }
    let over_lead = (u128::from(sold_micro_per_s) * u128::from(policy.lead_time_s))
        .div_ceil(1_000_000)
        .min(u128::from(Quantity::MAX)) as u64;
    let want = over_lead + policy.safety_stock.get();
    want.clamp(1, Quantity::MAX)
}

/// An exponentially weighted rate of units per second: each unit counts
/// `ln 2 / half-life` at once and halves every half-life, so a steady pace
/// of r units a second reads r. Stored in millionths of a unit a second,
/// and computed in integers (no floating point in the bundle's hot path,
/// and the same answer on every machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub micro_per_s: u64,
    pub at_ms: u64,
}

/// 2^(-k/16) for k in 0..=16, in billionths.
const HALVINGS: [u64; 17] = [
    1_000_000_000,
    957_603_281,
    917_004_043,
    878_126_080,
    840_896_415,
    805_245_166,
    771_105_413,
    738_413_073,
    707_106_781,
    677_127_773,
    648_419_777,
    620_928_906,
    594_603_558,
    569_394_317,
    545_253_866,
    522_136_891,
    500_000_000,
];

/// `value` after `elapsed` ms of halving every `half_life` ms: whole
/// half-lives by shifting, the rest from the table, interpolated in steps
/// of 1/2^20 of a half-life (so even a millisecond decays).
fn decayed(value: u64, elapsed: u64, half_life: u64) -> u64 {
    let half_life = half_life.max(1);
    let whole = elapsed / half_life;
    if whole >= 64 {
        return 0;
    }
    let part = (u128::from(elapsed % half_life) << 20) / u128::from(half_life);
    let (k, r) = ((part >> 16) as usize, part & 0xFFFF);
    let (hi, lo) = (u128::from(HALVINGS[k]), u128::from(HALVINGS[k + 1]));
    let factor = hi - (hi - lo) * r / 65_536;
    (u128::from(value >> whole) * factor / 1_000_000_000) as u64
}

impl Rate {
    /// The rate as of `now`, in millionths of a unit a second.
    pub fn micro_at(&self, now: u64, half_life_ms: u64) -> u64 {
        decayed(
            self.micro_per_s,
            now.saturating_sub(self.at_ms),
            half_life_ms,
        )
    }

    pub fn add(&mut self, now: u64, units: u64, half_life_ms: u64) {
        let now = now.max(self.at_ms);
        // ln 2 per half-life in seconds, in millionths: 693,147 × 1000 / ms.
        let per_unit = 693_147_000 / half_life_ms.max(1);
        let rate = self
            .micro_at(now, half_life_ms)
            .saturating_add(units.saturating_mul(per_unit));
        self.micro_per_s = rate;
        self.at_ms = now;
    }
}

/// The two paces a SKU keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Velocity {
    /// Units taken from available (held or sold), half-life
    /// [`RUSH_HALF_LIFE_MS`]: the pace of a rush.
    pub taken: Rate,
    /// Units sold, half-life [`SALES_HALF_LIFE_MS`]: the pace that orders
    /// replenishment.
    pub sold: Rate,
}

pub const RUSH_HALF_LIFE_MS: u64 = 10_000;
pub const SALES_HALF_LIFE_MS: u64 = 60 * 60 * 1000;

/// Below this pace (millionths of a unit a second: 0.01/s) no sell-out is
/// predicted.
const PACE_MIN_MICRO: u64 = 10_000;

impl Velocity {
    /// Units taken a minute, in hundredths (for display).
    pub fn taken_centi_per_min(&self, now: u64) -> u64 {
        self.taken.micro_at(now, RUSH_HALF_LIFE_MS) * 60 / 10_000
    }

    /// Units sold an hour, in hundredths.
    pub fn sold_centi_per_hour(&self, now: u64) -> u64 {
        self.sold.micro_at(now, SALES_HALF_LIFE_MS) * 3_600 / 10_000
    }

    /// Units sold a second, in millionths.
    pub fn sold_micro_per_s(&self, now: u64) -> u64 {
        self.sold.micro_at(now, SALES_HALF_LIFE_MS)
    }

    /// Seconds until `available` is gone at the current pace; None when
    /// nothing is selling (or nothing is left).
    pub fn sellout_s(&self, available: u64, now: u64) -> Option<u64> {
        let pace = self.taken.micro_at(now, RUSH_HALF_LIFE_MS);
        (available > 0 && pace >= PACE_MIN_MICRO)
            .then(|| (u128::from(available) * 1_000_000).div_ceil(u128::from(pace)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(qty: Option<u64>) -> ReorderPolicy {
        ReorderPolicy {
            mode: ReorderMode::Suggest,
            reorder_point: Units::parse(5).unwrap(),
            reorder_qty: qty.map(|q| Quantity::parse(q).unwrap()),
            lead_time_s: 3_600,
            safety_stock: Units::parse(10).unwrap(),
            supplier: None,
        }
    }

    #[test]
    fn a_steady_pace_reads_as_itself_and_fades_by_half_lives() {
        let mut rate = Rate::default();
        // 2 units a second for two minutes (12 half-lives of 10 s).
        for i in 0..=240 {
            rate.add(i * 500, 1, RUSH_HALF_LIFE_MS);
        }
        let pace = rate.micro_at(120_000, RUSH_HALF_LIFE_MS);
        assert!(pace.abs_diff(2_000_000) < 100_000, "{pace}");
        let later = rate.micro_at(130_000, RUSH_HALF_LIFE_MS);
        assert!(later.abs_diff(pace / 2) < 1_000, "{later}");
        let between = rate.micro_at(125_000, RUSH_HALF_LIFE_MS);
        assert!(
            between.abs_diff(pace * 707 / 1000) < 1_000,
            "half a half-life: {between}"
        );
        let v = Velocity {
            taken: rate,
            sold: Rate::default(),
        };
        assert_eq!(v.sellout_s(40, 120_000), Some(20), "40 units at 2/s");
        assert_eq!(v.sellout_s(0, 120_000), None);
        assert_eq!(v.sellout_s(40, 10_000_000), None, "nothing selling");
    }

    #[test]
    fn the_reorder_quantity_is_set_or_covers_the_lead_time() {
        assert_eq!(reorder_qty(&policy(Some(40)), 3_000_000), 40);
        // 0.01 units/s over an hour is 36, plus 10 safety.
        assert_eq!(reorder_qty(&policy(None), 10_000), 46);
        assert_eq!(reorder_qty(&policy(None), 0), 10);
        let mut bare = policy(None);
        bare.safety_stock = Units::parse(0).unwrap();
        assert_eq!(reorder_qty(&bare, 0), 1, "never nothing");
    }

    #[test]
    fn ids_and_incoming() {
        let id = Replenishment::id_for("cap", 7);
        assert!(Replenishment::is_id(&id), "{id}");
        assert_ne!(id, Replenishment::id_for("cap", 8));
        assert!(!Replenishment::is_id("rp_x"));
        let request = |status, qty| Replenishment {
            id: id.clone(),
            qty,
            status,
            created_at: 0,
            updated_at: 0,
            reason: String::new(),
            supplier: None,
            received: 0,
        };
        let all = [
            request(RequestStatus::Requested, 5),
            request(RequestStatus::Confirmed, 7),
            request(RequestStatus::Received, 11),
        ];
        assert_eq!(incoming(&all), 7, "confirmed only");
    }
}
