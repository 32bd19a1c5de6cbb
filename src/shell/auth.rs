//! The admin bearer token, checked in constant time.

use crate::api::ApiError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use worker::{Env, Request};

/// Passes when `Authorization: Bearer <t>` matches the ADMIN_TOKEN secret.
/// Both sides are hashed first so the comparison takes the same time
/// whatever the lengths.
pub fn require_admin(req: &Request, env: &Env) -> Result<(), ApiError> {
    let expected = env
        .secret("ADMIN_TOKEN")
        .map(|s| s.to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::AdminDisabled)?;
    let header = req
        .headers()
        .get("Authorization")
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::Unauthorized("this route needs an admin bearer token".into()))?;
    let presented = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| ApiError::Unauthorized("use 'Authorization: Bearer <token>'".into()))?;
    let same =
        Sha256::digest(presented.trim().as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes()));
    if bool::from(same) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "the admin token is not valid".into(),
        ))
    }
}
