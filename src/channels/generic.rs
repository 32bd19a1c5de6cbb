//! edgestock's own format, for any platform without an adapter and for
//! the merchant's own systems. Fully specified here and in the README:
//!
//! - `POST /api/channels/{channel}/messages`, `Content-Type:
//!   application/json`, body `{"messages": [{"id", "order", "status"
//!   (created | paid | cancelled | refunded), "buyer", "lines": [{"sku",
//!   "qty"}], "amount"?}]}`; a message whose `type` is not `order` is
//!   acknowledged and ignored.
//! - Signed like a payment callback: `Edgestock-Signature: t=<unix
//!   seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, within 300 s.
//! - Answer: 200 `{"results": [{"id", "result", …}]}`, or 503 with the
//!   same body when a message asks to be sent again.
//! - Stock push: `POST {sync_url}` with `{"sku", "quantity", "mode":
//!   "full", "idempotency_key"}`, signed the same way; any 2xx is success.

use serde_json::json;

use super::{
    json_of, lines_of, platform_id, Adapter, Answer, ChannelError, Credentials, Inbound, Message,
    MessageBody, MessageResult, PlatformStatus, Push, StockUpdate,
};
use crate::api::session::{sign_body, verify_payment};

pub struct Generic;

/// The most messages one batch may carry.
pub const BATCH_MAX: usize = 100;

impl Adapter for Generic {
    fn verify(&self, creds: &Credentials<'_>, inbound: &Inbound<'_>) -> Result<(), ChannelError> {
        let header = inbound.header("edgestock-signature");
        verify_payment(header, inbound.body, &[creds.secret], inbound.now_s)
            .map(|_| ())
            .map_err(|e| ChannelError::Signature(e.detail()))
    }

    fn parse(&self, inbound: &Inbound<'_>) -> Result<Vec<Message>, ChannelError> {
        let batch = json_of(inbound.body, "a message batch")?;
        let messages = batch["messages"].as_array().map_or(&[][..], Vec::as_slice);
        if messages.is_empty() || messages.len() > BATCH_MAX {
            return Err(ChannelError::Format(format!(
                "a batch has 1 to {BATCH_MAX} messages"
            )));
        }
        messages
            .iter()
            .map(|m| {
                let id = platform_id("a message id", m["id"].as_str().unwrap_or(""))?;
                let kind = m["type"].as_str().unwrap_or("order");
                if kind != "order" {
                    return Ok(Message {
                        id,
                        body: MessageBody::Other { kind: kind.into() },
                    });
                }
                let order = platform_id("order", m["order"].as_str().unwrap_or(""))?;
                let status = match m["status"].as_str() {
                    Some("created") => PlatformStatus::Created,
                    Some("paid") => PlatformStatus::Paid,
                    Some("cancelled") => PlatformStatus::Cancelled,
                    Some("refunded") => PlatformStatus::Refunded,
                    _ => {
                        return Err(ChannelError::Format(format!(
                            "message {id}: status is created, paid, cancelled or refunded"
                        )))
                    }
                };
                Ok(Message {
                    id,
                    body: MessageBody::Order {
                        order,
                        status,
                        buyer: m["buyer"].as_str().unwrap_or("").into(),
                        lines: lines_of(&m["lines"], "sku", "qty")?,
                        amount: m["amount"].as_u64(),
                    },
                })
            })
            .collect()
    }

    fn answer(&self, results: &[(String, MessageResult)]) -> Answer {
        let retry = results.iter().any(|(_, r)| r.wants_retry());
        let body = json!({
            "results": results.iter().map(|(id, r)| {
                let mut v = r.to_json();
                v["id"] = json!(id);
                v
            }).collect::<Vec<_>>()
        });
        Answer {
            status: if retry { 503 } else { 200 },
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    fn push(&self, creds: &Credentials<'_>, base_url: &str, u: &StockUpdate<'_>) -> Push {
        let body = json!({
            "sku": u.sku,
            "quantity": u.quantity,
            "mode": "full",
            "idempotency_key": u.idempotent_id,
        })
        .to_string();
        Push {
            url: base_url.to_owned(),
            content_type: "application/json".into(),
            headers: vec![(
                "Edgestock-Signature".into(),
                sign_body(u.now_s, body.as_bytes(), creds.secret),
            )],
            body,
        }
    }

    fn pushed(&self, status: u16, _body: &str) -> Result<(), String> {
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}
