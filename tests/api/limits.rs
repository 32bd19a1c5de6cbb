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
    let buyer = unique("eager");
    let key = |i: usize| format!("{sku}-{i}");
    // A window may end under a slow run; then the next one is used.
    for _ in 0..3 {
        let before = app.counts(&sku).await;
        let window_end = next_window().await;
        let replies: Vec<Reply> = stream::iter(0..BUYER_LIMIT + 5)
            .map(|i| {
                let (app, sku, key) = (app.clone(), sku.clone(), key(i));
                let buyer = buyer.clone();
                async move { app.reserve_keyed(&sku, 1, &buyer, Some(&key)).await }
            })
            .buffered(8)
            .collect()
            .await;
        let first_reply = replies[0].clone();
        let replayed = app.reserve_keyed(&sku, 1, &buyer, Some(&key(0))).await;
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
        let held = replies.iter().filter(|r| r.status == 201).count();
        assert_eq!(held, BUYER_LIMIT, "{:?}", replies.last());
        for refused in replies.iter().filter(|r| r.status != 201) {
            refused.assert_problem(429, "rate-limited");
            assert_eq!(refused.header("Retry-After"), Some("10"));
            assert_eq!(refused.body["scope"], json!("buyer"));
        }
        assert_eq!(after.1, before.1 + BUYER_LIMIT as u64);
        // A retry of an attempt already made is answered as before; a new
        // attempt, keyed or not, is refused and changes nothing.
        assert_eq!((replayed.status, &replayed.body), (201, &first_reply.body));
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
