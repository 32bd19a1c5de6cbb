//! Abuse limits at the edge: how many reservation and order attempts a
//! client address and a buyer may make, counted by the runtime's
//! rate-limiting bindings (`[[ratelimits]]` in wrangler.toml; `wrangler dev`
//! simulates them). A limiter call is local to the machine serving the
//! request: no hop, no object, nothing global.
//!
//! Admins are never limited (the merchant's own backend may act for many
//! buyers from one address). A request over a limit that carries an
//! Idempotency-Key is not refused here: it goes on to its object marked
//! `replay_only`, which answers a stored answer and refuses anything new,
//! so a retry of an attempt already made is never a new attempt.

use super::auth::Caller;
use crate::api::{ApiError, RateScope, Refusal};
use worker::{console_error, Env, Request};

/// Counts one attempt against the client's address. `Some(scope)` if over.
async fn address(env: &Env, req: &Request) -> Option<RateScope> {
    // Set by Cloudflare's edge on every request; absent on a bare workerd
    // (the benchmark), where there is no client address to count.
    let address = req.headers().get("CF-Connecting-IP").ok().flatten()?;
    over(env, "LIMIT_ADDRESS", address)
        .await
        .then_some(RateScope::Address)
}

/// Counts one attempt against the session's buyer. `Some(scope)` if over.
async fn buyer(env: &Env, caller: &Caller) -> Option<RateScope> {
    let buyer = caller.buyer()?;
    over(env, "LIMIT_BUYER", buyer.as_str().to_owned())
        .await
        .then_some(RateScope::Buyer)
}

/// Counts one attempt by a non-admin caller, by address and then by buyer.
/// `Some(scope)` names the first limit that is over.
pub async fn attempt(env: &Env, req: &Request, caller: &Caller) -> Option<RateScope> {
    if caller.is_admin() {
        return None;
    }
    match address(env, req).await {
        Some(scope) => Some(scope),
        None => buyer(env, caller).await,
    }
}

/// The 429 for a limited request that has no key to replay.
pub fn refusal(scope: RateScope) -> ApiError {
    Refusal::RateLimited { scope }.into()
}

/// Whether `key` is over the binding's limit. A missing or failing binding
/// lets the request through (and says so in the log): a limiter outage must
/// not take the sale down.
async fn over(env: &Env, binding: &str, key: String) -> bool {
    let outcome = match env.rate_limiter(binding) {
        Ok(limiter) => limiter.limit(key).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(outcome) => !outcome.success,
        Err(e) => {
            console_error!("limits: {binding} unavailable, not limiting: {e}");
            false
        }
    }
}
