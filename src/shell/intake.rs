//! The router's channel routes: connecting platforms, their sync status,
//! and the intake of their signed order messages
//! (`POST /api/channels/{channel}/messages`).
//!
//! Intake: the channel's adapter checks the signature (401 and nothing
//! done otherwise) and parses the batch (400); each message goes to the
//! order object its platform order maps to (SHA-256 of channel and order
//! id, so every message about one order meets in one place), keyed by the
//! message id, so a resent message is answered as before. One order's
//! messages run in the batch's order; different orders run in parallel.
//! The answer is the adapter's, in the platform's words.

use super::channels::{self, ChannelCall, SHARDS};
use super::stubs::{OrderCall, OrderClient, OrderOp};
use crate::api::ApiError;
use crate::channels::{ChannelError, Credentials, Inbound, MessageBody, MessageResult};
use crate::domain::channel_sync::ChannelConfig;
use crate::domain::types::{hex, BuyerId, Channel, IdempotencyKey, OrderId};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use worker::{console_error, Date, Env, Request, Response};

type Outcome<T> = std::result::Result<T, ApiError>;

fn internal(e: impl std::fmt::Display) -> ApiError {
    console_error!("intake: {e}");
    ApiError::Internal
}

/// The edgestock order a platform's order maps to.
pub fn order_for(channel: &Channel, platform_order: &str) -> OrderId {
    let digest = Sha256::new()
        .chain_update(b"channel-order\0")
        .chain_update(channel.as_str().as_bytes())
        .chain_update(b"\0")
        .chain_update(platform_order.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    OrderId::from_bytes(bytes)
}

/// A platform buyer as an edgestock buyer id (platform ids can be any
/// text): the channel and a digest.
fn buyer_for(channel: &Channel, buyer: &str) -> Outcome<BuyerId> {
    let digest = Sha256::digest(buyer.as_bytes());
    BuyerId::parse(&format!("{channel}.{}", &hex(&digest)[..20])).map_err(internal)
}

pub async fn channel_call(env: &Env, name: &str, call: &ChannelCall) -> Outcome<Response> {
    channels::call(env, name, call).await.map_err(internal)
}

/// A channel with its sync state: every SKU's last pushed number and time,
/// the newest pushes, and the orders it could not keep.
pub async fn status(env: &Env, channel: Channel, limit: usize) -> Outcome<Response> {
    let mut found = channel_call(
        env,
        channels::REGISTRY,
        &ChannelCall::Get {
            channel: channel.clone(),
        },
    )
    .await?;
    if found.status_code() != 200 {
        return Ok(found);
    }
    let config: Value = found.json().await.map_err(internal)?;
    let call = ChannelCall::Status { limit };
    let names: Vec<String> = (0..SHARDS)
        .map(|k| channels::queue_name(&channel, k))
        .collect();
    let answers =
        futures_util::future::join_all(names.iter().map(|n| channels::call(env, n, &call))).await;
    let (mut targets, mut log, mut exceptions) = (Vec::new(), Vec::new(), Vec::new());
    for answer in answers {
        let mut answer = answer.map_err(internal)?;
        let body: Value = answer.json().await.map_err(internal)?;
        let list = |k: &str| body[k].as_array().cloned().unwrap_or_default();
        targets.extend(list("targets"));
        log.extend(list("log"));
        exceptions.extend(list("exceptions"));
    }
    let at = |v: &Value| v["at"].as_u64().unwrap_or(0);
    targets.sort_by(|a, b| a["sku"].as_str().cmp(&b["sku"].as_str()));
    log.sort_by_key(|v| std::cmp::Reverse(at(v)));
    log.truncate(limit);
    exceptions.sort_by_key(|v| std::cmp::Reverse(at(v)));
    exceptions.truncate(limit);
    let body = json!({
        "channel": config,
        "skus": targets,
        "log": log,
        "exceptions": exceptions,
    });
    super::router::reply(crate::api::HttpReply::json(200, body))
}

/// A platform's batch of order messages.
pub async fn messages(req: &mut Request, env: &Env, channel: Channel) -> Outcome<Response> {
    // A channel connected in the last moments may be missing from this
    // isolate's cache: asked once more before the answer is 404 (at most
    // every 250 ms, so unknown names cannot hammer the registry).
    let mut configs = channels::configs(env).await.map_err(internal)?;
    if !configs.iter().any(|c| c.channel == channel) && channels::configs_age_ms() > 250 {
        channels::forget_configs();
        configs = channels::configs(env).await.map_err(internal)?;
    }
    let config: ChannelConfig = configs
        .iter()
        .find(|c| c.channel == channel)
        .cloned()
        .ok_or(ApiError::ChannelNotFound)?;
    let body = super::router::read_capped(req).await?;
    let headers: Vec<(String, String)> = req
        .headers()
        .entries()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let url = req.url().map_err(|_| ApiError::RouteNotFound)?;
    let inbound = Inbound {
        headers: &headers,
        query: url.query().unwrap_or(""),
        body: &body,
        now_s: Date::now().as_millis() / 1000,
    };
    let creds = Credentials {
        app_key: &config.app_key,
        secret: config.secret.as_bytes(),
        access_token: &config.access_token,
    };
    let adapter = config.platform.adapter();
    let refuse = |e: ChannelError| match e {
        ChannelError::Signature(d) => ApiError::ChannelSignature(d),
        ChannelError::Format(d) => ApiError::InvalidBody(d),
        ChannelError::Malformed(d) => ApiError::MalformedJson(d),
    };
    adapter.verify(&creds, &inbound).map_err(refuse)?;
    let messages = adapter.parse(&inbound).map_err(refuse)?;
    // One order's messages in order, orders in parallel.
    let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let key = match &m.body {
            MessageBody::Order { order, .. } => Some(order.clone()),
            MessageBody::Other { .. } => None,
        };
        match groups.iter_mut().find(|(k, _)| key.is_some() && *k == key) {
            Some((_, list)) => list.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut results: Vec<Option<MessageResult>> = vec![None; messages.len()];
    let runs = groups.iter().map(|(_, indexes)| {
        let (messages, channel) = (&messages, &channel);
        async move {
            let mut out = Vec::new();
            for &i in indexes {
                out.push((i, one(env, channel, &messages[i]).await));
            }
            out
        }
    });
    for group in futures_util::future::join_all(runs).await {
        for (i, result) in group {
            results[i] = Some(result?);
        }
    }
    let results: Vec<(String, MessageResult)> = messages
        .iter()
        .zip(results)
        .map(|(m, r)| {
            (
                m.id.clone(),
                r.unwrap_or(MessageResult::Retry {
                    reason: "not run".into(),
                }),
            )
        })
        .collect();
    // What the merchant must look at: orders edgestock could not keep.
    for (id, result) in &results {
        if let MessageResult::Refused { reason, order } = result {
            let exception = json!({
                "at": Date::now().as_millis(),
                "message": id,
                "order": order,
                "reason": reason,
            });
            let call = ChannelCall::Exception { exception };
            if let Err(e) = channels::call(env, &channels::queue_name(&channel, 0), &call).await {
                console_error!("intake: {channel}: an exception was not recorded: {e}");
            }
        }
    }
    let answer = adapter.answer(&results);
    let mut response = Response::from_bytes(answer.body.into_bytes())
        .map_err(internal)?
        .with_status(answer.status);
    response
        .headers_mut()
        .set("Content-Type", answer.content_type)
        .map_err(internal)?;
    Ok(response)
}

/// One message to its order object.
async fn one(env: &Env, channel: &Channel, m: &crate::channels::Message) -> Outcome<MessageResult> {
    let MessageBody::Order {
        order,
        status,
        buyer,
        lines,
        amount,
    } = &m.body
    else {
        let MessageBody::Other { kind } = &m.body else {
            return Err(ApiError::Internal);
        };
        return Ok(MessageResult::Ignored {
            reason: format!("{kind}: not an order status edgestock acts on"),
        });
    };
    let id = order_for(channel, order);
    let message = IdempotencyKey::parse(&m.id).map_err(|e| ApiError::InvalidBody(e.0))?;
    let call = OrderCall {
        order: id.clone(),
        op: OrderOp::Intake {
            channel: channel.clone(),
            platform_order: order.clone(),
            message,
            status: *status,
            buyer: buyer_for(channel, buyer)?,
            lines: lines.clone(),
            amount: *amount,
        },
    };
    let mut answer = OrderClient::new(env, &id)
        .map_err(internal)?
        .call(&call)
        .await
        .map_err(internal)?;
    if answer.status_code() != 200 {
        // The order object could not finish (a SKU unreachable): the
        // platform sends the message again later.
        return Ok(MessageResult::Retry {
            reason: format!("edgestock answered {}", answer.status_code()),
        });
    }
    let body: Value = answer.json().await.map_err(internal)?;
    MessageResult::from_json(&body).ok_or(ApiError::Internal)
}
