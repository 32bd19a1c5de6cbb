//! A fake selling platform that speaks each adapter's formats, written
//! from the formats' descriptions (src/channels/*.rs module docs), not
//! from the adapters' code: its signatures are computed here, with the
//! crypto crates directly, so a mistake in an adapter's signing shows.
//!
//! It does what a platform does to edgestock:
//! - **sends** signed order messages (created, paid, cancelled, refunded)
//!   to `POST /api/channels/{channel}/messages`, one at a time or in
//!   batches (抖店), and can send them again or out of order;
//! - **receives** stock-sync calls on its own HTTP port, checks each one's
//!   signature, records (SKU, quantity, idempotent id) in arrival order,
//!   and answers in the platform's words: success, or on request a
//!   failure, or slowly.
//!
//! The API tests run it in-process; `cargo run --example fake_platform`
//! runs it by hand (see the README).

#![allow(dead_code)]

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Generic,
    Douyin,
    Kuaishou,
    Taobao,
    Wechat,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Generic => "generic",
            Kind::Douyin => "douyin",
            Kind::Kuaishou => "kuaishou",
            Kind::Taobao => "taobao",
            Kind::Wechat => "wechat",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Generic,
            Kind::Douyin,
            Kind::Kuaishou,
            Kind::Taobao,
            Kind::Wechat,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// One stock-sync call the platform received.
#[derive(Debug, Clone)]
pub struct SyncCall {
    pub at_ms: u64,
    pub sku: String,
    pub quantity: u64,
    pub idempotent_id: String,
    /// Whether its signature checked out.
    pub signed: bool,
    /// What the platform answered (false: a failure it was told to give).
    pub accepted: bool,
}

/// An order status a platform reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Paid,
    Cancelled,
    Refunded,
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct OrderMessage {
    pub id: String,
    pub order: String,
    pub status: Status,
    pub buyer: String,
    pub lines: Vec<(String, u64)>,
}

pub struct FakePlatform {
    pub kind: Kind,
    pub app_key: String,
    pub secret: String,
    pub port: u16,
    pub calls: Arc<Mutex<Vec<SyncCall>>>,
    /// Fail this many of the next sync calls (platform error answer) for
    /// the SKU in `fail_sku` (every SKU when it is empty).
    pub fail_next: Arc<AtomicU32>,
    pub fail_sku: Arc<Mutex<String>>,
    /// Answer each sync call after this many ms.
    pub delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            out.push(b' ');
        } else if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
            i += 2;
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

fn get(pairs: &[(String, String)], k: &str) -> String {
    pairs
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The Edgestock-Signature scheme (generic): t=…,v1=hex HMAC("t.body").
fn edgestock_signature(secret: &str, t: u64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hmac_hex(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body])
    )
}

/// TOP's signature: sorted name+value, HMAC-SHA256, upper-case hex.
fn top_sign(secret: &str, pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<_> = pairs.iter().filter(|(k, _)| k != "sign").collect();
    sorted.sort();
    let text: String = sorted.iter().map(|(k, v)| format!("{k}{v}")).collect();
    hmac_hex(secret.as_bytes(), &[text.as_bytes()]).to_uppercase()
}

impl FakePlatform {
    pub async fn start(kind: Kind, app_key: &str, secret: &str, port: u16) -> FakePlatform {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let calls: Arc<Mutex<Vec<SyncCall>>> = Arc::default();
        let fail_next = Arc::new(AtomicU32::new(0));
        let fail_sku: Arc<Mutex<String>> = Arc::default();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (log, fail, delay, only) = (
            calls.clone(),
            fail_next.clone(),
            delay_ms.clone(),
            fail_sku.clone(),
        );
        let (key, sec) = (app_key.to_owned(), secret.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                let (log, fail, delay, key, sec, only) = (
                    log.clone(),
                    fail.clone(),
                    delay.clone(),
                    key.clone(),
                    sec.clone(),
                    only.clone(),
                );
                tokio::spawn(async move {
                    let Some((target, headers, body)) = read(&mut socket).await else {
                        return;
                    };
                    let wait = delay.load(Ordering::Relaxed);
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    let mut call = understand(kind, &key, &sec, &target, &headers, &body);
                    let only = only.lock().unwrap().clone();
                    let failing = (only.is_empty() || only == call.sku)
                        && fail
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    call.accepted = !failing && call.signed;
                    let (status, answer) = answer(kind, call.accepted);
                    log.lock().unwrap().push(call);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        answer.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakePlatform {
            kind,
            app_key: app_key.to_owned(),
            secret: secret.to_owned(),
            port,
            calls,
            fail_next,
            fail_sku,
            delay_ms,
            task,
        }
    }

    /// The sync URL to register for this platform.
    pub fn sync_url(&self) -> String {
        match self.kind {
            Kind::Taobao => format!("http://127.0.0.1:{}/router/rest", self.port),
            _ => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// What `PUT /api/channels/{channel}` takes to connect this platform.
    pub fn connect_body(&self) -> Value {
        json!({
            "platform": self.kind.name(),
            "app_key": self.app_key,
            "secret": self.secret,
            "access_token": "fake-token",
            "sync_url": self.sync_url(),
            "rate_per_s": 50,
        })
    }

    pub fn calls_for(&self, sku: &str) -> Vec<SyncCall> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.sku == sku)
            .cloned()
            .collect()
    }

    /// The number the platform shows for `sku`: the last accepted push.
    pub fn shows(&self, sku: &str) -> Option<u64> {
        self.calls_for(sku)
            .iter()
            .rev()
            .find(|c| c.accepted)
            .map(|c| c.quantity)
    }

    /// Waits until the platform shows `quantity` for `sku`.
    pub async fn wait_shows(&self, sku: &str, quantity: u64, secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if self.shows(sku) == Some(quantity) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: {sku} shows {:?}, not {quantity}, after {secs} s: {:?}",
                self.kind.name(),
                self.shows(sku),
                self.calls_for(sku)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A message (or a 抖店 batch of them) as the platform signs and sends
    /// it: (path and query, headers, content type, body).
    pub fn request(
        &self,
        channel: &str,
        batch: &[OrderMessage],
    ) -> (String, Vec<(String, String)>, String, String) {
        let path = format!("/api/channels/{channel}/messages");
        let now = now_ms() / 1000;
        let status_word = |s: Status| match s {
            Status::Created => "created",
            Status::Paid => "paid",
            Status::Cancelled => "cancelled",
            Status::Refunded => "refunded",
        };
        match self.kind {
            Kind::Generic => {
                let messages: Vec<Value> = batch
                    .iter()
                    .map(|m| {
                        json!({
                            "id": m.id, "order": m.order, "status": status_word(m.status),
                            "buyer": m.buyer,
                            "lines": m.lines.iter().map(|(s, q)| json!({"sku": s, "qty": q})).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let body = json!({ "messages": messages }).to_string();
                let sig = edgestock_signature(&self.secret, now, body.as_bytes());
                (
                    path,
                    vec![("Edgestock-Signature".into(), sig)],
                    "application/json".into(),
                    body,
                )
            }
            Kind::Douyin => {
                let messages: Vec<Value> = batch
                    .iter()
                    .map(|m| {
                        let tag = match m.status {
                            Status::Created => "100",
                            Status::Paid => "101",
                            Status::Cancelled => "106",
                            Status::Refunded => "206",
                        };
                        let data = json!({
                            "p_id": m.order, "open_id": m.buyer,
                            "sku_order_list": m.lines.iter().map(|(s, q)| json!({"code": s, "item_num": q})).collect::<Vec<_>>(),
                        });
                        json!({ "tag": tag, "msg_id": m.id, "data": data.to_string() })
                    })
                    .collect();
                let body = Value::Array(messages).to_string();
                let sign = hmac_hex(
                    self.secret.as_bytes(),
                    &[
                        self.app_key.as_bytes(),
                        body.as_bytes(),
                        self.secret.as_bytes(),
                    ],
                );
                let headers = vec![
                    ("event-sign".into(), sign),
                    ("app-id".into(), self.app_key.clone()),
                    ("sign-method".into(), "hmac-sha256".into()),
                ];
                (path, headers, "application/json".into(), body)
            }
            Kind::Kuaishou => {
                let m = &batch[0];
                let event = match m.status {
                    Status::Created => "kwaishop_order_addOrder",
                    Status::Paid => "kwaishop_order_paySuccess",
                    Status::Cancelled => "kwaishop_order_orderClose",
                    Status::Refunded => "kwaishop_aftersales_refundSuccess",
                };
                let info = json!({
                    "oid": m.order, "buyerOpenId": m.buyer,
                    "itemList": m.lines.iter().map(|(s, q)| json!({"skuNick": s, "num": q})).collect::<Vec<_>>(),
                });
                let body = json!({"msgId": m.id, "event": event, "info": info.to_string(), "createTime": now * 1000}).to_string();
                let t = now.to_string();
                let sign = hmac_hex(
                    self.secret.as_bytes(),
                    &[t.as_bytes(), b".", body.as_bytes()],
                );
                (
                    path,
                    vec![("sign".into(), sign), ("timestamp".into(), t)],
                    "application/json".into(),
                    body,
                )
            }
            Kind::Taobao => {
                let m = &batch[0];
                let topic = match m.status {
                    Status::Created => "taobao_trade_TradeCreate",
                    Status::Paid => "taobao_trade_TradeBuyerPay",
                    Status::Cancelled => "taobao_trade_TradeClose",
                    Status::Refunded => "taobao_refund_RefundSuccess",
                };
                let content = json!({
                    "tid": m.order, "buyer_nick": m.buyer,
                    "orders": m.lines.iter().map(|(s, q)| json!({"outer_sku_id": s, "num": q})).collect::<Vec<_>>(),
                });
                let mut pairs: Vec<(String, String)> = vec![
                    ("topic".into(), topic.into()),
                    ("id".into(), m.id.clone()),
                    ("content".into(), content.to_string()),
                    ("app_key".into(), self.app_key.clone()),
                    ("timestamp".into(), "2026-11-24 10:00:00".into()),
                    ("sign_method".into(), "hmac-sha256".into()),
                ];
                pairs.push(("sign".into(), top_sign(&self.secret, &pairs)));
                let body = pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                (
                    path,
                    vec![],
                    "application/x-www-form-urlencoded".into(),
                    body,
                )
            }
            Kind::Wechat => {
                let m = &batch[0];
                let event = match m.status {
                    Status::Created => "channels_ec_order_new",
                    Status::Paid => "channels_ec_order_pay",
                    _ => "channels_ec_order_cancel",
                };
                // WeChat names a message by event, order and CreateTime:
                // the fake keeps the message id's number as CreateTime so
                // a resend repeats it.
                let create_time: u64 =
                    m.id.bytes()
                        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
                        % 1_000_000_000;
                let body = json!({
                    "ToUserName": "gh_fake", "FromUserName": m.buyer, "CreateTime": create_time,
                    "MsgType": "event", "Event": event,
                    "order_info": {
                        "order_id": m.order,
                        "product_infos": m.lines.iter().map(|(s, q)| json!({"sku_code": s, "sku_cnt": q})).collect::<Vec<_>>(),
                    },
                })
                .to_string();
                let (t, nonce) = (now.to_string(), format!("n{}", now_ms() % 100_000));
                let mut parts = [self.secret.as_str(), t.as_str(), nonce.as_str()];
                parts.sort_unstable();
                use sha1::Digest;
                let sig = hex(&sha1::Sha1::digest(parts.concat().as_bytes()));
                let path = format!("{path}?signature={sig}&timestamp={t}&nonce={nonce}");
                (path, vec![], "application/json".into(), body)
            }
        }
    }
}

/// Reads a sync call: what it asks and whether its signature is right.
fn understand(
    kind: Kind,
    app_key: &str,
    secret: &str,
    target: &str,
    headers: &HashMap<String, String>,
    body: &str,
) -> SyncCall {
    let mut call = SyncCall {
        at_ms: now_ms(),
        sku: String::new(),
        quantity: 0,
        idempotent_id: String::new(),
        signed: false,
        accepted: false,
    };
    let query = target.split_once('?').map_or("", |(_, q)| q);
    match kind {
        Kind::Generic => {
            let v: Value = serde_json::from_str(body).unwrap_or_default();
            call.sku = v["sku"].as_str().unwrap_or("").into();
            call.quantity = v["quantity"].as_u64().unwrap_or(0);
            call.idempotent_id = v["idempotency_key"].as_str().unwrap_or("").into();
            let sig = headers
                .get("edgestock-signature")
                .cloned()
                .unwrap_or_default();
            let t: u64 = sig
                .split(',')
                .find_map(|p| p.strip_prefix("t="))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            call.signed = sig == edgestock_signature(secret, t, body.as_bytes());
        }
        Kind::Douyin => {
            let v: Value = serde_json::from_str(body).unwrap_or_default();
            call.sku = v["code"].as_str().unwrap_or("").into();
            call.quantity = v["stock_num"].as_u64().unwrap_or(0);
            call.idempotent_id = v["idempotent_id"].as_str().unwrap_or("").into();
            let q = form(query);
            let mut params = [
                ("app_key", get(&q, "app_key")),
                ("method", get(&q, "method")),
                ("param_json", body.to_owned()),
                ("timestamp", get(&q, "timestamp")),
                ("v", get(&q, "v")),
            ];
            params.sort();
            let text: String = params.iter().map(|(k, v)| format!("{k}{v}")).collect();
            let expected = hmac_hex(
                secret.as_bytes(),
                &[secret.as_bytes(), text.as_bytes(), secret.as_bytes()],
            );
            call.signed = get(&q, "sign") == expected
                && get(&q, "app_key") == app_key
                && get(&q, "method") == "sku.syncStock"
                && v["incremental"] == json!(false)
                && target.starts_with("/sku/syncStock");
        }
        Kind::Taobao => {
            let pairs = form(body);
            call.sku = get(&pairs, "outer_id");
            call.quantity = get(&pairs, "quantity").parse().unwrap_or(0);
            call.idempotent_id = get(&pairs, "idempotent_id");
            call.signed = get(&pairs, "sign") == top_sign(secret, &pairs)
                && get(&pairs, "type") == "1"
                && get(&pairs, "method") == "taobao.item.quantity.update";
        }
        Kind::Kuaishou => {
            let pairs = form(body);
            let param: Value = serde_json::from_str(&get(&pairs, "param")).unwrap_or_default();
            call.sku = param["skuNick"].as_str().unwrap_or("").into();
            call.quantity = param["stock"].as_u64().unwrap_or(0);
            call.idempotent_id = param["idempotentId"].as_str().unwrap_or("").into();
            let mut sorted: Vec<_> = pairs.iter().filter(|(k, _)| k != "sign").collect();
            sorted.sort();
            let mut text = sorted
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            text.push_str("&signSecret=");
            text.push_str(secret);
            call.signed = get(&pairs, "sign") == hmac_hex(secret.as_bytes(), &[text.as_bytes()]);
        }
        Kind::Wechat => {
            let v: Value = serde_json::from_str(body).unwrap_or_default();
            call.sku = v["out_sku_id"].as_str().unwrap_or("").into();
            call.quantity = v["num"].as_u64().unwrap_or(0);
            call.idempotent_id = v["idempotent_id"].as_str().unwrap_or("").into();
            call.signed = get(&form(query), "access_token") == "fake-token" && v["diff_type"] == 3;
        }
    }
    call
}

fn answer(kind: Kind, ok: bool) -> (u16, String) {
    let body = match (kind, ok) {
        (Kind::Generic, true) => "{}".into(),
        (Kind::Generic, false) => return (500, "{}".into()),
        (Kind::Douyin, true) => json!({"code": 10000, "msg": "success"}).to_string(),
        (Kind::Douyin, false) => json!({"code": 50002, "msg": "系统繁忙"}).to_string(),
        (Kind::Taobao, true) => json!({"item_quantity_update_response": {"item": {}}}).to_string(),
        (Kind::Taobao, false) => {
            json!({"error_response": {"code": 7, "msg": "App Call Limited"}}).to_string()
        }
        (Kind::Kuaishou, true) => json!({"result": 1}).to_string(),
        (Kind::Kuaishou, false) => json!({"result": 0, "error_msg": "busy"}).to_string(),
        (Kind::Wechat, true) => json!({"errcode": 0, "errmsg": "ok"}).to_string(),
        (Kind::Wechat, false) => json!({"errcode": -1, "errmsg": "system error"}).to_string(),
    };
    (200, body)
}

async fn read(
    socket: &mut tokio::net::TcpStream,
) -> Option<(String, HashMap<String, String>, String)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let target = head.lines().next()?.split(' ').nth(1)?.to_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some((
        target,
        headers,
        String::from_utf8_lossy(&buffer[head_end..]).to_string(),
    ))
}
