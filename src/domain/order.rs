//! The rules of one order: its status machine, and what each transition
//! asks of each SKU. Plain Rust; the order object is a shell that runs
//! [`Order::plan`] → SKU calls → [`Order::observe`] until the plan is empty,
//! then [`Order::settle`].
//!
//! Every SKU call an order makes carries an idempotency key derived from the
//! order id, the line and the operation, and every hold id is derived from
//! the order id and the line. So a transition interrupted by a crash is
//! finished by running it again from its start: the SKUs answer the calls
//! already made with the answers they gave, and nothing is done twice. That
//! is also why orders never deadlock and never leak: no lock is held across
//! SKUs, a refused line makes the order give back every line it took, and a
//! hold that nobody resolves expires at its SKU.

use super::automation::{Applied, Confirmation, Flag};
use super::risk::{Decision, Verdict};
use super::stock::{Actor, Command, DeductionMode, HoldStatus, Outcome, Reply, StockError};
pub use super::types::Channel;
use super::types::{
    digest16, BuyerId, HoldSeconds, IdempotencyKey, OrderId, Quantity, ReplayKey, ReservationId,
    SkuId,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An order has at most this many lines.
pub const LINES_MAX: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Taking its lines from the SKUs (only seen if that was interrupted).
    Placing,
    /// A line could not be had, or a risk rule denied it; nothing is held.
    Rejected,
    /// A risk rule asked for a merchant's look: the holds are kept (for the
    /// rule set's `review_hold_s`) until it is approved or rejected.
    PendingReview,
    Reserved,
    Paid,
    /// Paying found an at-payment line sold out, or a hold gone; nothing is
    /// held or sold.
    Failed,
    Shipped,
    Delivered,
    Cancelled,
    Expired,
    Refunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placing => "placing",
            OrderStatus::Rejected => "rejected",
            OrderStatus::PendingReview => "pending_review",
            OrderStatus::Reserved => "reserved",
            OrderStatus::Paid => "paid",
            OrderStatus::Failed => "failed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::Refunded => "refunded",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the order has at one SKU for one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LineState {
    Unplaced,
    /// A hold with an expiry (hold mode).
    Held,
    /// Placed at an at-payment SKU: nothing taken yet.
    Deferred,
    /// Units sold to this order (at-order placing, or paid).
    Sold,
    Released,
    Returned,
    /// The SKU refused this line; `reason` says why.
    Failed {
        reason: LineFailure,
    },
}

/// Why a SKU refused a line, as a client can act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFailure {
    SoldOut { requested: u64, available: u64 },
    OverBuyerLimit { limit: u64, held: u64, bought: u64 },
    UnknownSku,
    HoldExpired,
    Other { code: String },
}

impl LineFailure {
    fn from_error(e: &StockError) -> LineFailure {
        match e {
            StockError::InsufficientStock {
                requested,
                available,
            } => LineFailure::SoldOut {
                requested: *requested,
                available: *available,
            },
            StockError::BuyerLimitExceeded {
                limit,
                held,
                bought,
                ..
            } => LineFailure::OverBuyerLimit {
                limit: *limit,
                held: *held,
                bought: *bought,
            },
            StockError::SkuNotFound => LineFailure::UnknownSku,
            StockError::HoldResolved { .. } | StockError::HoldNotFound => LineFailure::HoldExpired,
            other => LineFailure::Other {
                code: serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: SkuId,
    pub qty: Quantity,
    pub hold: ReservationId,
    /// Learned from the SKU when the line is placed.
    pub mode: Option<DeductionMode>,
    /// When this line's SKU stops waiting for payment: its hold's expiry.
    pub pay_by_ms: Option<u64>,
    #[serde(flatten)]
    pub state: LineState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub status: OrderStatus,
    /// Who moved it, as an [`Actor`]'s text (`buyer:<id>`, `admin`,
    /// `payment`, `system`, `risk`): the same words as the ledger's.
    pub actor: String,
    pub note: Option<String>,
}

/// A transition under way. Persisted before any SKU is called, so an
/// interrupted one is finished by the object's alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum Intent {
    Place,
    Pay {
        payment_ref: String,
        /// What the provider says was paid (minor units), recorded as is.
        #[serde(default)]
        amount: Option<u64>,
    },
    Cancel {
        reason: Option<String>,
    },
    Expire,
    Refund {
        restock: bool,
        reason: Option<String>,
        /// The merchant left restocking to the rules, saying the item came
        /// back unopened: `restock_unopened` decides (before the refund
        /// begins, so the pending intent says what was decided).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unopened: bool,
    },
    /// A merchant turns down an order waiting for review: its holds go
    /// back.
    Reject {
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub carrier: String,
    pub tracking_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub buyer: BuyerId,
    pub channel: Channel,
    pub lines: Vec<OrderLine>,
    pub status: OrderStatus,
    pub created_at_ms: u64,
    /// Pay by then, or the order expires (the earliest line's hold time).
    pub expires_at_ms: Option<u64>,
    pub payment_ref: Option<String>,
    /// The amount the payment callback reported, if it did.
    #[serde(default)]
    pub payment_amount: Option<u64>,
    pub shipment: Option<Shipment>,
    /// For refunds: whether the units went back to stock.
    pub restocked: Option<bool>,
    pub timeline: Vec<TimelineEntry>,
    pub pending: Option<Intent>,
    /// Identifies the create request, for idempotent retries.
    pub fingerprint: String,
    /// The live room it was placed from, if any.
    #[serde(default)]
    pub room: Option<crate::domain::live::RoomId>,
    /// What the risk rules decided when it was placed, and why.
    #[serde(default)]
    pub risk: Option<Decision>,
    /// Set when the rules asked for review: its lines are held this long,
    /// and placing ends in `pending_review`.
    #[serde(default)]
    pub review_hold: Option<HoldSeconds>,
    /// How many runs of the pending transition were cut short; it backs
    /// off on each (see [`Order::interrupted`]).
    #[serde(default)]
    pub attempts: u32,
    /// The keyed request that started the pending transition: whoever
    /// settles it (that request, a retry, the alarm) writes its answer
    /// under this key in the same atomic save, so a retry after a crash
    /// gets the original answer.
    #[serde(default)]
    pub answer_to: Option<KeyedAsk>,
    /// The first timeline entry whose announcement (events, the buyer's
    /// index, risk history) is still owed: saved with the change, done
    /// after the reply, cleared when done.
    #[serde(default)]
    pub announce_from: Option<usize>,
    /// The first timeline entry whose merchant notice (webhooks) is not
    /// yet handed off: kept apart from `announce_from` so a webhook outage
    /// redoes only the hand-off, never the feeds' events.
    #[serde(default)]
    pub notify_from: Option<usize>,
    /// The channel whose allocation its lines sell from (None: the
    /// storefront). `channel` is what the buyer's client said; this is
    /// what the caller is trusted with: a platform's intake, an admin, or
    /// a session's signed channel claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sells_from: Option<Channel>,
    /// The platform's own order id, for an order that came through a
    /// channel's intake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_order: Option<String>,
    /// Confirmed for fulfilment (审单), by a merchant or `auto_confirm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<Confirmation>,
    /// Flags rules raised for a person to look at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// Every act of an automation on this order: which rule, what, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub automations: Vec<Applied>,
    /// The first timeline entry the automations have not looked at yet:
    /// saved with the change, run by the order's alarm, cleared when run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automate_from: Option<usize>,
}

/// A keyed request waiting for its transition to settle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedAsk {
    pub key: ReplayKey,
    pub fingerprint: String,
}

/// After this many cut-short runs, a placing gives up (becomes a cancel that
/// gives back what it took), and a give-back stops waiting for SKUs it
/// cannot reach.
pub const GIVE_UP_AFTER: u32 = 8;

/// What to do after a run of the pending transition was cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interruption {
    /// Run it again in this many ms (5 s, doubling, at most 5 min).
    RetryIn(u64),
    /// The order stopped waiting; `note` says what it gave up on, for the
    /// operator's alert. Run the (new) pending transition now.
    GaveUp { note: String },
    /// Still trying (a payment, a refund), less often; `note` is for the
    /// operator's alert.
    Stuck { note: String, retry_in_ms: u64 },
}

/// One call an order needs made at a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuStep {
    pub line: usize,
    pub sku: SkuId,
    pub key: IdempotencyKey,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum OrderError {
    IllegalTransition {
        from: OrderStatus,
        to: &'static str,
    },
    /// Paid already, under another payment reference.
    AlreadyPaid,
    /// The payment deadline has passed.
    PastDeadline,
    /// Another transition is under way; retry shortly.
    Busy,
}

/// What [`Order::begin`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The intent is pending: run the plan.
    Started,
    /// Asked for what is already true (paying again with the same reference).
    AlreadyDone,
}

/// A request to change an order that needs no SKU (shipping, delivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Ship {
        shipment: Shipment,
    },
    Deliver,
    /// A merchant lets an order waiting for review go on to payment.
    Approve,
    /// A merchant confirms a paid order for fulfilment (审单); again, no
    /// change.
    Confirm,
}

/// A line's hold id, derived from the order id and the line number, so a
/// re-run transition names the same hold.
pub fn line_hold_id(order: &OrderId, line: usize) -> ReservationId {
    ReservationId::from_random(digest16(&[order.as_str(), &line.to_string()]))
}

/// The order id for a create with an Idempotency-Key: the same buyer and key
/// always reach the same order object.
pub fn order_id_for_key(buyer: &BuyerId, key: &IdempotencyKey) -> OrderId {
    OrderId::from_bytes(digest16(&["order", buyer.as_str(), key.as_str()]))
}

impl Order {
    /// A new order, pending its placing. `lines` are merged by SKU already.
    pub fn new(
        id: OrderId,
        buyer: BuyerId,
        channel: Channel,
        lines: Vec<(SkuId, Quantity, ReservationId)>,
        fingerprint: String,
        now: u64,
    ) -> Order {
        let lines = lines
            .into_iter()
            .map(|(sku, qty, hold)| OrderLine {
                sku,
                qty,
                hold,
                mode: None,
                pay_by_ms: None,
                state: LineState::Unplaced,
            })
            .collect();
        Order {
            id,
            buyer,
            channel,
            lines,
            status: OrderStatus::Placing,
            created_at_ms: now,
            expires_at_ms: None,
            payment_ref: None,
            payment_amount: None,
            shipment: None,
            restocked: None,
            timeline: Vec::new(),
            pending: Some(Intent::Place),
            fingerprint,
            room: None,
            risk: None,
            review_hold: None,
            attempts: 0,
            answer_to: None,
            announce_from: None,
            notify_from: None,
            sells_from: None,
            platform_order: None,
            confirmed: None,
            flags: Vec::new(),
            automations: Vec::new(),
            automate_from: None,
        }
    }

    /// Applies the risk rules' decision to an order not yet placed: `deny`
    /// rejects it before any SKU is asked; `review` places it with holds
    /// that last `review_hold` and parks it in `pending_review`.
    pub fn judge(&mut self, decision: Decision, review_hold: HoldSeconds, now: u64) {
        match decision.verdict {
            Verdict::Allow => {}
            Verdict::Review => self.review_hold = Some(review_hold),
            Verdict::Deny => {
                self.pending = None;
                let note = decision
                    .fired
                    .iter()
                    .filter(|f| f.action == super::risk::Action::Deny)
                    .map(|f| format!("{}: {}", f.rule, f.reason))
                    .collect::<Vec<_>>()
                    .join("; ");
                self.record(OrderStatus::Rejected, &Actor::Risk, Some(note), now);
            }
        }
        self.risk = Some(decision);
    }

    /// True when a risk rule, not a SKU, turned the order down.
    pub fn denied_by_risk(&self) -> bool {
        self.status == OrderStatus::Rejected
            && self
                .risk
                .as_ref()
                .is_some_and(|d| d.verdict == Verdict::Deny)
    }

    /// Starts a transition, or refuses it as illegal from the current status.
    pub fn begin(&mut self, intent: Intent, now: u64) -> Result<Begin, OrderError> {
        if let Some(pending) = &self.pending {
            return match (pending, &intent) {
                (p, i) if p == i => Ok(Begin::Started),
                // A placing that cannot finish can always be cancelled:
                // what it took is given back, what it may have taken is
                // released by id.
                (Intent::Place, Intent::Cancel { .. }) => {
                    self.attempts = 0;
                    self.release_deferred();
                    self.pending = Some(intent);
                    Ok(Begin::Started)
                }
                _ => Err(OrderError::Busy),
            };
        }
        use OrderStatus::*;
        let illegal = |from: OrderStatus| OrderError::IllegalTransition {
            from,
            to: intent_target(&intent),
        };
        match (&intent, self.status) {
            (Intent::Pay { payment_ref, .. }, Paid | Shipped | Delivered) => {
                return if self.payment_ref.as_deref() == Some(payment_ref.as_str()) {
                    Ok(Begin::AlreadyDone)
                } else {
                    Err(OrderError::AlreadyPaid)
                };
            }
            (Intent::Pay { .. }, Reserved) => {
                if self.expires_at_ms.is_some_and(|at| now >= at) {
                    return Err(OrderError::PastDeadline);
                }
            }
            (Intent::Cancel { .. }, PendingReview | Reserved | Paid) => {}
            (Intent::Expire, PendingReview | Reserved) => {}
            (Intent::Reject { .. }, PendingReview) => {}
            (Intent::Refund { .. }, Paid | Shipped | Delivered) => {}
            (_, from) => return Err(illegal(from)),
        }
        // Lines deferred to payment hold nothing: cancelling or expiring
        // them needs no SKU call.
        if matches!(
            intent,
            Intent::Cancel { .. } | Intent::Expire | Intent::Reject { .. }
        ) {
            self.release_deferred();
        }
        self.pending = Some(intent);
        Ok(Begin::Started)
    }

    fn release_deferred(&mut self) {
        for line in &mut self.lines {
            if line.state == LineState::Deferred {
                line.state = LineState::Released;
            }
        }
    }

    /// A run of the pending transition was cut short (a SKU unreachable or
    /// answering an error, an answer lost, a save failed); `unreachable`
    /// names the lines whose calls failed. Backs off, and after
    /// [`GIVE_UP_AFTER`] runs stops waiting: a placing becomes a cancel
    /// (compensation: what was taken is given back), and a give-back
    /// counts the unreachable lines as released (their holds expire at
    /// the SKU by themselves; a sold unit there is for the operator, whom
    /// the note is for). Never an order stuck forever.
    pub fn interrupted(&mut self, unreachable: &[usize]) -> Interruption {
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts < GIVE_UP_AFTER {
            let after = 5_000u64.saturating_mul(1 << (self.attempts - 1).min(6));
            return Interruption::RetryIn(after.min(300_000));
        }
        self.attempts = 0;
        let skus = |lines: &[OrderLine]| {
            unreachable
                .iter()
                .filter_map(|i| lines.get(*i))
                .map(|l| format!("{} (hold {})", l.sku, l.hold))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.pending {
            Some(Intent::Place) => {
                let note = format!(
                    "gave up placing after {GIVE_UP_AFTER} attempts: {} did not answer",
                    skus(&self.lines)
                );
                self.release_deferred();
                self.pending = Some(Intent::Cancel {
                    reason: Some(note.clone()),
                });
                Interruption::GaveUp { note }
            }
            Some(Intent::Cancel { .. } | Intent::Expire | Intent::Reject { .. }) => {
                let note = format!(
                    "stopped waiting after {GIVE_UP_AFTER} attempts to give back at {}",
                    skus(&self.lines)
                );
                for i in unreachable {
                    if let Some(line) = self.lines.get_mut(*i) {
                        line.state = LineState::Released;
                    }
                }
                Interruption::GaveUp { note }
            }
            // Paying and refunding keep trying, every 5 min: the buyer's
            // money is involved, and the operator is told.
            _ => Interruption::Stuck {
                note: format!(
                    "still trying after {GIVE_UP_AFTER} attempts at {}",
                    skus(&self.lines)
                ),
                retry_in_ms: 300_000,
            },
        }
    }

    /// Ship or deliver: transitions with no stock effect.
    pub fn change(&mut self, change: Change, actor: &Actor, now: u64) -> Result<(), OrderError> {
        if self.pending.is_some() {
            return Err(OrderError::Busy);
        }
        match (&change, self.status) {
            (Change::Ship { shipment }, OrderStatus::Paid) => {
                self.shipment = Some(shipment.clone());
                let note = format!("{} {}", shipment.carrier, shipment.tracking_number);
                self.record(OrderStatus::Shipped, actor, Some(note), now);
                Ok(())
            }
            // Confirmed already (by a person or a rule, perhaps shipped
            // since): a retried confirm changes nothing.
            (Change::Confirm, _) if self.confirmed.is_some() => Ok(()),
            (Change::Confirm, OrderStatus::Paid) => {
                self.confirm(actor, now);
                Ok(())
            }
            (Change::Deliver, OrderStatus::Shipped) => {
                self.record(OrderStatus::Delivered, actor, None, now);
                Ok(())
            }
            (Change::Approve, OrderStatus::PendingReview)
                if self.expires_at_ms.is_some_and(|at| now >= at) =>
            {
                Err(OrderError::PastDeadline)
            }
            (Change::Approve, OrderStatus::PendingReview) => {
                self.record(
                    OrderStatus::Reserved,
                    actor,
                    Some("approved in review".into()),
                    now,
                );
                Ok(())
            }
            (change, from) => Err(OrderError::IllegalTransition {
                from,
                to: match change {
                    Change::Ship { .. } => "shipped",
                    Change::Deliver => "delivered",
                    Change::Approve => "reserved",
                    Change::Confirm => "confirmed",
                },
            }),
        }
    }

    fn step(&self, line: usize, op: &str, command: Command) -> SkuStep {
        let key = format!("{}/{line}/{op}", self.id);
        SkuStep {
            line,
            sku: self.lines[line].sku.clone(),
            key: IdempotencyKey::parse(&key).expect("order keys are well-formed"),
            command,
        }
    }

    fn any_failed(&self) -> bool {
        self.lines
            .iter()
            .any(|l| matches!(l.state, LineState::Failed { .. }))
    }

    /// Gives back whatever the order holds or bought: the compensation of a
    /// refused placing or payment, and the work of cancel and expire.
    fn give_back(&self) -> Vec<SkuStep> {
        (0..self.lines.len())
            .filter_map(|i| {
                let hold = self.lines[i].hold.clone();
                match self.lines[i].state {
                    // Unplaced: a cancelled placing may have reached the SKU
                    // before it was cut short; releasing by id finds out.
                    LineState::Held | LineState::Unplaced => {
                        Some(self.step(i, "release", Command::Release { hold }))
                    }
                    LineState::Sold => Some(self.step(i, "return", Command::Return { hold })),
                    _ => None,
                }
            })
            .collect()
    }

    /// The SKU calls the pending transition still needs. Empty when it is
    /// ready to [`settle`](Order::settle).
    pub fn plan(&self) -> Vec<SkuStep> {
        let Some(intent) = &self.pending else {
            return Vec::new();
        };
        let for_lines = |state: LineState, op: &str, make: &dyn Fn(&OrderLine) -> Command| {
            (0..self.lines.len())
                .filter(|i| self.lines[*i].state == state)
                .map(|i| self.step(i, op, make(&self.lines[i])))
                .collect::<Vec<_>>()
        };
        match intent {
            Intent::Place => {
                let place = for_lines(LineState::Unplaced, "place", &|l| Command::Place {
                    hold: l.hold.clone(),
                    buyer: self.buyer.clone(),
                    qty: l.qty,
                    order: self.id.clone(),
                    hold_for: self.review_hold,
                    channel: self.sells_from.clone(),
                });
                if !place.is_empty() {
                    return place;
                }
                if self.any_failed() {
                    return self.give_back();
                }
                Vec::new()
            }
            Intent::Pay { .. } => {
                if self.any_failed() {
                    return self.give_back();
                }
                let sell = for_lines(LineState::Deferred, "sell", &|l| Command::Sell {
                    hold: l.hold.clone(),
                    buyer: self.buyer.clone(),
                    qty: l.qty,
                    order: self.id.clone(),
                    channel: self.sells_from.clone(),
                });
                if !sell.is_empty() {
                    return sell;
                }
                for_lines(LineState::Held, "commit", &|l| Command::Commit {
                    hold: l.hold.clone(),
                })
            }
            Intent::Cancel { .. } | Intent::Expire | Intent::Reject { .. } => self.give_back(),
            Intent::Refund { restock, .. } => {
                if *restock {
                    self.give_back()
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Records a SKU's answer to one planned step.
    pub fn observe(&mut self, step: &SkuStep, reply: &Reply) {
        let line = &mut self.lines[step.line];
        line.state = match (&step.command, reply) {
            (_, Ok(Outcome::Reserved { sku, hold })) => {
                line.mode = Some(sku.settings.deduction);
                line.pay_by_ms = Some(hold.expires_at_ms);
                LineState::Held
            }
            (Command::Place { .. }, Ok(Outcome::Sold { sku, hold })) => {
                line.mode = Some(sku.settings.deduction);
                line.pay_by_ms = Some(hold.expires_at_ms);
                LineState::Sold
            }
            (_, Ok(Outcome::Deferred { sku, pay_by_ms })) => {
                line.mode = Some(sku.settings.deduction);
                line.pay_by_ms = Some(*pay_by_ms);
                LineState::Deferred
            }
            (_, Ok(Outcome::Sold { .. } | Outcome::Committed { .. })) => LineState::Sold,
            (_, Ok(Outcome::Released { .. })) => LineState::Released,
            (_, Ok(Outcome::Returned { .. })) => LineState::Returned,
            // A hold that is gone by the time it is released gave its units
            // back already.
            (Command::Release { .. }, Err(StockError::HoldResolved { hold_status, .. }))
                if *hold_status != HoldStatus::Committed =>
            {
                LineState::Released
            }
            // A line placed as a sale before its placing was cancelled: it
            // goes back with a return next round.
            (
                Command::Release { .. },
                Err(StockError::HoldResolved {
                    hold_status: HoldStatus::Committed,
                    ..
                }),
            ) if line.state == LineState::Unplaced => LineState::Sold,
            (Command::Release { .. }, Err(StockError::HoldNotFound)) => LineState::Released,
            (_, Err(e)) => LineState::Failed {
                reason: LineFailure::from_error(e),
            },
            (_, Ok(_)) => line.state.clone(),
        };
    }

    /// Finishes the pending transition once its plan is empty: sets the
    /// status and writes the timeline.
    pub fn settle(&mut self, actor: &Actor, now: u64) -> Option<OrderStatus> {
        if !self.plan().is_empty() {
            return None;
        }
        let intent = self.pending.take()?;
        self.attempts = 0;
        let (status, note) = match &intent {
            Intent::Place if self.any_failed() => {
                (OrderStatus::Rejected, Some(self.failures_note()))
            }
            Intent::Place => {
                self.expires_at_ms = self.lines.iter().filter_map(|l| l.pay_by_ms).min();
                match &self.risk {
                    Some(decision) if self.review_hold.is_some() => {
                        let rules = decision
                            .fired
                            .iter()
                            .map(|f| format!("{}: {}", f.rule, f.reason))
                            .collect::<Vec<_>>()
                            .join("; ");
                        (OrderStatus::PendingReview, Some(rules))
                    }
                    _ => (OrderStatus::Reserved, None),
                }
            }
            Intent::Pay { .. } if self.any_failed() => {
                (OrderStatus::Failed, Some(self.failures_note()))
            }
            Intent::Pay {
                payment_ref,
                amount,
            } => {
                self.payment_ref = Some(payment_ref.clone());
                self.payment_amount = *amount;
                let note = match amount {
                    Some(amount) => format!("payment {payment_ref} (amount {amount})"),
                    None => format!("payment {payment_ref}"),
                };
                (OrderStatus::Paid, Some(note))
            }
            Intent::Cancel { reason } => (OrderStatus::Cancelled, reason.clone()),
            Intent::Expire => (OrderStatus::Expired, Some("not paid in time".to_owned())),
            Intent::Reject { reason } => {
                let note = match reason {
                    Some(r) => format!("rejected in review: {r}"),
                    None => "rejected in review".to_owned(),
                };
                (OrderStatus::Cancelled, Some(note))
            }
            Intent::Refund {
                restock, reason, ..
            } => {
                self.restocked = Some(*restock);
                let stock = if *restock {
                    "units back to stock"
                } else {
                    "units not restocked"
                };
                let note = match reason {
                    Some(r) => format!("{r}; {stock}"),
                    None => stock.to_owned(),
                };
                (OrderStatus::Refunded, Some(note))
            }
        };
        self.record(status, actor, note, now);
        Some(status)
    }

    fn failures_note(&self) -> String {
        self.lines
            .iter()
            .filter_map(|l| match &l.state {
                LineState::Failed { reason } => {
                    Some(format!("{}: {}", l.sku, failure_words(reason)))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn record(&mut self, status: OrderStatus, actor: &Actor, note: Option<String>, now: u64) {
        self.status = status;
        self.timeline.push(TimelineEntry {
            at_ms: now,
            status,
            actor: actor.to_string(),
            note,
        });
    }

    /// Closes an order never placed (a platform cancelled it before
    /// edgestock saw it): nothing taken, nothing to give back, and a late
    /// "created" finds it closed.
    pub fn close_unplaced(&mut self, actor: &Actor, note: String, now: u64) {
        self.pending = None;
        self.record(OrderStatus::Cancelled, actor, Some(note), now);
    }

    /// Lines the SKUs refused, for a 409's body.
    pub fn failed_lines(&self) -> Vec<(&OrderLine, &LineFailure)> {
        self.lines
            .iter()
            .filter_map(|l| match &l.state {
                LineState::Failed { reason } => Some((l, reason)),
                _ => None,
            })
            .collect()
    }

    /// True when the order holds or has bought nothing at any SKU.
    pub fn holds_nothing(&self) -> bool {
        self.lines
            .iter()
            .all(|l| !matches!(l.state, LineState::Held | LineState::Sold))
    }
}

pub fn failure_words(f: &LineFailure) -> String {
    match f {
        LineFailure::SoldOut {
            requested,
            available,
        } => format!("sold out ({available} left, {requested} asked)"),
        LineFailure::OverBuyerLimit { limit, .. } => format!("over the buyer's limit of {limit}"),
        LineFailure::UnknownSku => "unknown SKU".to_owned(),
        LineFailure::HoldExpired => "the hold expired before payment".to_owned(),
        LineFailure::Other { code } => code.clone(),
    }
}

fn intent_target(intent: &Intent) -> &'static str {
    match intent {
        Intent::Place => "reserved",
        Intent::Pay { .. } => "paid",
        Intent::Cancel { .. } => "cancelled",
        Intent::Expire => "expired",
        Intent::Refund { .. } => "refunded",
        Intent::Reject { .. } => "cancelled",
    }
}
