//! Risk control through the real runtime: rules as versioned data through
//! the admin API, orders sent to review (holds kept, approve or reject from
//! the queue), denials that name their rule and change nothing, and the
//! default rules' velocity and unpaid-history checks.
//!
//! The rule set is the merchant's, shared by every test running at once:
//! the test that writes it adds only rules scoped to its own room and
//! device, and keeps the defaults.

use crate::app::{now_ms, unique, App, Call, Reply};
use edgestock::api::session::{sign_session, Claims};
use edgestock::domain::types::BuyerId;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

fn post(app: &App, path: String, body: Value, credential: (&'static str, String)) -> Call<'static> {
    let _ = app;
    Call {
        method: Method::POST,
        path,
        body: Some(body.to_string()),
        headers: vec![credential, ("Content-Type", "application/json".into())],
    }
}

async fn order_in(app: &App, buyer: &str, room: Option<&str>, lines: &[(&str, u64)]) -> Reply {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(s, q)| json!({"sku": s, "qty": q}))
        .collect();
    let mut body = json!({"channel": "own", "lines": lines});
    if let Some(room) = room {
        body["room"] = json!(room);
    }
    let reply = app
        .send(post(app, "/api/orders".into(), body, app.as_buyer(buyer)))
        .await;
    app.note_owner(&reply, buyer);
    reply
}

async fn rules(app: &App) -> Value {
    let reply = app
        .with(Method::GET, "/api/risk/rules".into(), vec![app.bearer()])
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

async fn put_rules(app: &App, body: &Value, credential: (&'static str, String)) -> Reply {
    app.send(Call {
        method: Method::PUT,
        path: "/api/risk/rules".into(),
        body: Some(body.to_string()),
        headers: vec![credential, ("Content-Type", "application/json".into())],
    })
    .await
}

async fn review_queue(app: &App) -> Vec<String> {
    let reply = app
        .with(Method::GET, "/api/risk/reviews".into(), vec![app.bearer()])
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether the review queue comes to show `id` (or not to), within 5 s:
/// the order object tells the queue after its reply.
async fn queue_shows(app: &App, id: &String, shown: bool) -> bool {
    for _ in 0..50 {
        if review_queue(app).await.contains(id) == shown {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

pub async fn rules_are_checked_versioned_data_that_review_and_deny(app: App) {
    let room = unique("risky-room");
    let device = unique("bad-device");
    let sku = unique("risk");
    app.given_sku(&sku, json!({"on_hand": 20})).await;
    let before = rules(&app).await;
    let version = before["version"].as_u64().unwrap();

    // Refused sets change nothing.
    for (bad, credential) in [
        (
            json!({"rules": [{"id": "x", "action": "deny", "check": {"large_order": {"max_units": 0}}}]}),
            app.bearer(),
        ),
        (
            json!({"rules": [{"id": "x", "action": "hmm", "check": {"large_order": {"max_units": 1}}}]}),
            app.bearer(),
        ),
        (json!({"rules": []}), app.as_buyer("not-an-admin")),
    ] {
        let reply = put_rules(&app, &bad, credential).await;
        assert!(matches!(reply.status, 401 | 422), "{:?}", reply.body);
        assert_eq!(reply.content_type, "application/problem+json");
    }
    assert_eq!(rules(&app).await, before);

    let mut set = before["rules"].as_array().unwrap().clone();
    set.retain(|r| !r["id"].as_str().unwrap().starts_with("t-"));
    set.push(
        json!({"id": "t-review", "action": "review", "rooms": [room],
        "check": {"large_order": {"max_units": 1}}}),
    );
    set.push(json!({"id": "t-ban", "action": "deny",
        "check": {"blocklist": {"devices": [device]}}}));
    let written = put_rules(&app, &json!({"rules": set}), app.bearer()).await;
    assert_eq!(written.status, 200, "{:?}", written.body);
    assert!(written.body["version"].as_u64().unwrap() > version);
    // Other isolates pick a new set up within the cache's 5 s.
    tokio::time::sleep(Duration::from_millis(5_500)).await;

    // Review: held, not payable, listed; approved, then paid.
    let held = order_in(&app, "careful", Some(&room), &[(&sku, 2)]).await;
    assert_eq!(held.status, 201, "{:?}", held.body);
    assert_eq!(held.body["status"], json!("pending_review"));
    assert_eq!(held.body["risk"]["verdict"], json!("review"));
    let fired = &held.body["risk"]["fired"][0];
    assert_eq!(
        (&fired["rule"], &fired["observed"], &fired["limit"]),
        (&json!("t-review"), &json!(2), &json!(1))
    );
    let id = held.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.counts(&sku).await, (20, 2, 0, 18));
    app.order_action(&id, "pay", json!({"payment_ref": "wx-r"}))
        .await
        .assert_problem(409, "illegal-transition");
    assert!(queue_shows(&app, &id, true).await);
    // Only the merchant reviews.
    let by_buyer = app
        .send(post(
            &app,
            format!("/api/orders/{id}/approve"),
            json!({}),
            app.as_buyer("careful"),
        ))
        .await;
    by_buyer.assert_problem(401, "unauthorized");
    let approved = app.order_action(&id, "approve", json!({})).await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    assert_eq!(approved.body["status"], json!("reserved"));
    assert!(queue_shows(&app, &id, false).await);
    let paid = app
        .order_action(&id, "pay", json!({"payment_ref": "wx-r"}))
        .await;
    assert_eq!(paid.body["status"], json!("paid"), "{:?}", paid.body);

    // Rejected: the holds go back.
    let doubtful = order_in(&app, "doubtful", Some(&room), &[(&sku, 3)]).await;
    let doubtful_id = doubtful.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.counts(&sku).await, (20, 3, 2, 15));
    let rejected = app
        .order_action(&doubtful_id, "reject", json!({"reason": "a reseller"}))
        .await;
    assert_eq!(
        rejected.body["status"],
        json!("cancelled"),
        "{:?}",
        rejected.body
    );
    assert_eq!(app.counts(&sku).await, (20, 0, 2, 18));
    assert!(queue_shows(&app, &doubtful_id, false).await);

    // Deny: a blocklisted device can neither hold nor order; the answer
    // names the rule, and nothing changes.
    let now = now_ms() / 1000;
    let token = sign_session(
        &Claims {
            sub: BuyerId::parse("on-a-bad-device").unwrap(),
            iat: now,
            exp: now + 600,
            device: Some(device.clone()),
            account_created: None,
            channel: None,
        },
        app.session_secret.as_bytes(),
    );
    let banned = ("Authorization", format!("Bearer {token}"));
    let hold = app
        .send(post(
            &app,
            format!("/api/skus/{sku}/reservations"),
            json!({"qty": 1}),
            banned.clone(),
        ))
        .await;
    hold.assert_problem(403, "risk-denied");
    assert_eq!(hold.body["risk"]["fired"][0]["rule"], json!("t-ban"));
    let body = json!({"channel": "own", "lines": [{"sku": sku, "qty": 1}]});
    let key = unique("denied");
    let order = || {
        let mut call = post(&app, "/api/orders".into(), body.clone(), banned.clone());
        call.headers.push(("Idempotency-Key", key.clone()));
        call
    };
    let denied = app.send_keyed(order()).await;
    denied.assert_problem(403, "risk-denied");
    assert!(denied.body["detail"].as_str().unwrap().contains("t-ban"));
    let again = app.send_keyed(order()).await;
    assert_eq!((again.status, &again.body), (403, &denied.body));
    assert_eq!(app.counts(&sku).await, (20, 0, 2, 18));

    // Leave the merchant's defaults in force.
    set.retain(|r| !r["id"].as_str().unwrap().starts_with("t-"));
    let restored = put_rules(&app, &json!({"rules": set}), app.bearer()).await;
    assert_eq!(restored.status, 200);
}

pub async fn a_buyer_ordering_too_fast_is_reviewed(app: App) {
    let sku = unique("velocity");
    app.given_sku(&sku, json!({"on_hand": 100})).await;
    let buyer = unique("quick");
    // The default rule: more than 10 orders in 60 s from one buyer.
    for i in 0..10 {
        let reply = order_in(&app, &buyer, None, &[(&sku, 1)]).await;
        assert_eq!(
            reply.body["status"],
            json!("reserved"),
            "order {i}: {:?}",
            reply.body
        );
    }
    let eleventh = order_in(&app, &buyer, None, &[(&sku, 1)]).await;
    assert_eq!(
        eleventh.body["status"],
        json!("pending_review"),
        "{:?}",
        eleventh.body
    );
    let fired = &eleventh.body["risk"]["fired"][0];
    assert_eq!(fired["rule"], json!("buyer-velocity"));
    assert_eq!(
        (&fired["observed"], &fired["limit"]),
        (&json!(11), &json!(10))
    );
    // Another buyer is not affected.
    let other = order_in(&app, &unique("calm"), None, &[(&sku, 1)]).await;
    assert_eq!(other.body["status"], json!("reserved"));
}

pub async fn a_buyer_whose_orders_keep_expiring_is_reviewed(app: App) {
    let sku = unique("squat");
    app.given_sku(&sku, json!({"on_hand": 10, "hold_seconds": 1}))
        .await;
    let buyer = unique("squatter");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = order_in(&app, &buyer, None, &[(&sku, 1)]).await;
        assert_eq!(reply.body["status"], json!("reserved"), "{:?}", reply.body);
        ids.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    // Never paid: each expires by its alarm.
    for id in &ids {
        let mut status = Value::Null;
        for _ in 0..100 {
            status = app.get_order(id).await.body["status"].clone();
            if status == json!("expired") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, json!("expired"));
    }
    let next = order_in(&app, &buyer, None, &[(&sku, 1)]).await;
    assert_eq!(
        next.body["status"],
        json!("pending_review"),
        "{:?}",
        next.body
    );
    let fired = &next.body["risk"]["fired"][0];
    assert_eq!(fired["rule"], json!("unpaid-history"));
    assert_eq!(fired["observed"], json!(3));
    // Held for the review window, not the SKU's one second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(app.counts(&sku).await.1, 1);
}
