//! The OpenAPI document (www/openapi.json, also served at /openapi.json)
//! against the running server: every operation exists and answers a valid
//! request, a malformed body, and a missing token with statuses the
//! document lists for it.

use crate::app::{unique, App, Call};
use crate::receiver::Receiver;
use reqwest::Method;
use serde_json::{json, Value};

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/www/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("www/openapi.json"))
        .expect("valid JSON")
}

pub async fn every_documented_operation_answers_as_documented(app: App) {
    let spec = spec();
    let served = app.bare(Method::GET, "/openapi.json".into()).await;
    assert_eq!(served.status, 200);
    assert_eq!(
        served.body, spec,
        "the served document is the one in the repo"
    );

    // Fixtures for the path parameters.
    let sku = unique("spec");
    app.given_sku(&sku, json!({"on_hand": 100})).await;
    let hold = app.reserve(&sku, 1, "spec-buyer").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let order = app.given_order("spec-buyer", &[(&sku, 1)]).await;
    // An endpoint with one delivery (a sell-out), and one to delete.
    let receiver = Receiver::accepting().await;
    let (webhook, _) = app.given_webhook(&receiver.url("/"), &["sold_out"]).await;
    let (doomed, _) = app.given_webhook(&receiver.url("/"), &["sold_out"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_300)).await;
    let gone = unique("spec-gone");
    app.given_sku(&gone, json!({"on_hand": 1})).await;
    app.reserve(&gone, 1, "spec-buyer").await;
    let event = receiver.wait_for(&format!("sku:{gone}"), 2, 20).await[0].body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A replenishment request: a reorder point above what is left.
    let policy = json!({"mode": "suggest", "reorder_point": 200, "reorder_qty": 50});
    let set = app
        .send(app.json_call(
            Method::PUT,
            format!("/api/skus/{sku}/replenishment"),
            policy,
            true,
        ))
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let listed = app
        .with(
            Method::GET,
            format!("/api/skus/{sku}/replenishments"),
            vec![app.bearer()],
        )
        .await;
    let request = listed.body["requests"][0]["id"]
        .as_str()
        .expect("a request")
        .to_owned();
    // A channel: the document's putChannel example connects it (generic,
    // secret "demo-secret"), which signs the intake example.
    let channel = unique("spec-ch").to_ascii_lowercase().replace('.', "-");
    let doomed_channel = unique("spec-gone").to_ascii_lowercase().replace('.', "-");
    for name in [&channel, &doomed_channel] {
        let body = json!({"platform": "generic", "secret": "demo-secret"});
        let path = format!("/api/channels/{name}");
        let made = app.send(app.json_call(Method::PUT, path, body, true)).await;
        assert_eq!(made.status, 201, "{:?}", made.body);
    }
    // A job (its one row names no order).
    let made = app
        .send(Call {
            method: Method::POST,
            path: "/api/jobs?kind=ship".into(),
            body: Some(format!("o_{},SF,1\n", "0".repeat(32))),
            headers: vec![app.bearer(), ("Content-Type", "text/csv".to_owned())],
        })
        .await;
    assert_eq!(made.status, 202, "{:?}", made.body);
    let job = made.body["id"].as_str().unwrap().to_owned();
    let fill = |template: &str, id: &str| {
        let channel = if id == "deleteChannel" {
            &doomed_channel
        } else {
            &channel
        };
        let webhook = if id == "deleteWebhook" {
            &doomed
        } else {
            &webhook
        };
        template
            .replace("{webhook}", webhook)
            .replace("{event}", &event)
            .replace("{request}", &request)
            .replace("{sku}", &sku)
            .replace("{hold}", &hold)
            .replace("{order}", &order)
            .replace("{buyer}", "spec-buyer")
            .replace("{room}", "spec-room")
            .replace("{channel}", channel)
            .replace("{job}", &job)
    };

    let mut checked = 0;
    for (template, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let id = operation["operationId"].as_str().unwrap();
            let documented: Vec<u16> = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let secured = operation.get("security").is_some();
            let scheme = operation["security"][0]
                .as_object()
                .and_then(|o| o.keys().next().cloned());
            let example = &operation["requestBody"]["content"]["application/json"]["example"];
            // The credential the document's first security scheme names,
            // made for this body (a payment signature covers the bytes).
            let headers = |body: Option<&str>| {
                let mut headers = vec![("Content-Type", "application/json".to_owned())];
                match scheme.as_deref() {
                    Some("bearer") => headers.push(app.bearer()),
                    Some("buyerSession") => headers.push(app.as_buyer("spec-buyer")),
                    Some("paymentSignature") => {
                        headers.push(app.payment_signature(body.unwrap_or("")))
                    }
                    Some("carrierSignature") => {
                        let now = crate::app::now_ms() / 1000;
                        let secret = format!("{}-carriers", app.token);
                        let signed = edgestock::api::session::sign_body(
                            now,
                            body.unwrap_or("").as_bytes(),
                            secret.as_bytes(),
                        );
                        headers.push(("Edgestock-Signature", signed))
                    }
                    Some("channelSignature") => {
                        let now = crate::app::now_ms() / 1000;
                        let signed = edgestock::api::session::sign_body(
                            now,
                            body.unwrap_or("").as_bytes(),
                            b"demo-secret",
                        );
                        headers.push(("Edgestock-Signature", signed))
                    }
                    Some(other) => panic!("{id}: unknown scheme {other}"),
                    None => {}
                }
                headers
            };
            let call = |body: Option<String>, headers: Vec<(&'static str, String)>| Call {
                method: method.clone(),
                path: fill(template, id),
                body,
                headers,
            };
            let body = (!example.is_null()).then(|| example.to_string());
            let valid = app.send(call(body.clone(), headers(body.as_deref()))).await;
            assert!(
                documented.contains(&valid.status) && ![404, 405].contains(&valid.status)
                    || id == "getHold" && valid.status == 200,
                "{id}: a valid request answered {} {:?}; documented {documented:?}",
                valid.status,
                valid.body
            );
            if valid.status >= 400 {
                assert_eq!(valid.content_type, "application/problem+json", "{id}");
            }
            if !example.is_null() {
                // Changes nothing: sent again if the dev proxy drops it.
                let malformed = app
                    .send_retrying(call(Some("{".into()), headers(Some("{"))))
                    .await;
                assert!(
                    documented.contains(&malformed.status),
                    "{id}: malformed body answered {}",
                    malformed.status
                );
                assert_eq!(malformed.status, 400, "{id}");
            }
            if secured && !id.ends_with("Live") {
                let anonymous = app.send_retrying(call(None, vec![])).await;
                assert_eq!(anonymous.status, 401, "{id}");
                assert!(documented.contains(&401), "{id}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 67, "operations in the document");
    // The example channel pushes to a host that does not resolve:
    // disconnected, so it is not retried for the rest of the run.
    let gone = app
        .with(
            Method::DELETE,
            format!("/api/channels/{channel}"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(gone.status, 200, "{:?}", gone.body);
    // The document's example endpoint (made by createWebhook) points at a
    // host that does not resolve: deleted, so the other tests' notices do
    // not queue for it.
    let listed = app
        .with(Method::GET, "/api/webhooks".into(), vec![app.bearer()])
        .await;
    for endpoint in listed.body["endpoints"].as_array().unwrap() {
        if endpoint["url"] == json!("https://merchant.example/edgestock") {
            let path = format!("/api/webhooks/{}", endpoint["id"].as_str().unwrap());
            app.with(Method::DELETE, path, vec![app.bearer()]).await;
        }
    }
}
