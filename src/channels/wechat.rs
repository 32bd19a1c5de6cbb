//! 微信视频号小店 (WeChat Channels shop), after WeChat's public
//! documentation.
//!
//! Inbound: WeChat's message push in JSON mode: the query carries
//! `signature`, `timestamp` and `nonce`, `signature` being the SHA-1 of
//! the token (the channel's secret), timestamp and nonce sorted and
//! joined; the body is one event `{"ToUserName", "FromUserName",
//! "CreateTime", "MsgType": "event", "Event", "order_info": {"order_id"}}`.
//! Events acted on: `channels_ec_order_new` (created),
//! `channels_ec_order_pay` (paid), `channels_ec_order_cancel`
//! (cancelled). The answer is the text `success`; WeChat pushes again on
//! anything else (we answer 503 to be sent again).
//!
//! Outbound: `POST {sync_url}/channels/ec/product/stock/update?access_token=…`
//! with `{"out_sku_id", "diff_type": 3 (set), "num"}`; success is
//! `errcode` 0.
//!
//! Not public, or not modelled, and kept here:
//! - Events carry the order id only; the lines come from
//!   `/channels/ec/order/get`. This adapter reads them from
//!   `order_info.product_infos` (`sku_code`, `sku_cnt`, that API's field
//!   names), which the relay (or the fake platform) fills in.
//! - Safe mode (AES-encrypted bodies) is not implemented: use plain mode.
//! - WeChat gives no message id; a message is named by its event, order
//!   and `CreateTime`, which a resend repeats.
//! - Refunds arrive as `channels_ec_aftersale_update` with a status to
//!   look up: acknowledged and ignored (cancel or refund the order through
//!   the API instead).
//! - The stock API wants `product_id` and `sku_id`; mapping our SKU ids to
//!   them is the relay's (we send `out_sku_id`).

use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::{
    hex, id_text, json_of, lines_of, platform_id, same, Adapter, Answer, ChannelError, Credentials,
    Inbound, Message, MessageBody, MessageResult, PlatformStatus, Push, StockUpdate, TOLERANCE_S,
};

pub struct Wechat;

/// WeChat's push signature: SHA-1 of the sorted, joined token, timestamp
/// and nonce.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    hex(&Sha1::digest(parts.concat().as_bytes()))
}

impl Adapter for Wechat {
    fn verify(&self, creds: &Credentials<'_>, inbound: &Inbound<'_>) -> Result<(), ChannelError> {
        let (Some(sig), Some(t), Some(nonce)) = (
            inbound.param("signature"),
            inbound.param("timestamp"),
            inbound.param("nonce"),
        ) else {
            return Err(ChannelError::Signature(
                "signature, timestamp and nonce are required in the query".into(),
            ));
        };
        let token = String::from_utf8_lossy(creds.secret);
        if !same(&sig.to_ascii_lowercase(), &signature(&token, &t, &nonce)) {
            return Err(ChannelError::Signature("signature does not match".into()));
        }
        let at: u64 = t
            .parse()
            .map_err(|_| ChannelError::Signature("timestamp is not a number".into()))?;
        if at.abs_diff(inbound.now_s) > TOLERANCE_S {
            return Err(ChannelError::Signature("the timestamp is too old".into()));
        }
        Ok(())
    }

    fn parse(&self, inbound: &Inbound<'_>) -> Result<Vec<Message>, ChannelError> {
        let raw = json_of(inbound.body, "a WeChat event")?;
        let event = raw["Event"].as_str().unwrap_or("");
        let info = &raw["order_info"];
        let order_id = id_text(&info["order_id"]);
        let id = platform_id(
            "the event",
            &format!(
                "{event}:{}:{}",
                if order_id.is_empty() { "-" } else { &order_id },
                raw["CreateTime"].as_u64().unwrap_or(0)
            ),
        )?;
        let status = match event {
            "channels_ec_order_new" => PlatformStatus::Created,
            "channels_ec_order_pay" => PlatformStatus::Paid,
            "channels_ec_order_cancel" => PlatformStatus::Cancelled,
            other => {
                return Ok(vec![Message {
                    id,
                    body: MessageBody::Other {
                        kind: other.to_owned(),
                    },
                }])
            }
        };
        let order = platform_id("order_id", &order_id)?;
        Ok(vec![Message {
            id,
            body: MessageBody::Order {
                buyer: raw["FromUserName"]
                    .as_str()
                    .filter(|b| !b.is_empty())
                    .unwrap_or(&order)
                    .to_owned(),
                lines: lines_of(&info["product_infos"], "sku_code", "sku_cnt")?,
                order,
                status,
                amount: None,
            },
        }])
    }

    fn answer(&self, results: &[(String, MessageResult)]) -> Answer {
        let retry = results.iter().any(|(_, r)| r.wants_retry());
        Answer {
            status: if retry { 503 } else { 200 },
            content_type: "text/plain; charset=utf-8",
            body: if retry { "retry" } else { "success" }.into(),
        }
    }

    fn push(&self, creds: &Credentials<'_>, base_url: &str, u: &StockUpdate<'_>) -> Push {
        Push {
            url: format!(
                "{}/channels/ec/product/stock/update?access_token={}",
                base_url.trim_end_matches('/'),
                super::percent_encode(creds.access_token)
            ),
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: json!({
                "out_sku_id": u.sku,
                "diff_type": 3,
                "num": u.quantity,
                "idempotent_id": u.idempotent_id,
            })
            .to_string(),
        }
    }

    fn pushed(&self, status: u16, body: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(body).unwrap_or_default();
        match v["errcode"].as_i64() {
            Some(0) if status == 200 => Ok(()),
            _ => Err(format!(
                "HTTP {status}, errcode {} {}",
                v["errcode"],
                v["errmsg"].as_str().unwrap_or("")
            )),
        }
    }
}
