//! Fuzzing on stable Rust with proptest: every parser that sees outside
//! input (ids, numbers, routes, queries, each request body, buyer sessions,
//! payment signatures, risk rules, viewer messages) and the core's step
//! against its invariants. Inputs are random text and bytes, JSON shaped
//! from the fields the bodies use, and valid samples mutated byte by byte.
//! A panic anywhere fails with the (shrunk) input that caused it.
//!
//! `FUZZ_SECONDS=600 cargo test --release --test fuzz -- --nocapture` runs
//! it for ten minutes and prints how many inputs it tried (the test line
//! runs it for `FUZZ_SECONDS`' default of 20). `FUZZ_MIN_INPUTS=10000000`
//! makes a run fail unless it tried that many.

use edgestock::api::routes::Route;
use edgestock::api::session::{sign_body, sign_session, verify_payment, verify_session, Claims};
use edgestock::api::wire::{self, parse_body};
use edgestock::domain::ledger::Tail;
use edgestock::domain::live::{FeedName, FeedState, ViewerMessage};
use edgestock::domain::risk::RuleSet;
use edgestock::domain::stock::{
    Actor, Command, DeductionMode, LimitChange, Request, SetupSpec, Stock,
};
use edgestock::domain::types::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Inputs tried, over every target.
static INPUTS: AtomicU64 = AtomicU64::new(0);

/// Runs `test` over `strategy` until `budget` is spent; returns the count.
fn fuzz<S: Strategy>(
    name: &str,
    budget: Duration,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let deadline = Instant::now() + budget;
    let mut seed = 0u64;
    let mut tried = 0u64;
    while Instant::now() < deadline {
        seed += 1;
        let config = Config {
            cases: 2_000,
            failure_persistence: None,
            // Rejections are not part of these strategies.
            max_global_rejects: 0,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(
            config,
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &seed_bytes(name, seed),
            ),
        );
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz target {name} failed (seed {seed}): {e}");
        }
        tried += 2_000;
    }
    INPUTS.fetch_add(tried, Ordering::Relaxed);
    println!("fuzz {name}: {tried} inputs, no panic");
}

fn seed_bytes(name: &str, seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    let base: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    let name_hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    bytes[..8].copy_from_slice(&base.to_le_bytes());
    bytes[8..16].copy_from_slice(&seed.to_le_bytes());
    bytes[16..24].copy_from_slice(&name_hash.to_le_bytes());
    bytes
}

/// Text of every kind: any Unicode, printable ASCII, the id alphabet, and
/// near-misses of valid ids.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        "[A-Za-z0-9._-]{0,70}",
        "[a-z]{1,8}:[A-Za-z0-9._:-]{0,70}",
        "h_[0-9a-f]{30,34}",
        "o_[0-9a-f]{30,34}",
        mutated(vec![
            "tee-1".into(),
            "h_0123456789abcdef0123456789abcdef".into(),
            "o_0123456789abcdef0123456789abcdef".into(),
            "room:live-1".into(),
            "sku:tee-1".into(),
            "order:o_0123456789abcdef0123456789abcdef".into(),
        ]),
    ]
}

/// A sample with a few bytes flipped, inserted, removed, or cut off.
fn mutated(samples: Vec<String>) -> impl Strategy<Value = String> {
    let n = samples.len();
    (
        0..n,
        prop::collection::vec((any::<u8>(), any::<u16>(), any::<u8>()), 1..6),
    )
        .prop_map(move |(i, edits)| {
            String::from_utf8_lossy(&mutate(samples[i].as_bytes(), &edits)).into_owned()
        })
}

fn mutate(sample: &[u8], edits: &[(u8, u16, u8)]) -> Vec<u8> {
    let mut bytes = sample.to_vec();
    for (op, at, byte) in edits {
        let at = if bytes.is_empty() {
            0
        } else {
            *at as usize % bytes.len()
        };
        match op % 4 {
            0 if !bytes.is_empty() => bytes[at] = *byte,
            1 => bytes.insert(at, *byte),
            2 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

const KEYS: &[&str] = &[
    "on_hand",
    "low_stock_threshold",
    "per_buyer_limit",
    "hold_seconds",
    "deduction",
    "max_per_hold",
    "qty",
    "buyer",
    "reason",
    "reference",
    "delta",
    "note",
    "title",
    "items",
    "sku",
    "channel",
    "lines",
    "room",
    "payment_ref",
    "amount",
    "carrier",
    "tracking_number",
    "restock",
    "ttl_s",
    "device",
    "account_created",
    "order",
    "type",
    "versions",
    "rules",
    "id",
    "action",
    "check",
    "subject",
    "max",
    "window_s",
    "review_hold_s",
    "rooms",
];

/// JSON shaped like the bodies: their field names, values of every type
/// and at every edge.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..1_000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
        prop::sample::select(vec![
            "hold",
            "at_order",
            "at_payment",
            "damaged",
            "douyin",
            "resume",
            "deny",
            "review",
            "velocity",
            "buyer",
            "tee-1",
            "",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(KEYS.to_vec()).prop_map(String::from),
                        text()
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Request bodies: shaped JSON, mutated valid bodies, and raw bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let samples: Vec<String> = [
        json!({"on_hand": 10, "hold_seconds": 60, "deduction": "at_order", "per_buyer_limit": 2}),
        json!({"qty": 2, "buyer": "viewer-1"}),
        json!({"qty": 3, "reason": "po", "reference": "PO-1"}),
        json!({"delta": -2, "reason": "damaged", "note": "box"}),
        json!({"title": "live", "items": [{"sku": "tee-1", "title": "Tee"}]}),
        json!({"buyer": "b", "channel": "douyin", "lines": [{"sku": "a", "qty": 1}], "room": "r"}),
        json!({"payment_ref": "wx-1", "amount": 100}),
        json!({"carrier": "SF", "tracking_number": "1"}),
        json!({"restock": true, "reason": "x"}),
        json!({"type": "resume", "versions": {"tee-1": 3}}),
        serde_json::to_value(RuleSet::defaults()).unwrap(),
    ]
    .iter()
    .map(Value::to_string)
    .collect();
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => mutated(samples).prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

macro_rules! ids_round_trip {
    ($raw:expr, $($ty:ty),*) => {$(
        if let Ok(id) = <$ty>::parse($raw) {
            prop_assert_eq!(<$ty>::parse(&id.to_string()).ok(), Some(id));
        }
    )*};
}

fn budget() -> Duration {
    let total: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // Eight targets share the time.
    Duration::from_millis(total * 1000 / 8)
}

#[test]
fn every_parser_and_the_core_survive_any_input() {
    let budget = budget();

    fuzz(
        "ids and numbers",
        budget,
        (text(), any::<u64>(), any::<i64>()),
        |(raw, n, d)| {
            ids_round_trip!(
                &raw,
                SkuId,
                RoomId,
                Channel,
                BuyerId,
                ReservationId,
                OrderId,
                IdempotencyKey,
                Note
            );
            let _ = FeedName::parse(&raw);
            for m in [n, n % 2_000_000_000_000, n % 100_000] {
                if let Ok(q) = Quantity::parse(m) {
                    prop_assert_eq!(q.get(), m);
                }
                if let Ok(u) = Units::parse(m) {
                    prop_assert_eq!(u.get(), m);
                }
                let _ = HoldSeconds::parse(m);
            }
            if let Ok(delta) = Delta::parse(d) {
                prop_assert_eq!(delta.get(), d);
            }
            Ok(())
        },
    );

    let segment = prop_oneof![
        prop::sample::select(vec![
            "api",
            "skus",
            "orders",
            "reservations",
            "commit",
            "restock",
            "adjustments",
            "ledger",
            "audit",
            "holds",
            "live",
            "rooms",
            "buyers",
            "risk",
            "rules",
            "reviews",
            "pay",
            "cancel",
            "ship",
            "deliver",
            "refund",
            "approve",
            "reject",
            "dev",
            "health",
        ])
        .prop_map(String::from),
        text(),
    ];
    let path = prop::collection::vec(segment, 0..7).prop_map(|s| format!("/{}", s.join("/")));
    let method = prop::sample::select(vec![
        "GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "get", "",
    ]);
    fuzz(
        "routes and queries",
        budget,
        (method, prop_oneof![path, text()], text()),
        |(m, p, q)| {
            if let Ok(route) = Route::parse(m, &p) {
                let _ = route.access();
            }
            if let Ok((_, limit)) = wire::parse_page(&q) {
                prop_assert!((1..=1000).contains(&limit));
            }
            Ok(())
        },
    );

    fuzz("request bodies", budget, body(), |bytes| {
        let hold = ReservationId::from_random([1; 16]);
        let buyer = BuyerId::parse("b").unwrap();
        if let Ok(b) = parse_body::<wire::SetupBody>(&bytes) {
            let _ = b.into_command();
        }
        if let Ok(b) = parse_body::<wire::ReserveBody>(&bytes) {
            let _ = b.into_command(hold, buyer, None);
        }
        if let Ok(b) = parse_body::<wire::RestockBody>(&bytes) {
            let _ = b.into_command();
        }
        if let Ok(b) = parse_body::<wire::AdjustBody>(&bytes) {
            let _ = b.into_command();
        }
        if let Ok(b) = parse_body::<wire::RoomBody>(&bytes) {
            let _ = b.into_setup();
        }
        if let Ok(b) = parse_body::<wire::CreateOrderBody>(&bytes) {
            if let Ok(lines) = b.merged_lines() {
                prop_assert!(!lines.is_empty());
            }
        }
        if let Ok(b) = parse_body::<wire::PayBody>(&bytes) {
            let _ = b.into_intent();
        }
        if let Ok(b) = parse_body::<wire::ShipBody>(&bytes) {
            let _ = b.into_change();
        }
        let _ = parse_body::<wire::CancelBody>(&bytes);
        let _ = parse_body::<wire::RefundBody>(&bytes);
        let _ = parse_body::<wire::DeliverBody>(&bytes);
        let _ = parse_body::<wire::DevSessionBody>(&bytes);
        let _ = parse_body::<wire::DevPaymentBody>(&bytes);
        Ok(())
    });

    let secret: &[u8] = b"fuzz-secret";
    let claims = Claims {
        sub: BuyerId::parse("viewer-1").unwrap(),
        iat: 1_000,
        exp: 2_000,
        device: Some("d1".into()),
        account_created: Some(5),
        channel: None,
    };
    let token = sign_session(&claims, secret);
    assert!(
        verify_session(&token, &[secret], 1_500).is_ok(),
        "the sample verifies"
    );
    let header = sign_body(1_500, b"{}", secret);
    assert!(verify_payment(&header, b"{}", &[secret], 1_500).is_ok());
    fuzz(
        "sessions and signatures",
        budget,
        (
            prop_oneof![text(), mutated(vec![token.clone(), header.clone()])],
            body(),
            any::<u32>(),
        ),
        |(raw, bytes, at)| {
            let now = 1_000 + u64::from(at % 2_000);
            if let Ok(got) = verify_session(&raw, &[secret], now) {
                // Anything that verifies was signed by us: the sample.
                prop_assert_eq!(got.sub, claims.sub.clone());
            }
            if verify_payment(&raw, &bytes, &[secret], now).is_ok() {
                prop_assert_eq!(&bytes[..], b"{}");
            }
            Ok(())
        },
    );

    fuzz("risk rules", budget, body(), |bytes| {
        if let Ok(rules) = RuleSet::parse(&bytes, 7) {
            prop_assert_eq!(rules.version, 7);
            // What was accepted reads back the same.
            let again = RuleSet::parse(&serde_json::to_vec(&rules).unwrap(), 7);
            prop_assert!(
                again.is_ok(),
                "{} read back as {:?}",
                serde_json::to_string(&rules).unwrap(),
                again.err()
            );
        }
        Ok(())
    });

    let feed = FeedName::parse("sku:tee-1").unwrap();
    let mut state = FeedState::default();
    let mut record_state = Stock::load(SkuId::parse("tee-1").unwrap(), None, vec![], Tail::EMPTY);
    record_state.step(1, &[setup_request(5)]);
    state.publish(edgestock::domain::event::Event::stock(
        record_state.record().unwrap(),
    ));
    fuzz("viewer messages", budget, body(), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(ViewerMessage::Resume { versions }) = serde_json::from_str::<ViewerMessage>(&text)
        {
            prop_assert!(
                !state.resume(&feed, &versions).is_empty() || versions.values().all(|v| *v >= 1)
            );
        }
        Ok(())
    });

    // The core: random sequences of requests, in random batches, with the
    // clock jumping; the invariants hold after every step.
    let op = (0u8..12, 0u8..6, 0u8..4, 1u64..8, -5i64..6, 0u64..200_000);
    fuzz(
        "the core's step",
        budget / 2,
        prop::collection::vec(op, 1..60),
        |ops| {
            let mut stock = Stock::load(SkuId::parse("fuzz").unwrap(), None, vec![], Tail::EMPTY);
            let mut now = 1_000_000u64;
            for chunk in ops.chunks(4) {
                let requests: Vec<Request> = chunk.iter().map(|o| request(*o)).collect();
                // What the whole step needs, as the shell asks for it
                // (store::run): a setup in the batch may add a limit.
                for b in stock.needs(&requests).buyers {
                    stock.provide_bought(b, 0);
                }
                now += chunk[0].5;
                stock.step(now, &requests);
                stock.take_changes();
                let wrong = stock.check_invariants();
                prop_assert!(wrong.is_empty(), "{:?}", wrong);
                prop_assert!(stock.quarantine().is_empty());
            }
            INPUTS.fetch_add(ops.len() as u64, Ordering::Relaxed);
            Ok(())
        },
    );

    let total = INPUTS.load(Ordering::Relaxed);
    println!("fuzz: {total} inputs in all, no panic");
    if let Some(min) = std::env::var("FUZZ_MIN_INPUTS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        assert!(total >= min, "only {total} inputs tried, {min} asked");
    }
}

fn setup_request(on_hand: u64) -> Request {
    Request {
        key: None,
        fingerprint: String::new(),
        actor: Actor::Admin,
        command: Command::Setup(SetupSpec {
            on_hand: Units::parse(on_hand).unwrap(),
            low_stock_threshold: None,
            per_buyer_limit: LimitChange::Set(Quantity::parse(6).unwrap()),
            hold_seconds: Some(HoldSeconds::parse(30).unwrap()),
            deduction: None,
            max_per_hold: None,
        }),
    }
}

fn request((kind, hold_byte, buyer, qty, delta, _): (u8, u8, u8, u64, i64, u64)) -> Request {
    let hold = ReservationId::from_random([hold_byte; 16]);
    let buyer = BuyerId::parse(&format!("b{buyer}")).unwrap();
    // A buyer releasing (their own hold, or another's: refused), else the
    // merchant.
    let actor = if kind == 7 && buyer.as_str() == "b1" {
        Actor::Buyer(buyer.clone())
    } else {
        Actor::Admin
    };
    let qty = Quantity::parse(qty).unwrap();
    let order = OrderId::from_bytes([7; 16]);
    let command = match kind {
        0 => return setup_request(qty.get() * 3),
        1..=3 => Command::Reserve {
            hold,
            buyer,
            qty,
            channel: None,
        },
        4 => Command::Place {
            hold,
            buyer,
            qty,
            order,
            hold_for: None,
            channel: None,
        },
        5 => Command::Sell {
            hold,
            buyer,
            qty,
            order,
            channel: None,
        },
        6 => Command::Commit { hold },
        7 => Command::Release { hold },
        8 => Command::Return { hold },
        9 => Command::Restock {
            qty,
            reason: None,
            reference: None,
        },
        10 => Command::Adjust {
            delta: Delta::parse(if delta == 0 { 1 } else { delta }).unwrap(),
            reason: AdjustReason::Recount,
            note: None,
            reference: None,
        },
        _ => Command::Setup(SetupSpec {
            on_hand: Units::parse(qty.get()).unwrap(),
            low_stock_threshold: None,
            per_buyer_limit: LimitChange::Keep,
            hold_seconds: None,
            deduction: Some(
                [
                    DeductionMode::Hold,
                    DeductionMode::AtOrder,
                    DeductionMode::AtPayment,
                ][hold_byte as usize % 3],
            ),
            max_per_hold: None,
        }),
    };
    Request {
        key: (kind % 2 == 0)
            .then(|| IdempotencyKey::parse(&format!("k{kind}-{hold_byte}")).unwrap()),
        fingerprint: format!("{kind}"),
        actor,
        command,
    }
}
