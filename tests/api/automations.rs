//! Automations (自动化) against the real runtime: switches per room and per
//! SKU, and what they do to orders by themselves (confirm, ship virtual
//! goods, flag a repeat buyer, restock an unopened refund), each act
//! recorded on the order; a person's confirm; bad switches refused.

use crate::app::{unique, App, Reply};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn switch(app: &App, scope: &str, body: Value) -> Reply {
    let path = format!("/api/{scope}/automations");
    app.send_retrying(app.json_call(Method::PUT, path, body, true))
        .await
}

async fn switches(app: &App, scope: &str) -> Value {
    let path = format!("/api/{scope}/automations");
    let r = app.with(Method::GET, path, vec![app.bearer()]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

/// The order as the merchant sees it once `done` holds (the rules run
/// from the order's alarm, just after the change).
async fn order_when(app: &App, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = format!("/api/orders/{id}");
        let r = app.with(Method::GET, path, vec![app.bearer()]).await;
        if r.status == 200 && done(&r.body) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "{what}: {:?}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn order_in(app: &App, buyer: &str, room: Option<&str>, sku: &str) -> String {
    let mut body = json!({
        "buyer": buyer, "channel": "own",
        "lines": [{"sku": sku, "qty": 1}],
    });
    if let Some(room) = room {
        body["room"] = json!(room);
    }
    let mut call = app.json_call(Method::POST, "/api/orders".into(), body, false);
    call.headers.push(app.as_buyer(buyer));
    call.headers.push(("Idempotency-Key", unique("auto-key")));
    let r = app.send_keyed(call).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    app.note_owner(&r, buyer);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn pay(app: &App, id: &str) {
    let call = app.order_call(id, "pay", json!({"payment_ref": unique("auto-pay")}));
    let r = app.send_retrying(call).await;
    assert_eq!(r.body["status"], json!("paid"), "{:?}", r.body);
}

fn acts(order: &Value) -> Vec<(String, String)> {
    order["automations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub async fn automations_act_on_orders_and_say_so(app: App) {
    let room = unique("auto-room");
    let tee = unique("auto-tee");
    let card = unique("auto-card");
    app.given_sku(&tee, json!({"on_hand": 50})).await;
    app.given_sku(&card, json!({"on_hand": 50})).await;
    let room_scope = format!("rooms/{room}");
    let card_scope = format!("skus/{card}");

    // Everything is off until the merchant turns it on; the deadline rule
    // always runs.
    let fresh = switches(&app, &room_scope).await;
    assert_eq!(fresh["version"], json!(0));
    assert!(fresh["rules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["on"] == json!(false)));
    assert_eq!(fresh["rules"].as_array().unwrap().len(), 4);
    assert_eq!(fresh["always_on"][0]["rule"], json!("expire_unpaid"));

    let on = switch(
        &app,
        &room_scope,
        json!({"auto_confirm": true, "flag_repeat_buyer": true, "restock_unopened": true}),
    )
    .await;
    assert_eq!(on.status, 200, "{:?}", on.body);
    assert_eq!(on.body["version"], json!(1));
    assert_eq!(on.body["switches"]["auto_confirm"], json!(true));
    assert_eq!(on.body["switches"]["auto_ship_virtual"], json!(false));
    let virtual_goods = switch(&app, &card_scope, json!({"auto_ship_virtual": true})).await;
    assert_eq!(
        virtual_goods.body["switches"]["auto_ship_virtual"],
        json!(true)
    );
    // The same switch again changes nothing (no new version).
    let again = switch(&app, &card_scope, json!({"auto_ship_virtual": true})).await;
    assert_eq!(again.body["version"], json!(1));
    // Other isolates see new switches within 2 s.
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    // A paid order in the room: confirmed by the rule, still paid.
    let buyer = unique("auto-fan");
    let first = order_in(&app, &buyer, Some(&room), &tee).await;
    pay(&app, &first).await;
    let confirmed = order_when(&app, &first, "auto_confirm", |o| !o["confirmed"].is_null()).await;
    assert_eq!(confirmed["status"], json!("paid"));
    assert_eq!(confirmed["confirmed"]["by"], json!("rule:auto_confirm"));
    assert_eq!(
        acts(&confirmed),
        vec![("auto_confirm".into(), "confirmed".into())]
    );
    let why = confirmed["automations"][0]["why"].as_str().unwrap();
    assert!(why.contains(&room), "{why}");
    assert!(confirmed["flags"].as_array().unwrap().is_empty());

    // The same buyer orders the same SKU while the first is open: flagged,
    // and so not confirmed when paid (held back for a person).
    let second = order_in(&app, &buyer, Some(&room), &tee).await;
    let flagged = order_when(&app, &second, "flag", |o| {
        !o["flags"].as_array().unwrap().is_empty()
    })
    .await;
    let reason = flagged["flags"][0]["reason"].as_str().unwrap();
    assert!(reason.contains(&first) && reason.contains(&tee), "{reason}");
    pay(&app, &second).await;
    let held = order_when(&app, &second, "held back", |o| acts(o).len() == 2).await;
    assert_eq!(
        acts(&held),
        vec![
            ("flag_repeat_buyer".into(), "flagged".into()),
            ("auto_confirm".into(), "held_back".into())
        ]
    );
    assert!(held["confirmed"].is_null());
    // Another buyer's order for the same SKU is no repeat.
    let other = order_in(&app, &unique("auto-fan"), Some(&room), &tee).await;
    pay(&app, &other).await;
    let other = order_when(&app, &other, "confirm", |o| !o["confirmed"].is_null()).await;
    assert!(other["flags"].as_array().unwrap().is_empty());

    // Virtual goods ship themselves on payment, with a code of their own;
    // in the room they are confirmed too.
    let gift = order_in(&app, &unique("auto-fan"), Some(&room), &card).await;
    pay(&app, &gift).await;
    let shipped = order_when(&app, &gift, "auto ship", |o| {
        o["status"] == json!("shipped")
    })
    .await;
    assert_eq!(shipped["shipment"]["carrier"], json!("virtual"));
    let code = shipped["shipment"]["tracking_number"].as_str().unwrap();
    assert!(code.starts_with("V-") && code.len() == 18, "{code}");
    let last = shipped["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["actor"], json!("rule:auto_ship_virtual"));
    assert_eq!(
        acts(&shipped),
        vec![
            ("auto_confirm".into(), "confirmed".into()),
            ("auto_ship_virtual".into(), "shipped".into())
        ]
    );
    // A person's confirm of what a rule confirmed (and shipped since)
    // changes nothing.
    let again = app.order_action(&gift, "confirm", json!({})).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["confirmed"]["by"], json!("rule:auto_confirm"));
    // Outside the room only the SKU's own rule applies; a physical SKU
    // outside the room is left alone.
    let outside = order_in(&app, &unique("auto-fan"), None, &card).await;
    pay(&app, &outside).await;
    let outside = order_when(&app, &outside, "auto ship", |o| {
        o["status"] == json!("shipped")
    })
    .await;
    assert!(outside["confirmed"].is_null());
    let plain = order_in(&app, &unique("auto-fan"), None, &tee).await;
    pay(&app, &plain).await;

    // A refund of an unopened item: restocked by the room's rule; outside
    // the room (rule off), not.
    let (_, _, sold_before, available_before) = app.counts(&tee).await;
    let r = app
        .order_action(
            &first,
            "refund",
            json!({"unopened": true, "reason": "未拆封"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], json!("refunded"));
    assert_eq!(r.body["restocked"], json!(true));
    assert!(acts(&r.body).contains(&("restock_unopened".into(), "restocked".into())));
    let (_, _, sold, available) = app.counts(&tee).await;
    assert_eq!((sold, available), (sold_before - 1, available_before + 1));
    let r = app
        .order_action(&plain, "refund", json!({"unopened": true}))
        .await;
    assert_eq!(r.body["restocked"], json!(false), "{:?}", r.body);
    assert_eq!(app.counts(&tee).await.2, sold, "not restocked: still sold");
    assert!(acts(&r.body).is_empty());
    // The plain order was never touched by a rule.
    let plain = order_when(&app, &plain, "plain", |_| true).await;
    assert!(plain["confirmed"].is_null() && plain["flags"].as_array().unwrap().is_empty());

    // A person confirms; not before payment.
    let manual = order_in(&app, &unique("auto-fan"), None, &tee).await;
    app.order_action(&manual, "confirm", json!({}))
        .await
        .assert_problem(409, "illegal-transition");
    pay(&app, &manual).await;
    let r = app.order_action(&manual, "confirm", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["confirmed"]["by"], json!("admin"));

    // The index shows what the rules did.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = format!("/api/orders?room={room}&limit=100");
        let r = app.with(Method::GET, path, vec![app.bearer()]).await;
        let rows = r.body["orders"].as_array().cloned().unwrap_or_default();
        let row = |id: &str| rows.iter().find(|o| o["id"] == json!(id)).cloned();
        let seen = row(&second).is_some_and(|o| o["flagged"] == json!(true))
            && row(&gift).is_some_and(|o| o["confirmed"] == json!(true));
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "index: {:?}", r.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Off again: a new paid order in the room is not confirmed.
    let off = switch(&app, &room_scope, json!({"auto_confirm": false})).await;
    assert_eq!(off.body["version"], json!(2));
    assert_eq!(off.body["switches"]["flag_repeat_buyer"], json!(true));
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let late = order_in(&app, &unique("auto-fan"), Some(&room), &tee).await;
    pay(&app, &late).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = order_when(&app, &late, "late", |_| true).await;
    assert!(late["confirmed"].is_null(), "{late}");
}

pub async fn bad_automation_input_is_a_problem_and_changes_nothing(app: App) {
    let room = unique("auto-bad");
    let scope = format!("rooms/{room}");
    switch(&app, &scope, json!({"flag_repeat_buyer": true})).await;
    for (body, status, slug) in [
        (json!({}), 422, "invalid-body"),
        (json!({"auto_confirm": "yes"}), 422, "invalid-body"),
        (json!({"teleport": true}), 422, "invalid-body"),
    ] {
        switch(&app, &scope, body.clone())
            .await
            .assert_problem(status, slug);
    }
    let raw = app
        .send(crate::app::Call {
            method: Method::PUT,
            path: format!("/api/{scope}/automations"),
            body: Some("{not json".into()),
            headers: vec![app.bearer(), ("Content-Type", "application/json".into())],
        })
        .await;
    raw.assert_problem(400, "malformed-json");
    let anonymous = app
        .send(app.json_call(
            Method::PUT,
            format!("/api/{scope}/automations"),
            json!({"auto_confirm": true}),
            false,
        ))
        .await;
    anonymous.assert_problem(401, "unauthorized");
    switch(&app, "rooms/bad%20room", json!({"auto_confirm": true}))
        .await
        .assert_problem(400, "invalid-request");
    let after = switches(&app, &scope).await;
    assert_eq!(after["version"], json!(1));
    assert_eq!(after["switches"]["auto_confirm"], json!(false));

    // A refund must say what happens to the units.
    let sku = unique("auto-bad-sku");
    app.given_sku(&sku, json!({"on_hand": 5})).await;
    let id = app.given_order(&unique("auto-fan"), &[(&sku, 1)]).await;
    pay(&app, &id).await;
    app.order_action(&id, "refund", json!({}))
        .await
        .assert_problem(422, "invalid-body");
    let order = order_when(&app, &id, "still paid", |_| true).await;
    assert_eq!(order["status"], json!("paid"));
}
