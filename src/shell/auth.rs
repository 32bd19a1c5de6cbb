//! Who is calling: the admin (bearer token from the `ADMIN_TOKEN` secret), a
//! buyer (a session JWT from the merchant's backend, verified here against
//! `BUYER_SESSION_SECRET`, or its rotation twin `BUYER_SESSION_SECRET_NEXT`),
//! or nobody. Payment callbacks prove themselves with a signature instead.
//! Everything is checked at the router, never in an object, and costs a few
//! HMACs, not a hop.

use crate::api::session::{self, Claims};
use crate::api::ApiError;
use crate::domain::types::BuyerId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use worker::{Date, Env, Request};

/// The credential a request carried, verified.
pub enum Caller {
    Admin,
    Buyer(Claims),
    Anonymous,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin)
    }

    /// The session's buyer, if this is a buyer.
    pub fn buyer(&self) -> Option<&BuyerId> {
        match self {
            Caller::Buyer(claims) => Some(&claims.sub),
            _ => None,
        }
    }
}

pub fn now_s() -> u64 {
    Date::now().as_millis() / 1000
}

fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .ok()
        .filter(|s| !s.is_empty())
}

/// The session secrets in force: the current one and, during a rotation,
/// the next.
pub fn session_secrets(env: &Env) -> Vec<String> {
    secrets(env, ["BUYER_SESSION_SECRET", "BUYER_SESSION_SECRET_NEXT"])
}

/// The secrets set among `names` (a current one and its rotation twin).
fn secrets(env: &Env, names: [&str; 2]) -> Vec<String> {
    names.iter().filter_map(|name| secret(env, name)).collect()
}

/// Reads `Authorization: Bearer <credential>`. Only HTTP whitespace (space
/// and tab) around the credential is ignored: a token followed by a
/// vertical tab or form feed is a different token.
pub fn caller(req: &Request, env: &Env) -> Result<Caller, ApiError> {
    let Some(header) = req.headers().get("Authorization").ok().flatten() else {
        return Ok(Caller::Anonymous);
    };
    let presented = header
        .strip_prefix("Bearer ")
        .map(|t| t.trim_matches([' ', '\t']))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("use 'Authorization: Bearer <token>'".into()))?;
    identify(presented, env)
}

/// A credential as presented: the admin token, or else a buyer session.
pub fn identify(presented: &str, env: &Env) -> Result<Caller, ApiError> {
    if let Some(admin) = secret(env, "ADMIN_TOKEN") {
        // Both sides hashed first, so the comparison takes the same time
        // whatever the lengths.
        let same = Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(admin.as_bytes()));
        if bool::from(same) {
            return Ok(Caller::Admin);
        }
    }
    let secrets = session_secrets(env);
    let keys: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    session::verify_session(presented, &keys, now_s())
        .map(Caller::Buyer)
        .map_err(|e| ApiError::Unauthorized(e.detail()))
}

/// Checks a route's access rule against the caller.
pub fn require_admin(caller: &Caller, env: &Env) -> Result<(), ApiError> {
    if caller.is_admin() {
        return Ok(());
    }
    if secret(env, "ADMIN_TOKEN").is_none() {
        return Err(ApiError::AdminDisabled);
    }
    Err(ApiError::Unauthorized(
        "this route needs the admin bearer token".into(),
    ))
}

/// A buyer session or the admin token.
pub fn require_buyer_or_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Admin | Caller::Buyer(_) => Ok(()),
        Caller::Anonymous => Err(ApiError::Unauthorized(
            "this route needs a buyer session: 'Authorization: Bearer <session token>'".into(),
        )),
    }
}

/// Verifies a payment provider's `Edgestock-Signature` header value over
/// the raw body (the current secret or, during a rotation, the next).
pub fn verify_payment(header: &str, env: &Env, body: &[u8]) -> Result<(), ApiError> {
    let secrets = secrets(
        env,
        ["PAYMENT_WEBHOOK_SECRET", "PAYMENT_WEBHOOK_SECRET_NEXT"],
    );
    let keys: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    session::verify_payment(header, body, &keys, now_s())
        .map(|_| ())
        .map_err(|e| ApiError::Unauthorized(e.detail()))
}

/// Verifies a carrier's `Edgestock-Signature` (the payment scheme, under
/// CARRIER_WEBHOOK_SECRET or, during a rotation, its _NEXT).
pub fn verify_carrier(header: &str, env: &Env, body: &[u8]) -> Result<(), ApiError> {
    let secrets = secrets(
        env,
        ["CARRIER_WEBHOOK_SECRET", "CARRIER_WEBHOOK_SECRET_NEXT"],
    );
    let keys: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
    session::verify_payment(header, body, &keys, now_s())
        .map(|_| ())
        .map_err(|e| ApiError::Unauthorized(e.detail().replace("callback", "carrier update")))
}

/// Whether dev mode is on: `DEV_SESSIONS=1`, set in `.dev.vars` only.
pub fn dev_mode(env: &Env) -> bool {
    env.var("DEV_SESSIONS")
        .map(|v| v.to_string() == "1")
        .or_else(|_| env.secret("DEV_SESSIONS").map(|v| v.to_string() == "1"))
        .unwrap_or(false)
}

/// The payment secret, for the dev payment route that plays the provider.
pub fn payment_secret(env: &Env) -> Option<String> {
    secret(env, "PAYMENT_WEBHOOK_SECRET")
}

/// The current session secret, for the dev session route.
pub fn session_secret(env: &Env) -> Option<String> {
    secret(env, "BUYER_SESSION_SECRET")
}
