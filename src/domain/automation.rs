//! Automations (自动化): rules a merchant switches on for a live room or a
//! SKU, which then act on orders by themselves. Plain Rust: the order
//! object fetches the switches that concern an order (its room's and its
//! SKUs'), asks [`decide`] what to do with the status changes it has not
//! run the rules over yet, and applies the [`Action`]s with
//! [`Order::automate`], which records every one on the order (which rule,
//! what it did, why), so a merchant can always tell a person's act from a
//! rule's.
//!
//! Unpaid orders are cancelled at their deadline by the order's own alarm
//! (status `expired`): that rule always runs, since a hold that outlives its
//! payment window would keep units from other buyers.

use super::order::{Change, Order, OrderStatus, Shipment};
use super::stock::Actor;
use super::types::{digest16, OrderId, RoomId, SkuId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The switchable rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A paid order whose risk check passed (and that no rule flagged) is
    /// confirmed for fulfilment (审单) without a person.
    AutoConfirm,
    /// A paid order of virtual goods (codes, vouchers) is shipped at once,
    /// with a code of its own as the tracking number.
    AutoShipVirtual,
    /// An order whose buyer already has an open order for one of its SKUs
    /// is flagged for a person to look at (and not confirmed or shipped by
    /// a rule).
    FlagRepeatBuyer,
    /// A refund of an item reported unopened puts its units back to stock.
    RestockUnopened,
}

impl Rule {
    pub const ALL: [Rule; 4] = [
        Rule::AutoConfirm,
        Rule::AutoShipVirtual,
        Rule::FlagRepeatBuyer,
        Rule::RestockUnopened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AutoConfirm => "auto_confirm",
            Rule::AutoShipVirtual => "auto_ship_virtual",
            Rule::FlagRepeatBuyer => "flag_repeat_buyer",
            Rule::RestockUnopened => "restock_unopened",
        }
    }

    /// What the rule does, in the merchant's words (shown by the API and
    /// the console).
    pub fn about(self) -> &'static str {
        match self {
            Rule::AutoConfirm => {
                "confirm paid orders whose risk check passed and that no rule flagged"
            }
            Rule::AutoShipVirtual => {
                "ship paid orders of virtual goods at once, with a code as the tracking number"
            }
            Rule::FlagRepeatBuyer => {
                "flag an order whose buyer already has an open order for the same SKU"
            }
            Rule::RestockUnopened => "put the units of a refunded unopened item back to stock",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rules are on for one scope. Everything is off until a merchant
/// turns it on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switches {
    #[serde(default)]
    pub auto_confirm: bool,
    #[serde(default)]
    pub auto_ship_virtual: bool,
    #[serde(default)]
    pub flag_repeat_buyer: bool,
    #[serde(default)]
    pub restock_unopened: bool,
}

impl Switches {
    pub fn is_on(&self, rule: Rule) -> bool {
        match rule {
            Rule::AutoConfirm => self.auto_confirm,
            Rule::AutoShipVirtual => self.auto_ship_virtual,
            Rule::FlagRepeatBuyer => self.flag_repeat_buyer,
            Rule::RestockUnopened => self.restock_unopened,
        }
    }

    fn set(&mut self, rule: Rule, on: bool) {
        match rule {
            Rule::AutoConfirm => self.auto_confirm = on,
            Rule::AutoShipVirtual => self.auto_ship_virtual = on,
            Rule::FlagRepeatBuyer => self.flag_repeat_buyer = on,
            Rule::RestockUnopened => self.restock_unopened = on,
        }
    }

    pub fn any(&self) -> bool {
        Rule::ALL.iter().any(|r| self.is_on(*r))
    }

    /// A partial change (`{"auto_confirm": true}`): the named rules
    /// switched, the others as they were.
    pub fn apply(&mut self, patch: &SwitchPatch) {
        for rule in Rule::ALL {
            if let Some(on) = patch.get(rule) {
                self.set(rule, on);
            }
        }
    }
}

/// A merchant's change of switches: only the rules named change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchPatch {
    pub auto_confirm: Option<bool>,
    pub auto_ship_virtual: Option<bool>,
    pub flag_repeat_buyer: Option<bool>,
    pub restock_unopened: Option<bool>,
}

impl SwitchPatch {
    fn get(&self, rule: Rule) -> Option<bool> {
        match rule {
            Rule::AutoConfirm => self.auto_confirm,
            Rule::AutoShipVirtual => self.auto_ship_virtual,
            Rule::FlagRepeatBuyer => self.flag_repeat_buyer,
            Rule::RestockUnopened => self.restock_unopened,
        }
    }

    pub fn is_empty(&self) -> bool {
        Rule::ALL.iter().all(|r| self.get(*r).is_none())
    }
}

/// Where switches are set: a live room (every order placed from it) or a
/// SKU (orders whose lines are all of such SKUs; for flags, each line of
/// such a SKU).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "id", rename_all = "snake_case")]
pub enum Scope {
    Room(RoomId),
    Sku(SkuId),
}

impl fmt::Display for Scope {
    /// Also the name of the object that keeps the scope's switches.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Room(r) => write!(f, "room:{r}"),
            Scope::Sku(s) => write!(f, "sku:{s}"),
        }
    }
}

/// The switches that concern one order: its room's and each of its SKUs'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderRules {
    pub room: Option<(RoomId, Switches)>,
    pub skus: Vec<(SkuId, Switches)>,
}

impl OrderRules {
    fn sku(&self, sku: &SkuId) -> Option<&Switches> {
        self.skus.iter().find(|(s, _)| s == sku).map(|(_, sw)| sw)
    }

    /// Whether `rule` governs the whole order, and why: on for its room, or
    /// on for every SKU it has a line of.
    pub fn applies(&self, rule: Rule, order: &Order) -> Option<String> {
        if let Some((room, switches)) = &self.room {
            if switches.is_on(rule) {
                return Some(format!("on for room {room}"));
            }
        }
        let all = !order.lines.is_empty()
            && order
                .lines
                .iter()
                .all(|l| self.sku(&l.sku).is_some_and(|s| s.is_on(rule)));
        all.then(|| {
            let skus: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
            format!("on for SKU {}", skus.join(", "))
        })
    }

    /// The order's SKUs that `rule` covers line by line (all of them when
    /// it is on for the room).
    pub fn covered(&self, rule: Rule, order: &Order) -> Vec<SkuId> {
        let room_on = self.room.as_ref().is_some_and(|(_, s)| s.is_on(rule));
        order
            .lines
            .iter()
            .filter(|l| room_on || self.sku(&l.sku).is_some_and(|s| s.is_on(rule)))
            .map(|l| l.sku.clone())
            .collect()
    }
}

/// Another order of the same buyer, as the buyer's index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherOrder {
    pub id: String,
    pub status: String,
    pub skus: Vec<String>,
}

impl OtherOrder {
    /// Not yet shipped, and not ended: what a second order would repeat.
    pub fn is_open(&self) -> bool {
        matches!(
            self.status.as_str(),
            "placing" | "pending_review" | "reserved" | "paid"
        )
    }
}

/// One rule's act (or deliberate non-act) on an order, as recorded on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub rule: Rule,
    pub at_ms: u64,
    /// `flagged`, `confirmed`, `shipped`, `restocked`, or `held_back` (the
    /// rule would have acted, and something stopped it).
    pub action: String,
    pub why: String,
}

/// A person's or a rule's confirmation of a paid order for fulfilment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub at_ms: u64,
    /// An [`Actor`]'s text: `admin`, or `rule:auto_confirm`.
    pub by: String,
}

/// A flag a rule raised on an order for a person to look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub rule: Rule,
    pub at_ms: u64,
    pub reason: String,
}

/// What a rule does to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Flag {
        rule: Rule,
        reason: String,
    },
    Confirm {
        why: String,
    },
    Ship {
        shipment: Shipment,
        why: String,
    },
    /// The rule would act, but the order is flagged: left to a person.
    HoldBack {
        rule: Rule,
        why: String,
    },
}

/// The carrier name of a virtual shipment.
pub const VIRTUAL_CARRIER: &str = "virtual";

/// The code a virtual order is shipped with: derived from the order id, so
/// the rule run again names the same code.
pub fn virtual_code(order: &OrderId) -> String {
    let bytes = digest16(&["virtual-code", order.as_str()]);
    let hex: String = bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("V-{}", hex.to_uppercase())
}

/// Whether the status changes from timeline entry `from` on give the rules
/// anything to look at: a placing (flags) or a payment (confirm, ship).
pub fn concerns(order: &Order, from: usize) -> bool {
    order.timeline.get(from..).is_some_and(|new| {
        new.iter().any(|e| {
            matches!(
                e.status,
                OrderStatus::Reserved | OrderStatus::PendingReview | OrderStatus::Paid
            )
        })
    })
}

/// The SKUs whose open orders of the same buyer [`decide`] needs to know
/// about (empty: it needs none, so the buyer's index need not be read).
pub fn wants_other_orders(order: &Order, from: usize, rules: &OrderRules) -> Vec<SkuId> {
    let placed = order.timeline.get(from..).is_some_and(|new| {
        new.iter()
            .any(|e| matches!(e.status, OrderStatus::Reserved | OrderStatus::PendingReview))
    });
    if !placed || !is_open(order.status) {
        return Vec::new();
    }
    rules.covered(Rule::FlagRepeatBuyer, order)
}

fn is_open(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::PendingReview | OrderStatus::Reserved | OrderStatus::Paid
    )
}

/// What the rules do about the status changes from timeline entry `from`
/// on, given the order as it is now (a rule never acts on a status the
/// order has already left) and the buyer's other orders.
pub fn decide(
    order: &Order,
    from: usize,
    rules: &OrderRules,
    others: &[OtherOrder],
) -> Vec<Action> {
    let mut actions = Vec::new();
    let checked = wants_other_orders(order, from, rules);
    let already = order.flags.iter().any(|f| f.rule == Rule::FlagRepeatBuyer);
    if !checked.is_empty() && !already {
        let repeats: Vec<String> = checked
            .iter()
            .filter_map(|sku| {
                let other = others.iter().find(|o| {
                    o.id != order.id.as_str()
                        && o.is_open()
                        && o.skus.iter().any(|s| s == sku.as_str())
                })?;
                Some(format!("{sku} (open order {})", other.id))
            })
            .collect();
        if !repeats.is_empty() {
            actions.push(Action::Flag {
                rule: Rule::FlagRepeatBuyer,
                reason: format!(
                    "the buyer already has an open order for {}",
                    repeats.join(", ")
                ),
            });
        }
    }
    let paid = order
        .timeline
        .get(from..)
        .is_some_and(|new| new.iter().any(|e| e.status == OrderStatus::Paid));
    if !paid || order.status != OrderStatus::Paid {
        return actions;
    }
    let flagged = !order.flags.is_empty() || !actions.is_empty();
    // Paid means the risk check passed: a denied order is never placed, and
    // one sent to review is paid only after a merchant approved it.
    let risk_passed = order
        .risk
        .as_ref()
        .is_none_or(|d| d.verdict != super::risk::Verdict::Deny);
    let gate = |rule: Rule, why: String, act: Action, actions: &mut Vec<Action>| {
        if flagged {
            actions.push(Action::HoldBack {
                rule,
                why: format!("{why}; the order is flagged, so it waits for a person"),
            });
        } else if risk_passed {
            actions.push(act);
        }
    };
    if order.confirmed.is_none() {
        if let Some(why) = rules.applies(Rule::AutoConfirm, order) {
            gate(
                Rule::AutoConfirm,
                why.clone(),
                Action::Confirm { why },
                &mut actions,
            );
        }
    }
    if let Some(why) = rules.applies(Rule::AutoShipVirtual, order) {
        let shipment = Shipment {
            carrier: VIRTUAL_CARRIER.to_owned(),
            tracking_number: virtual_code(&order.id),
        };
        gate(
            Rule::AutoShipVirtual,
            why.clone(),
            Action::Ship { shipment, why },
            &mut actions,
        );
    }
    actions
}

/// Whether a refund reported as an unopened item puts its units back: only
/// when the rule is on for the order (the merchant's explicit `restock`
/// always wins, and never reaches this).
pub fn restock_unopened(order: &Order, rules: &OrderRules) -> Option<String> {
    rules.applies(Rule::RestockUnopened, order)
}

impl Order {
    /// Applies one rule's action, recording it on the order. A ship adds a
    /// timeline entry (`shipped`, by `rule:auto_ship_virtual`); flags and
    /// confirmations do not change the status.
    pub fn automate(&mut self, action: Action, now: u64) {
        let (rule, what, why) = match action {
            Action::Flag { rule, reason } => {
                self.flags.push(Flag {
                    rule,
                    at_ms: now,
                    reason: reason.clone(),
                });
                (rule, "flagged", reason)
            }
            Action::Confirm { why } => {
                if !self.confirm(&Actor::Rule(Rule::AutoConfirm), now) {
                    return;
                }
                (Rule::AutoConfirm, "confirmed", why)
            }
            Action::Ship { shipment, why } => {
                let actor = Actor::Rule(Rule::AutoShipVirtual);
                if self.change(Change::Ship { shipment }, &actor, now).is_err() {
                    return;
                }
                (Rule::AutoShipVirtual, "shipped", why)
            }
            Action::HoldBack { rule, why } => (rule, "held_back", why),
        };
        self.record_rule(rule, what, why, now);
    }

    /// Notes a rule's act on the order.
    pub fn record_rule(&mut self, rule: Rule, action: &str, why: String, now: u64) {
        self.automations.push(Applied {
            rule,
            at_ms: now,
            action: action.to_owned(),
            why,
        });
    }

    /// A merchant confirms a paid order for fulfilment (a second confirm
    /// changes nothing).
    pub fn confirm(&mut self, actor: &Actor, now: u64) -> bool {
        if self.confirmed.is_some() {
            return false;
        }
        self.confirmed = Some(Confirmation {
            at_ms: now,
            by: actor.to_string(),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::order::{Intent, OrderStatus, TimelineEntry};
    use crate::domain::types::{BuyerId, Channel, Quantity, ReservationId};

    fn order(n: u8, skus: &[&str], room: Option<&str>) -> Order {
        let lines = skus
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    SkuId::parse(s).unwrap(),
                    Quantity::parse(1).unwrap(),
                    ReservationId::from_random([n.wrapping_add(i as u8); 16]),
                )
            })
            .collect();
        let mut o = Order::new(
            OrderId::from_bytes([n; 16]),
            BuyerId::parse("fan-1").unwrap(),
            Channel::parse("own").unwrap(),
            lines,
            String::new(),
            1_000,
        );
        o.room = room.map(|r| RoomId::parse(r).unwrap());
        o.pending = None;
        o
    }

    fn moved(o: &mut Order, status: OrderStatus, at_ms: u64) {
        o.status = status;
        o.timeline.push(TimelineEntry {
            at_ms,
            status,
            actor: "system".into(),
            note: None,
        });
    }

    fn on(rules: &[Rule]) -> Switches {
        let mut s = Switches::default();
        for r in rules {
            s.set(*r, true);
        }
        s
    }

    fn rules(room: &[Rule], skus: &[(&str, &[Rule])]) -> OrderRules {
        OrderRules {
            room: Some((RoomId::parse("spring").unwrap(), on(room))),
            skus: skus
                .iter()
                .map(|(s, r)| (SkuId::parse(s).unwrap(), on(r)))
                .collect(),
        }
    }

    #[test]
    fn a_rule_governs_an_order_by_its_room_or_by_all_its_skus() {
        let o = order(1, &["tee", "card"], Some("spring"));
        let by_room = rules(&[Rule::AutoConfirm], &[]);
        assert!(by_room
            .applies(Rule::AutoConfirm, &o)
            .unwrap()
            .contains("spring"));
        assert!(by_room.applies(Rule::AutoShipVirtual, &o).is_none());
        let one_sku = rules(&[], &[("card", &[Rule::AutoShipVirtual])]);
        assert!(
            one_sku.applies(Rule::AutoShipVirtual, &o).is_none(),
            "a physical line"
        );
        let both = rules(
            &[],
            &[
                ("card", &[Rule::AutoShipVirtual]),
                ("tee", &[Rule::AutoShipVirtual]),
            ],
        );
        assert!(both.applies(Rule::AutoShipVirtual, &o).is_some());
        // Flags go line by line.
        let flag_card = rules(&[], &[("card", &[Rule::FlagRepeatBuyer])]);
        assert_eq!(
            flag_card.covered(Rule::FlagRepeatBuyer, &o),
            vec![SkuId::parse("card").unwrap()]
        );
    }

    #[test]
    fn a_paid_order_is_confirmed_and_virtual_goods_ship_once() {
        let mut o = order(2, &["card"], Some("spring"));
        moved(&mut o, OrderStatus::Reserved, 1_100);
        moved(&mut o, OrderStatus::Paid, 1_200);
        let r = rules(&[Rule::AutoConfirm], &[("card", &[Rule::AutoShipVirtual])]);
        let actions = decide(&o, 1, &r, &[]);
        assert!(matches!(actions[0], Action::Confirm { .. }));
        assert!(
            matches!(&actions[1], Action::Ship { shipment, .. } if shipment.carrier == "virtual")
        );
        for a in actions {
            o.automate(a, 1_300);
        }
        assert_eq!(o.status, OrderStatus::Shipped);
        assert_eq!(o.timeline.last().unwrap().actor, "rule:auto_ship_virtual");
        assert_eq!(o.confirmed.as_ref().unwrap().by, "rule:auto_confirm");
        assert_eq!(o.automations.len(), 2);
        assert_eq!(
            o.shipment.as_ref().unwrap().tracking_number,
            virtual_code(&o.id)
        );
        // Run again over the same entries: the order left paid, nothing more.
        assert!(decide(&o, 1, &r, &[]).is_empty());
        // A placing alone confirms nothing.
        let mut p = order(3, &["card"], Some("spring"));
        moved(&mut p, OrderStatus::Reserved, 1_100);
        assert!(decide(&p, 0, &r, &[]).is_empty());
        assert!(concerns(&p, 0) && !concerns(&o, 3));
    }

    #[test]
    fn a_repeat_buyer_is_flagged_and_held_back_from_the_other_rules() {
        let mut o = order(4, &["tee"], Some("spring"));
        moved(&mut o, OrderStatus::Reserved, 1_100);
        let r = rules(&[Rule::AutoConfirm, Rule::FlagRepeatBuyer], &[]);
        assert_eq!(
            wants_other_orders(&o, 0, &r),
            vec![SkuId::parse("tee").unwrap()]
        );
        let open = |id: &str, status: &str, sku: &str| OtherOrder {
            id: id.into(),
            status: status.into(),
            skus: vec![sku.into()],
        };
        // Its own entry, an ended order and another SKU are no repeats.
        let others = [
            open(o.id.as_str(), "reserved", "tee"),
            open("o_shipped", "shipped", "tee"),
            open("o_cap", "paid", "cap"),
        ];
        assert!(decide(&o, 0, &r, &others).is_empty());
        let actions = decide(&o, 0, &r, &[open("o_first", "paid", "tee")]);
        assert!(
            matches!(&actions[..], [Action::Flag { reason, .. }] if reason.contains("o_first"))
        );
        for a in actions {
            o.automate(a, 1_150);
        }
        moved(&mut o, OrderStatus::Paid, 1_200);
        // Not asked again once paid; confirming waits for a person.
        assert!(wants_other_orders(&o, 1, &r).is_empty());
        let actions = decide(&o, 1, &r, &[]);
        assert!(matches!(
            &actions[..],
            [Action::HoldBack {
                rule: Rule::AutoConfirm,
                ..
            }]
        ));
        for a in actions {
            o.automate(a, 1_250);
        }
        assert!(o.confirmed.is_none());
        assert_eq!(o.automations.last().unwrap().action, "held_back");
    }

    #[test]
    fn an_unopened_refund_restocks_only_where_the_rule_is_on() {
        let o = order(5, &["tee"], Some("spring"));
        assert!(restock_unopened(&o, &rules(&[Rule::RestockUnopened], &[])).is_some());
        assert!(restock_unopened(&o, &rules(&[], &[])).is_none());
        let stored = Intent::Refund {
            restock: true,
            reason: None,
            unopened: true,
        };
        let back: Intent = serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
        assert_eq!(back, stored);
        // An intent saved before the field existed still reads.
        let old: Intent =
            serde_json::from_str(r#"{"intent":"refund","restock":false,"reason":null}"#).unwrap();
        assert!(matches!(
            old,
            Intent::Refund {
                unopened: false,
                ..
            }
        ));
    }

    #[test]
    fn patches_switch_only_what_they_name() {
        let mut s = on(&[Rule::FlagRepeatBuyer]);
        let patch: SwitchPatch = serde_json::from_str(r#"{"auto_confirm": true}"#).unwrap();
        s.apply(&patch);
        assert!(s.auto_confirm && s.flag_repeat_buyer && !s.auto_ship_virtual);
        assert!(serde_json::from_str::<SwitchPatch>(r#"{"teleport": true}"#).is_err());
        assert!(serde_json::from_str::<SwitchPatch>("{}")
            .unwrap()
            .is_empty());
        assert_eq!(virtual_code(&OrderId::from_bytes([7; 16])).len(), 18);
    }
}
