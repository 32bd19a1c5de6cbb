//! Every bad input is an RFC 9457 problem with the right status, and changes
//! nothing: the SKU's state and ledger are compared before and after.

use crate::app::{unique, App, Call};
use reqwest::Method;
use serde_json::{json, Value};

async fn snapshot(app: &App, sku: &str) -> (Value, usize) {
    (app.get_sku(sku).await.body, app.ledger(sku).await.len())
}

fn call(
    method: Method,
    path: String,
    body: Option<&str>,
    headers: Vec<(&'static str, String)>,
) -> Call<'static> {
    Call {
        method,
        path,
        body: body.map(str::to_owned),
        headers,
    }
}

pub async fn admin_routes_need_the_right_token(app: App) {
    let sku = unique("auth");
    app.given_sku(&sku, json!({"on_hand": 5})).await;
    let before = snapshot(&app, &sku).await;
    let json_ct = ("Content-Type", "application/json".to_owned());
    let cases: Vec<(Method, String, Option<&str>)> = vec![
        (
            Method::PUT,
            format!("/api/skus/{sku}"),
            Some(r#"{"on_hand": 99}"#),
        ),
        (
            Method::POST,
            format!("/api/skus/{sku}/restock"),
            Some(r#"{"qty": 9}"#),
        ),
        (
            Method::POST,
            format!("/api/skus/{sku}/adjustments"),
            Some(r#"{"delta": -1, "reason": "lost"}"#),
        ),
        (Method::GET, format!("/api/skus/{sku}/ledger"), None),
    ];
    let wrong_tokens = [
        None,
        Some(format!("Bearer {}x", app.token)),
        Some("Bearer ".to_owned()),
        Some(format!("Basic {}", app.token)),
        Some(app.token.clone()),
    ];
    for (method, path, body) in cases {
        for token in &wrong_tokens {
            let mut headers = vec![json_ct.clone()];
            if let Some(t) = token {
                headers.push(("Authorization", t.clone()));
            }
            let reply = app
                .send(call(method.clone(), path.clone(), body, headers))
                .await;
            reply.assert_problem(401, "unauthorized");
            assert!(reply
                .header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")));
        }
    }
    assert_eq!(snapshot(&app, &sku).await, before);
}

pub async fn bad_input_is_a_problem_and_changes_nothing(app: App) {
    let sku = unique("bad");
    app.given_sku(&sku, json!({"on_hand": 10, "per_buyer_limit": 5}))
        .await;
    let before = snapshot(&app, &sku).await;
    let reserve = format!("/api/skus/{sku}/reservations");
    let setup = format!("/api/skus/{sku}");
    let huge = format!(r#"{{"qty": 1, "buyer": "{}"}}"#, "x".repeat(20_000));
    let cases: Vec<(&str, Method, &str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            Method::POST,
            &reserve,
            r#"{"qty": 1,"#.into(),
            400,
            "malformed-json",
        ),
        (
            "not JSON",
            Method::POST,
            &reserve,
            "qty=1".into(),
            400,
            "malformed-json",
        ),
        (
            "empty body",
            Method::POST,
            &reserve,
            "".into(),
            400,
            "malformed-json",
        ),
        (
            "zero",
            Method::POST,
            &reserve,
            r#"{"qty": 0, "buyer": "b"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "negative",
            Method::POST,
            &reserve,
            r#"{"qty": -3, "buyer": "b"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "float",
            Method::POST,
            &reserve,
            r#"{"qty": 1.5, "buyer": "b"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "string",
            Method::POST,
            &reserve,
            r#"{"qty": "1", "buyer": "b"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "overflow",
            Method::POST,
            &reserve,
            r#"{"qty": 18446744073709551616, "buyer": "b"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "over the cap",
            Method::POST,
            &reserve,
            r#"{"qty": 1000000001, "buyer": "b"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "missing qty",
            Method::POST,
            &reserve,
            r#"{"buyer": "b"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "another buyer than the session's",
            Method::POST,
            &reserve,
            r#"{"qty": 1, "buyer": "c"}"#.into(),
            403,
            "forbidden",
        ),
        (
            "one hold over max_per_hold",
            Method::POST,
            &reserve,
            r#"{"qty": 6}"#.into(),
            422,
            "over-hold-max",
        ),
        (
            "bad buyer",
            Method::POST,
            &reserve,
            r#"{"qty": 1, "buyer": "a b"}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "unknown field",
            Method::POST,
            &reserve,
            r#"{"qty": 1, "buyer": "b", "price": 3}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "array",
            Method::POST,
            &reserve,
            "[1]".into(),
            422,
            "invalid-body",
        ),
        (
            "too large",
            Method::POST,
            &reserve,
            huge,
            413,
            "payload-too-large",
        ),
        (
            "negative on_hand",
            Method::PUT,
            &setup,
            r#"{"on_hand": -1}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "hold_seconds 0",
            Method::PUT,
            &setup,
            r#"{"on_hand": 1, "hold_seconds": 0}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "hold_seconds too long",
            Method::PUT,
            &setup,
            r#"{"on_hand": 1, "hold_seconds": 86401}"#.into(),
            422,
            "invalid-body",
        ),
        (
            "on_hand over the max",
            Method::PUT,
            &setup,
            r#"{"on_hand": 1000000000001}"#.into(),
            422,
            "invalid-body",
        ),
    ];
    for (name, method, path, body, status, slug) in cases {
        let admin = method == Method::PUT;
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        headers.push(if admin {
            app.bearer()
        } else {
            app.as_buyer("b")
        });
        let reply = app
            .send(call(method, path.to_owned(), Some(&body), headers))
            .await;
        assert_eq!(reply.status, status, "{name}: {:?}", reply.body);
        reply.assert_problem(status, slug);
    }

    // Headers and ids.
    let form = app
        .send(call(
            Method::POST,
            reserve.clone(),
            Some(r#"{"qty": 1, "buyer": "b"}"#),
            vec![
                ("Content-Type", "application/x-www-form-urlencoded".into()),
                app.as_buyer("b"),
            ],
        ))
        .await;
    form.assert_problem(415, "unsupported-media-type");
    let bad_key = app
        .send(call(
            Method::POST,
            reserve.clone(),
            Some(r#"{"qty": 1, "buyer": "b"}"#),
            vec![("Idempotency-Key", "has a space".into()), app.as_buyer("b")],
        ))
        .await;
    bad_key.assert_problem(400, "invalid-header");
    for bad_id in ["bad%20id", "a.b!c", &"x".repeat(65)] {
        app.get_sku(bad_id)
            .await
            .assert_problem(400, "invalid-request");
        app.reserve(bad_id, 1, "b")
            .await
            .assert_problem(400, "invalid-request");
    }
    let bad_page = app
        .send(call(
            Method::GET,
            format!("/api/skus/{sku}/ledger?limit=0"),
            None,
            vec![app.bearer()],
        ))
        .await;
    bad_page.assert_problem(400, "invalid-request");

    assert_eq!(snapshot(&app, &sku).await, before);
}

pub async fn unknown_routes_and_methods_are_problems(app: App) {
    let sku = unique("routes");
    for path in [
        "/api/nope",
        "/api/skus",
        &format!("/api/skus/{sku}/nope"),
        "/api/skus/a/b/c/d/e/f",
    ] {
        let reply = app
            .send(call(Method::GET, path.to_owned(), None, vec![]))
            .await;
        reply.assert_problem(404, "not-found");
    }
    let cases = [
        (Method::POST, format!("/api/skus/{sku}"), "GET, PUT"),
        (Method::DELETE, format!("/api/skus/{sku}"), "GET, PUT"),
        (Method::GET, format!("/api/skus/{sku}/reservations"), "POST"),
        (Method::PUT, format!("/api/skus/{sku}/ledger"), "GET"),
    ];
    for (method, path, allow) in cases {
        let reply = app.send(call(method, path, None, vec![])).await;
        reply.assert_problem(405, "method-not-allowed");
        assert_eq!(reply.header("allow"), Some(allow));
    }
}

pub async fn unknown_holds_are_not_found(app: App) {
    let sku = unique("nohold");
    app.given_sku(&sku, json!({"on_hand": 1})).await;
    let before = snapshot(&app, &sku).await;
    let missing = "h_00000000000000000000000000000000";
    app.get_hold(&sku, missing)
        .await
        .assert_problem(404, "hold-not-found");
    app.commit(&sku, missing)
        .await
        .assert_problem(404, "hold-not-found");
    app.release(&sku, missing)
        .await
        .assert_problem(404, "hold-not-found");
    app.commit(&sku, "not-an-id")
        .await
        .assert_problem(404, "hold-not-found");
    // A hold of another SKU is not this SKU's.
    let other = unique("nohold-other");
    app.given_sku(&other, json!({"on_hand": 1})).await;
    let theirs = app.reserve(&other, 1, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.commit(&sku, &theirs)
        .await
        .assert_problem(404, "hold-not-found");
    assert_eq!(snapshot(&app, &sku).await, before);
}
