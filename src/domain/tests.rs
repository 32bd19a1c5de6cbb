//! Table tests of the stock rules: each row is a script of requests against
//! one SKU and what the last one must answer, plus the counts afterwards.

use super::ledger::{Movement, Tail};
use super::stock::{
    Actor, Command, DeductionMode, HoldStatus, LimitChange, Outcome, Reply, Request, SetupSpec,
    Stock, StockError,
};
use super::types::*;

const T0: u64 = 1_000_000;

fn sku() -> SkuId {
    SkuId::parse("tee").unwrap()
}

fn hold_id(n: u8) -> ReservationId {
    ReservationId::from_random([n; 16])
}

fn buyer(name: &str) -> BuyerId {
    BuyerId::parse(name).unwrap()
}

fn q(n: u64) -> Quantity {
    Quantity::parse(n).unwrap()
}

fn setup(on_hand: u64) -> Command {
    Command::Setup(SetupSpec {
        on_hand: Units::parse(on_hand).unwrap(),
        low_stock_threshold: None,
        per_buyer_limit: LimitChange::Keep,
        hold_seconds: None,
        deduction: None,
        max_per_hold: None,
    })
}

fn setup_limited(on_hand: u64, limit: u64, hold_seconds: u64) -> Command {
    Command::Setup(SetupSpec {
        on_hand: Units::parse(on_hand).unwrap(),
        low_stock_threshold: Some(Units::parse(2).unwrap()),
        per_buyer_limit: LimitChange::Set(q(limit)),
        hold_seconds: Some(HoldSeconds::parse(hold_seconds).unwrap()),
        deduction: None,
        max_per_hold: None,
    })
}

fn setup_mode(on_hand: u64, mode: DeductionMode) -> Command {
    Command::Setup(SetupSpec {
        on_hand: Units::parse(on_hand).unwrap(),
        low_stock_threshold: None,
        per_buyer_limit: LimitChange::Keep,
        hold_seconds: None,
        deduction: Some(mode),
        max_per_hold: None,
    })
}

fn order_id() -> OrderId {
    OrderId::from_bytes([9; 16])
}

fn place(n: u8, who: &str, qty: u64) -> Command {
    Command::Place {
        hold: hold_id(n),
        buyer: buyer(who),
        qty: q(qty),
        order: order_id(),
        hold_for: None,
        channel: None,
    }
}

fn sell(n: u8, who: &str, qty: u64) -> Command {
    Command::Sell {
        hold: hold_id(n),
        buyer: buyer(who),
        qty: q(qty),
        order: order_id(),
        channel: None,
    }
}

fn give_back(n: u8) -> Command {
    Command::Return { hold: hold_id(n) }
}

fn reserve(n: u8, who: &str, qty: u64) -> Command {
    Command::Reserve {
        hold: hold_id(n),
        buyer: buyer(who),
        qty: q(qty),
        channel: None,
    }
}

fn commit(n: u8) -> Command {
    Command::Commit { hold: hold_id(n) }
}

fn release(n: u8) -> Command {
    Command::Release { hold: hold_id(n) }
}

fn restock(qty: u64) -> Command {
    Command::Restock {
        qty: q(qty),
        reason: None,
        reference: None,
    }
}

fn adjust(delta: i64) -> Command {
    Command::Adjust {
        delta: Delta::parse(delta).unwrap(),
        reason: AdjustReason::Damaged,
        note: None,
        reference: None,
    }
}

fn req(command: Command) -> Request {
    Request {
        key: None,
        fingerprint: String::new(),
        actor: Actor::Admin,
        command,
    }
}

fn keyed(key: &str, fingerprint: &str, command: Command) -> Request {
    Request {
        key: Some(IdempotencyKey::parse(key).unwrap()),
        fingerprint: fingerprint.to_owned(),
        ..req(command)
    }
}

/// A script step: (seconds after T0, request).
type Script = Vec<(u64, Request)>;

/// A table row: name, script, what the last request must answer, and
/// (on_hand, reserved, sold, available) afterwards.
type Case = (&'static str, Script, Want, (u64, u64, u64, u64));

/// Runs every step in memory, keeping all holds (no eviction: this tests the
/// rules, the simulation tests persistence). Returns the last reply.
fn run(script: Script) -> (Stock, Reply) {
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    let mut last = Err(StockError::SkuNotFound);
    for (seconds, request) in script {
        for b in stock.needs(std::slice::from_ref(&request)).buyers {
            stock.provide_bought(b, 0);
        }
        last = stock.step(T0 + seconds * 1000, &[request]).remove(0);
        assert_eq!(stock.check_invariants(), Vec::<String>::new());
    }
    (stock, last)
}

fn counts(stock: &Stock) -> (u64, u64, u64, u64) {
    let r = stock.record().expect("set up");
    (r.on_hand, r.reserved, r.sold, r.available())
}

/// Expected result of the script's last request.
enum Want {
    Done,
    Refused(StockError),
}

#[test]
fn operations_and_refusals() {
    use Want::*;
    let cases: Vec<Case> = vec![
        (
            "setup creates",
            vec![(0, req(setup(10)))],
            Done,
            (10, 0, 0, 10),
        ),
        (
            "setup updates on_hand",
            vec![(0, req(setup(10))), (1, req(setup(4)))],
            Done,
            (4, 0, 0, 4),
        ),
        (
            "setup below reserved + sold is refused",
            vec![
                (0, req(setup(10))),
                (0, req(reserve(1, "a", 3))),
                (0, req(reserve(2, "b", 3))),
                (0, req(commit(2))),
                (1, req(setup(5))),
            ],
            Refused(StockError::OnHandBelowCommitted {
                requested: 5,
                reserved: 3,
                sold: 3,
            }),
            (10, 3, 3, 4),
        ),
        (
            "restock adds",
            vec![(0, req(setup(1))), (0, req(restock(5)))],
            Done,
            (6, 0, 0, 6),
        ),
        (
            "restock past the maximum is refused",
            vec![(0, req(setup(Units::MAX))), (0, req(restock(1)))],
            Refused(StockError::StockLevelTooHigh { max: Units::MAX }),
            (Units::MAX, 0, 0, Units::MAX),
        ),
        (
            "adjust down",
            vec![(0, req(setup(5))), (0, req(adjust(-2)))],
            Done,
            (3, 0, 0, 3),
        ),
        (
            "adjust below committed is refused",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 4))),
                (0, req(adjust(-2))),
            ],
            Refused(StockError::AdjustmentBelowCommitted {
                on_hand: 5,
                delta: -2,
                reserved: 4,
                sold: 0,
            }),
            (5, 4, 0, 1),
        ),
        (
            "reserve holds",
            vec![(0, req(setup(5))), (0, req(reserve(1, "a", 2)))],
            Done,
            (5, 2, 0, 3),
        ),
        (
            "reserve more than available is refused",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 4))),
                (0, req(reserve(2, "b", 2))),
            ],
            Refused(StockError::InsufficientStock {
                requested: 2,
                available: 1,
            }),
            (5, 4, 0, 1),
        ),
        (
            "reserve on a SKU never set up is refused",
            vec![(0, req(reserve(1, "a", 1)))],
            Refused(StockError::SkuNotFound),
            (0, 0, 0, 0),
        ),
        (
            "the buyer limit counts holds",
            vec![
                (0, req(setup_limited(10, 3, 60))),
                (0, req(reserve(1, "a", 2))),
                (0, req(reserve(2, "a", 2))),
            ],
            Refused(StockError::BuyerLimitExceeded {
                limit: 3,
                held: 2,
                bought: 0,
                requested: 2,
            }),
            (10, 2, 0, 8),
        ),
        (
            "the buyer limit counts purchases",
            vec![
                (0, req(setup_limited(10, 3, 60))),
                (0, req(reserve(1, "a", 3))),
                (0, req(commit(1))),
                (0, req(reserve(2, "a", 1))),
            ],
            Refused(StockError::BuyerLimitExceeded {
                limit: 3,
                held: 0,
                bought: 3,
                requested: 1,
            }),
            (10, 0, 3, 7),
        ),
        (
            "the buyer limit is per buyer",
            vec![
                (0, req(setup_limited(10, 3, 60))),
                (0, req(reserve(1, "a", 3))),
                (0, req(reserve(2, "b", 3))),
            ],
            Done,
            (10, 6, 0, 4),
        ),
        (
            "released units no longer count against the limit",
            vec![
                (0, req(setup_limited(10, 3, 60))),
                (0, req(reserve(1, "a", 3))),
                (0, req(release(1))),
                (0, req(reserve(2, "a", 3))),
            ],
            Done,
            (10, 3, 0, 7),
        ),
        (
            "commit moves reserved to sold",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 2))),
                (1, req(commit(1))),
            ],
            Done,
            (5, 0, 2, 3),
        ),
        (
            "committing twice is an idempotent success",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 2))),
                (0, req(commit(1))),
                (0, req(commit(1))),
            ],
            Done,
            (5, 0, 2, 3),
        ),
        (
            "committing a released hold is refused",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 2))),
                (0, req(release(1))),
                (0, req(commit(1))),
            ],
            Refused(StockError::HoldResolved {
                hold_status: HoldStatus::Released,
                attempted: HoldStatus::Committed,
            }),
            (5, 0, 0, 5),
        ),
        (
            "committing an expired hold is refused",
            vec![
                (0, req(setup_limited(5, 5, 60))),
                (0, req(reserve(1, "a", 2))),
                (60, req(commit(1))),
            ],
            Refused(StockError::HoldResolved {
                hold_status: HoldStatus::Expired,
                attempted: HoldStatus::Committed,
            }),
            (5, 0, 0, 5),
        ),
        (
            "a hold is still good one second before expiry",
            vec![
                (0, req(setup_limited(5, 5, 60))),
                (0, req(reserve(1, "a", 2))),
                (59, req(commit(1))),
            ],
            Done,
            (5, 0, 2, 3),
        ),
        (
            "releasing a committed hold is refused",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 2))),
                (0, req(commit(1))),
                (0, req(release(1))),
            ],
            Refused(StockError::HoldResolved {
                hold_status: HoldStatus::Committed,
                attempted: HoldStatus::Released,
            }),
            (5, 0, 2, 3),
        ),
        (
            "releasing twice is an idempotent success",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 2))),
                (0, req(release(1))),
                (0, req(release(1))),
            ],
            Done,
            (5, 0, 0, 5),
        ),
        (
            "an unknown hold is not found",
            vec![(0, req(setup(5))), (0, req(commit(9)))],
            Refused(StockError::HoldNotFound),
            (5, 0, 0, 5),
        ),
        (
            "a hold id cannot be reused",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 1))),
                (0, req(reserve(1, "b", 1))),
            ],
            Refused(StockError::HoldIdTaken),
            (5, 1, 0, 4),
        ),
        (
            "expiry returns units at the start of the next step",
            vec![
                (0, req(setup_limited(5, 5, 10))),
                (0, req(reserve(1, "a", 4))),
                (10, req(reserve(2, "b", 5))),
            ],
            Done,
            (5, 5, 0, 0),
        ),
        (
            "an idempotent retry answers the same and changes nothing",
            vec![
                (0, req(setup(5))),
                (0, keyed("k1", "r", reserve(1, "a", 2))),
                (0, keyed("k1", "r", reserve(2, "a", 2))),
            ],
            Done,
            (5, 2, 0, 3),
        ),
        (
            "a reused key with another request is refused",
            vec![
                (0, req(setup(5))),
                (0, keyed("k1", "r-2", reserve(1, "a", 2))),
                (0, keyed("k1", "r-3", reserve(2, "a", 3))),
            ],
            Refused(StockError::IdempotencyKeyReused),
            (5, 2, 0, 3),
        ),
        (
            "a refusal is replayed too",
            vec![
                (0, req(setup(1))),
                (0, keyed("k1", "r", reserve(1, "a", 2))),
                (0, req(restock(5))),
                (0, keyed("k1", "r", reserve(2, "a", 2))),
            ],
            Refused(StockError::InsufficientStock {
                requested: 2,
                available: 1,
            }),
            (6, 0, 0, 6),
        ),
        (
            "placing in hold mode holds",
            vec![
                (0, req(setup_mode(5, DeductionMode::Hold))),
                (0, req(place(1, "a", 2))),
            ],
            Done,
            (5, 2, 0, 3),
        ),
        (
            "placing at order sells",
            vec![
                (0, req(setup_mode(5, DeductionMode::AtOrder))),
                (0, req(place(1, "a", 2))),
            ],
            Done,
            (5, 0, 2, 3),
        ),
        (
            "placing at payment takes nothing",
            vec![
                (0, req(setup_mode(3, DeductionMode::AtPayment))),
                (0, req(place(1, "a", 5))),
            ],
            Done,
            (3, 0, 0, 3),
        ),
        (
            "placing at order checks availability",
            vec![
                (0, req(setup_mode(4, DeductionMode::AtOrder))),
                (0, req(place(1, "a", 5))),
            ],
            Refused(StockError::InsufficientStock {
                requested: 5,
                available: 4,
            }),
            (4, 0, 0, 4),
        ),
        (
            "selling at payment can find it sold out",
            vec![
                (0, req(setup_mode(5, DeductionMode::AtPayment))),
                (0, req(reserve(1, "b", 4))),
                (0, req(sell(2, "a", 2))),
            ],
            Refused(StockError::InsufficientStock {
                requested: 2,
                available: 1,
            }),
            (5, 4, 0, 1),
        ),
        (
            "returning a sale gives the units back",
            vec![
                (0, req(setup(5))),
                (0, req(sell(1, "a", 2))),
                (0, req(give_back(1))),
            ],
            Done,
            (5, 0, 0, 5),
        ),
        (
            "returning twice changes nothing",
            vec![
                (0, req(setup(5))),
                (0, req(sell(1, "a", 2))),
                (0, req(give_back(1))),
                (0, req(give_back(1))),
            ],
            Done,
            (5, 0, 0, 5),
        ),
        (
            "a live hold cannot be returned",
            vec![
                (0, req(setup(5))),
                (0, req(reserve(1, "a", 2))),
                (0, req(give_back(1))),
            ],
            Refused(StockError::HoldResolved {
                hold_status: HoldStatus::Held,
                attempted: HoldStatus::Returned,
            }),
            (5, 2, 0, 3),
        ),
        (
            "returned units no longer count against the limit",
            vec![
                (0, req(setup_limited(10, 3, 60))),
                (0, req(sell(1, "a", 3))),
                (0, req(give_back(1))),
                (0, req(reserve(2, "a", 3))),
            ],
            Done,
            (10, 3, 0, 7),
        ),
    ];
    for (name, script, want, expected_counts) in cases {
        let (stock, last) = run(script);
        match (&want, &last) {
            (Want::Done, Ok(_)) => {}
            (Want::Refused(e), Err(got)) => assert_eq!(got, e, "{name}"),
            (_, got) => panic!("{name}: unexpected {got:?}"),
        }
        if stock.record().is_some() {
            assert_eq!(counts(&stock), expected_counts, "{name}");
        }
    }
}

#[test]
fn a_repeated_commit_reports_already() {
    let (_, last) = run(vec![
        (0, req(setup(5))),
        (0, req(reserve(1, "a", 2))),
        (0, req(commit(1))),
        (0, req(commit(1))),
    ]);
    assert!(
        matches!(last, Ok(Outcome::Committed { already: true, .. })),
        "{last:?}"
    );
}

#[test]
fn the_ledger_records_every_movement_with_its_resulting_state() {
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    let script = [
        (0, setup_limited(10, 10, 5)),
        (0, reserve(1, "a", 2)),
        (0, reserve(2, "b", 3)),
        (1, commit(1)),
        (2, restock(4)),
        (2, adjust(-1)),
    ];
    for (s, c) in script {
        let r = req(c);
        for b in stock.needs(std::slice::from_ref(&r)).buyers {
            stock.provide_bought(b, 0);
        }
        stock.step(T0 + s * 1000, &[r]);
    }
    stock.step(T0 + 5_000, &[]); // hold 2 expires
    let ledger = stock.take_changes().ledger;
    let movements: Vec<Movement> = ledger.iter().map(|e| e.movement).collect();
    use Movement::*;
    assert_eq!(
        movements,
        [Setup, Reserve, Reserve, Commit, Restock, Adjust, Expire]
    );
    let seqs: Vec<u64> = ledger.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    let last = ledger.last().unwrap();
    assert_eq!(
        (last.on_hand, last.reserved, last.sold, last.available),
        (13, 0, 2, 11)
    );
    assert_eq!(last.actor, "system");
    assert_eq!(last.hold, Some(hold_id(2)));
    assert_eq!(ledger[1].actor, "admin");
    assert_eq!(ledger[5].reason.as_deref(), Some("damaged"));
    assert_eq!(ledger[5].qty, -1);
}

#[test]
fn the_alarm_time_is_the_earliest_live_expiry() {
    let (mut stock, _) = run(vec![
        (0, req(setup_limited(10, 10, 30))),
        (0, req(reserve(1, "a", 1))),
        (10, req(reserve(2, "a", 1))),
    ]);
    assert_eq!(stock.next_expiry_ms(), Some(T0 + 30_000));
    stock.step(T0 + 30_000, &[]);
    assert_eq!(stock.next_expiry_ms(), Some(T0 + 40_000));
    stock.step(T0 + 40_000, &[]);
    assert_eq!(stock.next_expiry_ms(), None);
    assert_eq!(counts(&stock), (10, 0, 0, 10));
}

#[test]
fn an_order_in_review_holds_for_as_long_as_it_asks() {
    let review = |n: u8| Command::Place {
        hold: hold_id(n),
        buyer: buyer("a"),
        qty: q(1),
        order: order_id(),
        hold_for: Some(HoldSeconds::parse(600).unwrap()),
        channel: None,
    };
    let (mut stock, _) = run(vec![
        (0, req(setup_limited(10, 10, 30))),
        (0, req(place(1, "a", 1))),
        (0, req(review(2))),
    ]);
    assert_eq!(stock.next_expiry_ms(), Some(T0 + 30_000));
    stock.step(T0 + 30_000, &[]);
    assert_eq!(
        counts(&stock),
        (10, 1, 0, 9),
        "the review hold outlives the SKU's hold time"
    );
    assert_eq!(stock.next_expiry_ms(), Some(T0 + 600_000));
    stock.step(T0 + 600_000, &[]);
    assert_eq!(counts(&stock), (10, 0, 0, 10));
}

#[test]
fn time_never_runs_backwards() {
    let (mut stock, _) = run(vec![
        (0, req(setup_limited(10, 10, 30))),
        (0, req(reserve(1, "a", 1))),
    ]);
    // A clock that jumps back does not extend or shorten a hold.
    stock.step(T0 + 31_000, &[]);
    stock.step(T0, &[req(reserve(2, "a", 1))]);
    let hold = stock.hold(&hold_id(2)).unwrap();
    assert_eq!(hold.created_at_ms, T0 + 31_000);
}

#[test]
fn setup_keeps_settings_not_given() {
    let (stock, _) = run(vec![
        (0, req(setup_limited(10, 4, 30))),
        (1, req(setup(12))),
    ]);
    let settings = stock.record().unwrap().settings;
    assert_eq!(settings.per_buyer_limit, Some(q(4)));
    assert_eq!(settings.hold_seconds.get(), 30);
}

#[test]
fn a_batch_applies_each_request_on_its_own() {
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    stock.step(T0, &[req(setup(3))]);
    let batch: Vec<Request> = (1..=5).map(|n| req(reserve(n, "a", 1))).collect();
    let replies = stock.step(T0, &batch);
    let ok = replies.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3);
    assert!(matches!(
        replies[3],
        Err(StockError::InsufficientStock { .. })
    ));
    assert_eq!(counts(&stock), (3, 3, 0, 0));
}

#[test]
fn order_lines_carry_their_order_into_holds_and_the_ledger() {
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    stock.step(T0, &[req(setup(5))]);
    let request = Request {
        actor: Actor::Order(order_id()),
        ..req(place(1, "a", 2))
    };
    stock.step(T0, &[request]);
    assert_eq!(stock.hold(&hold_id(1)).unwrap().order, Some(order_id()));
    let ledger = stock.take_changes().ledger;
    let entry = ledger.last().unwrap();
    assert_eq!(entry.order, Some(order_id()));
    assert_eq!(entry.actor, format!("order:{}", order_id()));
}

fn as_actor(actor: Actor, command: Command) -> Request {
    Request {
        actor,
        ..req(command)
    }
}

fn by(who: &str, command: Command) -> Request {
    as_actor(Actor::Buyer(buyer(who)), command)
}

#[test]
fn buyers_may_release_only_their_own_holds_and_never_commit() {
    use Want::*;
    let not_found = || Refused(StockError::HoldNotFound);
    let cases: Vec<Case> = vec![
        (
            "a buyer releases their own hold",
            vec![
                (0, req(setup(10))),
                (0, by("a", reserve(1, "a", 2))),
                (1, by("a", release(1))),
            ],
            Done,
            (10, 0, 0, 10),
        ),
        (
            "another buyer's hold is not found",
            vec![
                (0, req(setup(10))),
                (0, by("a", reserve(1, "a", 2))),
                (1, by("b", release(1))),
            ],
            not_found(),
            (10, 2, 0, 8),
        ),
        (
            "a buyer cannot commit, even their own hold",
            vec![
                (0, req(setup(10))),
                (0, by("a", reserve(1, "a", 2))),
                (1, by("a", commit(1))),
            ],
            not_found(),
            (10, 2, 0, 8),
        ),
        (
            "a buyer cannot release their order's line",
            vec![
                (0, req(setup(10))),
                (0, req(place(1, "a", 2))),
                (1, by("a", release(1))),
            ],
            not_found(),
            (10, 2, 0, 8),
        ),
        (
            "an order cannot touch another order's hold",
            vec![
                (0, req(setup(10))),
                (0, req(place(1, "a", 2))),
                (
                    1,
                    as_actor(Actor::Order(OrderId::from_bytes([1; 16])), commit(1)),
                ),
            ],
            not_found(),
            (10, 2, 0, 8),
        ),
        (
            "an order commits its own line",
            vec![
                (0, req(setup(10))),
                (0, req(place(1, "a", 2))),
                (1, as_actor(Actor::Order(order_id()), commit(1))),
            ],
            Done,
            (10, 0, 2, 8),
        ),
        (
            "an admin commits any hold",
            vec![
                (0, req(setup(10))),
                (0, by("a", reserve(1, "a", 2))),
                (1, req(commit(1))),
            ],
            Done,
            (10, 0, 2, 8),
        ),
    ];
    check_cases(cases);
}

#[test]
fn one_hold_takes_at_most_max_per_hold() {
    use Want::*;
    let capped = |max: u64| {
        Command::Setup(SetupSpec {
            on_hand: Units::parse(100).unwrap(),
            low_stock_threshold: None,
            per_buyer_limit: LimitChange::Keep,
            hold_seconds: None,
            deduction: None,
            max_per_hold: Some(q(max)),
        })
    };
    let over = |max, requested| Refused(StockError::OverHoldMax { max, requested });
    let cases: Vec<Case> = vec![
        (
            "the default is 5",
            vec![(0, req(setup(100))), (0, req(reserve(1, "a", 5)))],
            Done,
            (100, 5, 0, 95),
        ),
        (
            "6 is over the default",
            vec![(0, req(setup(100))), (0, req(reserve(1, "a", 6)))],
            over(5, 6),
            (100, 0, 0, 100),
        ),
        (
            "a raised cap",
            vec![(0, req(capped(50))), (0, req(reserve(1, "a", 50)))],
            Done,
            (100, 50, 0, 50),
        ),
        (
            "a lowered cap",
            vec![(0, req(capped(1))), (0, req(reserve(1, "a", 2)))],
            over(1, 2),
            (100, 0, 0, 100),
        ),
        (
            "order lines too",
            vec![(0, req(capped(1))), (0, req(place(1, "a", 2)))],
            over(1, 2),
            (100, 0, 0, 100),
        ),
        (
            "sales too",
            vec![(0, req(capped(1))), (0, req(sell(1, "a", 2)))],
            over(1, 2),
            (100, 0, 0, 100),
        ),
    ];
    check_cases(cases);
}

/// Idempotency keys live in their sender's scope: one buyer's key is not
/// another's, and no client key reaches an order's saga keys.
#[test]
fn idempotency_keys_are_scoped_to_their_sender() {
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    let key = |k: &str| Some(IdempotencyKey::parse(k).unwrap());
    let mut step = |request: Request| {
        for b in stock.needs(std::slice::from_ref(&request)).buyers {
            stock.provide_bought(b, 0);
        }
        let reply = stock.step(T0, &[request]).remove(0);
        assert_eq!(stock.check_invariants(), Vec::<String>::new());
        reply
    };
    let _ = step(req(setup(10)));
    let a = step(Request {
        key: key("cart-1"),
        fingerprint: "a".into(),
        ..by("a", reserve(1, "a", 1))
    });
    let b = step(Request {
        key: key("cart-1"),
        fingerprint: "b".into(),
        ..by("b", reserve(2, "b", 1))
    });
    assert!(matches!(a, Ok(Outcome::Reserved { ref hold, .. }) if hold.buyer == buyer("a")));
    assert!(matches!(b, Ok(Outcome::Reserved { ref hold, .. }) if hold.buyer == buyer("b")));
    // A stranger sends the order's own saga key first…
    let order = order_id();
    let saga_key = format!("{order}/0/commit");
    let stranger = step(Request {
        key: key(&saga_key),
        fingerprint: "x".into(),
        ..by("x", release(3))
    });
    assert_eq!(stranger, Err(StockError::HoldNotFound));
    // …and the order's own call with that key still does its work.
    let _ = step(req(place(3, "c", 1)));
    let own = step(Request {
        key: key(&saga_key),
        fingerprint: "commit".into(),
        ..as_actor(Actor::Order(order), commit(3))
    });
    assert!(
        matches!(own, Ok(Outcome::Committed { already: false, .. })),
        "{own:?}"
    );
}

fn check_cases(cases: Vec<Case>) {
    for (name, script, want, expected) in cases {
        let (stock, last) = run(script);
        match (&want, &last) {
            (Want::Done, Ok(_)) => {}
            (Want::Refused(e), Err(got)) => assert_eq!(got, e, "{name}"),
            _ => panic!("{name}: got {last:?}"),
        }
        assert_eq!(counts(&stock), expected, "{name}");
    }
}

/// A SKU whose stored counts say `reserved` while its live holds say
/// otherwise, as a half-written save or a bug would leave it.
fn loaded_with(reserved: u64, sold: u64, on_hand: u64, live: &[(u8, u64)]) -> Stock {
    let (mut stock, _) = run(vec![(0, req(setup(on_hand)))]);
    let mut record = stock.record().unwrap().clone();
    for (n, qty) in live {
        stock.step(T0, &[req(reserve(*n, "ann", *qty))]);
    }
    let holds: Vec<_> = stock.live_holds().cloned().collect();
    record.reserved = reserved;
    record.sold = sold;
    record.on_hand = on_hand;
    Stock::load(
        sku(),
        Some(record),
        holds,
        Tail {
            next_seq: 10,
            last_hash: [7; 32],
        },
    )
}

#[test]
fn counts_that_do_not_add_up_on_load_quarantine_the_sku() {
    // reserved says 0, but a live hold of 3 exists: releasing it would
    // take reserved below zero (in release builds, wrap to 2^64 − 3 and
    // make `available` 0 or huge).
    let mut stock = loaded_with(0, 0, 10, &[(1, 3)]);
    assert!(!stock.quarantine().is_empty());
    let before = stock.record().cloned();
    let replies = stock.step(T0 + 1, &[req(release(1)), req(reserve(2, "bob", 1))]);
    assert_eq!(
        replies,
        vec![Err(StockError::Quarantined), Err(StockError::Quarantined)]
    );
    assert_eq!(stock.record().cloned(), before);
    assert!(stock.take_changes().is_empty());
    // sold over on_hand is caught the same way; available never wraps.
    let stock = loaded_with(0, 12, 10, &[]);
    assert!(stock.quarantine()[0].contains("exceed on_hand"));
    assert_eq!(stock.record().unwrap().available(), 0);
    // Keyed refusals are not remembered: a retry after the repair runs.
    let mut stock = loaded_with(0, 0, 10, &[(1, 3)]);
    stock.step(T0 + 1, &[keyed("k1", "f", reserve(2, "bob", 1))]);
    assert!(stock.take_changes().replays.is_empty());
}

#[test]
fn a_step_that_breaks_the_counts_quarantines_the_sku() {
    let (mut stock, _) = run(vec![(0, req(setup(10)))]);
    stock.step(T0, &[req(reserve(1, "ann", 2))]);
    stock.take_changes();
    assert!(stock.quarantine().is_empty());
    // A live hold the record never counted (a half-save's leftover row)
    // turns up: the next step finds the counts broken, and the shell,
    // seeing it, saves nothing of that step.
    let mut stray = stock.live_holds().next().unwrap().clone();
    stray.id = hold_id(9);
    stock.provide_hold(stray);
    let replies = stock.step(T0 + 1, &[req(release(1))]);
    assert!(replies[0].is_ok());
    assert!(
        stock.quarantine()[0].contains("live holds sum 2"),
        "{:?}",
        stock.quarantine()
    );
    assert_eq!(
        stock.step(T0 + 2, &[req(release(9))]),
        vec![Err(StockError::Quarantined)]
    );
}

#[test]
fn an_orders_own_line_asked_again_is_done_not_refused() {
    // The SKU forgot the idempotency answer (unkeyed here): placing the
    // same line again answers what it has, and moves nothing.
    let (mut stock, first) = run(vec![(0, req(setup(5))), (0, req(place(1, "ann", 2)))]);
    assert!(matches!(first, Ok(Outcome::Reserved { .. })));
    let version = stock.record().unwrap().version;
    let again = stock.step(T0 + 1, &[req(place(1, "ann", 2))]);
    assert!(
        matches!(again[0], Ok(Outcome::Reserved { .. })),
        "{again:?}"
    );
    assert_eq!(stock.record().unwrap().version, version);
    assert_eq!(counts(&stock), (5, 2, 0, 3));
    // Another buyer's or another quantity's use of the id is still refused.
    let other = stock.step(T0 + 1, &[req(place(1, "bob", 2)), req(place(1, "ann", 3))]);
    assert_eq!(
        other,
        vec![Err(StockError::HoldIdTaken), Err(StockError::HoldIdTaken)]
    );
    // Once released, asking again says so: the order gives nothing back
    // twice and holds nothing it does not have.
    stock.step(T0 + 2, &[req(release(1))]);
    let late = stock.step(T0 + 3, &[req(place(1, "ann", 2))]);
    assert!(
        matches!(late[0], Err(StockError::HoldResolved { .. })),
        "{late:?}"
    );
    assert_eq!(counts(&stock), (5, 0, 0, 5));
}

#[test]
fn the_audit_agrees_with_a_sound_sku_and_names_each_drift() {
    use super::audit::audit;
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    let mut ledger = Vec::new();
    let mut holds = std::collections::BTreeMap::new();
    let script = [
        req(setup(10)),
        req(reserve(1, "ann", 3)),
        req(reserve(2, "bob", 2)),
        req(commit(1)),
        req(release(2)),
        req(restock(4)),
        req(adjust(-1)),
        req(reserve(3, "cat", 1)),
    ];
    for (i, request) in script.into_iter().enumerate() {
        for b in stock.needs(std::slice::from_ref(&request)).buyers {
            stock.provide_bought(b, 0);
        }
        stock.step(T0 + i as u64, &[request]);
        let changes = stock.take_changes();
        ledger.extend(changes.ledger);
        for id in changes.holds {
            holds.insert(id.clone(), stock.hold(&id).unwrap().clone());
        }
    }
    let record = stock.record().unwrap().clone();
    let sound = audit(&record, ledger.clone(), holds.values().cloned());
    assert_eq!(sound.drift, Vec::<String>::new());
    assert_eq!((sound.ledger_entries, sound.live_holds), (8, 1));
    assert_eq!(sound.from_ledger, sound.record);
    // A lost ledger entry, a hold row that never landed, a record that
    // moved on its own: each is named.
    let mut gappy = ledger.clone();
    gappy.remove(3);
    assert!(audit(&record, gappy, holds.values().cloned()).drift[0].contains("gap"));
    let missing_hold = holds.values().filter(|h| h.id != hold_id(3)).cloned();
    let report = audit(&record, ledger.clone(), missing_hold);
    assert!(
        report.drift.iter().any(|d| d.contains("live holds sum 0")),
        "{report:?}"
    );
    let mut moved = record.clone();
    moved.sold += 1;
    let report = audit(&moved, ledger, holds.values().cloned());
    assert_eq!(report.drift.len(), 2, "{report:?}");
}

#[test]
fn a_hold_taken_and_committed_in_one_batch_loads_its_buyers_tally() {
    // Found by the simulation: the commit adds to the buyer's tally, so
    // the tally must be loaded even though the hold (and, with no limit,
    // the reservation itself) needs none; else the saved tally forgets
    // the buyer's earlier purchases.
    let (stock, _) = run(vec![(0, req(setup(10)))]);
    let plain = stock.needs(&[req(reserve(1, "ann", 2))]);
    assert!(plain.buyers.is_empty(), "a plain hold loads no tally");
    let batch = stock.needs(&[req(reserve(1, "ann", 2)), req(commit(1))]);
    assert_eq!(batch.buyers, vec![buyer("ann")]);
}

#[test]
fn crossings_make_merchant_notices_in_the_step_that_crossed() {
    use super::notice::NoticeKind::*;
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    let mut step = |at: u64, command: Command| {
        for b in stock.needs(&[req(command.clone())]).buyers {
            stock.provide_bought(b, 0);
        }
        stock.step(T0 + at, &[req(command)]);
        let kinds: Vec<_> = stock
            .take_changes()
            .notices
            .iter()
            .map(|n| n.kind)
            .collect();
        kinds
    };
    assert_eq!(
        step(0, setup_limited(5, 5, 60)),
        vec![],
        "creating is not a notice"
    );
    assert_eq!(
        step(1, reserve(1, "ann", 2)),
        vec![],
        "5 → 3 is above the threshold 2"
    );
    assert_eq!(step(2, reserve(2, "bob", 1)), vec![LowStock]);
    assert_eq!(step(3, reserve(3, "cat", 1)), vec![], "already low");
    assert_eq!(step(4, reserve(4, "dan", 1)), vec![SoldOut]);
    assert_eq!(step(5, release(4)), vec![BackInStock]);
    assert_eq!(step(6, restock(10)), vec![]);
    assert_eq!(step(7, adjust(-11)), vec![SoldOut]);
    // The holds lapse at the start of a later step: that brings it back.
    assert_eq!(step(70_000, restock(1)), vec![BackInStock]);
}

#[test]
fn the_ledger_is_a_hash_chain_that_names_the_first_changed_entry() {
    use super::ledger::{verify_chain, GENESIS};
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    let mut entries = Vec::new();
    for (at, command) in [
        (0, setup(10)),
        (1, reserve(1, "ann", 2)),
        (2, commit(1)),
        (3, restock(5)),
        (4, adjust(-1)),
    ] {
        for b in stock.needs(&[req(command.clone())]).buyers {
            stock.provide_bought(b, 0);
        }
        stock.step(T0 + at, &[req(command)]);
        entries.extend(stock.take_changes().ledger);
    }
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].prev_hash, "0".repeat(64));
    assert_eq!(entries[1].prev_hash, entries[0].hash);
    let good = verify_chain(&sku(), entries.clone(), None);
    assert!(good.ok, "{good:?}");
    assert_eq!((good.checked, good.head_seq), (5, 5));
    assert_eq!(good.head_hash, entries[4].hash);
    // Another SKU's name does not verify: the id is in every hash.
    let other = SkuId::parse("cap").unwrap();
    assert_eq!(
        verify_chain(&other, entries.clone(), None)
            .first_bad
            .unwrap()
            .seq,
        1
    );

    // One number changed in entry 3: named.
    let mut changed = entries.clone();
    changed[2].qty += 1;
    let report = verify_chain(&sku(), changed.clone(), None);
    assert!(!report.ok);
    assert_eq!(report.first_bad.as_ref().unwrap().seq, 3);
    assert!(report.first_bad.unwrap().reason.contains("changed"));
    assert_eq!(report.checked, 2);
    // Its hash recomputed to match: the next entry no longer chains.
    let prev = super::ledger::from_hex(&changed[2].prev_hash).unwrap();
    changed[2].hash = super::ledger::to_hex(&changed[2].digest(&sku(), &prev));
    assert_eq!(
        verify_chain(&sku(), changed, None).first_bad.unwrap().seq,
        4
    );
    // An entry dropped: the gap is named.
    let mut dropped = entries.clone();
    dropped.remove(1);
    assert_eq!(
        verify_chain(&sku(), dropped, None).first_bad.unwrap().seq,
        3
    );
    // From a later entry (older ones dropped by retention) it checks on,
    // and against an anchor (a checkpoint's hash) it must chain to it.
    assert!(verify_chain(&sku(), entries[2..].to_vec(), None).ok);
    let anchor = super::ledger::from_hex(&entries[1].hash);
    assert!(verify_chain(&sku(), entries[2..].to_vec(), anchor).ok);
    assert!(!verify_chain(&sku(), entries[2..].to_vec(), Some(GENESIS)).ok);
    // An entry from before the chain existed has no hashes.
    let mut legacy = entries;
    legacy[0].prev_hash.clear();
    assert!(verify_chain(&sku(), legacy, None)
        .first_bad
        .unwrap()
        .reason
        .contains("before the chain"));
}

#[test]
fn crossing_the_reorder_point_makes_one_request_that_is_confirmed_received_once() {
    use super::notice::NoticeKind::*;
    use super::replenish::{ReorderMode, ReorderPolicy, RequestStatus};
    let mut stock = Stock::load(sku(), None, vec![], Tail::EMPTY);
    let mut step = |at: u64, command: Command| {
        for b in stock.needs(&[req(command.clone())]).buyers {
            stock.provide_bought(b, 0);
        }
        let reply = stock.step(T0 + at * 1000, &[req(command)]).remove(0);
        let kinds: Vec<_> = stock
            .take_changes()
            .notices
            .iter()
            .map(|n| n.kind)
            .collect();
        (reply, kinds, stock.record().cloned().unwrap())
    };
    assert!(step(0, setup(20)).0.is_ok());
    let policy = |mode| ReorderPolicy {
        mode,
        reorder_point: Units::parse(8).unwrap(),
        reorder_qty: Some(q(30)),
        lead_time_s: 3_600,
        safety_stock: Units::parse(0).unwrap(),
        supplier: Note::parse("SUP-7").ok(),
    };
    let (_, kinds, _) = step(
        1,
        Command::SetReorder {
            policy: Some(policy(ReorderMode::Suggest)),
        },
    );
    assert_eq!(kinds, vec![], "20 available is above the point");
    let mut record = None;
    for (i, n) in (2..8).zip(1u8..) {
        record = Some(step(i, reserve(n, &format!("b{n}"), 2)).2);
    }
    // 20 − 12 = 8: at the point, one request; further sales make no more.
    let record = record.unwrap();
    assert_eq!(record.available(), 8);
    assert_eq!(record.replenishments.len(), 1);
    let request = record.replenishments[0].clone();
    assert_eq!(
        (request.status, request.qty),
        (RequestStatus::Requested, 30)
    );
    assert_eq!(record.incoming(), 0, "a suggestion is not incoming");
    let (_, kinds, record) = step(9, reserve(9, "b9", 2));
    assert_eq!(kinds, vec![], "one request per crossing, not one per sale");
    assert_eq!(record.replenishments.len(), 1);

    let confirm = Command::ConfirmReplenishment {
        id: request.id.clone(),
    };
    let (reply, kinds, record) = step(10, confirm.clone());
    assert!(
        matches!(reply, Ok(Outcome::Replenishment { .. })),
        "{reply:?}"
    );
    assert_eq!(kinds, vec![ReplenishmentConfirmed]);
    assert_eq!(record.incoming(), 30);
    assert_eq!(record.available(), 6, "incoming is never available");
    let (_, kinds, _) = step(11, confirm);
    assert_eq!(kinds, vec![], "confirming again changes nothing");

    let receive = Command::ReceiveReplenishment {
        id: request.id.clone(),
        qty: None,
    };
    let (_, kinds, record) = step(12, receive.clone());
    assert_eq!(kinds, vec![ReplenishmentReceived]);
    assert_eq!(
        (record.on_hand, record.available(), record.incoming()),
        (50, 36, 0)
    );
    let (_, kinds, again) = step(13, receive);
    assert_eq!(kinds, vec![]);
    assert_eq!(again.on_hand, 50, "received once");
    let cancel = Command::CancelReplenishment {
        id: request.id.clone(),
    };
    assert_eq!(
        step(14, cancel).0,
        Err(StockError::ReplenishmentClosed {
            status: RequestStatus::Received
        })
    );
    let unknown = Command::ConfirmReplenishment { id: "rp_x".into() };
    assert_eq!(step(15, unknown).0, Err(StockError::ReplenishmentNotFound));

    // Auto: below the point again, the request goes out confirmed at once.
    let auto = Command::SetReorder {
        policy: Some(policy(ReorderMode::Auto)),
    };
    assert!(step(16, auto).0.is_ok());
    let (_, kinds, record) = step(17, adjust(-30));
    assert_eq!(kinds, vec![ReplenishmentRequested, ReplenishmentConfirmed]);
    assert_eq!(record.incoming(), 30);
    assert_eq!(record.replenishments.len(), 2);

    // Cancelled below the point: not remade in the same step (it used to
    // come back under the same id, open for good), and nothing more until
    // stock is back above the point and crosses it again.
    let second = record.replenishments[1].clone();
    assert_ne!(second.id, request.id);
    let cancel = Command::CancelReplenishment {
        id: second.id.clone(),
    };
    let (_, kinds, record) = step(18, cancel);
    assert_eq!(kinds, vec![ReplenishmentCancelled]);
    assert_eq!(
        record.replenishments.len(),
        2,
        "{:?}",
        record.replenishments
    );
    assert_eq!(record.incoming(), 0);
    let (_, kinds, _) = step(19, reserve(20, "b20", 1));
    assert_eq!(kinds, vec![], "the same crossing asks once");
    let (_, _, record) = step(20, restock(40));
    assert!(record.available() > 8);
    let (_, kinds, record) = step(21, adjust(-40));
    assert_eq!(kinds, vec![ReplenishmentRequested, ReplenishmentConfirmed]);
    let ids: std::collections::HashSet<_> = record.replenishments.iter().map(|r| &r.id).collect();
    assert_eq!(
        ids.len(),
        record.replenishments.len(),
        "every request its own id"
    );
}
