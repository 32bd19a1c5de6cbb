//! 淘宝 / 天猫, after the TOP (Taobao Open Platform) public documentation.
//!
//! Signing (both ways): TOP's scheme, the parameters other than `sign`
//! sorted by name and concatenated as `name + value`, HMAC-SHA256 with the
//! app secret, upper-case hex (`sign_method=hmac-sha256`).
//!
//! Inbound: a form POST carrying one message: `topic`, `id` (the message
//! id), `content` (the message JSON), `app_key`, `timestamp`, `sign_method`,
//! `sign`. Topics acted on: `taobao_trade_TradeCreate` (created),
//! `taobao_trade_TradeBuyerPay` (paid), `taobao_trade_TradeClose`
//! (cancelled), `taobao_refund_RefundSuccess` (refunded). `content` is
//! `{"tid", "buyer_nick", "payment", "orders": [{"outer_sku_id", "num"}]}`
//! (the field names of `taobao.trade.fullinfo.get`). Answer: `{"success":
//! true}`, or 503 with `false` to be sent again.
//!
//! Outbound: `taobao.item.quantity.update` as a form POST to the channel's
//! sync URL (TOP's `/router/rest`), `outer_id` (our SKU id), `quantity`,
//! `type=1` (a full update). Success is an `item_quantity_update_response`.
//!
//! Not public, or not modelled, and kept here:
//! - TOP delivers messages over its TMC long connection, not HTTP: this
//!   HTTP form is for a relay (or 奇门) forwarding them, signed the TOP way.
//! - Real TMC messages carry the `tid` only; the lines are fetched with
//!   `taobao.trade.fullinfo.get`, which the relay does and puts in
//!   `orders`.
//! - `taobao.item.quantity.update` wants the item's `num_iid`; mapping our
//!   SKU ids to `num_iid`/`sku_id` is the relay's (we send `outer_id`).
//! - TOP's `timestamp` is a local date string; its age is not checked
//!   (repeats are caught by the message id).

use serde_json::{json, Value};

use super::{
    form_encode, form_pairs, hex, hmac_sha256, id_text, json_of, lines_of, platform_id, same,
    Adapter, Answer, ChannelError, Credentials, Inbound, Message, MessageBody, MessageResult,
    PlatformStatus, Push, StockUpdate,
};

pub struct Taobao;

/// TOP's signature over sorted parameters (`sign` itself excluded).
pub fn top_sign(secret: &[u8], params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "sign").collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let text: String = sorted.iter().map(|(k, v)| format!("{k}{v}")).collect();
    hex(&hmac_sha256(secret, &[text.as_bytes()])).to_ascii_uppercase()
}

fn params(inbound: &Inbound<'_>) -> Result<Vec<(String, String)>, ChannelError> {
    let text = std::str::from_utf8(inbound.body)
        .map_err(|_| ChannelError::Format("the form is not UTF-8".into()))?;
    Ok(form_pairs(text))
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Adapter for Taobao {
    fn verify(&self, creds: &Credentials<'_>, inbound: &Inbound<'_>) -> Result<(), ChannelError> {
        let params = params(inbound).map_err(|_| ChannelError::Signature("unsigned".into()))?;
        let sign = get(&params, "sign").unwrap_or("");
        if sign.is_empty() {
            return Err(ChannelError::Signature(
                "the sign parameter is missing".into(),
            ));
        }
        if get(&params, "sign_method") != Some("hmac-sha256") {
            return Err(ChannelError::Signature(
                "sign_method must be hmac-sha256".into(),
            ));
        }
        if get(&params, "app_key") != Some(creds.app_key) {
            return Err(ChannelError::Signature(
                "app_key is not this channel's app".into(),
            ));
        }
        if !same(&sign.to_ascii_uppercase(), &top_sign(creds.secret, &params)) {
            return Err(ChannelError::Signature(
                "sign does not match the parameters".into(),
            ));
        }
        Ok(())
    }

    fn parse(&self, inbound: &Inbound<'_>) -> Result<Vec<Message>, ChannelError> {
        let params = params(inbound)?;
        let id = platform_id("id", get(&params, "id").unwrap_or(""))?;
        let topic = get(&params, "topic").unwrap_or("");
        let status = match topic {
            "taobao_trade_TradeCreate" => PlatformStatus::Created,
            "taobao_trade_TradeBuyerPay" => PlatformStatus::Paid,
            "taobao_trade_TradeClose" => PlatformStatus::Cancelled,
            "taobao_refund_RefundSuccess" => PlatformStatus::Refunded,
            other => {
                return Ok(vec![Message {
                    id,
                    body: MessageBody::Other {
                        kind: other.to_owned(),
                    },
                }])
            }
        };
        let content = json_of(get(&params, "content").unwrap_or("").as_bytes(), "content")?;
        let order = platform_id("tid", &id_text(&content["tid"]))?;
        Ok(vec![Message {
            id,
            body: MessageBody::Order {
                buyer: content["buyer_nick"]
                    .as_str()
                    .filter(|b| !b.is_empty())
                    .unwrap_or(&order)
                    .to_owned(),
                lines: lines_of(&content["orders"], "outer_sku_id", "num")?,
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
            content_type: "application/json",
            body: json!({ "success": !retry }).to_string(),
        }
    }

    fn push(&self, creds: &Credentials<'_>, base_url: &str, u: &StockUpdate<'_>) -> Push {
        let mut params: Vec<(String, String)> = [
            ("method", "taobao.item.quantity.update".to_owned()),
            ("app_key", creds.app_key.to_owned()),
            ("session", creds.access_token.to_owned()),
            ("timestamp", u.now_s.to_string()),
            ("format", "json".to_owned()),
            ("v", "2.0".to_owned()),
            ("sign_method", "hmac-sha256".to_owned()),
            ("outer_id", u.sku.to_string()),
            ("quantity", u.quantity.to_string()),
            ("type", "1".to_owned()),
            ("idempotent_id", u.idempotent_id.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let sign = top_sign(creds.secret, &params);
        params.push(("sign".into(), sign));
        let pairs: Vec<(&str, String)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        Push {
            url: base_url.to_owned(),
            content_type: "application/x-www-form-urlencoded".into(),
            headers: Vec::new(),
            body: form_encode(&pairs),
        }
    }

    fn pushed(&self, status: u16, body: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(body).unwrap_or_default();
        if status == 200 && v.get("item_quantity_update_response").is_some() {
            return Ok(());
        }
        let e = &v["error_response"];
        Err(format!(
            "HTTP {status}, {} {}",
            e["code"],
            e["msg"].as_str().unwrap_or("")
        ))
    }
}
