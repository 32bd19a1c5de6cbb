//! The rules of one SKU's stock. Plain Rust: no I/O, no clock, no `worker`.
//!
//! A [`Stock`] is the in-memory image of one SKU's Durable Object: its counts
//! and settings, every live hold, and whatever resolved holds, buyer tallies
//! and idempotency replays the shell has prefetched for the requests at hand
//! (see [`Stock::needs`]). [`Stock::step`] applies a sequence of requests at
//! one instant, each atomically, and records what changed in [`Changes`] so
//! the shell can persist exactly that.
//!
//! Invariants, checked by [`Stock::check_invariants`] after every step of the
//! simulation: on_hand = available + reserved + sold with nothing negative
//! (counts are unsigned and available is on_hand − reserved − sold, so the
//! check is reserved + sold ≤ on_hand); reserved equals the sum of live
//! holds; every live hold is in the expiry index and no other hold is.

use super::allocation::{sellable, AllocationError, AllocationSpec, Allocations};
use super::buckets::{Node, BUCKETS_MAX};
use super::ledger::{LedgerEntry, Movement, Tail};
use super::notice::{crossing, Notice, NoticeKind};
use super::replenish::{
    incoming, reorder_qty, ReorderMode, ReorderPolicy, Replenishment, RequestStatus, Velocity,
    REQUESTS_KEPT, RUSH_HALF_LIFE_MS, SALES_HALF_LIFE_MS,
};
use super::types::{
    AdjustReason, BuyerId, Channel, Delta, HoldSeconds, IdempotencyKey, Note, OrderId, Quantity,
    ReplayKey, ReservationId, SkuId, TransferId, Units,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Who asked for a movement; recorded on every ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A caller holding the admin token.
    Admin,
    /// A buyer with a verified session, reserving or releasing their own
    /// holds through a storefront.
    Buyer(BuyerId),
    /// An order object placing, paying, cancelling or refunding its lines.
    Order(OrderId),
    /// The object itself: expiry by alarm or at the start of a step, an
    /// order's alarm.
    System,
    /// A payment provider's signed callback, paying an order.
    Payment,
    /// The merchant's risk rules, refusing an order.
    Risk,
    /// One of the merchant's automations, acting on an order.
    Rule(super::automation::Rule),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Admin => f.write_str("admin"),
            Actor::Buyer(b) => write!(f, "buyer:{b}"),
            Actor::Order(o) => write!(f, "order:{o}"),
            Actor::System => f.write_str("system"),
            Actor::Payment => f.write_str("payment"),
            Actor::Risk => f.write_str("risk"),
            Actor::Rule(r) => write!(f, "rule:{r}"),
        }
    }
}

/// When an order's units stop being available: the three modes common in
/// Chinese e-commerce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeductionMode {
    /// 预扣库存: placing an order holds the units until payment or timeout.
    #[default]
    Hold,
    /// 拍下减库存: placing an order sells the units; cancelling returns them.
    AtOrder,
    /// 付款减库存: nothing is held at order time; paying takes the units, or
    /// fails if they are gone.
    AtPayment,
}

/// Per-SKU settings. Absent fields in a setup keep their current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// At or below this many available units the SKU counts as low.
    pub low_stock_threshold: Units,
    /// 限购: the most units one buyer may hold and buy together; None = no limit.
    pub per_buyer_limit: Option<Quantity>,
    pub hold_seconds: HoldSeconds,
    /// How orders take this SKU's units.
    #[serde(default)]
    pub deduction: DeductionMode,
    /// The most units one hold (or order line) may take: one viewer cannot
    /// sweep a hot SKU in a single click.
    #[serde(default = "Settings::default_max_per_hold")]
    pub max_per_hold: Quantity,
}

impl Settings {
    pub const MAX_PER_HOLD_DEFAULT: u64 = 5;

    fn default_max_per_hold() -> Quantity {
        Quantity::parse(Self::MAX_PER_HOLD_DEFAULT).expect("5 is a valid quantity")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            low_stock_threshold: Units::parse(0).expect("0 is a valid level"),
            per_buyer_limit: None,
            hold_seconds: HoldSeconds::DEFAULT,
            deduction: DeductionMode::Hold,
            max_per_hold: Settings::default_max_per_hold(),
        }
    }
}

/// The SKU's durable row: counts, settings and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuRecord {
    pub sku: SkuId,
    pub on_hand: u64,
    pub reserved: u64,
    pub sold: u64,
    /// Increases by one on every change, expiry included.
    pub version: u64,
    pub settings: Settings,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// How many stock buckets serve this SKU (0: the object alone); set on
    /// the parent. See [`super::buckets`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub buckets: u16,
    /// Units sent to another object of this SKU and not yet acknowledged:
    /// off this object's counts, on nobody else's until received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Transfer>,
    /// A stock bucket of a split SKU (set by its first units from the
    /// parent): its own crossings are not the SKU's, so it makes no
    /// merchant notices.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bucket: bool,
    /// When to ask for more (补货), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<ReorderPolicy>,
    /// The open replenishment request and the latest closed ones, oldest
    /// first (at most [`REQUESTS_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replenishments: Vec<Replenishment>,
    /// How fast units go: for the sell-out estimate and reorder sizes.
    #[serde(default)]
    pub velocity: Velocity,
    /// Replenishment requests made so far (names the next one's id).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub requests_made: u64,
    /// A request was made for the current crossing of the reorder point:
    /// no other until stock is back above the point (a cancelled request
    /// is not remade in the same breath).
    #[serde(default, skip_serializing_if = "is_false")]
    pub reorder_spent: bool,
    /// Channel allocation (库存分配): dedicated buckets and limits per
    /// selling channel. See [`super::allocation`].
    #[serde(default, skip_serializing_if = "Allocations::is_empty")]
    pub channels: Allocations,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

/// Units on their way to another object of the same SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub to: Node,
    pub qty: u64,
    pub at_ms: u64,
}

impl SkuRecord {
    /// Units in this object's outbox.
    pub fn in_flight(&self) -> u64 {
        self.outbox.iter().map(|t| t.qty).sum()
    }

    fn empty(sku: SkuId, now: u64) -> SkuRecord {
        SkuRecord {
            sku,
            on_hand: 0,
            reserved: 0,
            sold: 0,
            version: 0,
            settings: Settings::default(),
            created_at_ms: now,
            updated_at_ms: now,
            buckets: 0,
            outbox: Vec::new(),
            bucket: false,
            reorder: None,
            replenishments: Vec::new(),
            velocity: Velocity::default(),
            requests_made: 0,
            reorder_spent: false,
            channels: Allocations::default(),
        }
    }

    /// What `channel` may sell now (None: the storefront).
    pub fn sellable(&self, channel: Option<&Channel>) -> u64 {
        sellable(&self.channels, self.available(), channel)
    }

    /// Never wraps: counts that do not add up make it 0 (and the SKU
    /// quarantined), never a huge number to sell from.
    pub fn available(&self) -> u64 {
        self.on_hand
            .saturating_sub(self.reserved)
            .saturating_sub(self.sold)
    }

    pub fn is_low(&self) -> bool {
        self.available() <= self.settings.low_stock_threshold.get()
    }

    /// Units confirmed on their way from suppliers (never available).
    pub fn incoming(&self) -> u64 {
        incoming(&self.replenishments)
    }

    /// Seconds until sold out at the pace of the last moments, as of its
    /// latest change.
    pub fn sellout_s(&self) -> Option<u64> {
        self.velocity
            .sellout_s(self.available(), self.updated_at_ms)
    }

    /// A whole SKU (not a bucket, not split): its own crossings are the
    /// SKU's, so it makes notices and replenishment requests.
    fn whole(&self) -> bool {
        self.buckets == 0 && !self.bucket
    }
}

/// A hold's life: `Held`, then exactly one of committed, released or
/// expired, never back. A committed hold (a sale) may later be `Returned`
/// (库存回补: a cancelled paid order, a refund with restock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Held,
    Committed,
    Released,
    Expired,
    Returned,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Committed => "committed",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
            HoldStatus::Returned => "returned",
        }
    }
}

/// A reservation: qty units set aside for a buyer until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: ReservationId,
    pub buyer: BuyerId,
    pub qty: Quantity,
    pub status: HoldStatus,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub resolved_at_ms: Option<u64>,
    /// The order this hold is a line of, if any.
    #[serde(default)]
    pub order: Option<OrderId>,
    /// The channel it sells on (None: the storefront): released or
    /// expired, its units go back to that channel's dedicated bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
}

impl Hold {
    /// Who may see or resolve this hold: an admin and the object itself
    /// always; a buyer only their own holds; an order only its own lines.
    pub fn belongs_to(&self, actor: &Actor) -> bool {
        match actor {
            Actor::Admin | Actor::System => true,
            Actor::Buyer(buyer) => self.buyer == *buyer,
            Actor::Order(order) => self.order.as_ref() == Some(order),
            // They act on orders, never on a SKU's holds directly.
            Actor::Payment | Actor::Risk | Actor::Rule(_) => false,
        }
    }

    /// Whether `actor` may move this hold to `to`. A buyer may only release
    /// their own hold, and not an order's line (the order would then sell
    /// or return units it no longer holds): orders resolve their lines, and
    /// commits come from a payment (through the order) or an admin.
    fn may_resolve(&self, actor: &Actor, to: HoldStatus) -> bool {
        match actor {
            Actor::Buyer(_) => {
                to == HoldStatus::Released && self.order.is_none() && self.belongs_to(actor)
            }
            _ => self.belongs_to(actor),
        }
    }
}

/// What a setup asks for. `None` keeps the current value (or the default on
/// creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupSpec {
    pub on_hand: Units,
    pub low_stock_threshold: Option<Units>,
    pub per_buyer_limit: LimitChange,
    pub hold_seconds: Option<HoldSeconds>,
    pub deduction: Option<DeductionMode>,
    pub max_per_hold: Option<Quantity>,
}

/// What a setup does to the purchase limit. An enum rather than
/// `Option<Option<_>>`, whose "remove" and "keep" look alike in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitChange {
    Keep,
    Remove,
    Set(Quantity),
}

/// One operation on the SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    Setup(SetupSpec),
    Restock {
        qty: Quantity,
        reason: Option<Note>,
        reference: Option<Note>,
    },
    Adjust {
        delta: Delta,
        reason: AdjustReason,
        note: Option<Note>,
        reference: Option<Note>,
    },
    /// `hold` is the id the new hold will have, drawn by the shell.
    Reserve {
        hold: ReservationId,
        buyer: BuyerId,
        qty: Quantity,
        /// The channel selling (None: the storefront): see
        /// [`super::allocation`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<Channel>,
    },
    Commit {
        hold: ReservationId,
    },
    Release {
        hold: ReservationId,
    },
    /// An order's line, taken according to the SKU's [`DeductionMode`]: a
    /// hold, a sale, or (at payment) nothing yet.
    Place {
        hold: ReservationId,
        buyer: BuyerId,
        qty: Quantity,
        order: OrderId,
        /// Hold this long instead of the SKU's `hold_seconds` (an order
        /// waiting for a merchant's review).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold_for: Option<HoldSeconds>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<Channel>,
    },
    /// Reserve and commit at once: an at-payment line being paid.
    Sell {
        hold: ReservationId,
        buyer: BuyerId,
        qty: Quantity,
        order: OrderId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<Channel>,
    },
    /// Give a sale's units back to available (committed → returned).
    Return {
        hold: ReservationId,
    },
    /// Serve the SKU with this many stock buckets (0: the parent alone).
    /// Units are moved by the transfers below, not by this.
    Split {
        buckets: u16,
    },
    /// Send up to `up_to` available units to another object of this SKU:
    /// they leave `on_hand` now and wait in the outbox until `Delivered`.
    Send {
        transfer: TransferId,
        to: Node,
        up_to: Units,
    },
    /// Units another object of this SKU sent. Sent with the transfer's id
    /// as its key, so a redelivery adds nothing. A bucket takes its parent's
    /// settings with them (and is created by its first).
    Receive {
        transfer: TransferId,
        qty: Units,
        settings: Option<Settings>,
    },
    /// The receiver has the transfer's units: the outbox entry goes.
    Delivered {
        transfer: TransferId,
    },
    /// Set (or, with None, remove) the reorder policy.
    SetReorder {
        policy: Option<ReorderPolicy>,
    },
    /// The merchant confirms a suggested request (it goes to the supplier).
    ConfirmReplenishment {
        id: String,
    },
    /// The goods came: restock by `qty` (default: the request's), with the
    /// request as the reference. Once only.
    ReceiveReplenishment {
        id: String,
        qty: Option<Quantity>,
    },
    CancelReplenishment {
        id: String,
    },
    /// Set (or, with None, remove) a channel's allocation: a dedicated
    /// bucket grows only from the pool and gives back when it shrinks.
    Allocate {
        channel: Channel,
        spec: Option<AllocationSpec>,
    },
}

/// A command with who sent it and, if the client gave one, its idempotency
/// key and a fingerprint of what it asked (so a reused key with another body
/// is told apart from a retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub key: Option<IdempotencyKey>,
    pub fingerprint: String,
    pub actor: Actor,
    pub command: Command,
}

/// What a request did, when it did something (or found it already done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    SkuSet {
        sku: SkuRecord,
        created: bool,
    },
    Restocked {
        sku: SkuRecord,
    },
    Adjusted {
        sku: SkuRecord,
    },
    Reserved {
        hold: Hold,
        sku: SkuRecord,
    },
    /// `already` is true when the hold had been committed before: an
    /// idempotent success that changed nothing.
    Committed {
        hold: Hold,
        sku: SkuRecord,
        already: bool,
    },
    Released {
        hold: Hold,
        sku: SkuRecord,
        already: bool,
    },
    /// A sale made in one step (at-order placing, at-payment paying).
    Sold {
        hold: Hold,
        sku: SkuRecord,
    },
    /// An at-payment line placed: nothing taken yet; the order should be
    /// paid by `pay_by_ms` (this SKU's hold time from now).
    Deferred {
        sku: SkuRecord,
        pay_by_ms: u64,
    },
    Returned {
        hold: Hold,
        sku: SkuRecord,
        already: bool,
    },
    /// A split, or a transfer's send (`qty` units left), receipt or
    /// delivery.
    Moved {
        sku: SkuRecord,
        qty: u64,
    },
    /// A replenishment request after a confirm, receipt or cancel.
    Replenishment {
        sku: SkuRecord,
        request: Replenishment,
    },
}

/// Every way a request can be refused. A refused request changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum StockError {
    SkuNotFound,
    InsufficientStock {
        requested: u64,
        available: u64,
    },
    BuyerLimitExceeded {
        limit: u64,
        held: u64,
        bought: u64,
        requested: u64,
    },
    /// More units in one hold or order line than the SKU's `max_per_hold`.
    OverHoldMax {
        max: u64,
        requested: u64,
    },
    HoldNotFound,
    /// The hold was already resolved in a way that forbids this transition.
    HoldResolved {
        hold_status: HoldStatus,
        attempted: HoldStatus,
    },
    /// Setting on_hand below what is reserved and sold.
    OnHandBelowCommitted {
        requested: u64,
        reserved: u64,
        sold: u64,
    },
    /// An adjustment that would leave available (or on_hand) negative.
    AdjustmentBelowCommitted {
        on_hand: u64,
        delta: i64,
        reserved: u64,
        sold: u64,
    },
    StockLevelTooHigh {
        max: u64,
    },
    IdempotencyKeyReused,
    /// The shell drew a hold id that exists already (2^-128 odds); retrying
    /// draws another.
    HoldIdTaken,
    /// The SKU's counts do not add up (found on load, or a step's
    /// arithmetic would have gone out of range): it refuses every change
    /// rather than sell from numbers it cannot trust. Never remembered as
    /// a replay, so a retry after the repair runs.
    Quarantined,
    /// A split SKU splits again only by merging back first (a buyer's
    /// bucket must not change while they hold units in it).
    SplitChange {
        buckets: u16,
        requested: u16,
    },
    /// A SKU with a per-buyer limit splits only before anything is held or
    /// sold (its buyers' tallies cannot follow them into buckets).
    SplitAfterSales {
        reserved: u64,
        sold: u64,
    },
    ReplenishmentNotFound,
    /// A received request cannot be cancelled, nor a cancelled one
    /// confirmed or received.
    ReplenishmentClosed {
        status: RequestStatus,
    },
    /// The channel's allocation has fewer units than asked (the SKU may
    /// have more for other channels).
    ChannelShort {
        channel: String,
        requested: u64,
        sellable: u64,
    },
    /// A dedicated bucket grows only by units the pool has.
    PoolShort {
        requested: u64,
        pool: u64,
    },
    /// A percentage outside 1–100, or too many channels with rules.
    AllocationInvalid {
        reason: String,
    },
    /// Channels are allocated on a whole SKU only (a split SKU's buckets
    /// do not share one pool), and a SKU with dedicated buckets does not
    /// split.
    AllocationSplit,
}

pub type Reply = Result<Outcome, StockError>;

/// How a hold is taken: for an order or not, held or sold at once, and
/// for how long.
struct Terms<'a> {
    order: Option<&'a OrderId>,
    channel: Option<&'a Channel>,
    status: HoldStatus,
    hold_ms: u64,
}

impl Request {
    /// Where this request's answer is remembered: its key in the scope of
    /// who sent it (see [`ReplayKey`]).
    pub fn replay_key(&self) -> Option<ReplayKey> {
        let key: &IdempotencyKey = self.key.as_ref()?;
        Some(ReplayKey::new(&self.actor.to_string(), key))
    }
}

/// How long a SKU remembers an Idempotency-Key's answer. A retry later than
/// this is treated as a new request.
pub const REPLAY_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// A stored answer to an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    pub fingerprint: String,
    pub reply: Reply,
    pub at_ms: u64,
}

/// What a step changed, for the shell to persist. Ids, not copies: the
/// shell reads the current values from the [`Stock`] after the step.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub record: bool,
    pub holds: BTreeSet<ReservationId>,
    pub bought: BTreeSet<BuyerId>,
    pub ledger: Vec<LedgerEntry>,
    pub replays: Vec<ReplayKey>,
    /// Merchant notices the step made, written with it (an outbox).
    pub notices: Vec<Notice>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// What the shell must load before a step can run (TigerBeetle's prefetch):
/// resolved holds named by a command, buyer tallies and stored replays.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Needs {
    pub holds: Vec<ReservationId>,
    pub buyers: Vec<BuyerId>,
    pub replays: Vec<ReplayKey>,
}

/// The buyer tallies kept in memory between steps; past this many the cache
/// is dropped and reloaded on demand.
const BOUGHT_CACHE_MAX: usize = 10_000;

pub struct Stock {
    sku: SkuId,
    record: Option<SkuRecord>,
    holds: HashMap<ReservationId, Hold>,
    /// Live holds ordered by expiry, for the alarm and for expiry at step start.
    expiry: BTreeSet<(u64, ReservationId)>,
    held_by_buyer: HashMap<BuyerId, u64>,
    bought: HashMap<BuyerId, u64>,
    replays: HashMap<ReplayKey, Replay>,
    /// Where the next ledger entry goes and the hash it chains to.
    tail: Tail,
    /// The sum of live holds, kept as they come and go, so the invariants
    /// are checked after every step in O(1).
    live_units: u64,
    /// Why the SKU refuses changes (see [`StockError::Quarantined`]); empty
    /// while its counts add up.
    broken: Vec<String>,
    /// The latest instant seen; time never runs backwards inside a loaded
    /// object. A reload restarts it from the last recorded change (keeping it
    /// across reloads would cost a write on every read).
    clock_ms: u64,
    changes: Changes,
}

impl Stock {
    /// Rebuilds a SKU from what the shell persisted: its record (None if it
    /// was never set up), its live holds and the ledger's tail (where the
    /// next entry goes).
    pub fn load(sku: SkuId, record: Option<SkuRecord>, live_holds: Vec<Hold>, tail: Tail) -> Stock {
        let clock_ms = record.as_ref().map_or(0, |r| r.updated_at_ms);
        let mut stock = Stock {
            sku,
            record,
            holds: HashMap::new(),
            expiry: BTreeSet::new(),
            held_by_buyer: HashMap::new(),
            bought: HashMap::new(),
            replays: HashMap::new(),
            tail,
            live_units: 0,
            broken: Vec::new(),
            clock_ms,
            changes: Changes::default(),
        };
        for hold in live_holds {
            if hold.status == HoldStatus::Held {
                stock.track_live(&hold);
            }
            stock.holds.insert(hold.id.clone(), hold);
        }
        // What storage says is checked before anything is decided from it.
        stock.broken = stock.count_violations();
        stock
    }

    /// Where the ledger ends: the next entry's seq and the hash it will
    /// chain to (the head's).
    pub fn tail(&self) -> Tail {
        self.tail
    }

    /// Why this SKU refuses changes; empty when its counts add up.
    pub fn quarantine(&self) -> &[String] {
        &self.broken
    }

    pub fn sku(&self) -> &SkuId {
        &self.sku
    }

    pub fn record(&self) -> Option<&SkuRecord> {
        self.record.as_ref()
    }

    pub fn hold(&self, id: &ReservationId) -> Option<&Hold> {
        self.holds.get(id)
    }

    pub fn live_holds(&self) -> impl Iterator<Item = &Hold> {
        self.expiry.iter().filter_map(|(_, id)| self.holds.get(id))
    }

    pub fn bought(&self, buyer: &BuyerId) -> u64 {
        self.bought.get(buyer).copied().unwrap_or(0)
    }

    pub fn replay(&self, key: &ReplayKey) -> Option<&Replay> {
        self.replays.get(key)
    }

    /// When the alarm must next fire: the earliest live hold's expiry.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.expiry.first().map(|(at, _)| *at)
    }

    /// What must be loaded before `requests` can be applied. Call it, load,
    /// provide, and call it again: holds loaded on the first pass can name
    /// buyers whose tallies the second pass asks for.
    pub fn needs(&self, requests: &[Request]) -> Needs {
        let mut needs = Needs::default();
        let sets_up = requests
            .iter()
            .any(|r| matches!(r.command, Command::Setup(_)));
        let mut made_here: Vec<(&ReservationId, &BuyerId)> = Vec::new();
        for request in requests {
            if let Some(key) = request.replay_key() {
                if !self.replays.contains_key(&key) {
                    needs.replays.push(key);
                }
            }
            let buyer = match &request.command {
                Command::Reserve { hold, buyer, .. }
                | Command::Place { hold, buyer, .. }
                | Command::Sell { hold, buyer, .. } => {
                    made_here.push((hold, buyer));
                    // A resolved hold with this id may sit in storage only;
                    // the core must see it to refuse the id.
                    if !self.holds.contains_key(hold) {
                        needs.holds.push(hold.clone());
                    }
                    Some(buyer)
                }
                Command::Commit { hold } | Command::Release { hold } | Command::Return { hold } => {
                    match self.holds.get(hold) {
                        Some(h) => Some(&h.buyer),
                        // A hold taken earlier in this same batch: its
                        // buyer's tally is the one a commit or return moves.
                        None => match made_here.iter().find(|(id, _)| *id == hold) {
                            Some((_, buyer)) => Some(*buyer),
                            None => {
                                needs.holds.push(hold.clone());
                                None
                            }
                        },
                    }
                }
                _ => None,
            };
            // A buyer's tally is needed to check a purchase limit, or to
            // add a sale to it; a plain hold on a SKU with no limit needs
            // neither (the hot path of a launch).
            // (A setup in the same batch may add a limit: then load.)
            let tally_unused = !sets_up
                && self.record.as_ref().is_some_and(|r| {
                    r.settings.per_buyer_limit.is_none()
                        && match &request.command {
                            Command::Reserve { .. } => true,
                            Command::Place { .. } => r.settings.deduction != DeductionMode::AtOrder,
                            _ => false,
                        }
                });
            if let Some(buyer) = buyer.filter(|_| !tally_unused) {
                if !self.bought.contains_key(buyer) {
                    needs.buyers.push(buyer.clone());
                }
            }
        }
        needs
    }

    /// Supplies a hold found in storage (a resolved one: live holds are
    /// always in memory).
    pub fn provide_hold(&mut self, hold: Hold) {
        if !self.holds.contains_key(&hold.id) {
            if hold.status == HoldStatus::Held {
                self.track_live(&hold);
            }
            self.holds.insert(hold.id.clone(), hold);
        }
    }

    pub fn provide_bought(&mut self, buyer: BuyerId, bought: u64) {
        self.bought.entry(buyer).or_insert(bought);
    }

    pub fn provide_replay(&mut self, key: ReplayKey, replay: Replay) {
        self.replays.entry(key).or_insert(replay);
    }

    /// Hands over what the steps since the last call changed.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Drops from memory what is persisted and not needed for the next step:
    /// resolved holds, replays, and the tally cache when it grows large.
    pub fn evict(&mut self) {
        debug_assert!(self.changes.is_empty(), "evict after persisting");
        self.holds.retain(|_, h| h.status == HoldStatus::Held);
        self.replays.clear();
        if self.bought.len() > BOUGHT_CACHE_MAX {
            self.bought.clear();
        }
    }

    /// Applies `requests` in order at `now_ms`, after returning every hold
    /// due by then. Each request is atomic: a refused one changes nothing,
    /// and does not stop the ones after it.
    ///
    /// A quarantined SKU refuses every request and changes nothing. The
    /// counts are checked after the step (in O(1)); a step that breaks them
    /// quarantines the SKU, and the shell must then drop this image
    /// without saving (see [`super::store::run`]).
    pub fn step(&mut self, now_ms: u64, requests: &[Request]) -> Vec<Reply> {
        if !self.broken.is_empty() {
            return requests
                .iter()
                .map(|_| Err(StockError::Quarantined))
                .collect();
        }
        self.clock_ms = self.clock_ms.max(now_ms);
        let now = self.clock_ms;
        self.expire_due(now);
        let replies = requests.iter().map(|r| self.apply(now, r)).collect();
        self.reorder_check(now);
        self.broken.extend(self.count_violations());
        replies
    }

    fn apply(&mut self, now: u64, request: &Request) -> Reply {
        let Some(key) = request.replay_key() else {
            return self.execute(now, &request.actor, &request.command);
        };
        if let Some(replay) = self.replays.get(&key) {
            return if replay.fingerprint == request.fingerprint {
                replay.reply.clone()
            } else {
                Err(StockError::IdempotencyKeyReused)
            };
        }
        let reply = self.execute(now, &request.actor, &request.command);
        let replay = Replay {
            fingerprint: request.fingerprint.clone(),
            reply: reply.clone(),
            at_ms: now,
        };
        self.replays.insert(key.clone(), replay);
        self.changes.replays.push(key);
        reply
    }

    fn execute(&mut self, now: u64, actor: &Actor, command: &Command) -> Reply {
        if let Command::Setup(spec) = command {
            return self.setup(now, actor, spec);
        }
        if let Command::Receive {
            transfer,
            qty,
            settings: Some(settings),
        } = command
        {
            if self.record.is_none() {
                // A bucket's first units: it starts from its parent's settings.
                let mut record = SkuRecord::empty(self.sku.clone(), now);
                record.settings = *settings;
                self.record = Some(record);
            }
            return self.receive(now, actor, transfer, *qty, Some(settings));
        }
        let record = self.record.as_ref().ok_or(StockError::SkuNotFound)?;
        if let Command::Reserve { qty, .. }
        | Command::Place { qty, .. }
        | Command::Sell { qty, .. } = command
        {
            let max = record.settings.max_per_hold.get();
            if qty.get() > max {
                return Err(StockError::OverHoldMax {
                    max,
                    requested: qty.get(),
                });
            }
        }
        match command {
            Command::Setup(_) => unreachable!("handled above"),
            Command::Split { buckets } => {
                let (current, requested) = (record.buckets, *buckets);
                // A split SKU stays split (merging back only brings units
                // home): its buyers' tallies, holds and stored answers live
                // in their buckets.
                if current == 0 && requested != 0 && record.channels.dedicated() > 0 {
                    return Err(StockError::AllocationSplit);
                }
                if requested > BUCKETS_MAX || (current != 0 && requested != current) {
                    return Err(StockError::SplitChange {
                        buckets: current,
                        requested,
                    });
                }
                // A per-buyer limit is exact only if no buyer has units yet:
                // the tallies so far are this object's, not the buckets'.
                let taken = record.reserved + record.sold;
                if current == 0 && record.settings.per_buyer_limit.is_some() && taken > 0 {
                    return Err(StockError::SplitAfterSales {
                        reserved: record.reserved,
                        sold: record.sold,
                    });
                }
                if current == requested {
                    return Ok(Outcome::Moved {
                        sku: record.clone(),
                        qty: 0,
                    });
                }
                let reason = format!("split into {requested} buckets");
                let entry = Movement::Adjust.entry(0, actor).reason(Some(reason));
                let sku = self.change(now, entry, |r| {
                    r.buckets = requested;
                    Some(())
                });
                Ok(Outcome::Moved { sku, qty: 0 })
            }
            Command::Send {
                transfer,
                to,
                up_to,
            } => {
                if let Some(sent) = record.outbox.iter().find(|t| t.id == *transfer) {
                    // Already on its way: the same answer, nothing more sent.
                    let qty = sent.qty;
                    return Ok(Outcome::Moved {
                        sku: record.clone(),
                        qty,
                    });
                }
                let qty = up_to.get().min(record.available());
                if qty == 0 {
                    return Ok(Outcome::Moved {
                        sku: record.clone(),
                        qty: 0,
                    });
                }
                let entry = Movement::TransferOut
                    .entry(-(qty as i64), actor)
                    .reason(Some(format!("to {}", node_name(*to))))
                    .reference(Note::parse(transfer.as_str()).ok());
                let outgoing = Transfer {
                    id: transfer.clone(),
                    to: *to,
                    qty,
                    at_ms: now,
                };
                let sku = self.change(now, entry, |r| {
                    r.on_hand = r.on_hand.checked_sub(qty)?;
                    r.outbox.push(outgoing);
                    Some(())
                });
                Ok(Outcome::Moved { sku, qty })
            }
            Command::Receive { transfer, qty, .. } => {
                self.receive(now, actor, transfer, *qty, None)
            }
            Command::Delivered { transfer } => {
                if !record.outbox.iter().any(|t| t.id == *transfer) {
                    return Ok(Outcome::Moved {
                        sku: record.clone(),
                        qty: 0,
                    });
                }
                // Not a change of the counts: no ledger entry, no version.
                let record = self.record.as_mut().expect("read above");
                record.outbox.retain(|t| t.id != *transfer);
                self.changes.record = true;
                Ok(Outcome::Moved {
                    sku: record.clone(),
                    qty: 0,
                })
            }
            Command::SetReorder { policy } => {
                let record = self.record.as_mut().expect("read above");
                record.reorder = policy.clone();
                record.updated_at_ms = record.updated_at_ms.max(now);
                self.changes.record = true;
                Ok(Outcome::SkuSet {
                    sku: record.clone(),
                    created: false,
                })
            }
            Command::ConfirmReplenishment { id } => {
                self.replenishment(now, actor, id, RequestStatus::Confirmed, None)
            }
            Command::ReceiveReplenishment { id, qty } => {
                self.replenishment(now, actor, id, RequestStatus::Received, *qty)
            }
            Command::CancelReplenishment { id } => {
                self.replenishment(now, actor, id, RequestStatus::Cancelled, None)
            }
            Command::Allocate { channel, spec } => {
                if !record.whole() {
                    return Err(StockError::AllocationSplit);
                }
                let mut channels = record.channels.clone();
                channels
                    .set(channel, spec.as_ref(), record.available())
                    .map_err(|e| match e {
                        AllocationError::PoolShort { requested, pool } => {
                            StockError::PoolShort { requested, pool }
                        }
                        AllocationError::Percent(p) => StockError::AllocationInvalid {
                            reason: format!("percent is 1 to 100, not {p}"),
                        },
                        AllocationError::TooMany { max } => StockError::AllocationInvalid {
                            reason: format!("at most {max} channels have rules on one SKU"),
                        },
                    })?;
                if channels == record.channels {
                    return Ok(Outcome::SkuSet {
                        sku: record.clone(),
                        created: false,
                    });
                }
                // Not a movement of units, but every channel's number may
                // change: a versioned change with a ledger entry, so feeds
                // and the outbound sync see it and the ledger says why.
                let reason = match spec {
                    Some(AllocationSpec {
                        dedicated: Some(n), ..
                    }) => format!("allocate {} dedicated to {channel}", n.get()),
                    Some(_) => format!("allocation of {channel} set"),
                    None => format!("allocation of {channel} removed"),
                };
                let entry = Movement::Adjust.entry(0, actor).reason(Some(reason));
                let sku = self.change(now, entry, |r| {
                    r.channels = channels;
                    Some(())
                });
                Ok(Outcome::SkuSet {
                    sku,
                    created: false,
                })
            }
            Command::Restock {
                qty,
                reason,
                reference,
            } => {
                let on_hand = record.on_hand + qty.get();
                if on_hand > Units::MAX {
                    return Err(StockError::StockLevelTooHigh { max: Units::MAX });
                }
                let qty = qty.get() as i64;
                let reason = reason.as_ref().map(|n| n.to_string());
                let entry = Movement::Restock.entry(qty, actor).reason(reason);
                let sku = self.change(now, entry.reference(reference.clone()), |r| {
                    r.on_hand = on_hand;
                    Some(())
                });
                Ok(Outcome::Restocked { sku })
            }
            Command::Adjust {
                delta,
                reason,
                note,
                reference,
            } => {
                let committed = record.reserved + record.sold;
                let on_hand = record.on_hand as i128 + delta.get() as i128;
                if on_hand < committed as i128 {
                    return Err(StockError::AdjustmentBelowCommitted {
                        on_hand: record.on_hand,
                        delta: delta.get(),
                        reserved: record.reserved,
                        sold: record.sold,
                    });
                }
                if on_hand > Units::MAX as i128 {
                    return Err(StockError::StockLevelTooHigh { max: Units::MAX });
                }
                let reason = match note {
                    Some(note) => format!("{}: {note}", reason_name(*reason)),
                    None => reason_name(*reason).to_owned(),
                };
                let entry = Movement::Adjust
                    .entry(delta.get(), actor)
                    .reason(Some(reason))
                    .reference(reference.clone());
                let sku = self.change(now, entry, |r| {
                    r.on_hand = on_hand as u64;
                    Some(())
                });
                Ok(Outcome::Adjusted { sku })
            }
            Command::Reserve {
                hold,
                buyer,
                qty,
                channel,
            } => {
                let terms = Terms {
                    order: None,
                    channel: channel.as_ref(),
                    status: HoldStatus::Held,
                    hold_ms: record.settings.hold_seconds.as_ms(),
                };
                self.take(now, actor, hold, buyer, *qty, terms)
            }
            Command::Place { hold_for, .. }
                if record.settings.deduction == DeductionMode::AtPayment =>
            {
                let hold_seconds = hold_for.unwrap_or(record.settings.hold_seconds);
                Ok(Outcome::Deferred {
                    sku: record.clone(),
                    pay_by_ms: now + hold_seconds.as_ms(),
                })
            }
            Command::Place {
                hold,
                buyer,
                qty,
                order,
                hold_for,
                channel,
            } => {
                // A hold in hold mode, for as long as asked; a sale at once
                // for at-order placing.
                let terms = Terms {
                    order: Some(order),
                    channel: channel.as_ref(),
                    status: if record.settings.deduction == DeductionMode::Hold {
                        HoldStatus::Held
                    } else {
                        HoldStatus::Committed
                    },
                    hold_ms: hold_for.unwrap_or(record.settings.hold_seconds).as_ms(),
                };
                self.take(now, actor, hold, buyer, *qty, terms)
            }
            Command::Sell {
                hold,
                buyer,
                qty,
                order,
                channel,
            } => {
                // A sale in one step: an at-payment line being paid.
                let terms = Terms {
                    order: Some(order),
                    channel: channel.as_ref(),
                    status: HoldStatus::Committed,
                    hold_ms: record.settings.hold_seconds.as_ms(),
                };
                self.take(now, actor, hold, buyer, *qty, terms)
            }
            Command::Commit { hold } => self.resolve(now, actor, hold, HoldStatus::Committed),
            Command::Release { hold } => self.resolve(now, actor, hold, HoldStatus::Released),
            Command::Return { hold } => self.resolve(now, actor, hold, HoldStatus::Returned),
        }
    }

    fn setup(&mut self, now: u64, actor: &Actor, spec: &SetupSpec) -> Reply {
        let created = self.record.is_none();
        let current = self
            .record
            .clone()
            .unwrap_or_else(|| SkuRecord::empty(self.sku.clone(), now));
        let requested = spec.on_hand.get();
        if requested < current.reserved + current.sold {
            return Err(StockError::OnHandBelowCommitted {
                requested,
                reserved: current.reserved,
                sold: current.sold,
            });
        }
        let settings = Settings {
            low_stock_threshold: spec
                .low_stock_threshold
                .unwrap_or(current.settings.low_stock_threshold),
            per_buyer_limit: match spec.per_buyer_limit {
                LimitChange::Keep => current.settings.per_buyer_limit,
                LimitChange::Remove => None,
                LimitChange::Set(limit) => Some(limit),
            },
            hold_seconds: spec.hold_seconds.unwrap_or(current.settings.hold_seconds),
            deduction: spec.deduction.unwrap_or(current.settings.deduction),
            max_per_hold: spec.max_per_hold.unwrap_or(current.settings.max_per_hold),
        };
        let delta = requested as i64 - current.on_hand as i64;
        self.record = Some(current);
        let entry = Movement::Setup.entry(delta, actor).reason(Some(if created {
            "created".to_owned()
        } else {
            "updated".to_owned()
        }));
        let sku = self.change(now, entry, |r| {
            r.on_hand = requested;
            r.settings = settings;
            Some(())
        });
        Ok(Outcome::SkuSet { sku, created })
    }

    /// Adds a transfer's units (the request's key makes it once only).
    fn receive(
        &mut self,
        now: u64,
        actor: &Actor,
        transfer: &TransferId,
        qty: Units,
        settings: Option<&Settings>,
    ) -> Reply {
        let record = self.record.as_ref().ok_or(StockError::SkuNotFound)?;
        let on_hand = record.on_hand.saturating_add(qty.get());
        if on_hand > Units::MAX {
            return Err(StockError::StockLevelTooHigh { max: Units::MAX });
        }
        let entry = Movement::TransferIn
            .entry(qty.get() as i64, actor)
            .reference(Note::parse(transfer.as_str()).ok());
        let sku = self.change(now, entry, |r| {
            r.on_hand = on_hand;
            if let Some(settings) = settings {
                r.settings = *settings;
                r.bucket = true;
            }
            Some(())
        });
        Ok(Outcome::Moved {
            sku,
            qty: qty.get(),
        })
    }

    /// Takes `qty` units for a buyer as a new hold: `Held` (a reservation
    /// with an expiry) or `Committed` (a sale in one step). Both check
    /// availability and the purchase limit the same way.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        now: u64,
        actor: &Actor,
        id: &ReservationId,
        buyer: &BuyerId,
        qty: Quantity,
        terms: Terms<'_>,
    ) -> Reply {
        let Terms {
            order,
            channel,
            status,
            hold_ms,
        } = terms;
        let record = self.record.as_ref().ok_or(StockError::SkuNotFound)?;
        if let Some(existing) = self.holds.get(id) {
            // An order's own line, asked again after the SKU forgot the
            // answer (replays are kept 24 h): what it already has counts as
            // done, never as a refused line whose units are never given back.
            let own = order.is_some()
                && existing.order.as_ref() == order
                && existing.buyer == *buyer
                && existing.qty == qty;
            if !own {
                return Err(StockError::HoldIdTaken);
            }
            let (hold, sku) = (existing.clone(), record.clone());
            return match hold.status {
                HoldStatus::Held => Ok(Outcome::Reserved { hold, sku }),
                HoldStatus::Committed => Ok(Outcome::Sold { hold, sku }),
                hold_status => Err(StockError::HoldResolved {
                    hold_status,
                    attempted: status,
                }),
            };
        }
        let available = record.available();
        if qty.get() > available {
            return Err(StockError::InsufficientStock {
                requested: qty.get(),
                available,
            });
        }
        let sellable = record.sellable(channel);
        if qty.get() > sellable {
            return Err(StockError::ChannelShort {
                channel: channel
                    .map_or(super::allocation::STOREFRONT, |c| c.as_str())
                    .to_owned(),
                requested: qty.get(),
                sellable,
            });
        }
        if let Some(limit) = record.settings.per_buyer_limit {
            debug_assert!(self.bought.contains_key(buyer), "buyer tally prefetched");
            let held = self.held_by_buyer.get(buyer).copied().unwrap_or(0);
            let bought = self.bought(buyer);
            if held + bought + qty.get() > limit.get() {
                return Err(StockError::BuyerLimitExceeded {
                    limit: limit.get(),
                    held,
                    bought,
                    requested: qty.get(),
                });
            }
        }
        let sale = status == HoldStatus::Committed;
        let hold = Hold {
            id: id.clone(),
            buyer: buyer.clone(),
            qty,
            status,
            created_at_ms: now,
            expires_at_ms: now + hold_ms,
            resolved_at_ms: sale.then_some(now),
            order: order.cloned(),
            channel: channel.cloned(),
        };
        if sale {
            *self.bought.entry(buyer.clone()).or_insert(0) += qty.get();
            self.changes.bought.insert(buyer.clone());
        } else {
            self.track_live(&hold);
        }
        self.holds.insert(id.clone(), hold.clone());
        self.changes.holds.insert(id.clone());
        let movement = if sale {
            Movement::Sell
        } else {
            Movement::Reserve
        };
        let entry = movement.entry(qty.get() as i64, actor).hold(&hold);
        let sku = self.change(now, entry, |r| {
            r.channels.take(channel, qty.get())?;
            if sale {
                r.sold = r.sold.checked_add(qty.get())?;
            } else {
                r.reserved = r.reserved.checked_add(qty.get())?;
            }
            Some(())
        });
        Ok(if sale {
            Outcome::Sold { hold, sku }
        } else {
            Outcome::Reserved { hold, sku }
        })
    }

    /// Moves a hold to `to`: a live hold to committed or released, a
    /// committed one to returned. Asking again for the state it already
    /// reached is an idempotent success; any other state refuses.
    fn resolve(&mut self, now: u64, actor: &Actor, id: &ReservationId, to: HoldStatus) -> Reply {
        let record = self.record.as_ref().ok_or(StockError::SkuNotFound)?;
        let hold = self
            .holds
            .get(id)
            .filter(|h| h.may_resolve(actor, to))
            .ok_or(StockError::HoldNotFound)?
            .clone();
        let outcome = |hold: Hold, sku: SkuRecord, already: bool| match to {
            HoldStatus::Committed => Outcome::Committed { hold, sku, already },
            HoldStatus::Returned => Outcome::Returned { hold, sku, already },
            _ => Outcome::Released { hold, sku, already },
        };
        if hold.status == to {
            return Ok(outcome(hold, record.clone(), true));
        }
        let from = match to {
            HoldStatus::Returned => HoldStatus::Committed,
            _ => HoldStatus::Held,
        };
        if hold.status != from {
            return Err(StockError::HoldResolved {
                hold_status: hold.status,
                attempted: to,
            });
        }
        let qty = hold.qty.get();
        let hold = if from == HoldStatus::Held {
            self.finish(now, hold, to)
        } else {
            let mut hold = hold;
            hold.status = to;
            hold.resolved_at_ms = Some(now);
            self.holds.insert(hold.id.clone(), hold.clone());
            self.changes.holds.insert(hold.id.clone());
            hold
        };
        let bought = self.bought.entry(hold.buyer.clone()).or_insert(0);
        match to {
            HoldStatus::Committed => *bought = bought.saturating_add(qty),
            HoldStatus::Returned => *bought = bought.saturating_sub(qty),
            _ => {}
        }
        if matches!(to, HoldStatus::Committed | HoldStatus::Returned) {
            self.changes.bought.insert(hold.buyer.clone());
        }
        let entry = Movement::for_resolution(to)
            .entry(qty as i64, actor)
            .hold(&hold);
        let channel = hold.channel.clone();
        let sku = self.change(now, entry, |r| {
            match to {
                HoldStatus::Committed => {
                    r.reserved = r.reserved.checked_sub(qty)?;
                    r.sold = r.sold.checked_add(qty)?;
                }
                // A return is stock coming back: to the pool.
                HoldStatus::Returned => r.sold = r.sold.checked_sub(qty)?,
                _ => {
                    r.reserved = r.reserved.checked_sub(qty)?;
                    r.channels.give_back(channel.as_ref(), qty);
                }
            }
            Some(())
        });
        Ok(outcome(hold, sku, false))
    }

    /// Returns every hold whose time is up by `now` to available.
    fn expire_due(&mut self, now: u64) {
        while let Some((at, id)) = self.expiry.first().cloned() {
            if at > now {
                break;
            }
            let hold = self.holds[&id].clone();
            let hold = self.finish(now, hold, HoldStatus::Expired);
            let qty = hold.qty.get();
            let entry = Movement::Expire
                .entry(qty as i64, &Actor::System)
                .hold(&hold)
                .reason(Some("hold expired".to_owned()));
            let channel = hold.channel.clone();
            self.change(now, entry, |r| {
                r.reserved = r.reserved.checked_sub(qty)?;
                r.channels.give_back(channel.as_ref(), qty);
                Some(())
            });
        }
    }

    /// Takes a live hold out of the live indexes and stores it resolved.
    fn finish(&mut self, now: u64, mut hold: Hold, to: HoldStatus) -> Hold {
        debug_assert_eq!(hold.status, HoldStatus::Held);
        self.expiry.remove(&(hold.expires_at_ms, hold.id.clone()));
        self.live_units = self.live_units.saturating_sub(hold.qty.get());
        if let Some(held) = self.held_by_buyer.get_mut(&hold.buyer) {
            *held = held.saturating_sub(hold.qty.get());
            if *held == 0 {
                self.held_by_buyer.remove(&hold.buyer);
            }
        }
        hold.status = to;
        hold.resolved_at_ms = Some(now);
        self.holds.insert(hold.id.clone(), hold.clone());
        self.changes.holds.insert(hold.id.clone());
        hold
    }

    fn track_live(&mut self, hold: &Hold) {
        self.expiry.insert((hold.expires_at_ms, hold.id.clone()));
        let held = self.held_by_buyer.entry(hold.buyer.clone()).or_insert(0);
        *held = held.saturating_add(hold.qty.get());
        self.live_units = self.live_units.saturating_add(hold.qty.get());
    }

    /// Applies `edit` to the record, bumps the version, and writes the ledger
    /// entry with the resulting state. The one place a record changes.
    ///
    /// `edit` uses checked arithmetic and answers None when a count would
    /// leave its range: then nothing changes and the SKU is quarantined
    /// (the step's other changes are never saved; see [`Stock::step`]).
    fn change(
        &mut self,
        now: u64,
        entry: super::ledger::EntryDraft,
        edit: impl FnOnce(&mut SkuRecord) -> Option<()>,
    ) -> SkuRecord {
        let Some(record) = self.record.as_mut() else {
            self.broken.push("a change with no SKU record".into());
            return SkuRecord::empty(self.sku.clone(), now);
        };
        // Only the counts can fail; they are put back if they do (no copy
        // of the whole record on every change).
        let counts = (record.on_hand, record.reserved, record.sold);
        let (before, first) = (record.available(), record.version == 0);
        let moved = entry.qty().unsigned_abs();
        match entry.movement() {
            Movement::Reserve => record.velocity.taken.add(now, moved, RUSH_HALF_LIFE_MS),
            Movement::Sell => {
                record.velocity.taken.add(now, moved, RUSH_HALF_LIFE_MS);
                record.velocity.sold.add(now, moved, SALES_HALF_LIFE_MS);
            }
            Movement::Commit => record.velocity.sold.add(now, moved, SALES_HALF_LIFE_MS),
            _ => {}
        }
        if edit(record).is_none() {
            (record.on_hand, record.reserved, record.sold) = counts;
            self.broken.push(format!(
                "a {:?} would take a count out of range at version {}",
                entry.movement(),
                record.version
            ));
            return record.clone();
        }
        // Units that left with no channel (a loss, a lower count) come out
        // of the pool first, then the dedicated buckets.
        record.channels.fit(record.available());
        record.version += 1;
        record.updated_at_ms = now;
        let snapshot = record.clone();
        self.changes.record = true;
        let entry = entry.finish(self.tail.next_seq, now, &snapshot, &self.tail.last_hash);
        self.tail = Tail::after(Some(&entry));
        self.changes.ledger.push(entry);
        // A split SKU's crossings are its sums', not one object's.
        let whole = snapshot.whole();
        let threshold = snapshot.settings.low_stock_threshold.get();
        if let Some(kind) = crossing(before, snapshot.available(), threshold) {
            if whole && !first {
                self.changes.notices.push(Notice::stock(kind, &snapshot));
            }
        }
        snapshot
    }

    /// Makes a replenishment request if the policy asks for one: available
    /// and incoming at or below the reorder point, and none open (one
    /// request per crossing, not one per sale).
    fn reorder_check(&mut self, now: u64) {
        let Some(record) = self.record.as_mut() else {
            return;
        };
        let Some(policy) = record.reorder.clone() else {
            return;
        };
        let open = record.replenishments.iter().any(|r| r.status.is_open());
        let position = record.available() + record.incoming();
        if position > policy.reorder_point.get() {
            // Back above the point: the next crossing may ask again.
            if record.reorder_spent {
                record.reorder_spent = false;
                self.changes.record = true;
            }
            return;
        }
        if policy.mode == ReorderMode::Off || !record.whole() || open || record.reorder_spent {
            return;
        }
        let qty = reorder_qty(&policy, record.velocity.sold_micro_per_s(now));
        let status = match policy.mode {
            ReorderMode::Auto => RequestStatus::Confirmed,
            _ => RequestStatus::Requested,
        };
        // Named by its number, never reused (a version can repeat across
        // steps that change no count: a cancel, then a new request).
        record.requests_made += 1;
        record.reorder_spent = true;
        let request = Replenishment {
            id: Replenishment::id_for(record.sku.as_str(), record.requests_made),
            qty,
            status,
            created_at: now,
            updated_at: now,
            reason: format!(
                "available {} + incoming {} at or below the reorder point {}",
                record.available(),
                record.incoming(),
                policy.reorder_point.get()
            ),
            supplier: policy.supplier.clone(),
            received: 0,
        };
        record.replenishments.push(request.clone());
        trim_requests(&mut record.replenishments);
        self.changes.record = true;
        let record = record.clone();
        self.changes.notices.push(Notice::replenishment(
            NoticeKind::ReplenishmentRequested,
            &record,
            &request,
        ));
        if status == RequestStatus::Confirmed {
            self.changes.notices.push(Notice::replenishment(
                NoticeKind::ReplenishmentConfirmed,
                &record,
                &request,
            ));
        }
    }

    /// Moves a request to `to` (confirm, cancel) or receives it.
    fn replenishment(
        &mut self,
        now: u64,
        actor: &Actor,
        id: &str,
        to: RequestStatus,
        qty: Option<Quantity>,
    ) -> Reply {
        let record = self.record.as_ref().ok_or(StockError::SkuNotFound)?;
        let request = record
            .replenishments
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or(StockError::ReplenishmentNotFound)?;
        let answer = |sku: &SkuRecord, request: Replenishment| {
            Ok(Outcome::Replenishment {
                sku: sku.clone(),
                request,
            })
        };
        use RequestStatus::*;
        match (request.status, to) {
            // Asked again: the same answer, nothing changes.
            (from, to) if from == to => return answer(record, request),
            (Requested, Confirmed | Received | Cancelled) | (Confirmed, Received | Cancelled) => {}
            (from, _) => return Err(StockError::ReplenishmentClosed { status: from }),
        }
        let mut updated = request.clone();
        updated.status = to;
        updated.updated_at = now;
        let sku = if to == Received {
            let qty = qty.map_or(request.qty, Quantity::get);
            let on_hand = record.on_hand + qty;
            if on_hand > Units::MAX {
                return Err(StockError::StockLevelTooHigh { max: Units::MAX });
            }
            updated.received = qty;
            let entry = Movement::Restock
                .entry(qty as i64, actor)
                .reason(Some("replenishment received".into()))
                .reference(Note::parse(id).ok());
            let done = updated.clone();
            self.change(now, entry, move |r| {
                r.on_hand = on_hand;
                let slot = r.replenishments.iter_mut().find(|x| x.id == done.id)?;
                *slot = done;
                Some(())
            })
        } else {
            let record = self.record.as_mut().expect("read above");
            if let Some(slot) = record.replenishments.iter_mut().find(|x| x.id == id) {
                *slot = updated.clone();
            }
            record.updated_at_ms = record.updated_at_ms.max(now);
            self.changes.record = true;
            record.clone()
        };
        let kind = match to {
            Confirmed => NoticeKind::ReplenishmentConfirmed,
            Received => NoticeKind::ReplenishmentReceived,
            _ => NoticeKind::ReplenishmentCancelled,
        };
        if sku.whole() {
            self.changes
                .notices
                .push(Notice::replenishment(kind, &sku, &updated));
        }
        answer(&sku, updated)
    }

    /// The count invariants, in O(1): what every step is checked against.
    fn count_violations(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        if let Some(r) = &self.record {
            match r.reserved.checked_add(r.sold) {
                Some(committed) if committed <= r.on_hand => {}
                _ => wrong.push(format!(
                    "reserved {} + sold {} exceed on_hand {}",
                    r.reserved, r.sold, r.on_hand
                )),
            }
            if r.reserved != self.live_units {
                wrong.push(format!(
                    "reserved {} but live holds sum {}",
                    r.reserved, self.live_units
                ));
            }
            if r.on_hand > Units::MAX {
                wrong.push(format!("on_hand {} over the maximum", r.on_hand));
            }
            if r.channels.dedicated() > r.available() {
                wrong.push(format!(
                    "dedicated buckets hold {} of {} available",
                    r.channels.dedicated(),
                    r.available()
                ));
            }
        } else if self.live_units > 0 {
            wrong.push("holds exist on a SKU never set up".into());
        }
        wrong
    }

    /// Every invariant, as a list of what is wrong (empty when all hold):
    /// the counts, and the indexes against the holds (O(holds); on load
    /// and in the simulations).
    pub fn check_invariants(&self) -> Vec<String> {
        let mut wrong = self.count_violations();
        let live: u64 = self.live_holds().map(|h| h.qty.get()).sum();
        if live != self.live_units {
            wrong.push(format!(
                "live holds sum {live} but {} counted",
                self.live_units
            ));
        }
        let live_count = self
            .holds
            .values()
            .filter(|h| h.status == HoldStatus::Held)
            .count();
        if live_count != self.expiry.len() {
            wrong.push(format!(
                "{live_count} live holds but {} in the expiry index",
                self.expiry.len()
            ));
        }
        if let Some((at, _)) = self.expiry.first() {
            if *at <= self.clock_ms {
                wrong.push(format!(
                    "a hold due at {at} is still live at {}",
                    self.clock_ms
                ));
            }
        }
        let by_buyer: u64 = self.held_by_buyer.values().sum();
        if by_buyer != live {
            wrong.push(format!("per-buyer holds sum {by_buyer}, live holds {live}"));
        }
        wrong
    }
}

/// Keeps the open request and the newest closed ones.
fn trim_requests(requests: &mut Vec<Replenishment>) {
    while requests.len() > REQUESTS_KEPT {
        match requests.iter().position(|r| !r.status.is_open()) {
            Some(oldest_closed) => requests.remove(oldest_closed),
            None => break,
        };
    }
}

fn reason_name(reason: AdjustReason) -> &'static str {
    match reason {
        AdjustReason::Damaged => "damaged",
        AdjustReason::Lost => "lost",
        AdjustReason::Found => "found",
        AdjustReason::Recount => "recount",
        AdjustReason::Returned => "returned",
        AdjustReason::Correction => "correction",
    }
}

fn node_name(node: Node) -> String {
    match node {
        Node::Parent => "the parent".to_owned(),
        Node::Bucket(n) => format!("bucket {n}"),
    }
}
