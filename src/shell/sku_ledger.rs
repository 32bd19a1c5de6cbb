//! The SKU object's verifiable ledger (see domain/ledger.rs and
//! domain/checkpoint.rs): recomputing the chain, signing checkpoints of its
//! head with the `LEDGER_SIGNING_KEY` secret (now and then, from the alarm,
//! and for every export), and exports a merchant verifies offline.

use super::super::sql_store::{SqlStore, StoreError};
use super::{json_value, Failure};
use crate::api::wire::ledger_json;
use crate::api::HttpReply;
use crate::domain::checkpoint::{self, Checkpoint};
use crate::domain::ledger::{from_hex, verify_chain, Tail};
use crate::domain::stock::SkuRecord;
use ed25519_dalek::SigningKey;
use serde_json::json;
use std::cell::RefCell;
use worker::{console_error, Env};

/// A SKU whose ledger moved gets a checkpoint at most this often.
pub(super) const CHECKPOINT_EVERY_MS: u64 = 60_000;

/// The deployment's signing key, if the secret is set (and well formed).
pub(super) fn signing_key(env: &Env) -> Option<SigningKey> {
    let secret = env.secret("LEDGER_SIGNING_KEY").ok()?.to_string();
    checkpoint::signing_key(&secret)
}

/// Recomputes the chain over every stored entry, and checks that it passes
/// through the newest checkpoint (and that the key signed it).
pub(super) fn verify(
    store: &SqlStore,
    record: &SkuRecord,
    env: &Env,
) -> Result<HttpReply, Failure> {
    let failed = RefCell::new(None);
    let report = verify_chain(&record.sku, store.walk_ledger(0, &failed), None);
    if let Some(e) = failed.into_inner() {
        return Err(e.into());
    }
    let last = store.last_checkpoint()?;
    let checkpoint = match &last {
        Some(cp) => {
            let at = store.ledger(cp.seq.saturating_sub(1), 1)?;
            let on_chain = report.head_seq >= cp.seq
                && at
                    .first()
                    .is_some_and(|e| e.seq == cp.seq && e.hash == cp.hash);
            let signed =
                signing_key(env).is_some_and(|key| cp.verify(&key.verifying_key()).is_ok());
            let mut body = json_value(cp)?;
            body["on_chain"] = json!(on_chain);
            body["signature_ok"] = json!(signed);
            Some((body, on_chain && signed))
        }
        None => None,
    };
    let mut body = json_value(&report)?;
    body["sku"] = json!(record.sku);
    body["ok"] = json!(report.ok && checkpoint.as_ref().is_none_or(|(_, ok)| *ok));
    body["checkpoint"] = checkpoint.map_or(serde_json::Value::Null, |(cp, _)| cp);
    Ok(HttpReply::json(200, body))
}

/// Entries after `after` (at most `limit`), with a checkpoint of the head
/// signed now (or the newest one, if the head has one already): a file a
/// merchant checks with `cargo run --example verify_ledger`.
pub(super) fn export(
    store: &mut SqlStore,
    record: &SkuRecord,
    tail: Tail,
    after: u64,
    limit: usize,
    env: &Env,
) -> Result<HttpReply, Failure> {
    let entries = store.ledger(after, limit)?;
    let checkpoint = checkpoint_head(store, record, tail, env, 0)?;
    let mut body = ledger_json(&entries, limit);
    body["sku"] = json!(record.sku);
    body["checkpoint"] = json_value(&checkpoint)?;
    Ok(HttpReply::json(200, body))
}

/// The newest checkpoint, signing one of the head first if the head moved
/// past it and the last is at least `min_age_ms` old. None if the SKU has
/// no entries or no key is set.
pub(super) fn checkpoint_head(
    store: &mut SqlStore,
    record: &SkuRecord,
    tail: Tail,
    env: &Env,
    min_age_ms: u64,
) -> Result<Option<Checkpoint>, StoreError> {
    let last = store.last_checkpoint()?;
    let head = tail.next_seq.saturating_sub(1);
    let Some(key) = signing_key(env) else {
        return Ok(last);
    };
    let now = super::now_ms();
    let due = match &last {
        Some(cp) => cp.seq < head && now.saturating_sub(cp.at_ms) >= min_age_ms,
        None => head > 0,
    };
    if !due {
        return Ok(last);
    }
    // Only a chain that holds from the last checkpoint is signed: a
    // rewritten entry is never vouched for.
    let from = last.as_ref().map_or(0, |cp| cp.seq);
    let anchor = last.as_ref().and_then(|cp| from_hex(&cp.hash));
    let failed = RefCell::new(None);
    let report = verify_chain(&record.sku, store.walk_ledger(from, &failed), anchor);
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    if !report.ok || report.head_seq != head {
        console_error!(
            "sku {}: no checkpoint: the ledger does not verify from entry {from}: {:?}",
            record.sku,
            report.first_bad
        );
        return Ok(last);
    }
    let hash = crate::domain::ledger::to_hex(&tail.last_hash);
    let signed = Checkpoint::sign(&record.sku, head, &hash, now, &key);
    store.save_checkpoint(&signed)?;
    Ok(Some(signed))
}
