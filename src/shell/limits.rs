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

/// A limit a request is over: whose, and the key it was counted under.
#[derive(Debug, Clone)]
pub struct Limited {
    pub scope: RateScope,
    key: String,
}

/// Counts one attempt against the client's address.
async fn address(env: &Env, req: &Request) -> Option<Limited> {
    // Set by Cloudflare's edge on every request; absent on a bare workerd
    // (the benchmark), where there is no client address to count.
    let address = req.headers().get("CF-Connecting-IP").ok().flatten()?;
    let key = format!("address:{address}");
    over(env, "LIMIT_ADDRESS", key.clone())
        .await
        .then_some(Limited {
            scope: RateScope::Address,
            key,
        })
}

/// Counts one attempt against the session's buyer.
async fn buyer(env: &Env, caller: &Caller) -> Option<Limited> {
    let key = format!("buyer:{}", caller.buyer()?);
    over(env, "LIMIT_BUYER", key.clone())
        .await
        .then_some(Limited {
            scope: RateScope::Buyer,
            key,
        })
}

/// Counts one attempt by a non-admin caller, by address and then by buyer.
/// `Some` names the first limit that is over.
pub async fn attempt(env: &Env, req: &Request, caller: &Caller) -> Option<Limited> {
    if caller.is_admin() {
        return None;
    }
    match address(env, req).await {
        Some(limited) => Some(limited),
        None => buyer(env, caller).await,
    }
}

/// Whether a keyed request over a limit may still go and ask for its
/// stored answer: a smaller budget of its own (`LIMIT_RETRY`), so fresh
/// random keys cannot turn a limited client into a stream of lookups at a
/// hot object.
pub async fn retry_allowed(env: &Env, limited: &Limited) -> bool {
    !over(env, "LIMIT_RETRY", limited.key.clone()).await
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
