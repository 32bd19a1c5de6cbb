//! A live room's numbers, kept by the room's feed object from the status
//! changes of the orders placed in it: orders, payments and GMV, units
//! sold, expiries and cancels per minute and over the room's session, the
//! hold→paid conversion, the expired-hold rate and the top SKUs. Each
//! order status is counted once (by order and timeline index), however
//! often it is announced.

use super::order::OrderStatus;
use super::types::{OrderId, SkuId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One order status change in a room, as the order object tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFact {
    pub order: OrderId,
    /// The timeline entry's index: (order, index) is counted once.
    pub index: u64,
    pub status: OrderStatus,
    /// The status before it (None for the first).
    pub after: Option<OrderStatus>,
    pub at_ms: u64,
    /// The order's lines: SKU and units.
    pub lines: Vec<(SkuId, u64)>,
    /// What the payment reported (minor units), on `paid`.
    pub amount: Option<u64>,
}

impl OrderFact {
    pub fn key(&self) -> String {
        format!("{}#{}", self.order, self.index)
    }
}

/// Counts for a minute, or for the whole session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Orders that took their units (reserved, or sent to review).
    pub orders: u64,
    pub units_held: u64,
    pub paid: u64,
    pub units_sold: u64,
    /// Reported payment amounts, minor units.
    pub gmv: u64,
    pub expired: u64,
    pub cancelled: u64,
}

impl Counts {
    fn add(&mut self, fact: &OrderFact) -> bool {
        let units: u64 = fact.lines.iter().map(|(_, q)| q).sum();
        let reviewed = fact.after == Some(OrderStatus::PendingReview);
        match fact.status {
            // An approved review took its units when it went to review.
            OrderStatus::Reserved if reviewed => return false,
            OrderStatus::Reserved | OrderStatus::PendingReview => {
                self.orders += 1;
                self.units_held += units;
            }
            OrderStatus::Paid => {
                self.paid += 1;
                self.units_sold += units;
                self.gmv = self.gmv.saturating_add(fact.amount.unwrap_or(0));
            }
            OrderStatus::Expired => self.expired += 1,
            OrderStatus::Cancelled => self.cancelled += 1,
            // Rejected after review gives held units back; rejected while
            // placing held nothing.
            OrderStatus::Rejected if reviewed => self.cancelled += 1,
            _ => return false,
        }
        true
    }
}

/// A SKU's part in the room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuCounts {
    pub units_held: u64,
    pub units_sold: u64,
}

/// Minutes kept: two days.
pub const MINUTES_KEPT: usize = 48 * 60;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStats {
    /// The first counted change: the session's start.
    pub since_ms: u64,
    pub session: Counts,
    /// Minute start (ms) → counts.
    pub minutes: BTreeMap<u64, Counts>,
    pub skus: BTreeMap<SkuId, SkuCounts>,
}

impl RoomStats {
    /// Counts one status change (the caller has checked it is new).
    pub fn add(&mut self, fact: &OrderFact) {
        let mut counted = Counts::default();
        if !counted.add(fact) {
            return;
        }
        if self.since_ms == 0 || fact.at_ms < self.since_ms {
            self.since_ms = fact.at_ms;
        }
        self.session.add(fact);
        let minute = fact.at_ms - fact.at_ms % 60_000;
        self.minutes.entry(minute).or_default().add(fact);
        while self.minutes.len() > MINUTES_KEPT {
            self.minutes.pop_first();
        }
        for (sku, units) in &fact.lines {
            let tally = self.skus.entry(sku.clone()).or_default();
            match fact.status {
                OrderStatus::Reserved | OrderStatus::PendingReview => tally.units_held += units,
                OrderStatus::Paid => tally.units_sold += units,
                _ => {}
            }
        }
    }

    /// Paid orders per order that took units (0 with none).
    pub fn conversion(&self) -> f64 {
        ratio(self.session.paid, self.session.orders)
    }

    /// Orders whose holds ran out unpaid, per order that took units.
    pub fn expired_rate(&self) -> f64 {
        ratio(self.session.expired, self.session.orders)
    }

    /// The SKUs with the most units sold (then held), at most `n`.
    pub fn top_skus(&self, n: usize) -> Vec<(SkuId, SkuCounts)> {
        let mut all: Vec<(SkuId, SkuCounts)> =
            self.skus.iter().map(|(s, c)| (s.clone(), *c)).collect();
        all.sort_by(|a, b| {
            (b.1.units_sold, b.1.units_held)
                .cmp(&(a.1.units_sold, a.1.units_held))
                .then(a.0.cmp(&b.0))
        });
        all.truncate(n);
        all
    }

    /// Per minute as CSV.
    pub fn csv(&self) -> String {
        let mut out =
            String::from("minute_ms,orders,units_held,paid,units_sold,gmv,expired,cancelled\n");
        for (minute, c) in &self.minutes {
            out.push_str(&format!(
                "{minute},{},{},{},{},{},{},{}\n",
                c.orders, c.units_held, c.paid, c.units_sold, c.gmv, c.expired, c.cancelled
            ));
        }
        out
    }
}

/// A ratio rounded to four places (0 when there is nothing to divide by).
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(
        order: u8,
        index: u64,
        status: OrderStatus,
        at_ms: u64,
        amount: Option<u64>,
    ) -> OrderFact {
        OrderFact {
            order: OrderId::from_bytes([order; 16]),
            index,
            status,
            after: None,
            at_ms,
            lines: vec![
                (SkuId::parse("tee").unwrap(), 2),
                (SkuId::parse("cap").unwrap(), 1),
            ],
            amount,
        }
    }

    #[test]
    fn a_rooms_numbers_follow_its_orders() {
        let mut stats = RoomStats::default();
        stats.add(&fact(1, 0, OrderStatus::Reserved, 60_500, None));
        stats.add(&fact(2, 0, OrderStatus::Reserved, 61_000, None));
        stats.add(&fact(3, 0, OrderStatus::Reserved, 125_000, None));
        stats.add(&fact(1, 1, OrderStatus::Paid, 125_500, Some(9_900)));
        stats.add(&fact(2, 1, OrderStatus::Expired, 400_000, None));
        stats.add(&fact(3, 1, OrderStatus::Shipped, 500_000, None));
        assert_eq!(stats.since_ms, 60_500);
        assert_eq!(stats.session.orders, 3);
        assert_eq!(
            (
                stats.session.paid,
                stats.session.units_sold,
                stats.session.gmv
            ),
            (1, 3, 9_900)
        );
        assert_eq!(stats.minutes[&60_000].orders, 2);
        assert_eq!(stats.minutes[&120_000].paid, 1);
        assert_eq!(stats.conversion(), 0.3333);
        assert_eq!(stats.expired_rate(), 0.3333);
        let top = stats.top_skus(1);
        assert_eq!(top[0].0.as_str(), "tee");
        assert_eq!(top[0].1.units_sold, 2);
        assert!(
            stats.csv().contains("\n120000,1,3,1,3,9900,0,0\n"),
            "{}",
            stats.csv()
        );
        assert!(
            !stats.minutes.contains_key(&480_000),
            "a shipment is not counted"
        );
        // Approved after review: one order, not two.
        let mut reviewed = fact(4, 0, OrderStatus::PendingReview, 600_000, None);
        stats.add(&reviewed);
        reviewed.index = 1;
        reviewed.status = OrderStatus::Reserved;
        reviewed.after = Some(OrderStatus::PendingReview);
        stats.add(&reviewed);
        assert_eq!(stats.session.orders, 4);
    }
}
