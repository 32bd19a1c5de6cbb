//! Merchant webhooks against the real runtime and a real receiver: notices
//! arrive signed, once each, in order per source; failures are retried
//! with growing gaps and logged; a resend delivers again; bad input is a
//! problem; and nothing is lost across a restart.

use crate::app::{now_ms, unique, App};
use crate::harness::Server;
use crate::receiver::{Answer, Receiver, Seen};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Past the isolates' cache of endpoints (2 s): notices made from now on
/// reach a new endpoint.
async fn endpoints_seen() {
    tokio::time::sleep(Duration::from_millis(2_300)).await;
}

/// What a receiver does with `Edgestock-Signature`: HMAC-SHA256 of
/// "<t>.<raw body>" under the endpoint's secret, `t` recent.
fn verify(seen: &Seen, secret: &str) {
    let header = seen.header("edgestock-signature");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header: {header:?}"));
    let t: u64 = t.parse().expect("t is seconds");
    assert!(now_ms() / 1000 - t < 300, "signed recently");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", seen.raw).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, expected, "the signature verifies with the secret");
    assert_eq!(
        seen.header("edgestock-event-id"),
        seen.body["id"].as_str().unwrap()
    );
    assert_eq!(
        seen.header("edgestock-event-type"),
        seen.body["type"].as_str().unwrap()
    );
}

fn types(seen: &[Seen]) -> Vec<&str> {
    seen.iter()
        .map(|s| s.body["type"].as_str().unwrap())
        .collect()
}

async fn delete_endpoint(app: &App, id: &str) {
    let reply = app
        .with(
            Method::DELETE,
            format!("/api/webhooks/{id}"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

pub async fn stock_and_order_notices_arrive_signed_once_and_in_order(app: App) {
    let receiver = Receiver::accepting().await;
    let (id, secret) = app
        .given_webhook(
            &receiver.url("/hooks"),
            &["low_stock", "sold_out", "back_in_stock", "order_status"],
        )
        .await;
    // The secret is shown once: never again.
    let shown = app
        .with(
            Method::GET,
            format!("/api/webhooks/{id}"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["url"], json!(receiver.url("/hooks")));
    assert!(shown.body.get("secret").is_none(), "{:?}", shown.body);
    let list = app
        .with(Method::GET, "/api/webhooks".into(), vec![app.bearer()])
        .await;
    let listed = list.body["endpoints"].as_array().unwrap();
    assert!(listed.iter().any(|e| e["id"] == json!(id)));
    assert!(listed.iter().all(|e| e.get("secret").is_none()));
    endpoints_seen().await;

    let sku = unique("hooked");
    app.given_sku(&sku, json!({"on_hand": 3, "low_stock_threshold": 1}))
        .await;
    let first = app.reserve(&sku, 2, &app.viewer).await;
    assert_eq!(first.status, 201);
    let last = app.reserve(&sku, 1, &app.viewer).await;
    assert_eq!(last.status, 201);
    let hold = last.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.release(&sku, &hold).await.status, 200);

    let source = format!("sku:{sku}");
    let seen = receiver.wait_for(&source, 3, 20).await;
    assert_eq!(types(&seen), ["low_stock", "sold_out", "back_in_stock"]);
    for s in &seen {
        verify(s, &secret);
        assert_eq!(s.body["data"]["sku"], json!(sku));
        assert_eq!(s.header("edgestock-delivery-attempt"), "1");
    }
    assert_eq!(seen[1].body["data"]["available"], json!(0));
    assert_eq!(seen[2].body["data"]["available"], json!(1));
    // Once each (a later look finds no repeats).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(receiver.sent_by(&source).len(), 3);

    // An order's status changes, from its own source, in order.
    let goods = unique("hooked-order");
    app.given_sku(&goods, json!({"on_hand": 10})).await;
    let order = app.given_order(&app.viewer, &[(&goods, 2)]).await;
    let paid = app
        .order_action(&order, "pay", json!({"payment_ref": unique("pay")}))
        .await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    let order_source = format!("order:{order}");
    let statuses = receiver.wait_for(&order_source, 2, 20).await;
    let told: Vec<&Value> = statuses.iter().map(|s| &s.body["data"]["status"]).collect();
    assert_eq!(told, [&json!("reserved"), &json!("paid")]);
    for s in &statuses {
        verify(s, &secret);
        assert_eq!(s.body["data"]["order"], json!(order));
        assert_eq!(s.body["data"]["lines"][0]["sku"], json!(goods));
    }

    // The delivery log: each delivered on the first try, with its 200.
    let log = app.deliveries(&id).await;
    for s in seen.iter().chain(&statuses) {
        let entry = log
            .iter()
            .find(|d| d["event"] == s.body["id"])
            .unwrap_or_else(|| panic!("{} in the log", s.body["id"]));
        assert_eq!(entry["state"], json!("delivered"), "{entry}");
        assert_eq!(entry["attempts"], json!(1));
        assert_eq!(entry["log"][0]["status"], json!(200));
        assert_eq!(entry["next_retry_at"], Value::Null);
    }
    delete_endpoint(&app, &id).await;
    let gone = app
        .with(
            Method::GET,
            format!("/api/webhooks/{id}"),
            vec![app.bearer()],
        )
        .await;
    gone.assert_problem(404, "webhook-not-found");
}

pub async fn failed_deliveries_are_retried_with_backoff_logged_and_resent(app: App) {
    let sku = unique("retried");
    let source = format!("sku:{sku}");
    let ours = source.clone();
    // Our SKU's first two tries get 500, the third no answer (past the
    // server's WEBHOOK_TIMEOUT_MS), then 200s. Other tests' notices: 200.
    let receiver = Receiver::start(
        0,
        Arc::new(move |seen: &Seen, before: usize| {
            if seen.source() != ours {
                return Answer::Status(200);
            }
            match before {
                0 | 1 => Answer::Status(500),
                2 => Answer::Hang(Duration::from_secs(4)),
                _ => Answer::Status(204),
            }
        }),
    )
    .await;
    let (id, secret) = app
        .given_webhook(&receiver.url("/in"), &["sold_out", "back_in_stock"])
        .await;
    endpoints_seen().await;
    app.given_sku(&sku, json!({"on_hand": 1})).await;
    assert_eq!(app.reserve(&sku, 1, &app.viewer).await.status, 201);
    // Back in stock while the sell-out is still being retried: it waits.
    assert_eq!(
        app.admin_post(&sku, "restock", json!({"qty": 4}))
            .await
            .status,
        200
    );

    let seen = receiver.wait_for(&source, 5, 40).await;
    assert_eq!(
        types(&seen),
        [
            "sold_out",
            "sold_out",
            "sold_out",
            "sold_out",
            "back_in_stock"
        ],
        "one source in order: the second notice waits for the first"
    );
    let sold_out = seen[0].body["id"].clone();
    assert!(seen[..4].iter().all(|s| s.body["id"] == sold_out));
    let attempts: Vec<&str> = seen[..4]
        .iter()
        .map(|s| s.header("edgestock-delivery-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "4"]);
    for s in &seen {
        verify(s, &secret);
    }
    // Backoff: the gaps grow (about 1 s, 2 s, then 4 s after the timeout;
    // each at least half its step, for the jitter).
    let gaps: Vec<u64> = seen[..4]
        .windows(2)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .collect();
    assert!(gaps[0] >= 450, "{gaps:?}");
    assert!(gaps[1] >= 950, "{gaps:?}");
    assert!(gaps[2] >= 1_900, "{gaps:?}");

    let log = app.deliveries(&id).await;
    let entry = log.iter().find(|d| d["event"] == sold_out).unwrap();
    assert_eq!(entry["state"], json!("delivered"));
    assert_eq!(entry["attempts"], json!(4));
    let statuses: Vec<&Value> = entry["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(
        statuses,
        [&json!(500), &json!(500), &Value::Null, &json!(204)]
    );
    assert!(entry["log"][2]["error"]
        .as_str()
        .unwrap()
        .contains("no answer"));
    let pending = app
        .with(
            Method::GET,
            format!("/api/webhooks/{id}/deliveries?state=pending"),
            vec![app.bearer()],
        )
        .await;
    assert!(pending.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["source"] != json!(source)));

    // Resend: the same event, delivered again.
    let sold_out = sold_out.as_str().unwrap();
    let resent = app
        .with(
            Method::POST,
            format!("/api/webhooks/{id}/deliveries/{sold_out}/resend"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(resent.status, 200, "{:?}", resent.body);
    let again = receiver.wait_for(&source, 6, 20).await;
    assert_eq!(again[5].body["id"], json!(sold_out));
    assert_eq!(again[5].header("edgestock-delivery-attempt"), "5");
    delete_endpoint(&app, &id).await;
}

pub async fn bad_webhook_input_is_a_problem_and_changes_nothing(app: App) {
    let post = |body: Value| app.json_call(Method::POST, "/api/webhooks".into(), body, true);
    for (body, why) in [
        (json!({"url": "ftp://x", "events": ["sold_out"]}), "url"),
        (
            json!({"url": "https://m.example/h", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://m.example/h", "events": ["sold-out"]}),
            "sold-out",
        ),
        (json!({"url": "https://m.example/h"}), "events"),
        (
            json!({"url": "https://m.example/h", "events": ["*"], "x": 1}),
            "x",
        ),
    ] {
        let reply = app.send(post(body)).await;
        reply.assert_problem(422, "invalid-body");
        assert!(
            reply.body["detail"].as_str().unwrap().contains(why),
            "{:?}",
            reply.body
        );
    }
    let mut unsigned = post(json!({"url": "https://m.example/h", "events": ["*"]}));
    unsigned.headers.retain(|(n, _)| *n != "Authorization");
    app.send(unsigned).await.assert_problem(401, "unauthorized");
    let list = app
        .with(Method::GET, "/api/webhooks".into(), vec![app.bearer()])
        .await;
    assert!(list.body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["url"] != json!("https://m.example/h")));
    let nobody = "we_00000000000000000000000000000000";
    app.with(
        Method::GET,
        format!("/api/webhooks/{nobody}/deliveries"),
        vec![app.bearer()],
    )
    .await
    .assert_problem(404, "webhook-not-found");
    let receiver = Receiver::accepting().await;
    let (id, _) = app.given_webhook(&receiver.url("/"), &["*"]).await;
    let no_event = "evt_00000000000000000000000000000000";
    app.with(
        Method::POST,
        format!("/api/webhooks/{id}/deliveries/{no_event}/resend"),
        vec![app.bearer()],
    )
    .await
    .assert_problem(404, "delivery-not-found");
    app.with(
        Method::GET,
        format!("/api/webhooks/{id}/deliveries?state=lost"),
        vec![app.bearer()],
    )
    .await
    .assert_problem(400, "invalid-request");
    delete_endpoint(&app, &id).await;
}

/// Sequential: it stops the server with a notice undelivered (its receiver
/// is down), then starts both; the notice arrives, once.
pub async fn undelivered_notices_survive_a_restart(app: App, server: &mut Server) {
    // A port with nothing on it yet: every try is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (id, secret) = app
        .given_webhook(&format!("http://127.0.0.1:{port}/down"), &["sold_out"])
        .await;
    endpoints_seen().await;
    let sku = unique("restarted");
    app.given_sku(&sku, json!({"on_hand": 2})).await;
    assert_eq!(app.reserve(&sku, 2, &app.viewer).await.status, 201);
    let source = format!("sku:{sku}");
    // Tried and failed at least once before the stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = app.deliveries(&id).await;
        let tried = log
            .iter()
            .any(|d| d["source"] == json!(source) && d["attempts"].as_u64() > Some(0));
        if tried {
            assert!(log.iter().all(|d| d["state"] == json!("pending")));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never tried: {log:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop();
    let receiver = Receiver::start(port, Arc::new(|_, _| Answer::Status(200))).await;
    server.start().await;
    let seen = receiver.wait_for(&source, 1, 60).await;
    verify(&seen[0], &secret);
    assert_eq!(seen[0].body["type"], json!("sold_out"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.sent_by(&source).len(), 1, "once");
    delete_endpoint(&app, &id).await;
}
