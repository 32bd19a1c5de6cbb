//! Stop the server, start it again on the same persisted state: what was
//! acknowledged is still there, and time kept running for the holds.

use crate::app::{now_ms, unique, App};
use crate::harness::Server;
use serde_json::json;
use std::time::Duration;

pub async fn state_survives_a_restart(app: App, server: &mut Server) {
    let kept = unique("durable");
    app.given_sku(&kept, json!({"on_hand": 20, "per_buyer_limit": 10}))
        .await;
    let sold = app.reserve(&kept, 4, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.commit(&kept, &sold).await;
    let key = unique("key");
    let live = app.reserve_keyed(&kept, 3, &app.viewer, Some(&key)).await;
    let live_id = live.body["id"].as_str().unwrap().to_owned();
    let lapsing = unique("lapsing");
    app.given_sku(&lapsing, json!({"on_hand": 5, "hold_seconds": 2}))
        .await;
    let short = app.reserve(&lapsing, 5, &app.viewer).await;
    let short_expiry = short.body["expires_at"].as_u64().unwrap();
    let kept_before = app.get_sku(&kept).await.body;
    let ledger_before = app.ledger(&kept).await;

    server.stop();
    // The short hold's time passes while nothing is running.
    let down_until = short_expiry + 500;
    if now_ms() < down_until {
        tokio::time::sleep(Duration::from_millis(down_until - now_ms())).await;
    }
    server.start().await;

    // Untouched SKU first: its pending expiry must be honoured by the alarm.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let looked_at = now_ms();
    let ledger = app.ledger(&lapsing).await;
    let expiry = ledger
        .iter()
        .find(|e| e["movement"] == json!("expire"))
        .expect("the lapsed hold expired");
    assert!(expiry["at_ms"].as_u64().unwrap() < looked_at);
    assert_eq!(app.counts(&lapsing).await, (5, 0, 0, 5));

    assert_eq!(app.get_sku(&kept).await.body, kept_before);
    assert_eq!(app.ledger(&kept).await, ledger_before);
    assert_eq!(
        app.get_hold(&kept, &sold).await.body["status"],
        json!("committed")
    );
    assert_eq!(
        app.get_hold(&kept, &live_id).await.body["status"],
        json!("held")
    );
    // The idempotency record survived: the retry answers as before.
    let retry = app.reserve_keyed(&kept, 3, &app.viewer, Some(&key)).await;
    assert_eq!(retry.body, live.body);
    // The purchase tally survived: 4 bought + 3 held + 4 > 10.
    app.reserve(&kept, 4, &app.viewer)
        .await
        .assert_problem(409, "buyer-limit-exceeded");
    assert_eq!(app.commit(&kept, &live_id).await.status, 200);
    assert_eq!(app.counts(&kept).await, (20, 0, 7, 13));
}
