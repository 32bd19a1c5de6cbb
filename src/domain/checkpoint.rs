//! Signed checkpoints of a SKU's ledger: (SKU, seq, hash, time) signed
//! with the deployment's Ed25519 key (the secret `LEDGER_SIGNING_KEY`).
//! A checkpoint pins the chain's head at that moment: whoever can write the
//! database can recompute every hash after a change, but cannot sign, so a
//! rewritten chain no longer reaches the signed hash. Anyone holding the
//! public key (served at `/.well-known/edgestock-ledger-key`) verifies an
//! export offline (`cargo run --example verify_ledger`).

use super::ledger::{from_hex, verify_chain, ChainReport, LedgerEntry};
pub use super::types::hex;
use super::types::{unhex, SkuId};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub sku: SkuId,
    pub seq: u64,
    pub hash: String,
    pub at_ms: u64,
    /// Which key signed: the first 16 hex digits of SHA-256(public key).
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::message`], 128 hex digits.
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: `edgestock-checkpoint-v1\n<sku>\n<seq>\n<hash>\n<at_ms>`.
    pub fn message(sku: &SkuId, seq: u64, hash: &str, at_ms: u64) -> Vec<u8> {
        format!("edgestock-checkpoint-v1\n{sku}\n{seq}\n{hash}\n{at_ms}").into_bytes()
    }

    pub fn sign(sku: &SkuId, seq: u64, hash: &str, at_ms: u64, key: &SigningKey) -> Checkpoint {
        let signature = key.sign(&Checkpoint::message(sku, seq, hash, at_ms));
        Checkpoint {
            sku: sku.clone(),
            seq,
            hash: hash.to_owned(),
            at_ms,
            key_id: key_id(&key.verifying_key()),
            signature: hex(&signature.to_bytes()),
        }
    }

    /// Whether `public` signed this checkpoint.
    pub fn verify(&self, public: &VerifyingKey) -> Result<(), String> {
        let raw = unhex(&self.signature).ok_or("the signature is not 128 hex digits")?;
        let bytes: [u8; 64] = raw
            .try_into()
            .map_err(|_| "the signature is not 64 bytes")?;
        let message = Checkpoint::message(&self.sku, self.seq, &self.hash, self.at_ms);
        public
            .verify(&message, &Signature::from_bytes(&bytes))
            .map_err(|_| "the signature does not verify with this public key".to_owned())
    }
}

/// The signing key from the secret: 64 hex digits (a 32-byte seed).
pub fn signing_key(secret_hex: &str) -> Option<SigningKey> {
    let seed: [u8; 32] = unhex(secret_hex.trim())?.try_into().ok()?;
    Some(SigningKey::from_bytes(&seed))
}

/// A public key from its 64 hex digits.
pub fn public_key(raw_hex: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = unhex(raw_hex.trim())?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

pub fn key_id(public: &VerifyingKey) -> String {
    hex(&Sha256::digest(public.as_bytes())[..8])
}

/// What an offline check of an export found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    pub chain: ChainReport,
    /// The checkpoint is signed by the key and its hash is the chain's
    /// entry at its seq.
    pub checkpoint_ok: bool,
    pub detail: String,
}

/// Checks an export: the entries form an unbroken chain (from entry 1, or
/// from where retention left it), the checkpoint is signed by `public`,
/// and the chain passes through the checkpoint's (seq, hash).
pub fn verify_export(
    sku: &SkuId,
    entries: &[LedgerEntry],
    checkpoint: &Checkpoint,
    public: &VerifyingKey,
) -> ExportReport {
    let chain = verify_chain(sku, entries.iter().cloned(), None);
    let signed = checkpoint.verify(public).and_then(|()| {
        if checkpoint.sku != *sku {
            return Err(format!(
                "the checkpoint is of {}, not {sku}",
                checkpoint.sku
            ));
        }
        let at = entries
            .iter()
            .find(|e| e.seq == checkpoint.seq)
            .ok_or(format!("no entry {} in the export", checkpoint.seq))?;
        if at.hash != checkpoint.hash || from_hex(&at.hash).is_none() {
            return Err(format!(
                "entry {} has hash {}, the signed checkpoint says {}",
                checkpoint.seq, at.hash, checkpoint.hash
            ));
        }
        if chain.head_seq < checkpoint.seq {
            return Err(format!(
                "the chain breaks at {} before the checkpoint at {}",
                chain.first_bad.as_ref().map_or(0, |b| b.seq),
                checkpoint.seq
            ));
        }
        Ok(())
    });
    let (checkpoint_ok, detail) = match signed {
        Ok(()) => (
            true,
            format!(
                "checkpoint at entry {} signed by key {}",
                checkpoint.seq, checkpoint.key_id
            ),
        ),
        Err(why) => (false, why),
    };
    ExportReport {
        chain,
        checkpoint_ok,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let key = signing_key(&"11".repeat(32)).unwrap();
        let other = signing_key(&"22".repeat(32)).unwrap();
        let sku = SkuId::parse("cap").unwrap();
        let cp = Checkpoint::sign(&sku, 7, &"ab".repeat(32), 1_000, &key);
        assert!(cp.verify(&key.verifying_key()).is_ok());
        assert!(cp.verify(&other.verifying_key()).is_err());
        let mut moved = cp.clone();
        moved.seq = 8;
        assert!(moved.verify(&key.verifying_key()).is_err());
        assert_eq!(cp.key_id.len(), 16);
        assert!(signing_key("nope").is_none());
        assert!(signing_key(&"1".repeat(63)).is_none());
        let public = hex(key.verifying_key().as_bytes());
        assert_eq!(public_key(&public), Some(key.verifying_key()));
    }
}
