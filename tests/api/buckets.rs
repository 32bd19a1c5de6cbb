//! A hot SKU split into stock buckets (分桶库存), against the real runtime:
//! one object per bucket, the SKU's own object lending and calling units
//! back, every buyer served by one bucket.

use crate::app::{unique, App};
use edgestock::domain::buckets;
use edgestock::domain::types::BuyerId;
use futures::future::join_all;
use serde_json::json;

pub async fn a_split_sku_sells_exactly_its_units_under_concurrent_load(app: App) {
    let sku = unique("split");
    app.given_sku(
        &sku,
        json!({"on_hand": 120, "per_buyer_limit": 2, "hold_seconds": 600}),
    )
    .await;
    let split = app.admin_post(&sku, "split", json!({"buckets": 4})).await;
    assert_eq!(split.status, 200, "{:?}", split.body);
    assert_eq!(split.body["buckets"], json!(4));
    assert_eq!(split.body["on_hand"], json!(120), "{}", split.body);
    assert_eq!(split.body["available"], json!(120), "{}", split.body);
    // Another count only after merging back; one bucket is no split.
    app.admin_post(&sku, "split", json!({"buckets": 8}))
        .await
        .assert_problem(409, "split-change");
    app.admin_post(&sku, "split", json!({"buckets": 1}))
        .await
        .assert_problem(422, "invalid-body");
    assert_eq!(app.counts(&sku).await, (120, 0, 0, 120));

    // The purchase limit holds across the split: one bucket per buyer.
    let greedy = unique("greedy");
    for _ in 0..2 {
        assert_eq!(app.reserve(&sku, 1, &greedy).await.status, 201);
    }
    app.reserve(&sku, 1, &greedy)
        .await
        .assert_problem(409, "buyer-limit-exceeded");

    // The rush: 80 more buyers want 2 units each, one at a time, all at
    // once: 160 asks for the 118 units left.
    let rush = unique("rush");
    let answers = join_all((0..80).map(|i| {
        let (app, sku, buyer) = (app.clone(), sku.clone(), format!("{rush}-{i}"));
        async move {
            let mut got = Vec::new();
            for n in 0..2 {
                let key = format!("{buyer}-{n}");
                let reply = app.reserve_keyed(&sku, 1, &buyer, Some(&key)).await;
                got.push((buyer.clone(), reply));
            }
            got
        }
    }))
    .await;
    let mut held = Vec::new();
    for (buyer, reply) in answers.into_iter().flatten() {
        if reply.status == 201 {
            let id = reply.body["id"].as_str().unwrap().to_owned();
            // Each hold is in its buyer's bucket, and its id says which.
            let bucket = buckets::bucket_for(&BuyerId::parse(&buyer).unwrap(), 4);
            let parsed = edgestock::domain::types::ReservationId::parse(&id).unwrap();
            assert_eq!(buckets::bucket_of_hold(&parsed, 4), Some(bucket), "{id}");
            held.push(id);
        } else {
            reply.assert_problem(409, "insufficient-stock");
        }
    }
    assert_eq!(held.len(), 118, "every unit sold, none twice");
    assert_eq!(app.counts(&sku).await, (120, 120, 0, 0));

    // Holds are committed and released through the SKU's URL (its object
    // passes each to the bucket the id names).
    for id in &held[..10] {
        let committed = app.commit(&sku, id).await;
        assert_eq!(committed.status, 200, "{:?}", committed.body);
    }
    for id in &held[10..15] {
        assert_eq!(app.release(&sku, id).await.status, 200);
        assert_eq!(
            app.get_hold(&sku, id).await.body["status"],
            json!("released")
        );
    }
    assert_eq!(app.counts(&sku).await, (120, 105, 10, 5));
    // The released units are in a few buckets; new buyers land in any
    // bucket, which borrows them (the SKU's object calls them back from the
    // others): exactly five more are sold, and then no more.
    let late = unique("late");
    let mut sold = 0;
    for i in 0..9 {
        let reply = app.reserve(&sku, 1, &format!("{late}-{i}")).await;
        match reply.status {
            201 => sold += 1,
            _ => reply.assert_problem(409, "insufficient-stock"),
        }
    }
    assert_eq!(sold, 5, "the last units of the sell-out are all sold");
    assert_eq!(app.counts(&sku).await, (120, 110, 10, 0));

    // An order on a split SKU: its line goes to the buyer's bucket too.
    let restocked = app.admin_post(&sku, "restock", json!({"qty": 6})).await;
    assert_eq!(restocked.status, 200, "{:?}", restocked.body);
    let order_buyer = unique("orderer");
    let order = app.given_order(&order_buyer, &[(&sku, 2)]).await;
    assert_eq!(app.counts(&sku).await, (126, 112, 10, 4));
    let cancelled = app.order_action(&order, "cancel", json!({})).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(app.counts(&sku).await, (126, 110, 10, 6));

    // The rush is over: every bucket's available comes home. With a
    // per-buyer limit the buyers keep their buckets.
    let merged = app.admin_post(&sku, "split", json!({"buckets": 0})).await;
    assert_eq!(merged.status, 200, "{:?}", merged.body);
    assert_eq!(merged.body["buckets"], json!(4));
    assert_eq!(app.counts(&sku).await, (126, 110, 10, 6));
    // The SKU's own object now has every available unit: its own counts
    // say so in its ledger's last entry.
    let ledger = app.ledger(&sku).await;
    let last = ledger.last().expect("the parent's ledger");
    assert_eq!(last["available"], json!(6), "{last}");
    assert_eq!(app.audit(&sku).await["ok"], json!(true));

    // A setup of a split SKU sets the SKU's on_hand, not one object's, and
    // its settings reach every bucket: the limit rises to 3.
    let reset = app
        .put_sku(&sku, json!({"on_hand": 130, "per_buyer_limit": 3}))
        .await;
    assert_eq!(reset.status, 200, "{:?}", reset.body);
    assert_eq!(reset.body["on_hand"], json!(130), "{}", reset.body);
    assert_eq!(reset.body["buckets"], json!(4));
    assert_eq!(app.counts(&sku).await, (130, 110, 10, 10));
    assert_eq!(app.reserve(&sku, 1, &greedy).await.status, 201);
    app.reserve(&sku, 1, &greedy)
        .await
        .assert_problem(409, "buyer-limit-exceeded");
    // Below what is held and sold: refused, nothing changed.
    app.put_sku(&sku, json!({"on_hand": 100}))
        .await
        .assert_problem(409, "on-hand-below-committed");
    assert_eq!(app.counts(&sku).await, (130, 111, 10, 9));
}

pub async fn a_split_sku_stays_split_and_merging_back_brings_units_home(app: App) {
    let sku = unique("unsplit");
    app.given_sku(&sku, json!({"on_hand": 40, "max_per_hold": 20}))
        .await;
    let split = app.admin_post(&sku, "split", json!({"buckets": 3})).await;
    assert_eq!(split.status, 200, "{:?}", split.body);
    let mut held = Vec::new();
    for i in 0..12 {
        let reply = app.reserve(&sku, 2, &format!("{sku}-b{i}")).await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        held.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.counts(&sku).await, (40, 24, 0, 16));
    let merged = app.admin_post(&sku, "split", json!({"buckets": 0})).await;
    assert_eq!(merged.status, 200, "{:?}", merged.body);
    assert_eq!(merged.body["buckets"], json!(3), "{}", merged.body);
    assert_eq!(merged.body["available"], json!(16), "{}", merged.body);
    // The buckets keep their holds and sales, and the sums count them.
    assert_eq!(app.commit(&sku, &held[0]).await.status, 200);
    assert_eq!(app.counts(&sku).await, (40, 22, 2, 16));
    // Units sold after the merge come from home, through the buckets.
    assert_eq!(app.reserve(&sku, 16, "after").await.status, 201);
    app.reserve(&sku, 1, "after-2")
        .await
        .assert_problem(409, "insufficient-stock");
    // It stays split: another count is refused, nothing changes.
    app.admin_post(&sku, "split", json!({"buckets": 5}))
        .await
        .assert_problem(409, "split-change");
    assert_eq!(app.counts(&sku).await, (40, 38, 2, 0));
}

pub async fn a_limited_sku_splits_only_before_it_sells(app: App) {
    let sku = unique("late-split");
    app.given_sku(&sku, json!({"on_hand": 10, "per_buyer_limit": 1}))
        .await;
    assert_eq!(app.reserve(&sku, 1, "early").await.status, 201);
    app.admin_post(&sku, "split", json!({"buckets": 4}))
        .await
        .assert_problem(409, "split-refused");
    assert_eq!(app.get_sku_now(&sku).await.body.get("buckets"), None);
    // The early buyer's limit holds: the SKU was not split under them.
    app.reserve(&sku, 1, "early")
        .await
        .assert_problem(409, "buyer-limit-exceeded");
}
