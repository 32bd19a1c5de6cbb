//! A typed client for the API under test, and small assertion helpers.

use reqwest::{Client, Method};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone)]
pub struct App {
    pub base: String,
    pub token: String,
    pub client: Client,
    /// Requests in flight at once. wrangler dev's Node proxy drops
    /// connections (503, reset) with ~500 simultaneous sockets on this
    /// machine; 128 in flight still queue far more requests at one object
    /// than it serves at a time, so races stay races.
    pub in_flight: std::sync::Arc<tokio::sync::Semaphore>,
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
    pub async fn send(&self, call: Call<'_>) -> Reply {
        self.try_send(call).await.expect("the server answers")
    }

    /// Sends a request that carries an Idempotency-Key, retrying (up to 5
    /// times) when the dev proxy in front of the worker drops it: a reset
    /// connection, or a 503 that is not one of ours (ours are problems).
    /// Safe because the key makes a retry return the first answer; the
    /// tests' exact counts would catch a request applied twice.
    pub async fn send_keyed(&self, call: Call<'_>) -> Reply {
        assert!(call.headers.iter().any(|(n, _)| *n == "Idempotency-Key"));
        for _ in 0..5 {
            let again = Call {
                method: call.method.clone(),
                path: call.path.clone(),
                body: call.body.clone(),
                headers: call.headers.clone(),
            };
            match self.try_send(again).await {
                Ok(reply) if !(reply.status == 503 && reply.body.is_null()) => return reply,
                _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
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

    async fn try_send(&self, call: Call<'_>) -> Result<Reply, reqwest::Error> {
        let _permit = self.in_flight.acquire().await.expect("semaphore open");
        let mut request = self
            .client
            .request(call.method, format!("{}{}", self.base, call.path));
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

    fn json_call(&self, method: Method, path: String, body: Value, admin: bool) -> Call<'static> {
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

    /// The SKU's (on_hand, reserved, sold, available), checking that they add up.
    pub async fn counts(&self, sku: &str) -> (u64, u64, u64, u64) {
        let body = self.get_sku(sku).await.body;
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
        let call = self.json_call(
            Method::POST,
            format!("/api/skus/{sku}/reservations"),
            json!({ "qty": qty, "buyer": buyer }),
            false,
        );
        self.send_maybe_keyed(call, key).await
    }

    pub async fn commit(&self, sku: &str, hold: &str) -> Reply {
        self.bare(
            Method::POST,
            format!("/api/skus/{sku}/reservations/{hold}/commit"),
        )
        .await
    }

    pub async fn release(&self, sku: &str, hold: &str) -> Reply {
        self.bare(
            Method::DELETE,
            format!("/api/skus/{sku}/reservations/{hold}"),
        )
        .await
    }

    pub async fn get_hold(&self, sku: &str, hold: &str) -> Reply {
        self.bare(Method::GET, format!("/api/skus/{sku}/reservations/{hold}"))
            .await
    }

    pub async fn admin_post(&self, sku: &str, what: &str, body: Value) -> Reply {
        self.send(self.json_call(Method::POST, format!("/api/skus/{sku}/{what}"), body, true))
            .await
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
        let call = self.json_call(
            Method::POST,
            "/api/orders".into(),
            json!({"buyer": buyer, "channel": "douyin", "lines": lines}),
            false,
        );
        self.send_maybe_keyed(call, key).await
    }

    /// Creates an order and asserts it was reserved; returns its id.
    pub async fn given_order(&self, buyer: &str, lines: &[(&str, u64)]) -> String {
        let reply = self.create_order(buyer, lines, None).await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        assert_eq!(reply.body["status"], json!("reserved"));
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// POST /api/orders/{id}/{action}; ship, deliver and refund as admin.
    pub async fn order_action(&self, id: &str, action: &str, body: Value) -> Reply {
        let admin = matches!(action, "ship" | "deliver" | "refund");
        self.send(self.json_call(
            Method::POST,
            format!("/api/orders/{id}/{action}"),
            body,
            admin,
        ))
        .await
    }

    pub async fn get_order(&self, id: &str) -> Reply {
        self.bare(Method::GET, format!("/api/orders/{id}")).await
    }
}
