//! Idempotent retries and a stampede, against one SKU object each.

use crate::app::{unique, App};
use futures::future::join_all;
use serde_json::json;

pub async fn a_retry_with_the_same_key_returns_the_same_answer(app: App) {
    let sku = unique("retry");
    app.given_sku(&sku, json!({"on_hand": 10, "max_per_hold": 10}))
        .await;
    let key = unique("key");
    let first = app.reserve_keyed(&sku, 2, &app.viewer, Some(&key)).await;
    let again = app.reserve_keyed(&sku, 2, &app.viewer, Some(&key)).await;
    assert_eq!(first.status, 201);
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(app.counts(&sku).await, (10, 2, 0, 8));
    // Refusals are replayed too, even once the stock is there.
    let greedy = unique("key");
    app.reserve_keyed(&sku, 9, &app.viewer, Some(&greedy))
        .await
        .assert_problem(409, "insufficient-stock");
    app.admin_post(&sku, "restock", json!({"qty": 10})).await;
    app.reserve_keyed(&sku, 9, &app.viewer, Some(&greedy))
        .await
        .assert_problem(409, "insufficient-stock");
    // Admin writes are idempotent as well.
    let restock_key = unique("key");
    for _ in 0..3 {
        let mut call = crate::app::Call {
            method: reqwest::Method::POST,
            path: format!("/api/skus/{sku}/restock"),
            body: Some(r#"{"qty": 5}"#.into()),
            headers: vec![app.bearer(), ("Idempotency-Key", restock_key.clone())],
        };
        call.headers
            .push(("Content-Type", "application/json".into()));
        assert_eq!(app.send(call).await.status, 200);
    }
    assert_eq!(app.counts(&sku).await, (25, 2, 0, 23));
    let reserves = app
        .ledger(&sku)
        .await
        .iter()
        .filter(|e| e["movement"] == json!("reserve"))
        .count();
    assert_eq!(reserves, 1);
}

pub async fn a_reused_key_with_another_body_is_refused(app: App) {
    let sku = unique("reuse");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    let key = unique("key");
    assert_eq!(
        app.reserve_keyed(&sku, 1, &app.viewer, Some(&key))
            .await
            .status,
        201
    );
    app.reserve_keyed(&sku, 2, &app.viewer, Some(&key))
        .await
        .assert_problem(422, "idempotency-key-reused");
    // Keys are the sender's own: another buyer's same key is another
    // request, never an answer about (or a block on) the first buyer's.
    let theirs = app.reserve_keyed(&sku, 1, "w", Some(&key)).await;
    assert_eq!((theirs.status, &theirs.body["buyer"]), (201, &json!("w")));
    assert_eq!(app.counts(&sku).await, (10, 2, 0, 8));
}

pub async fn concurrent_retries_apply_once(app: App) {
    let sku = unique("dupes");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    let key = unique("key");
    let replies =
        join_all((0..25).map(|_| app.reserve_keyed(&sku, 3, &app.viewer, Some(&key)))).await;
    let ids: std::collections::HashSet<_> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{:?}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one hold for one key");
    assert_eq!(app.counts(&sku).await, (10, 3, 0, 7));
    let id = ids.into_iter().next().unwrap();
    let commits = join_all((0..10).map(|_| app.commit(&sku, &id))).await;
    assert!(commits.iter().all(|r| r.status == 200));
    assert_eq!(app.counts(&sku).await, (10, 0, 3, 7));
}

pub async fn a_stampede_of_500_on_100_units_sells_exactly_100(app: App) {
    let sku = unique("stampede");
    app.given_sku(&sku, json!({"on_hand": 100})).await;
    let replies = join_all((0..500).map(|i| {
        let app = app.clone();
        let sku = sku.clone();
        // Each with its own key, so a request the dev proxy drops is retried.
        let key = format!("{sku}-{i}");
        async move {
            app.reserve_keyed(&sku, 1, &format!("viewer-{i}"), Some(&key))
                .await
        }
    }))
    .await;
    let won = replies.iter().filter(|r| r.status == 201).count();
    let lost: Vec<_> = replies.iter().filter(|r| r.status != 201).collect();
    assert_eq!(won, 100);
    assert_eq!(lost.len(), 400);
    for r in &lost {
        r.assert_problem(409, "insufficient-stock");
    }
    let ids: std::collections::HashSet<_> = replies
        .iter()
        .filter_map(|r| r.body["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 100);
    assert_eq!(app.counts(&sku).await, (100, 100, 0, 0));
    let ledger = app.ledger(&sku).await;
    let reserves = ledger
        .iter()
        .filter(|e| e["movement"] == json!("reserve"))
        .count();
    assert_eq!(reserves, 100);
    assert_eq!(ledger.len(), 101);
    // The ledger's running state never oversold.
    assert!(ledger.iter().all(|e| e["reserved"].as_u64() <= Some(100)));
}
