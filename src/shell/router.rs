//! The stateless edge: route, authenticate, parse and check the body, then
//! hand one typed call to the SKU's object. Nothing invalid reaches an
//! object, and nothing here holds state.

use super::auth::require_admin;
use super::http::to_response;
use super::sku_object::{SkuCall, SkuClient, SkuOp};
use crate::api::wire::{self, parse_body, AdjustBody, ReserveBody, RestockBody, SetupBody};
use crate::api::{ApiError, HttpReply, Route};
use crate::domain::stock::{Actor, Command, Request as StockRequest};
use crate::domain::types::{IdempotencyKey, ReservationId};
use serde_json::json;
use worker::{console_error, Env, Request, Response, Result};

pub async fn handle(mut req: Request, env: Env) -> Result<Response> {
    match dispatch(&mut req, &env).await {
        Ok(response) => Ok(response),
        Err(e) => to_response(&e.to_reply()),
    }
}

async fn dispatch(req: &mut Request, env: &Env) -> std::result::Result<Response, ApiError> {
    let url = req.url().map_err(|_| ApiError::RouteNotFound)?;
    let path = url.path().to_owned();
    let method = req.method().to_string();
    let route = Route::parse(&method, &path)?;
    if route.is_admin() {
        require_admin(req, env)?;
    }
    let Some(sku) = route.sku().cloned() else {
        return reply(HttpReply::json(200, json!({ "ok": true })));
    };
    let op = match route {
        Route::Health => unreachable!("no SKU"),
        Route::GetSku(_) => SkuOp::Get,
        Route::GetHold(_, hold) => SkuOp::GetHold { hold },
        Route::Ledger(_) => {
            let (after, limit) = wire::parse_page(url.query().unwrap_or(""))?;
            SkuOp::Ledger { after, limit }
        }
        Route::PutSku(_) => {
            let body: SetupBody = read_body(req).await?;
            let fp = wire::fingerprint(&method, &path, &body);
            step(req, fp, Actor::Admin, body.into_command()?)?
        }
        Route::Restock(_) => {
            let body: RestockBody = read_body(req).await?;
            let fp = wire::fingerprint(&method, &path, &body);
            step(req, fp, Actor::Admin, body.into_command())?
        }
        Route::Adjust(_) => {
            let body: AdjustBody = read_body(req).await?;
            let fp = wire::fingerprint(&method, &path, &body);
            step(req, fp, Actor::Admin, body.into_command())?
        }
        Route::Reserve(_) => {
            let body: ReserveBody = read_body(req).await?;
            let fp = wire::fingerprint(&method, &path, &body);
            let actor = Actor::Buyer(body.buyer.clone());
            step(req, fp, actor, body.into_command(new_hold_id()?))?
        }
        Route::Commit(_, hold) => {
            let fp = wire::fingerprint(&method, &path, &());
            step(req, fp, Actor::Storefront, Command::Commit { hold })?
        }
        Route::Release(_, hold) => {
            let fp = wire::fingerprint(&method, &path, &());
            step(req, fp, Actor::Storefront, Command::Release { hold })?
        }
    };
    let client = SkuClient::new(env, &sku).map_err(internal)?;
    client.call(&SkuCall { sku, op }).await.map_err(internal)
}

fn reply(r: HttpReply) -> std::result::Result<Response, ApiError> {
    to_response(&r).map_err(internal)
}

fn internal(e: worker::Error) -> ApiError {
    console_error!("router: {e}");
    ApiError::Internal
}

fn step(
    req: &Request,
    fingerprint: String,
    actor: Actor,
    command: Command,
) -> std::result::Result<SkuOp, ApiError> {
    let key = match req.headers().get("Idempotency-Key").ok().flatten() {
        None => None,
        Some(raw) => Some(IdempotencyKey::parse(&raw).map_err(|e| ApiError::InvalidHeader(e.0))?),
    };
    Ok(SkuOp::Step {
        request: StockRequest {
            key,
            fingerprint,
            actor,
            command,
        },
    })
}

/// Reads a JSON body: 415 for a media type that is not JSON (or text/plain), 413 past the cap (by
/// Content-Length before reading, and by size after), then [`parse_body`].
async fn read_body<T: serde::de::DeserializeOwned>(
    req: &mut Request,
) -> std::result::Result<T, ApiError> {
    let headers = req.headers();
    if let Some(ct) = headers.get("Content-Type").ok().flatten() {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // text/plain is what a browser's fetch sends for a string body, and
        // it spares cross-origin storefronts a preflight.
        let json_like = media == "application/json" || media.ends_with("+json");
        if !json_like && media != "text/plain" {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    let too_large = ApiError::PayloadTooLarge {
        max_bytes: wire::BODY_BYTES_MAX,
    };
    if let Some(length) = headers.get("Content-Length").ok().flatten() {
        if length
            .trim()
            .parse::<usize>()
            .map_or(true, |n| n > wire::BODY_BYTES_MAX)
        {
            return Err(too_large);
        }
    }
    let bytes = req
        .bytes()
        .await
        .map_err(|_| ApiError::MalformedJson("the body could not be read".into()))?;
    parse_body(&bytes)
}

fn new_hold_id() -> std::result::Result<ReservationId, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        console_error!("router: no randomness: {e}");
        ApiError::Internal
    })?;
    Ok(ReservationId::from_random(bytes))
}
