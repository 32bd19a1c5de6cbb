//! 快手小店, after the Kuaishou e-commerce open platform's public
//! documentation, as far as it goes.
//!
//! Inbound: a JSON message `{"msgId", "event", "info", "createTime"}`, one
//! per request, `info` being the event's JSON as a string. Events acted on:
//! `kwaishop_order_addOrder` (created), `kwaishop_order_paySuccess`
//! (paid), `kwaishop_order_orderClose` (cancelled),
//! `kwaishop_aftersales_refundSuccess` (refunded). `info` is `{"oid",
//! "buyerOpenId", "payAmount", "itemList": [{"skuNick", "num"}]}`
//! (`skuNick`: the merchant code, our SKU id). Answer: `{"result": 1}`;
//! `{"result": 0}` (HTTP 503) to be sent again.
//!
//! Outbound: `open.item.sku.stock.update` as `POST
//! {sync_url}/open/item/sku/stock/update` with the API's common parameters
//! (`appkey`, `method`, `version`, `access_token`, `timestamp`,
//! `signMethod=HMAC_SHA256`, `param`, `sign`); `param` carries `skuNick`,
//! `stock` and `idempotentId`. Success is `result` 1.
//!
//! Not public, or not modelled, and kept here:
//! - Kuaishou encrypts pushed messages with the app's message key and does
//!   not publish the envelope: this adapter takes the decrypted message
//!   from a relay, signed with a `sign` header, hex HMAC-SHA256 with the
//!   app secret over `<timestamp header>.<body>`, within 300 s.
//! - The public stock API changes stock by a delta (`skuChangeStock`,
//!   `changeType`); a delta pushed twice is a double count, so this
//!   adapter sends the full number (`stock`) with an id and leaves the
//!   translation to the relay.
//! - API signature: HMAC-SHA256 over the sorted `key=value&…` string with
//!   `&signSecret=<secret>` appended, base64 in the platform; hex here.

use serde_json::{json, Value};

use super::{
    form_encode, hex, hmac_sha256, id_text, json_of, lines_of, platform_id, same, Adapter, Answer,
    ChannelError, Credentials, Inbound, Message, MessageBody, MessageResult, PlatformStatus, Push,
    StockUpdate, TOLERANCE_S,
};

pub struct Kuaishou;

/// The relay's signature: hex HMAC-SHA256 over `<t>.<body>`.
pub fn sign(secret: &[u8], t: &str, body: &[u8]) -> String {
    hex(&hmac_sha256(secret, &[t.as_bytes(), b".", body]))
}

/// The open API's signature over the sorted parameters.
pub fn api_sign(secret: &[u8], params: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut text: String = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    text.push_str("&signSecret=");
    hex(&hmac_sha256(secret, &[text.as_bytes(), secret]))
}

impl Adapter for Kuaishou {
    fn verify(&self, creds: &Credentials<'_>, inbound: &Inbound<'_>) -> Result<(), ChannelError> {
        let signature = inbound.header("sign");
        let t = inbound.header("timestamp");
        if signature.is_empty() || t.is_empty() {
            return Err(ChannelError::Signature(
                "the sign and timestamp headers are required".into(),
            ));
        }
        let at: u64 = t
            .parse()
            .map_err(|_| ChannelError::Signature("timestamp is not a number".into()))?;
        if !same(
            &signature.to_ascii_lowercase(),
            &sign(creds.secret, t, inbound.body),
        ) {
            return Err(ChannelError::Signature(
                "sign does not match the body".into(),
            ));
        }
        if at.abs_diff(inbound.now_s) > TOLERANCE_S {
            return Err(ChannelError::Signature("the timestamp is too old".into()));
        }
        Ok(())
    }

    fn parse(&self, inbound: &Inbound<'_>) -> Result<Vec<Message>, ChannelError> {
        let raw = json_of(inbound.body, "a 快手 message")?;
        let id = platform_id("msgId", raw["msgId"].as_str().unwrap_or(""))?;
        let status = match raw["event"].as_str().unwrap_or("") {
            "kwaishop_order_addOrder" => PlatformStatus::Created,
            "kwaishop_order_paySuccess" => PlatformStatus::Paid,
            "kwaishop_order_orderClose" => PlatformStatus::Cancelled,
            "kwaishop_aftersales_refundSuccess" => PlatformStatus::Refunded,
            other => {
                return Ok(vec![Message {
                    id,
                    body: MessageBody::Other {
                        kind: other.to_owned(),
                    },
                }])
            }
        };
        let info = json_of(raw["info"].as_str().unwrap_or("").as_bytes(), "info")?;
        let order = platform_id("oid", &id_text(&info["oid"]))?;
        Ok(vec![Message {
            id,
            body: MessageBody::Order {
                buyer: info["buyerOpenId"]
                    .as_str()
                    .filter(|b| !b.is_empty())
                    .unwrap_or(&order)
                    .to_owned(),
                lines: lines_of(&info["itemList"], "skuNick", "num")?,
                order,
                status,
                amount: info["payAmount"].as_u64(),
            },
        }])
    }

    fn answer(&self, results: &[(String, MessageResult)]) -> Answer {
        let retry = results.iter().any(|(_, r)| r.wants_retry());
        Answer {
            status: if retry { 503 } else { 200 },
            content_type: "application/json",
            body: json!({ "result": if retry { 0 } else { 1 } }).to_string(),
        }
    }

    fn push(&self, creds: &Credentials<'_>, base_url: &str, u: &StockUpdate<'_>) -> Push {
        let param = json!({
            "skuNick": u.sku,
            "stock": u.quantity,
            "idempotentId": u.idempotent_id,
        })
        .to_string();
        let mut params = vec![
            ("appkey", creds.app_key.to_owned()),
            ("method", "open.item.sku.stock.update".to_owned()),
            ("version", "1".to_owned()),
            ("access_token", creds.access_token.to_owned()),
            ("timestamp", (u.now_s * 1000).to_string()),
            ("signMethod", "HMAC_SHA256".to_owned()),
            ("param", param),
        ];
        let sign = api_sign(creds.secret, &params);
        params.push(("sign", sign));
        Push {
            url: format!(
                "{}/open/item/sku/stock/update",
                base_url.trim_end_matches('/')
            ),
            content_type: "application/x-www-form-urlencoded".into(),
            headers: Vec::new(),
            body: form_encode(&params),
        }
    }

    fn pushed(&self, status: u16, body: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(body).unwrap_or_default();
        match v["result"].as_i64() {
            Some(1) if status == 200 => Ok(()),
            _ => Err(format!(
                "HTTP {status}, result {} {}",
                v["result"],
                v["error_msg"].as_str().unwrap_or("")
            )),
        }
    }
}
