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

use serde::Deserialize;
use serde_json::json;

use super::{
    line, merge_lines, platform_id, Adapter, Answer, ChannelError, Credentials, Inbound, Message,
    MessageBody, MessageResult, PlatformStatus, Push, StockUpdate,
};
use crate::api::session::{sign_body, verify_payment};

pub struct Generic;

#[derive(Deserialize)]
struct Batch {
    messages: Vec<Incoming>,
}

#[derive(Deserialize)]
struct Incoming {
    id: String,
    #[serde(rename = "type", default = "order_type")]
    kind: String,
    order: Option<String>,
    status: Option<PlatformStatus>,
    #[serde(default)]
    buyer: String,
    #[serde(default)]
    lines: Vec<Line>,
    amount: Option<u64>,
}

fn order_type() -> String {
    "order".into()
}

#[derive(Deserialize)]
struct Line {
    sku: String,
    qty: u64,
}

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
        let batch: Batch = serde_json::from_slice(inbound.body)
            .map_err(|e| ChannelError::Format(format!("not a message batch: {e}")))?;
        if batch.messages.is_empty() || batch.messages.len() > BATCH_MAX {
            return Err(ChannelError::Format(format!(
                "a batch has 1 to {BATCH_MAX} messages"
            )));
        }
        batch
            .messages
            .into_iter()
            .map(|m| {
                let id = platform_id("a message id", &m.id)?;
                if m.kind != "order" {
                    return Ok(Message {
                        id,
                        body: MessageBody::Other { kind: m.kind },
                    });
                }
                let order = platform_id("order", m.order.as_deref().unwrap_or(""))?;
                let status = m
                    .status
                    .ok_or_else(|| ChannelError::Format(format!("message {id}: no status")))?;
                let lines = m
                    .lines
                    .iter()
                    .map(|l| line(&l.sku, l.qty))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Message {
                    id,
                    body: MessageBody::Order {
                        order,
                        status,
                        buyer: m.buyer,
                        lines: merge_lines(lines)?,
                        amount: m.amount,
                    },
                })
            })
            .collect()
    }

    fn answer(&self, results: &[(String, MessageResult)]) -> Answer {
        let retry = results.iter().any(|(_, r)| r.wants_retry());
        let body = json!({
            "results": results.iter().map(|(id, r)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
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
