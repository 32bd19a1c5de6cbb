//! Who may do what: every write answers to an identity. Each refusal is a
//! problem and changes nothing (the SKU and the order are compared before
//! and after).

use crate::app::{now_ms, unique, App, Call};
use edgestock::api::session::{sign_body, sign_session, Claims};
use edgestock::domain::types::BuyerId;
use reqwest::Method;
use serde_json::{json, Value};

fn claims(buyer: &str, iat: u64, exp: u64) -> Claims {
    Claims {
        sub: BuyerId::parse(buyer).unwrap(),
        iat,
        exp,
        device: None,
        account_created: None,
        channel: None,
    }
}

/// Sessions that must not work: none, expired, from the wrong secret,
/// tampered, and garbage.
fn bad_sessions(app: &App, buyer: &str) -> Vec<(&'static str, Option<String>)> {
    let now = now_ms() / 1000;
    let expired = sign_session(
        &claims(buyer, now - 7200, now - 3600),
        app.session_secret.as_bytes(),
    );
    let foreign = sign_session(&claims(buyer, now, now + 600), b"not-the-server-secret");
    let good = app.session(buyer);
    let tampered = format!("{good}A");
    vec![
        ("no session", None),
        ("expired", Some(expired)),
        ("wrong secret", Some(foreign)),
        ("tampered", Some(tampered)),
        ("garbage", Some("not.a.jwt".into())),
        (
            "alg none",
            Some(format!(
                "eyJhbGciOiJub25lIn0.{}.",
                good.split('.').nth(1).unwrap()
            )),
        ),
    ]
}

fn with_session(token: &Option<String>) -> Vec<(&'static str, String)> {
    token
        .iter()
        .map(|t| ("Authorization", format!("Bearer {t}")))
        .collect()
}

pub async fn buyers_touch_only_their_own_holds(app: App) {
    let sku = unique("own-holds");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    let hold = app.reserve(&sku, 2, "alice").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.get_sku(&sku).await.body;
    let path = format!("/api/skus/{sku}/reservations/{hold}");
    // Another buyer: the hold does not exist for them.
    let bob = vec![app.as_buyer("bob")];
    app.with(Method::GET, path.clone(), bob.clone())
        .await
        .assert_problem(404, "hold-not-found");
    app.release_as("bob", &sku, &hold)
        .await
        .assert_problem(404, "hold-not-found");
    // No valid session at all.
    for (name, token) in bad_sessions(&app, "alice") {
        let reply = app
            .with(Method::DELETE, path.clone(), with_session(&token))
            .await;
        assert_eq!(reply.status, 401, "{name}: {:?}", reply.body);
        reply.assert_problem(401, "unauthorized");
    }
    // A storefront cannot commit, not even its own buyer's hold.
    let commit = format!("{path}/commit");
    app.with(Method::POST, commit, vec![app.as_buyer("alice")])
        .await
        .assert_problem(401, "unauthorized");
    // A body naming someone else is refused, not silently rewritten.
    let other = app
        .send(Call {
            method: Method::POST,
            path: format!("/api/skus/{sku}/reservations"),
            body: Some(json!({"qty": 1, "buyer": "bob"}).to_string()),
            headers: vec![
                ("Content-Type", "application/json".into()),
                app.as_buyer("alice"),
            ],
        })
        .await;
    other.assert_problem(403, "forbidden");
    assert_eq!(app.get_sku(&sku).await.body, before, "nothing changed");
    // Alice reads and releases her own hold.
    let mine = app
        .with(Method::GET, path, vec![app.as_buyer("alice")])
        .await;
    assert_eq!((mine.status, &mine.body["buyer"]), (200, &json!("alice")));
    let released = app.release_as("alice", &sku, &hold).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert_eq!(app.counts(&sku).await, (10, 0, 0, 10));
}

pub async fn orders_and_order_lists_are_their_buyers(app: App) {
    let sku = unique("own-orders");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    let id = app.given_order("carol", &[(&sku, 1)]).await;
    let path = format!("/api/orders/{id}");
    let dave = vec![app.as_buyer("dave")];
    app.with(Method::GET, path.clone(), dave.clone())
        .await
        .assert_problem(404, "order-not-found");
    let cancel = Call {
        method: Method::POST,
        path: format!("{path}/cancel"),
        body: None,
        headers: dave,
    };
    app.send(cancel)
        .await
        .assert_problem(404, "order-not-found");
    for (name, token) in bad_sessions(&app, "carol") {
        let reply = app
            .with(Method::GET, path.clone(), with_session(&token))
            .await;
        assert_eq!(reply.status, 401, "{name}");
    }
    let list = "/api/buyers/carol/orders".to_owned();
    app.with(Method::GET, list.clone(), vec![app.as_buyer("dave")])
        .await
        .assert_problem(404, "not-found");
    let own = app
        .with(Method::GET, list.clone(), vec![app.as_buyer("carol")])
        .await;
    assert_eq!(own.status, 200);
    assert_eq!(
        app.with(Method::GET, list, vec![app.bearer()]).await.status,
        200
    );
    assert_eq!(app.get_order(&id).await.body["status"], json!("reserved"));
    assert_eq!(app.counts(&sku).await, (10, 1, 0, 9));
}

pub async fn only_a_signed_callback_pays(app: App) {
    let sku = unique("pay-sig");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    let id = app.given_order("erin", &[(&sku, 1)]).await;
    let path = format!("/api/orders/{id}/pay");
    let body = json!({"payment_ref": "wx-1", "amount": 1999}).to_string();
    let now = now_ms() / 1000;
    let secret = app.payment_secret.as_bytes();
    let pay = |headers: Vec<(&'static str, String)>, body: &str| Call {
        method: Method::POST,
        path: path.clone(),
        body: Some(body.to_owned()),
        headers: [
            vec![("Content-Type", "application/json".to_owned())],
            headers,
        ]
        .concat(),
    };
    type Attempt = (&'static str, Vec<(&'static str, String)>, String);
    let refused: Vec<Attempt> = vec![
        ("unsigned", vec![], body.clone()),
        (
            "the buyer's own session",
            vec![app.as_buyer("erin")],
            body.clone(),
        ),
        ("the admin token", vec![app.bearer()], body.clone()),
        (
            "wrong secret",
            vec![(
                "Edgestock-Signature",
                sign_body(now, body.as_bytes(), b"guess"),
            )],
            body.clone(),
        ),
        (
            "stale",
            vec![(
                "Edgestock-Signature",
                sign_body(now - 400, body.as_bytes(), secret),
            )],
            body.clone(),
        ),
        (
            "from the future",
            vec![(
                "Edgestock-Signature",
                sign_body(now + 400, body.as_bytes(), secret),
            )],
            body.clone(),
        ),
        (
            "another body",
            vec![(
                "Edgestock-Signature",
                sign_body(now, body.as_bytes(), secret),
            )],
            json!({"payment_ref": "wx-2", "amount": 1}).to_string(),
        ),
        (
            "garbage",
            vec![("Edgestock-Signature", "t=,v1=zz".into())],
            body.clone(),
        ),
    ];
    for (name, headers, sent) in refused {
        let reply = app.send(pay(headers, &sent)).await;
        assert_eq!(reply.status, 401, "{name}: {:?}", reply.body);
        reply.assert_problem(401, "unauthorized");
    }
    assert_eq!(app.get_order(&id).await.body["status"], json!("reserved"));
    assert_eq!(app.counts(&sku).await, (10, 1, 0, 9));
    let signed = vec![(
        "Edgestock-Signature",
        sign_body(now, body.as_bytes(), secret),
    )];
    let paid = app.send(pay(signed.clone(), &body)).await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    assert_eq!(paid.body["payment_amount"], json!(1999));
    // The provider's retry of the same callback is the same payment.
    let again = app.send(pay(signed, &body)).await;
    assert_eq!((again.status, &again.body["status"]), (200, &json!("paid")));
    assert_eq!(app.counts(&sku).await, (10, 0, 1, 9));
}

/// The two holes a hostile run found: a stranger committing an order's
/// hold through the SKU route, and a stranger spending the order's own
/// saga key so its payment fails.
pub async fn strangers_cannot_reach_an_orders_hold_or_its_saga_keys(app: App) {
    let sku = unique("saga-keys");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    let order = app.create_order("frank", &[(&sku, 2)], None).await.body;
    let id = order["id"].as_str().unwrap().to_owned();
    let hold = order["lines"][0]["hold"].as_str().unwrap().to_owned();
    // Its own buyer cannot release or commit the order's hold directly.
    app.release_as("frank", &sku, &hold)
        .await
        .assert_problem(404, "hold-not-found");
    // A stranger reserves with the key the order's payment will use.
    let saga_key = format!("{id}/0/commit");
    let squat = app.reserve_keyed(&sku, 1, "mallory", Some(&saga_key)).await;
    assert_eq!(squat.status, 201, "{:?}", squat.body);
    let squatted = squat.body["id"].as_str().unwrap().to_owned();
    // The order still pays, and cancelling returns every unit.
    let paid = app
        .order_action(&id, "pay", json!({"payment_ref": "p-1"}))
        .await;
    assert_eq!((paid.status, &paid.body["status"]), (200, &json!("paid")));
    assert_eq!(app.counts(&sku).await, (10, 1, 2, 7));
    let cancelled = app.order_action(&id, "cancel", json!({})).await;
    assert_eq!(cancelled.body["status"], json!("cancelled"));
    app.release_as("mallory", &sku, &squatted).await;
    assert_eq!(app.counts(&sku).await, (10, 0, 0, 10), "no unit lost");
}

pub async fn an_admin_acts_for_a_named_buyer(app: App) {
    let sku = unique("admin-acts");
    app.given_sku(&sku, json!({"on_hand": 5})).await;
    let reserve = |body: Value| Call {
        method: Method::POST,
        path: format!("/api/skus/{sku}/reservations"),
        body: Some(body.to_string()),
        headers: vec![("Content-Type", "application/json".into()), app.bearer()],
    };
    app.send(reserve(json!({"qty": 1})))
        .await
        .assert_problem(422, "invalid-body");
    let held = app.send(reserve(json!({"qty": 1, "buyer": "gina"}))).await;
    assert_eq!((held.status, &held.body["buyer"]), (201, &json!("gina")));
    // The dev session route (DEV_SESSIONS=1 here) mints a working session.
    let minted = app
        .send(Call {
            method: Method::POST,
            path: "/api/dev/session".into(),
            body: Some(json!({"buyer": "gina"}).to_string()),
            headers: vec![("Content-Type", "application/json".into())],
        })
        .await;
    assert_eq!(minted.status, 201, "{:?}", minted.body);
    let token = minted.body["token"].as_str().unwrap();
    let hold = held.body["id"].as_str().unwrap();
    let path = format!("/api/skus/{sku}/reservations/{hold}");
    let seen = app
        .with(
            Method::GET,
            path,
            vec![("Authorization", format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(seen.status, 200, "{:?}", seen.body);
}
