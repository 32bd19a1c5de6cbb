//! Selling platforms (渠道): one [`Adapter`] per platform, behind one
//! trait. An adapter knows the platform's wire formats and nothing else:
//! how it signs an order message, how it batches them, which of its events
//! mean created, paid, cancelled or refunded, what answer it expects, and
//! how its stock-update call looks. The order rules stay in the order
//! object; the numbers a channel may sell stay in the SKU's allocation.
//!
//! Plain Rust (no `worker`): tested natively, and driven by the fake
//! platform in `tests/api/platform.rs` that speaks every format here.
//!
//! What each platform documents publicly, and where an adapter had to
//! guess, is said in the adapter's module doc, in one place.

pub mod douyin;
pub mod generic;
pub mod kuaishou;
pub mod taobao;
pub mod wechat;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::types::{Quantity, SkuId};

/// The platforms edgestock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// 抖店 (Douyin shop).
    Douyin,
    /// 快手小店.
    Kuaishou,
    /// 淘宝 / 天猫 (TOP).
    Taobao,
    /// 微信视频号小店 (WeChat Channels).
    Wechat,
    /// Any other platform, or the merchant's own systems: edgestock's own
    /// documented signed JSON.
    Generic,
}

impl Platform {
    pub fn adapter(self) -> &'static dyn Adapter {
        match self {
            Platform::Douyin => &douyin::Douyin,
            Platform::Kuaishou => &kuaishou::Kuaishou,
            Platform::Taobao => &taobao::Taobao,
            Platform::Wechat => &wechat::Wechat,
            Platform::Generic => &generic::Generic,
        }
    }
}

/// What the adapter needs to check and sign: the platform's app
/// credentials, as the merchant registered them.
#[derive(Debug, Clone)]
pub struct Credentials<'a> {
    /// The app key (抖店 app_key, TOP app_key, 快手 appkey; WeChat: the
    /// appid; generic: unused).
    pub app_key: &'a str,
    /// The shared secret: app secret, or WeChat's message token.
    pub secret: &'a [u8],
    /// The access token some platforms want on API calls.
    pub access_token: &'a str,
}

/// An inbound request as the adapter sees it. Header names are lowercase.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub headers: &'a [(String, String)],
    pub query: &'a str,
    pub body: &'a [u8],
    pub now_s: u64,
}

impl Inbound<'_> {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        form_pairs(self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Where a platform's order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformStatus {
    Created,
    Paid,
    Cancelled,
    Refunded,
}

/// One message out of a platform's batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The platform's message id: a resent message has the same one.
    pub id: String,
    pub body: MessageBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// An order's status. `lines` are the SKUs by the merchant's code
    /// (商家编码, our SKU id); a platform that sends none in a status
    /// message leaves them empty, and only an order edgestock has seen
    /// can then move.
    Order {
        order: String,
        status: PlatformStatus,
        buyer: String,
        lines: Vec<(SkuId, Quantity)>,
        amount: Option<u64>,
    },
    /// A kind of message edgestock does not act on (shipping, address
    /// changes, …): acknowledged, nothing done.
    Other { kind: String },
}

/// What became of one message, for the platform's answer. As JSON
/// `{"result": "accepted", "status", "order"}` and so on, written by hand
/// (a tagged serde enum costs the Wasm a buffering deserializer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageResult {
    /// Applied: the order is now in `status`.
    Accepted { status: String, order: String },
    /// Seen before (the same message id): nothing done again.
    Duplicate { status: String, order: String },
    /// Nothing to do (an older status than the order's, another kind).
    Ignored { reason: String },
    /// The channel's allocation could not cover the order: edgestock did
    /// not take it (the platform should cancel it), and the merchant sees
    /// it as an exception.
    Refused { reason: String, order: String },
    /// Not now (e.g. a paid message for an order never seen, with no
    /// lines): the platform should send it again later.
    Retry { reason: String },
}

impl MessageResult {
    pub fn wants_retry(&self) -> bool {
        matches!(self, MessageResult::Retry { .. })
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            MessageResult::Accepted { status, order } => {
                json!({"result": "accepted", "status": status, "order": order})
            }
            MessageResult::Duplicate { status, order } => {
                json!({"result": "duplicate", "status": status, "order": order})
            }
            MessageResult::Ignored { reason } => json!({"result": "ignored", "reason": reason}),
            MessageResult::Refused { reason, order } => {
                json!({"result": "refused", "reason": reason, "order": order})
            }
            MessageResult::Retry { reason } => json!({"result": "retry", "reason": reason}),
        }
    }

    pub fn from_json(v: &serde_json::Value) -> Option<MessageResult> {
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        Some(match v["result"].as_str()? {
            "accepted" => MessageResult::Accepted {
                status: text("status")?,
                order: text("order")?,
            },
            "duplicate" => MessageResult::Duplicate {
                status: text("status")?,
                order: text("order")?,
            },
            "ignored" => MessageResult::Ignored {
                reason: text("reason")?,
            },
            "refused" => MessageResult::Refused {
                reason: text("reason")?,
                order: text("order")?,
            },
            "retry" => MessageResult::Retry {
                reason: text("reason")?,
            },
            _ => return None,
        })
    }
}

/// The HTTP answer a platform expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// One outbound stock update, ready to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The full URL (the channel's sync URL with the platform's path and
    /// query).
    pub url: String,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The number to publish for one SKU on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockUpdate<'a> {
    pub sku: &'a SkuId,
    /// What the channel may sell now: a full update, never a delta, so a
    /// lost or repeated push can never leave the platform off by some.
    pub quantity: u64,
    /// Names this update (`{sku}:{version}`): the platform's idempotency
    /// id where it has one.
    pub idempotent_id: &'a str,
    pub now_s: u64,
}

/// Why an inbound message was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The signature is missing, malformed, stale or wrong: 401.
    Signature(String),
    /// The body is JSON of the wrong shape, or values out of range: 422.
    Format(String),
    /// The body is not JSON at all (or cut short): 400.
    Malformed(String),
}

/// A platform's formats.
pub trait Adapter: Sync {
    /// Checks the platform's signature over the request, before anything
    /// is parsed.
    fn verify(&self, creds: &Credentials<'_>, inbound: &Inbound<'_>) -> Result<(), ChannelError>;
    /// The batch's messages, in the platform's order.
    fn parse(&self, inbound: &Inbound<'_>) -> Result<Vec<Message>, ChannelError>;
    /// The answer for a batch (`results` in the order of `parse`). A
    /// message asking for retry makes the whole batch fail where the
    /// platform retries batches whole (the others are duplicates then).
    fn answer(&self, results: &[(String, MessageResult)]) -> Answer;
    /// The platform's stock-update call for one SKU.
    fn push(&self, creds: &Credentials<'_>, base_url: &str, update: &StockUpdate<'_>) -> Push;
    /// Whether the platform accepted a push, from its answer.
    fn pushed(&self, status: u16, body: &str) -> Result<(), String>;
}

// ---- shared helpers ----

type HmacSha256 = Hmac<Sha256>;

pub(crate) fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of two strings (signatures in hex or base64).
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `a=1&b=2` decoded (`+` is a space, `%XX` a byte).
pub fn form_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hi = char::from(bytes[i + 1]).to_digit(16);
                let lo = char::from(bytes[i + 2]).to_digit(16);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn form_encode(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A platform's line: its SKU code and count, checked into our types.
pub(crate) fn line(code: &str, count: u64) -> Result<(SkuId, Quantity), ChannelError> {
    let sku = SkuId::parse(code)
        .map_err(|e| ChannelError::Format(format!("SKU code {code:?}: {}", e.0)))?;
    let qty = Quantity::parse(count)
        .map_err(|e| ChannelError::Format(format!("count for {code}: {}", e.0)))?;
    Ok((sku, qty))
}

/// Lines for one order merged by SKU, at most [`crate::domain::order::LINES_MAX`].
pub(crate) fn merge_lines(
    lines: Vec<(SkuId, Quantity)>,
) -> Result<Vec<(SkuId, Quantity)>, ChannelError> {
    let mut merged: Vec<(SkuId, Quantity)> = Vec::new();
    for (sku, qty) in lines {
        match merged.iter_mut().find(|(s, _)| *s == sku) {
            Some((_, q)) => {
                *q = Quantity::parse(q.get() + qty.get())
                    .map_err(|e| ChannelError::Format(format!("{sku}: {}", e.0)))?
            }
            None => merged.push((sku, qty)),
        }
    }
    if merged.len() > crate::domain::order::LINES_MAX {
        return Err(ChannelError::Format(format!(
            "an order has at most {} lines",
            crate::domain::order::LINES_MAX
        )));
    }
    Ok(merged)
}

/// A body as JSON (a `Value`, not a derived type per platform shape: one
/// deserializer for every format keeps the Wasm small).
pub(crate) fn json_of(bytes: &[u8], what: &str) -> Result<serde_json::Value, ChannelError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let why = format!("not {what}: {e}");
        if e.is_syntax() || e.is_eof() {
            ChannelError::Malformed(why)
        } else {
            ChannelError::Format(why)
        }
    })
}

/// An id platforms send as a number or a string.
pub(crate) fn id_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A platform's line list: `[{code_key: "tee", count_key: 2}, …]` merged
/// by SKU. Absent: no lines.
pub(crate) fn lines_of(
    list: &serde_json::Value,
    code_key: &str,
    count_key: &str,
) -> Result<Vec<(SkuId, Quantity)>, ChannelError> {
    let Some(items) = list.as_array() else {
        return Ok(Vec::new());
    };
    let lines = items
        .iter()
        .map(|item| {
            let code = item[code_key].as_str().unwrap_or("");
            let count = item[count_key]
                .as_u64()
                .ok_or_else(|| ChannelError::Format(format!("{count_key} is not a count")))?;
            line(code, count)
        })
        .collect::<Result<Vec<_>, _>>()?;
    merge_lines(lines)
}

/// Platform ids and message ids: 1–128 visible ASCII characters.
pub(crate) fn platform_id(what: &str, raw: &str) -> Result<String, ChannelError> {
    let ok = !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ChannelError::Format(format!(
            "{what} must be 1 to 128 visible ASCII characters"
        )));
    }
    Ok(raw.to_owned())
}

/// How old a signed timestamp may be (seconds), where a platform signs one.
pub const TOLERANCE_S: u64 = 300;

#[cfg(test)]
mod tests;
