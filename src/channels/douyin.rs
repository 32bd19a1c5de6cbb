//! 抖店 (Douyin shop), after its open platform's public documentation.
//!
//! Inbound (消息推送): a POST whose body is a JSON array of messages
//! `{"tag", "msg_id", "data"}`, `data` being the message's JSON as a
//! string, signed in the `event-sign` header over `app_key + body +
//! app_secret`, with `app-id` and `sign-method`. Tags acted on: 100
//! 订单创建 (created), 101 订单支付 (paid), 106 订单取消 (cancelled), 206
//! 退款成功 (refunded); every other tag (and the platform's tag-0 test
//! ping) is acknowledged and ignored. The answer is `{"code": 0, "msg":
//! "success"}`; anything else makes the platform push the batch again.
//!
//! Outbound: `sku.syncStock` through the open API (`/sku/syncStock` on the
//! channel's sync URL), `param_json` with the merchant code (`code`, our
//! SKU id), `stock_num`, `incremental: false` and `idempotent_id`, signed
//! `sign_method=hmac-sha256`; success is `code` 10000.
//!
//! Not public, or not modelled, and kept here:
//! - Trade messages carry ids only (`p_id`, `s_ids`); the lines come from
//!   `order.orderDetail`. This adapter reads them from the message's
//!   `sku_order_list` (`code`, `item_num`, the orderDetail field names),
//!   which the merchant's relay (or the fake platform) fills in. A status
//!   message without lines moves an order edgestock has seen.
//! - Only `sign-method: hmac-sha256` is accepted (the platform's MD5
//!   scheme is not implemented; choose HMAC-SHA256 in the app settings).
//! - Buyers: trade messages carry no buyer; `open_id` if present, else the
//!   order id.

use serde_json::{json, Value};

use super::{
    form_encode, hex, hmac_sha256, id_text, json_of, lines_of, platform_id, same, Adapter, Answer,
    ChannelError, Credentials, Inbound, Message, MessageBody, MessageResult, PlatformStatus, Push,
    StockUpdate,
};

pub struct Douyin;

/// The event signature: hex HMAC-SHA256 over `app_key + body + secret`.
pub fn event_sign(app_key: &str, body: &[u8], secret: &[u8]) -> String {
    hex(&hmac_sha256(secret, &[app_key.as_bytes(), body, secret]))
}

/// The open API's request signature over its sorted parameters.
pub fn api_sign(secret: &[u8], params: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut text = String::new();
    for (k, v) in sorted {
        text.push_str(k);
        text.push_str(v);
    }
    hex(&hmac_sha256(secret, &[secret, text.as_bytes(), secret]))
}

impl Adapter for Douyin {
    fn verify(&self, creds: &Credentials<'_>, inbound: &Inbound<'_>) -> Result<(), ChannelError> {
        let sign = inbound.header("event-sign");
        if sign.is_empty() {
            return Err(ChannelError::Signature(
                "the event-sign header is missing".into(),
            ));
        }
        let method = inbound.header("sign-method");
        if !method.is_empty() && !method.eq_ignore_ascii_case("hmac-sha256") {
            return Err(ChannelError::Signature(format!(
                "sign-method {method:?} is not accepted; use hmac-sha256"
            )));
        }
        let app = inbound.header("app-id");
        if !app.is_empty() && app != creds.app_key {
            return Err(ChannelError::Signature(
                "app-id is not this channel's app".into(),
            ));
        }
        let expected = event_sign(creds.app_key, inbound.body, creds.secret);
        if !same(&sign.to_ascii_lowercase(), &expected) {
            return Err(ChannelError::Signature(
                "event-sign does not match the body".into(),
            ));
        }
        Ok(())
    }

    fn parse(&self, inbound: &Inbound<'_>) -> Result<Vec<Message>, ChannelError> {
        let raw = json_of(inbound.body, "a 抖店 message array")?;
        let raw = raw
            .as_array()
            .filter(|a| !a.is_empty() && a.len() <= super::generic::BATCH_MAX)
            .ok_or_else(|| {
                ChannelError::Format("a push is an array of 1 to 100 messages".into())
            })?;
        raw.iter()
            .map(|m| {
                let id = platform_id("msg_id", m["msg_id"].as_str().unwrap_or(""))?;
                let status = match m["tag"].as_str().unwrap_or("") {
                    "100" => PlatformStatus::Created,
                    "101" => PlatformStatus::Paid,
                    "106" => PlatformStatus::Cancelled,
                    "206" => PlatformStatus::Refunded,
                    other => {
                        return Ok(Message {
                            id,
                            body: MessageBody::Other {
                                kind: format!("tag {other}"),
                            },
                        })
                    }
                };
                let data = json_of(m["data"].as_str().unwrap_or("").as_bytes(), "data")?;
                let order = platform_id("p_id", &id_text(&data["p_id"]))?;
                Ok(Message {
                    id,
                    body: MessageBody::Order {
                        buyer: data["open_id"].as_str().unwrap_or(&order).to_owned(),
                        lines: lines_of(&data["sku_order_list"], "code", "item_num")?,
                        order,
                        status,
                        amount: data["pay_amount"].as_u64(),
                    },
                })
            })
            .collect()
    }

    fn answer(&self, results: &[(String, MessageResult)]) -> Answer {
        let body = if results.iter().any(|(_, r)| r.wants_retry()) {
            json!({"code": 1, "msg": "retry later"})
        } else {
            json!({"code": 0, "msg": "success"})
        };
        Answer {
            status: 200,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    fn push(&self, creds: &Credentials<'_>, base_url: &str, u: &StockUpdate<'_>) -> Push {
        let param_json = json!({
            "code": u.sku,
            "stock_num": u.quantity,
            "incremental": false,
            "idempotent_id": u.idempotent_id,
        })
        .to_string();
        let mut params = vec![
            ("app_key", creds.app_key.to_owned()),
            ("method", "sku.syncStock".to_owned()),
            ("param_json", param_json.clone()),
            ("timestamp", u.now_s.to_string()),
            ("v", "2".to_owned()),
        ];
        let sign = api_sign(creds.secret, &params);
        params.retain(|(k, _)| *k != "param_json");
        params.push(("sign_method", "hmac-sha256".into()));
        params.push(("access_token", creds.access_token.to_owned()));
        params.push(("sign", sign));
        Push {
            url: format!(
                "{}/sku/syncStock?{}",
                base_url.trim_end_matches('/'),
                form_encode(&params)
            ),
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: param_json,
        }
    }

    fn pushed(&self, status: u16, body: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(body).unwrap_or_default();
        match v["code"].as_i64() {
            Some(10000) if status == 200 => Ok(()),
            _ => Err(format!(
                "HTTP {status}, code {} {}",
                v["code"],
                v["msg"].as_str().unwrap_or("")
            )),
        }
    }
}
