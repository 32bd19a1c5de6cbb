//! Abuse limits: reservation and order attempts per buyer and per client
//! address, counted by the runtime's rate-limiting binding as `wrangler dev`
//! simulates it (fixed 10 s windows aligned on the epoch, which is what lets
//! a test start at a window's edge and count exactly).

use crate::app::{now_ms, unique, unique_address, App, Call, Reply};
use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::json;

const BUYER_LIMIT: usize = 100;
const ADDRESS_LIMIT: usize = 2000;

/// Sleeps until just after the next 10 s window starts; returns that
/// window's end (ms).
async fn next_window() -> u64 {
    let now = now_ms();
    let start = (now / 10_000 + 1) * 10_000;
    tokio::time::sleep(std::time::Duration::from_millis(start - now + 50)).await;
    start + 10_000
}

pub async fn a_buyer_is_limited_and_a_retry_is_not_a_new_attempt(app: App) {
    let sku = unique("limited");
    app.given_sku(&sku, json!({"on_hand": 1000})).await;
    let empty = unique("limited-empty");
    app.given_sku(&empty, json!({"on_hand": 0})).await;
    let buyer = unique("eager");
    // A window may end under a slow run; then the next one is used.
    for _ in 0..3 {
        let before = app.counts(&sku).await;
        let window_end = next_window().await;
        // One hold, then attempts at a sold-out SKU (refused, so they
        // hold nothing and the hold cap stays out of it).
        let first_key = unique("first");
        let first = app.reserve_keyed(&sku, 1, &buyer, Some(&first_key)).await;
        let replies: Vec<Reply> = stream::iter(1..BUYER_LIMIT + 5)
            .map(|_| {
                let (app, sku, buyer) = (app.clone(), empty.clone(), buyer.clone());
                async move { app.reserve_keyed(&sku, 1, &buyer, Some(&unique("k"))).await }
            })
            .buffered(8)
            .collect()
            .await;
        let replayed = app.reserve_keyed(&sku, 1, &buyer, Some(&first_key)).await;
        let fresh = app
            .reserve_keyed(&sku, 1, &buyer, Some(&unique("new")))
            .await;
        let unkeyed = app.reserve(&sku, 1, &buyer).await;
        let after = app.counts(&sku).await;
        // An admin is the merchant's own backend: never limited.
        let admin = app
            .send(Call {
                method: Method::POST,
                path: format!("/api/skus/{sku}/reservations"),
                body: Some(json!({"qty": 1, "buyer": buyer}).to_string()),
                headers: vec![app.bearer(), ("Content-Type", "application/json".into())],
            })
            .await;
        if now_ms() >= window_end {
            continue;
        }
        assert_eq!(first.status, 201, "{:?}", first.body);
        let counted = replies.iter().filter(|r| r.status == 409).count();
        assert_eq!(counted + 1, BUYER_LIMIT, "{:?}", replies.last());
        for refused in replies.iter().filter(|r| r.status != 409) {
            refused.assert_problem(429, "rate-limited");
            assert_eq!(refused.header("Retry-After"), Some("10"));
            assert_eq!(refused.body["scope"], json!("buyer"));
        }
        assert_eq!(after.1, before.1 + 1);
        // A retry of an attempt already made is answered as before; a new
        // attempt, keyed or not, is refused and changes nothing.
        assert_eq!((replayed.status, &replayed.body), (201, &first.body));
        fresh.assert_problem(429, "rate-limited");
        unkeyed.assert_problem(429, "rate-limited");
        assert_eq!(admin.status, 201, "{:?}", admin.body);
        return;
    }
    panic!("no 10 s window was long enough for the run");
}

pub async fn an_order_retry_over_the_limit_gets_its_order(app: App) {
    let sku = unique("limited-order");
    app.given_sku(&sku, json!({"on_hand": 1000})).await;
    let buyer = unique("orderer");
    for _ in 0..3 {
        let window_end = next_window().await;
        let first_key = unique("order");
        let placed = app
            .create_order(&buyer, &[(&sku, 1)], Some(&first_key))
            .await;
        let _: Vec<Reply> = stream::iter(0..BUYER_LIMIT)
            .map(|_| {
                let (app, sku, buyer) = (app.clone(), sku.clone(), buyer.clone());
                // Invalid (qty 0): an attempt all the same, and cheap.
                // Keyed only so a request the dev proxy drops is resent.
                async move { app.reserve_keyed(&sku, 0, &buyer, Some(&unique("k"))).await }
            })
            .buffered(8)
            .collect()
            .await;
        let before = app.counts(&sku).await;
        let refused = app
            .create_order(&buyer, &[(&sku, 1)], Some(&unique("order")))
            .await;
        let retried = app
            .create_order(&buyer, &[(&sku, 1)], Some(&first_key))
            .await;
        let after = app.counts(&sku).await;
        if now_ms() >= window_end {
            continue;
        }
        assert_eq!(placed.status, 201, "{:?}", placed.body);
        refused.assert_problem(429, "rate-limited");
        assert_eq!(before, after, "a refused order holds nothing");
        assert_eq!(retried.status, 201, "{:?}", retried.body);
        assert_eq!(retried.body["id"], placed.body["id"]);
        return;
    }
    panic!("no 10 s window was long enough for the run");
}

pub async fn an_address_is_limited_generously(app: App) {
    let sku = unique("crowd");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    for _ in 0..3 {
        let address = unique_address();
        let app = App {
            address: address.clone(),
            ..app.clone()
        };
        let window_end = next_window().await;
        // 2,000 viewers behind one carrier NAT, each trying once (qty 0:
        // refused as invalid, but an attempt all the same, and cheap).
        let replies: Vec<(u16, serde_json::Value)> = stream::iter(0..ADDRESS_LIMIT)
            .map(|i| {
                let (app, sku) = (app.clone(), sku.clone());
                // Keyed only so a request the dev proxy drops is resent
                // (a resent one may count twice, hence the slack below).
                let key = unique("k");
                async move {
                    let reply = app
                        .reserve_keyed(&sku, 0, &format!("viewer-{i}"), Some(&key))
                        .await;
                    (reply.status, reply.body["scope"].clone())
                }
            })
            .buffered(64)
            .collect()
            .await;
        let over = app.reserve(&sku, 1, "one-more").await;
        let elsewhere = App {
            address: unique_address(),
            ..app.clone()
        }
        .reserve(&sku, 1, "one-more")
        .await;
        if now_ms() >= window_end {
            continue;
        }
        let counted = replies.iter().filter(|(s, _)| *s == 422).count();
        assert!(
            counted >= ADDRESS_LIMIT - 20,
            "{counted} of {ADDRESS_LIMIT} let through"
        );
        let mut limited = replies.iter().filter(|(s, _)| *s != 422);
        assert!(limited.all(|(s, scope)| *s == 429 && *scope == json!("address")));
        over.assert_problem(429, "rate-limited");
        assert_eq!(over.body["scope"], json!("address"));
        assert_eq!(elsewhere.status, 201, "another address is not limited");
        assert_eq!(app.counts(&sku).await, (10, 1, 0, 9));
        return;
    }
    panic!("no 10 s window was long enough for the run");
}

const HOLD_CAP: usize = 20;

async fn live_holds_of(app: &App, skus: &[String], buyer: &str) -> usize {
    let mut n = 0;
    for sku in skus {
        let reply = app
            .with(
                Method::GET,
                format!("/api/skus/{sku}/holds"),
                vec![app.bearer()],
            )
            .await;
        n += reply.body["holds"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["buyer"] == json!(buyer))
            .count();
    }
    n
}

pub async fn a_buyer_holds_at_most_the_cap_across_skus(app: App) {
    let skus: Vec<String> = (0..2).map(|_| unique("cap")).collect();
    for sku in &skus {
        app.given_sku(sku, json!({"on_hand": 100})).await;
    }
    let buyer = unique("collector");
    let mut holds = Vec::new();
    for i in 0..HOLD_CAP {
        let reply = app.reserve(&skus[i % 2], 1, &buyer).await;
        assert_eq!(reply.status, 201, "hold {i}: {:?}", reply.body);
        holds.push((
            skus[i % 2].clone(),
            reply.body["id"].as_str().unwrap().to_owned(),
        ));
        // Reports land after each reply; give them a moment.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // At the cap, on either SKU: a 409 that names the cap, and no hold.
    for sku in &skus {
        let over = app.reserve(sku, 1, &buyer).await;
        over.assert_problem(409, "hold-cap-exceeded");
        assert_eq!(over.body["max"], json!(HOLD_CAP));
    }
    assert_eq!(live_holds_of(&app, &skus, &buyer).await, HOLD_CAP);
    // Another buyer is not affected.
    assert_eq!(app.reserve(&skus[0], 1, &unique("other")).await.status, 201);
    // Releasing one frees its slot.
    let (sku, hold) = &holds[3];
    assert_eq!(app.release_as(&buyer, sku, hold).await.status, 200);
    let again = app.reserve(&skus[1], 1, &buyer).await;
    assert_eq!(again.status, 201, "{:?}", again.body);
    assert_eq!(live_holds_of(&app, &skus, &buyer).await, HOLD_CAP);
}

pub async fn a_burst_past_the_hold_cap_is_given_back(app: App) {
    let skus: Vec<String> = (0..3).map(|_| unique("burst-cap")).collect();
    for sku in &skus {
        app.given_sku(sku, json!({"on_hand": 100})).await;
    }
    let buyer = unique("burster");
    // All at once, before the edge has seen this buyer near the cap.
    let replies: Vec<Reply> = stream::iter(0..HOLD_CAP + 8)
        .map(|i| {
            let (app, sku, buyer) = (app.clone(), skus[i % 3].clone(), buyer.clone());
            async move { app.reserve_keyed(&sku, 1, &buyer, Some(&unique("b"))).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(replies.iter().all(|r| [201, 409].contains(&r.status)));
    // The holds past the cap are given back within moments.
    let mut live = usize::MAX;
    for _ in 0..50 {
        live = live_holds_of(&app, &skus, &buyer).await;
        if live <= HOLD_CAP {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(live, HOLD_CAP, "live holds after the burst");
    let reserved: u64 = {
        let mut n = 0;
        for sku in &skus {
            n += app.counts(sku).await.1;
        }
        n
    };
    assert_eq!(reserved, HOLD_CAP as u64, "units held match the live holds");
}
