//! Outbound stock sync: what a channel's sync queue keeps per SKU and how
//! it decides what to push, when, and what to log. Plain rules, the clock
//! and the jitter passed in; the queue object (shell/channel_object.rs)
//! stores these and sends what they say.
//!
//! - **Coalesced**: a queue keeps one [`Target`] per SKU, the latest
//!   number by SKU version; an older or equal version offered later (a
//!   retry, a reordering) changes nothing. A burst of a thousand changes
//!   is one push of the last number.
//! - **Idempotent**: every push is a full number named `{sku}:{version}`.
//! - **Retried** with exponential backoff and jitter (1 s doubling, at
//!   most 5 min), for as long as it takes: the latest number must arrive.
//! - **Rate-limited** per channel: the queue sends at most its share of
//!   `rate_per_s` each second.

use serde::{Deserialize, Serialize};

use super::types::{Channel, SkuId};
use crate::channels::Platform;

/// A connected platform, as the merchant registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelConfig {
    pub channel: Channel,
    pub platform: Platform,
    #[serde(default)]
    pub app_key: String,
    /// The platform's app secret (or WeChat's token): checks inbound
    /// messages and signs pushes. Never shown after it is set.
    pub secret: String,
    #[serde(default)]
    pub access_token: String,
    /// Where stock pushes go (the platform's API base, or the merchant's
    /// relay); None: no outbound sync for this channel.
    #[serde(default)]
    pub sync_url: Option<String>,
    /// Pushes per second to this platform, all SKUs together.
    pub rate_per_s: u32,
    pub created_at: u64,
    pub updated_at: u64,
}

/// The most pushes per second a channel may be given.
pub const RATE_MAX: u32 = 1_000;
pub const RATE_DEFAULT: u32 = 10;
/// Log rows a queue keeps (the newest).
pub const LOG_KEPT: u64 = 1_000;
const BACKOFF_FIRST_MS: u64 = 1_000;
const BACKOFF_MAX_MS: u64 = 300_000;

/// The number last acknowledged by the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    pub quantity: u64,
    pub version: u64,
    pub at: u64,
}

/// One SKU's number for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub sku: SkuId,
    /// The latest number offered, and the SKU version it is as of.
    pub quantity: u64,
    pub version: u64,
    /// Not before this (a backoff after a failure).
    pub due_at: u64,
    /// Failed pushes of the current number in a row.
    pub attempts: u32,
    pub synced: Option<Synced>,
    pub last_error: Option<String>,
}

impl Target {
    pub fn new(sku: SkuId, quantity: u64, version: u64, now: u64) -> Target {
        Target {
            sku,
            quantity,
            version,
            due_at: now,
            attempts: 0,
            synced: None,
            last_error: None,
        }
    }

    /// A newer number: it replaces the waiting one (coalescing). A
    /// backoff in progress is kept (the platform is failing). Answers
    /// whether anything changed.
    pub fn offer(&mut self, quantity: u64, version: u64) -> bool {
        if version <= self.version {
            return false;
        }
        self.quantity = quantity;
        self.version = version;
        true
    }

    /// Whether the platform still has to be told.
    pub fn pending(&self) -> bool {
        self.synced.is_none_or(|s| s.quantity != self.quantity)
    }

    /// The push's id: full number as of one SKU version.
    pub fn idempotent_id(&self) -> String {
        format!("{}:{}", self.sku, self.version)
    }

    /// The outcome of a push of `quantity` as of `version`. A newer
    /// number offered meanwhile stays pending.
    pub fn record(
        &mut self,
        pushed: (u64, u64),
        outcome: Result<(), String>,
        now: u64,
        jitter: f64,
    ) {
        let (quantity, version) = pushed;
        match outcome {
            Ok(()) => {
                self.synced = Some(Synced {
                    quantity,
                    version,
                    at: now,
                });
                self.attempts = 0;
                self.last_error = None;
                self.due_at = now;
            }
            Err(e) => {
                self.attempts = self.attempts.saturating_add(1);
                self.last_error = Some(e);
                self.due_at = now + backoff_ms(self.attempts, jitter);
            }
        }
    }
}

/// 1 s, doubling per failure, at most 5 min, then ±20% jitter (`jitter` in
/// [0, 1)).
pub fn backoff_ms(attempts: u32, jitter: f64) -> u64 {
    let base = BACKOFF_FIRST_MS
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
        .min(BACKOFF_MAX_MS);
    let spread = base as f64 * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    spread as u64
}

/// How many pushes one of `shards` queues may send per second.
pub fn share_per_s(rate_per_s: u32, shards: u16) -> u32 {
    (rate_per_s / u32::from(shards.max(1))).max(1)
}

/// One push, as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncLog {
    pub at: u64,
    pub sku: SkuId,
    pub quantity: u64,
    pub version: u64,
    pub idempotent_id: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Target {
        Target::new(SkuId::parse("tee").unwrap(), 10, 5, 1_000)
    }

    #[test]
    fn only_newer_versions_replace_the_number() {
        let mut target = t();
        assert!(target.offer(8, 7));
        assert!(!target.offer(9, 6), "an older version is ignored");
        assert!(!target.offer(9, 7), "an equal version too");
        assert_eq!((target.quantity, target.version), (8, 7));
        assert_eq!(target.idempotent_id(), "tee:7");
    }

    #[test]
    fn a_failure_backs_off_and_a_success_settles() {
        let mut target = t();
        target.record((10, 5), Err("HTTP 500".into()), 2_000, 0.5);
        assert_eq!(target.due_at, 3_000);
        target.record((10, 5), Err("HTTP 500".into()), 3_000, 0.5);
        assert_eq!(target.due_at, 5_000);
        assert!(target.pending());
        // A newer number came while the push was on its way.
        target.offer(4, 9);
        target.record((10, 5), Ok(()), 6_000, 0.5);
        assert!(target.pending(), "4 still has to be told");
        target.record((4, 9), Ok(()), 6_100, 0.5);
        assert!(!target.pending());
        // The same number at a newer version needs no push.
        target.offer(4, 11);
        assert!(!target.pending());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        assert_eq!(backoff_ms(1, 0.5), 1_000);
        assert_eq!(backoff_ms(60, 0.5), 300_000);
        assert_eq!(backoff_ms(60, 0.0), 240_000);
        assert_eq!(share_per_s(10, 4), 2);
        assert_eq!(share_per_s(1, 4), 1);
    }
}
