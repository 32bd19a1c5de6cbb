//! A typed client for the API under test, and small assertion helpers.

use edgestock::api::session::{sign_body, sign_session, Claims};
use edgestock::domain::types::BuyerId;
use reqwest::{Client, Method};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct App {
    pub base: String,
    pub token: String,
    /// The server's BUYER_SESSION_SECRET: the tests play the merchant's
    /// backend that mints buyer sessions.
    pub session_secret: String,
    /// The server's PAYMENT_WEBHOOK_SECRET: the tests play the provider.
    pub payment_secret: String,
    /// Which buyer placed each order the tests made, to act as that buyer.
    pub owners: Arc<Mutex<HashMap<String, String>>>,
    pub client: Client,
    /// Requests in flight at once. wrangler dev's Node proxy drops
    /// connections (503, reset) with ~500 simultaneous sockets on this
    /// machine; 128 in flight still queue far more requests at one object
    /// than it serves at a time, so races stay races.
    pub in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// The client address every request claims (`CF-Connecting-IP`, which
    /// wrangler dev passes through): one per test, so the per-address rate
    /// limit counts each test's attempts apart, as it would count viewers
    /// behind different networks.
    pub address: String,
    /// A buyer id of this test's own, for tests that need "a viewer": a
    /// shared one would meet the cap on a buyer's live holds across tests.
    pub viewer: String,
}

pub const IN_FLIGHT_MAX: usize = 128;

/// A response: status, selected headers, and the body as JSON (Null if empty
/// or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status and type slug.
    pub fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status, status, "status of {:?}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{:?}",
            self.body
        );
        assert_eq!(
            self.body["type"],
            json!(format!("/problems/{slug}")),
            "{:?}",
            self.body
        );
        assert_eq!(self.body["status"], json!(status));
        assert!(self.body["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A client address (from the documentation range 2001:db8::/32) no other
/// test uses.
pub fn unique_address() -> String {
    format!("2001:db8::{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A SKU id no other test uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{nanos:x}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One request as a test builds it.
pub struct Call<'a> {
    pub method: Method,
    pub path: String,
    pub body: Option<String>,
    pub headers: Vec<(&'a str, String)>,
}

impl App {
    /// Sends a request once; a read (GET) or a setup (PUT, which sets
    /// rather than adds) is sent again when the dev proxy drops it, as
    /// [`send_retrying`](App::send_retrying) does.
    pub async fn send(&self, call: Call<'_>) -> Reply {
        if call.method == Method::GET || call.method == Method::PUT {
            return self.send_retrying(call).await;
        }
        self.try_send(call).await.expect("the server answers")
    }

    /// Sends a request that carries an Idempotency-Key, retrying (up to 5
    /// times) when the dev proxy in front of the worker drops it: a reset
    /// connection, or a 503 that is not one of ours (ours are problems).
    /// Safe because the key makes a retry return the first answer; the
    /// tests' exact counts would catch a request applied twice.
    pub async fn send_keyed(&self, call: Call<'_>) -> Reply {
        assert!(call.headers.iter().any(|(n, _)| *n == "Idempotency-Key"));
        self.send_retrying(call).await
    }

    /// Retries what the dev proxy drops, as [`send_keyed`](App::send_keyed)
    /// does; for requests idempotent by their own content (a payment
    /// callback, by its `payment_ref`).
    pub async fn send_retrying(&self, call: Call<'_>) -> Reply {
        // 0.2 s doubling to 3.2 s: about 16 s in all, long enough for the
        // proxy to recover from a burst (a 2,000-order session).
        for attempt in 0..8u32 {
            let again = Call {
                method: call.method.clone(),
                path: call.path.clone(),
                body: call.body.clone(),
                headers: call.headers.clone(),
            };
            match self.try_send(again).await {
                Ok(reply) if !(reply.status == 503 && reply.body.is_null()) => return reply,
                _ => {
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt.min(4)))
                        .await
                }
            }
        }
        panic!("{} {}: no answer after retries", call.method, call.path);
    }

    /// With a key, as [`send_keyed`](App::send_keyed); without, once.
    pub async fn send_maybe_keyed(&self, mut call: Call<'_>, key: Option<&str>) -> Reply {
        match key {
            Some(key) => {
                call.headers.push(("Idempotency-Key", key.to_owned()));
                self.send_keyed(call).await
            }
            None => self.send(call).await,
        }
    }

    pub async fn try_send(&self, call: Call<'_>) -> Result<Reply, reqwest::Error> {
        let _permit = self.in_flight.acquire().await.expect("semaphore open");
        let mut request = self
            .client
            .request(call.method, format!("{}{}", self.base, call.path));
        if !call.headers.iter().any(|(n, _)| *n == "CF-Connecting-IP") {
            request = request.header("CF-Connecting-IP", &self.address);
        }
        for (name, value) in call.headers {
            request = request.header(name, value);
        }
        if let Some(body) = call.body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await?;
        Ok(Reply {
            status: status.as_u16(),
            content_type,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    pub fn bearer(&self) -> (&'static str, String) {
        ("Authorization", format!("Bearer {}", self.token))
    }

    /// A session for `buyer`, as the merchant's backend would mint it.
    pub fn session(&self, buyer: &str) -> String {
        let now = now_ms() / 1000;
        let claims = Claims {
            sub: BuyerId::parse(buyer).expect("a valid buyer id"),
            iat: now,
            exp: now + 600,
            device: None,
            account_created: None,
            channel: None,
        };
        sign_session(&claims, self.session_secret.as_bytes())
    }

    /// `Authorization: Bearer <session of buyer>`.
    pub fn as_buyer(&self, buyer: &str) -> (&'static str, String) {
        ("Authorization", format!("Bearer {}", self.session(buyer)))
    }

    /// `Edgestock-Signature` for `body`, signed now.
    pub fn payment_signature(&self, body: &str) -> (&'static str, String) {
        let now = now_ms() / 1000;
        let value = sign_body(now, body.as_bytes(), self.payment_secret.as_bytes());
        ("Edgestock-Signature", value)
    }

    /// The credential to act on an order with: its buyer's session if the
    /// tests placed it, else the admin token.
    pub fn order_owner(&self, id: &str) -> (&'static str, String) {
        let owner = self.owners.lock().unwrap().get(id).cloned();
        match owner {
            Some(buyer) => self.as_buyer(&buyer),
            None => self.bearer(),
        }
    }

    pub fn json_call(
        &self,
        method: Method,
        path: String,
        body: Value,
        admin: bool,
    ) -> Call<'static> {
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        if admin {
            headers.push(self.bearer());
        }
        Call {
            method,
            path,
            body: Some(body.to_string()),
            headers,
        }
    }

    pub async fn put_sku(&self, sku: &str, body: Value) -> Reply {
        self.send(self.json_call(Method::PUT, format!("/api/skus/{sku}"), body, true))
            .await
    }

    /// Sets up a SKU and asserts it worked.
    pub async fn given_sku(&self, sku: &str, body: Value) -> Value {
        let reply = self.put_sku(sku, body).await;
        assert_eq!(reply.status, 200, "setup {sku}: {:?}", reply.body);
        reply.body
    }

    pub async fn get_sku(&self, sku: &str) -> Reply {
        self.bare(Method::GET, format!("/api/skus/{sku}")).await
    }

    /// A request with no body and no headers.
    pub async fn bare(&self, method: Method, path: String) -> Reply {
        self.send(Call {
            method,
            path,
            body: None,
            headers: vec![],
        })
        .await
    }

    /// A read that must see the truth now, past the edge's read cache
    /// (`Cache-Control: no-cache`), as an operator's check does.
    pub async fn get_sku_now(&self, sku: &str) -> Reply {
        self.send(Call {
            method: Method::GET,
            path: format!("/api/skus/{sku}"),
            body: None,
            headers: vec![("Cache-Control", "no-cache".to_owned())],
        })
        .await
    }

    /// The SKU's (on_hand, reserved, sold, available), checking that they
    /// add up: read past the edge's cache, as an operator's check is.
    pub async fn counts(&self, sku: &str) -> (u64, u64, u64, u64) {
        let body = self.get_sku_now(sku).await.body;
        let n = |k: &str| body[k].as_u64().unwrap_or_else(|| panic!("{k} in {body}"));
        let counts = (n("on_hand"), n("reserved"), n("sold"), n("available"));
        assert_eq!(counts.0, counts.1 + counts.2 + counts.3, "{body}");
        counts
    }

    pub async fn reserve(&self, sku: &str, qty: u64, buyer: &str) -> Reply {
        self.reserve_keyed(sku, qty, buyer, None).await
    }

    pub async fn reserve_keyed(
        &self,
        sku: &str,
        qty: u64,
        buyer: &str,
        key: Option<&str>,
    ) -> Reply {
        let mut call = self.json_call(
            Method::POST,
            format!("/api/skus/{sku}/reservations"),
            json!({ "qty": qty, "buyer": buyer }),
            false,
        );
        call.headers.push(self.as_buyer(buyer));
        self.send_maybe_keyed(call, key).await
    }

    /// Commits a hold as the merchant (a storefront cannot commit).
    pub async fn commit(&self, sku: &str, hold: &str) -> Reply {
        let path = format!("/api/skus/{sku}/reservations/{hold}/commit");
        self.with(Method::POST, path, vec![self.bearer()]).await
    }

    /// Releases a hold as the merchant; [`release_as`](App::release_as)
    /// as a buyer.
    pub async fn release(&self, sku: &str, hold: &str) -> Reply {
        let path = format!("/api/skus/{sku}/reservations/{hold}");
        self.with(Method::DELETE, path, vec![self.bearer()]).await
    }

    pub async fn release_as(&self, buyer: &str, sku: &str, hold: &str) -> Reply {
        let path = format!("/api/skus/{sku}/reservations/{hold}");
        self.with(Method::DELETE, path, vec![self.as_buyer(buyer)])
            .await
    }

    pub async fn get_hold(&self, sku: &str, hold: &str) -> Reply {
        let path = format!("/api/skus/{sku}/reservations/{hold}");
        self.with(Method::GET, path, vec![self.bearer()]).await
    }

    /// A request with no body and these headers.
    pub async fn with(
        &self,
        method: Method,
        path: String,
        headers: Vec<(&'static str, String)>,
    ) -> Reply {
        self.send(Call {
            method,
            path,
            body: None,
            headers,
        })
        .await
    }

    pub async fn admin_post(&self, sku: &str, what: &str, body: Value) -> Reply {
        self.send(self.json_call(Method::POST, format!("/api/skus/{sku}/{what}"), body, true))
            .await
    }

    /// The SKU's reconcile check (admin).
    pub async fn audit(&self, sku: &str) -> Value {
        let reply = self
            .send(Call {
                method: Method::GET,
                path: format!("/api/skus/{sku}/audit"),
                body: None,
                headers: vec![self.bearer()],
            })
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body
    }

    /// Every ledger entry of a SKU, paging through it.
    pub async fn ledger(&self, sku: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let reply = self
                .send(Call {
                    method: Method::GET,
                    path: format!("/api/skus/{sku}/ledger?after={after}&limit=50"),
                    body: None,
                    headers: vec![self.bearer()],
                })
                .await;
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            let page = reply.body["entries"].as_array().expect("entries").clone();
            entries.extend(page);
            match reply.body["next_after"].as_u64() {
                Some(next) => after = next,
                None => return entries,
            }
        }
    }
}

impl App {
    /// Registers a webhook endpoint (admin); returns its id and secret.
    pub async fn given_webhook(&self, url: &str, events: &[&str]) -> (String, String) {
        let body = json!({"url": url, "events": events});
        let reply = self
            .send(self.json_call(Method::POST, "/api/webhooks".into(), body, true))
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        let id = reply.body["id"].as_str().expect("id").to_owned();
        let secret = reply.body["secret"].as_str().expect("secret").to_owned();
        (id, secret)
    }

    /// An endpoint's delivery log (admin), newest first.
    pub async fn deliveries(&self, endpoint: &str) -> Vec<Value> {
        let path = format!("/api/webhooks/{endpoint}/deliveries?limit=1000");
        let reply = self.with(Method::GET, path, vec![self.bearer()]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body["deliveries"]
            .as_array()
            .expect("deliveries")
            .clone()
    }

    pub async fn create_order(
        &self,
        buyer: &str,
        lines: &[(&str, u64)],
        key: Option<&str>,
    ) -> Reply {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(s, q)| json!({"sku": s, "qty": q}))
            .collect();
        let mut call = self.json_call(
            Method::POST,
            "/api/orders".into(),
            json!({"buyer": buyer, "channel": "douyin", "lines": lines}),
            false,
        );
        call.headers.push(self.as_buyer(buyer));
        let reply = self.send_maybe_keyed(call, key).await;
        self.note_owner(&reply, buyer);
        reply
    }

    /// Remembers who placed an order the server created.
    pub fn note_owner(&self, reply: &Reply, buyer: &str) {
        if let Some(id) = reply.body["id"].as_str() {
            let mut owners = self.owners.lock().unwrap();
            owners.insert(id.to_owned(), buyer.to_owned());
        }
    }

    /// Creates an order and asserts it was reserved; returns its id.
    pub async fn given_order(&self, buyer: &str, lines: &[(&str, u64)]) -> String {
        let reply = self.create_order(buyer, lines, None).await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        assert_eq!(reply.body["status"], json!("reserved"));
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// POST /api/orders/{id}/{action}: pay as the payment provider (a
    /// signed callback), cancel as the order's buyer, ship, deliver and
    /// refund as the merchant.
    pub async fn order_action(&self, id: &str, action: &str, body: Value) -> Reply {
        self.send(self.order_call(id, action, body)).await
    }

    /// The request [`order_action`](App::order_action) sends.
    pub fn order_call(&self, id: &str, action: &str, body: Value) -> Call<'static> {
        let mut call = self.json_call(
            Method::POST,
            format!("/api/orders/{id}/{action}"),
            body,
            false,
        );
        let credential = match action {
            "pay" => self.payment_signature(call.body.as_deref().unwrap_or("")),
            "cancel" => self.order_owner(id),
            _ => self.bearer(),
        };
        call.headers.push(credential);
        call
    }

    /// The order, as its buyer sees it.
    pub async fn get_order(&self, id: &str) -> Reply {
        let path = format!("/api/orders/{id}");
        self.with(Method::GET, path, vec![self.order_owner(id)])
            .await
    }
}
