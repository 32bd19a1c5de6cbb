//! The SKU's stock operations over HTTP.

use crate::app::{now_ms, unique, App, Call};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

pub async fn a_sku_is_set_up_and_read_back(app: App) {
    let sku = unique("setup");
    let body = app
        .given_sku(&sku, json!({"on_hand": 12, "low_stock_threshold": 3, "per_buyer_limit": 2, "hold_seconds": 120}))
        .await;
    assert_eq!(body["sku"], json!(sku));
    let read = app.get_sku(&sku).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.content_type, "application/json");
    for (field, value) in [
        ("on_hand", json!(12)),
        ("reserved", json!(0)),
        ("sold", json!(0)),
        ("available", json!(12)),
        ("version", json!(1)),
        ("low_stock_threshold", json!(3)),
        ("per_buyer_limit", json!(2)),
        ("hold_seconds", json!(120)),
        ("low_stock", json!(false)),
    ] {
        assert_eq!(read.body[field], value, "{field} in {}", read.body);
    }
    // Updating keeps settings not given and bumps the version.
    let updated = app.given_sku(&sku, json!({"on_hand": 3})).await;
    assert_eq!(updated["hold_seconds"], json!(120));
    assert_eq!(updated["version"], json!(2));
    assert_eq!(updated["low_stock"], json!(true));
}

pub async fn a_sku_never_set_up_is_not_found(app: App) {
    let reply = app.get_sku(&unique("ghost")).await;
    reply.assert_problem(404, "sku-not-found");
    let reply = app.reserve(&unique("ghost"), 1, "v1").await;
    reply.assert_problem(404, "sku-not-found");
}

pub async fn reserve_then_commit_moves_units_to_sold(app: App) {
    let sku = unique("commit");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    let before = now_ms();
    let held = app.reserve(&sku, 3, "viewer-1").await;
    assert_eq!(held.status, 201, "{:?}", held.body);
    let id = held.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        held.header("location"),
        Some(format!("/api/skus/{sku}/reservations/{id}").as_str())
    );
    assert_eq!(held.body["sku"], json!(sku));
    assert_eq!(held.body["qty"], json!(3));
    assert_eq!(held.body["buyer"], json!("viewer-1"));
    assert_eq!(held.body["status"], json!("held"));
    assert_eq!(held.body["available"], json!(7));
    let expires = held.body["expires_at"].as_u64().expect("expires_at");
    assert!(
        expires >= before + 299_000 && expires <= now_ms() + 301_000,
        "default hold is 300 s"
    );
    assert_eq!(app.counts(&sku).await, (10, 3, 0, 7));

    let committed = app.commit(&sku, &id).await;
    assert_eq!(committed.status, 200, "{:?}", committed.body);
    assert_eq!(committed.body["status"], json!("committed"));
    assert_eq!(app.counts(&sku).await, (10, 0, 3, 7));
    // Committing again is an idempotent success that changes nothing.
    let again = app.commit(&sku, &id).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["status"], json!("committed"));
    assert_eq!(app.counts(&sku).await, (10, 0, 3, 7));
    let read = app.get_hold(&sku, &id).await;
    assert_eq!(read.body["status"], json!("committed"));
    let movements: Vec<_> = app
        .ledger(&sku)
        .await
        .iter()
        .map(|e| e["movement"].clone())
        .collect();
    assert_eq!(
        movements,
        [json!("setup"), json!("reserve"), json!("commit")]
    );
}

pub async fn release_returns_units_and_a_second_release_changes_nothing(app: App) {
    let sku = unique("release");
    app.given_sku(&sku, json!({"on_hand": 5})).await;
    let id = app.reserve(&sku, 5, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.counts(&sku).await, (5, 5, 0, 0));
    app.reserve(&sku, 1, "w")
        .await
        .assert_problem(409, "insufficient-stock");
    let released = app.release(&sku, &id).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert_eq!(released.body["status"], json!("released"));
    assert_eq!(released.body["available"], json!(5));
    assert_eq!(app.release(&sku, &id).await.status, 200);
    assert_eq!(app.counts(&sku).await, (5, 0, 0, 5));
    assert_eq!(
        app.get_hold(&sku, &id).await.body["status"],
        json!("released")
    );
}

pub async fn a_resolved_hold_refuses_the_other_resolution(app: App) {
    let sku = unique("resolved");
    app.given_sku(&sku, json!({"on_hand": 5})).await;
    let a = app.reserve(&sku, 1, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.reserve(&sku, 1, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.commit(&sku, &a).await;
    app.release(&sku, &b).await;
    let refused = app.release(&sku, &a).await;
    refused.assert_problem(409, "hold-resolved");
    assert_eq!(refused.body["hold_status"], json!("committed"));
    app.commit(&sku, &b)
        .await
        .assert_problem(409, "hold-resolved");
    assert_eq!(app.counts(&sku).await, (5, 0, 1, 4));
}

/// Storefront reads come from the edge's short-lived cache: a repeated read
/// is not another call to the SKU object, a write through the edge is seen
/// at once, and a change the edge did not see (an expiry) shows within the
/// cache window (500 ms in wrangler.toml).
pub async fn storefront_reads_are_cached_briefly_and_see_their_writes(app: App) {
    let sku = unique("cached");
    // Holds of 5 s: long enough that the reads right after a reservation
    // still see it on a loaded machine.
    app.given_sku(&sku, json!({"on_hand": 6, "hold_seconds": 5}))
        .await;
    let first = app.get_sku(&sku).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("Edgestock-Cache"), Some("miss"));
    // A read right after is a hit (on a loaded machine "right after" may
    // already be past the window: a few tries).
    let mut second = app.get_sku(&sku).await;
    for _ in 0..5 {
        if second.header("Edgestock-Cache") == Some("hit") {
            break;
        }
        second = app.get_sku(&sku).await;
    }
    assert_eq!(second.header("Edgestock-Cache"), Some("hit"));
    assert_eq!(second.header("Age"), Some("0"));
    assert_eq!(second.content_type, "application/json");
    assert_eq!(second.body, first.body);
    // An operator's read goes to the object.
    let now = app.get_sku_now(&sku).await;
    assert_eq!(now.header("Edgestock-Cache"), None);
    assert_eq!(now.body, first.body);
    // A write through the edge drops the entry: the next read sees it.
    assert_eq!(app.reserve(&sku, 2, &app.viewer).await.status, 201);
    let after = app.get_sku(&sku).await;
    assert_eq!(after.header("Edgestock-Cache"), Some("miss"));
    assert_eq!(after.body["available"], json!(4), "{}", after.body);
    assert_eq!(after.body["reserved"], json!(2));
    // The hold expires by the alarm, which the edge never sees: a cached
    // read shows it once its entry ages out (the alarm itself may run late
    // on a busy machine, hence the long bound).
    let mut seen = None;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let read = app.get_sku(&sku).await;
        if read.body["reserved"] == json!(0) {
            seen = Some(read);
            break;
        }
    }
    let seen = seen.expect("the expiry shows in a cached read within 20 s");
    assert_eq!(seen.body["available"], json!(6), "{}", seen.body);
    // Never-set-up SKUs are not cached: one set up later shows at once.
    let later = unique("later");
    app.get_sku(&later)
        .await
        .assert_problem(404, "sku-not-found");
    app.given_sku(&later, json!({"on_hand": 1})).await;
    assert_eq!(app.get_sku(&later).await.body["on_hand"], json!(1));
}

pub async fn holds_expire_by_alarm_with_no_traffic(app: App) {
    let sku = unique("expiry");
    app.given_sku(&sku, json!({"on_hand": 4, "hold_seconds": 1}))
        .await;
    let held = app.reserve(&sku, 3, &app.viewer).await;
    let expires = held.body["expires_at"].as_u64().unwrap();
    // Nothing touches this SKU until well after the hold's time (an alarm
    // may run a few seconds late on a busy machine).
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let looked_at = now_ms();
    let ledger = app.ledger(&sku).await;
    let expiry = ledger
        .iter()
        .find(|e| e["movement"] == json!("expire"))
        .expect("an expire entry");
    let at = expiry["at_ms"].as_u64().unwrap();
    assert!(at >= expires, "expired at {at}, before its time {expires}");
    // Returned by the alarm, not by the read that found it.
    assert!(
        at + 1_000 < looked_at,
        "expired at {at}, only when read at {looked_at}"
    );
    assert_eq!(expiry["actor"], json!("system"));
    assert_eq!(expiry["available"], json!(4));
    assert_eq!(app.counts(&sku).await, (4, 0, 0, 4));
    let id = held.body["id"].as_str().unwrap();
    assert_eq!(
        app.get_hold(&sku, id).await.body["status"],
        json!("expired")
    );
}

pub async fn an_expired_hold_cannot_be_committed(app: App) {
    let sku = unique("late-pay");
    app.given_sku(&sku, json!({"on_hand": 2, "hold_seconds": 1}))
        .await;
    let id = app.reserve(&sku, 2, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let late = app.commit(&sku, &id).await;
    late.assert_problem(409, "hold-resolved");
    assert_eq!(late.body["hold_status"], json!("expired"));
    assert_eq!(app.counts(&sku).await, (2, 0, 0, 2));
}

pub async fn the_purchase_limit_counts_holds_and_purchases(app: App) {
    let sku = unique("limit");
    app.given_sku(&sku, json!({"on_hand": 100, "per_buyer_limit": 3}))
        .await;
    let first = app.reserve(&sku, 2, "fan").await;
    assert_eq!(first.status, 201);
    let over = app.reserve(&sku, 2, "fan").await;
    over.assert_problem(409, "buyer-limit-exceeded");
    assert_eq!(
        (over.body["limit"].clone(), over.body["held"].clone()),
        (json!(3), json!(2))
    );
    app.commit(&sku, first.body["id"].as_str().unwrap()).await;
    let within = app.reserve(&sku, 1, "fan").await;
    assert_eq!(within.status, 201, "{:?}", within.body);
    let after_buying = app.reserve(&sku, 1, "fan").await;
    after_buying.assert_problem(409, "buyer-limit-exceeded");
    assert_eq!(after_buying.body["bought"], json!(2));
    // Another buyer is not affected; lifting the limit frees the first.
    assert_eq!(app.reserve(&sku, 3, "other").await.status, 201);
    app.given_sku(&sku, json!({"on_hand": 100, "per_buyer_limit": 0}))
        .await;
    assert_eq!(app.reserve(&sku, 5, "fan").await.status, 201);
}

pub async fn restock_and_adjustments_are_recorded_in_the_ledger(app: App) {
    let sku = unique("restock");
    app.given_sku(&sku, json!({"on_hand": 5})).await;
    let restocked = app
        .admin_post(
            &sku,
            "restock",
            json!({"qty": 7, "reason": "supplier delivery", "reference": "PO-17"}),
        )
        .await;
    assert_eq!(restocked.status, 200, "{:?}", restocked.body);
    assert_eq!(restocked.body["on_hand"], json!(12));
    let adjusted = app
        .admin_post(
            &sku,
            "adjustments",
            json!({"delta": -2, "reason": "damaged", "note": "crushed box", "reference": "QC-3"}),
        )
        .await;
    assert_eq!(adjusted.status, 200, "{:?}", adjusted.body);
    assert_eq!(app.counts(&sku).await, (10, 0, 0, 10));
    let ledger = app.ledger(&sku).await;
    assert_eq!(ledger.len(), 3);
    let restock = &ledger[1];
    assert_eq!(restock["movement"], json!("restock"));
    assert_eq!(restock["qty"], json!(7));
    assert_eq!(restock["reference"], json!("PO-17"));
    assert_eq!(restock["actor"], json!("admin"));
    let adjust = &ledger[2];
    assert_eq!(adjust["qty"], json!(-2));
    assert_eq!(adjust["reason"], json!("damaged: crushed box"));
    assert_eq!(adjust["on_hand"], json!(10));
    assert!(adjust["at_ms"].as_u64().unwrap() >= restock["at_ms"].as_u64().unwrap());
}

pub async fn refused_stock_changes_leave_the_sku_as_it_was(app: App) {
    let sku = unique("refused");
    app.given_sku(&sku, json!({"on_hand": 6})).await;
    let id = app.reserve(&sku, 4, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.commit(&sku, &id).await;
    app.reserve(&sku, 1, &app.viewer).await;
    let before = app.get_sku(&sku).await.body;
    let ledger_before = app.ledger(&sku).await.len();
    app.put_sku(&sku, json!({"on_hand": 4}))
        .await
        .assert_problem(409, "on-hand-below-committed");
    app.admin_post(&sku, "adjustments", json!({"delta": -2, "reason": "lost"}))
        .await
        .assert_problem(409, "adjustment-refused");
    // Refused: the SKU (version included) and its ledger are as they were.
    assert_eq!(app.get_sku(&sku).await.body, before);
    assert_eq!(app.ledger(&sku).await.len(), ledger_before);
    app.admin_post(&sku, "restock", json!({"qty": 1_000_000_000}))
        .await;
    let after_restock = app.get_sku(&sku).await.body;
    assert_eq!(after_restock["on_hand"], json!(1_000_000_006));
    app.put_sku(&sku, json!({"on_hand": 1_000_000_000_000u64}))
        .await;
    let at_the_top = app.get_sku(&sku).await.body;
    app.admin_post(&sku, "restock", json!({"qty": 1}))
        .await
        .assert_problem(422, "stock-level-too-high");
    assert_eq!(app.get_sku(&sku).await.body, at_the_top);
    assert_eq!(
        app.counts(&sku).await,
        (1_000_000_000_000, 1, 4, 999_999_999_995)
    );
    assert_ne!(before, at_the_top); // the accepted changes did land
}

pub async fn the_ledger_pages(app: App) {
    let sku = unique("pages");
    app.given_sku(&sku, json!({"on_hand": 200})).await;
    // Many viewers (one buyer would meet the per-buyer rate limit).
    // Keyed, so a request the dev proxy drops is sent again, once.
    for i in 0..120 {
        let key = format!("{sku}-{i}");
        let r = app
            .reserve_keyed(&sku, 1, &format!("v{i}"), Some(&key))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let entries = app.ledger(&sku).await; // pages of 50
    assert_eq!(entries.len(), 121);
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=121).collect::<Vec<u64>>());
}

pub async fn the_audit_recomputes_the_counters_from_ledger_and_holds(app: App) {
    let sku = unique("audit");
    app.given_sku(&sku, json!({"on_hand": 20})).await;
    let a = app.reserve(&sku, 3, "viewer-1").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.reserve(&sku, 2, "viewer-2").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.reserve(&sku, 4, "viewer-3").await;
    assert_eq!(app.commit(&sku, &a).await.status, 200);
    assert_eq!(app.release(&sku, &b).await.status, 200);
    for (what, body) in [
        ("restock", json!({"qty": 5})),
        ("adjustments", json!({"delta": -2, "reason": "damaged"})),
    ] {
        let reply = app.admin_post(&sku, what, body).await;
        assert_eq!(reply.status, 200, "{what}: {:?}", reply.body);
    }
    let report = app.audit(&sku).await;
    assert_eq!(report["ok"], json!(true), "{report}");
    assert_eq!(report["drift"], json!([]));
    let (on_hand, reserved, sold, _) = app.counts(&sku).await;
    assert_eq!((on_hand, reserved, sold), (23, 4, 3));
    for source in ["record", "from_ledger"] {
        assert_eq!(
            report[source],
            json!({"on_hand": 23, "reserved": 4, "sold": 3}),
            "{source}: {report}"
        );
    }
    assert_eq!(report["from_holds"]["reserved"], json!(4));
    assert_eq!(report["from_holds"]["sold"], json!(3));
    assert_eq!(report["ledger_entries"], json!(8));
    assert_eq!(report["live_holds"], json!(1));
    // Admin only, and a SKU never set up has nothing to audit.
    let anonymous = app
        .bare(Method::GET, format!("/api/skus/{sku}/audit"))
        .await;
    anonymous.assert_problem(401, "unauthorized");
    let none = app
        .send(Call {
            method: Method::GET,
            path: format!("/api/skus/{}/audit", unique("never")),
            body: None,
            headers: vec![app.bearer()],
        })
        .await;
    none.assert_problem(404, "sku-not-found");
}
