//! Channels from the callers' side: the calls a channel object takes, the
//! registry of connected platforms read through a short per-isolate cache,
//! and a SKU's hand-off of its per-channel numbers to each channel's sync
//! queue (`sync:<channel>#<k>`, k by FNV-1a of the SKU, as webhooks do).

use super::hooks::shard_of;
use super::stubs::internal_request;
use crate::domain::channel_sync::ChannelConfig;
use crate::domain::stock::SkuRecord;
use crate::domain::types::{Channel, SkuId};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use worker::{Date, Env, Response, Result};

/// The registry's object name: read through [`CONFIGS_TTL_MS`] caches by
/// SKU objects and the intake, written only by the merchant.
pub const REGISTRY: &str = "registry";
pub const CONFIGS_TTL_MS: u64 = 2_000;
/// Sync queues per channel.
pub const SHARDS: u16 = 4;

/// Externally tagged (`{"put": {…}}`): a tagged enum would cost the Wasm
/// a buffering deserializer for this one internal shape.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelCall {
    /// Registry: connect or reconfigure a platform.
    Put {
        config: ChannelConfig,
    },
    /// Registry: every channel, without secrets.
    List,
    Get {
        channel: Channel,
    },
    Delete {
        channel: Channel,
    },
    /// Registry: every channel with its secret (for the caches).
    Configs,
    /// A sync queue: the latest numbers of some SKUs.
    Offer {
        config: ChannelConfig,
        offers: Vec<Offer>,
    },
    /// A sync queue: its SKUs' targets and its newest log rows.
    Status {
        limit: usize,
    },
    /// A sync queue: its channel was disconnected.
    Forget,
    /// The channel's first queue: an order edgestock refused (the
    /// allocation could not cover it) or could not keep, for the merchant.
    Exception {
        exception: serde_json::Value,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    pub sku: SkuId,
    pub quantity: u64,
    pub version: u64,
}

pub fn queue_name(channel: &Channel, shard: u16) -> String {
    format!("sync:{channel}#{shard}")
}

pub async fn call(env: &Env, name: &str, call: &ChannelCall) -> Result<Response> {
    env.durable_object("CHANNEL")?
        .get_by_name(name)?
        .fetch_with_request(internal_request(call)?)
        .await
}

thread_local! {
    static CONFIGS: RefCell<Option<(Rc<Vec<ChannelConfig>>, u64)>> = const { RefCell::new(None) };
}

/// Every connected channel, from this isolate's cache when fresh.
pub async fn configs(env: &Env) -> Result<Rc<Vec<ChannelConfig>>> {
    let now = Date::now().as_millis();
    if let Some((list, at)) = CONFIGS.with(|c| c.borrow().clone()) {
        if now.saturating_sub(at) < CONFIGS_TTL_MS {
            return Ok(list);
        }
    }
    let mut response = call(env, REGISTRY, &ChannelCall::Configs).await?;
    if response.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "channel registry answered {}",
            response.status_code()
        )));
    }
    let list = Rc::new(response.json::<Vec<ChannelConfig>>().await?);
    CONFIGS.with(|c| *c.borrow_mut() = Some((list.clone(), now)));
    Ok(list)
}

/// How old this isolate's cached channel list is (u64::MAX: none).
pub fn configs_age_ms() -> u64 {
    let now = Date::now().as_millis();
    CONFIGS.with(|c| {
        c.borrow()
            .as_ref()
            .map_or(u64::MAX, |(_, at)| now.saturating_sub(*at))
    })
}

pub fn forget_configs() {
    CONFIGS.with(|c| *c.borrow_mut() = None);
}

/// Whether a channel takes this SKU's numbers: it syncs (has a URL) and
/// the SKU is listed on it (has an allocation for it, `{}` for shared).
pub fn listed(config: &ChannelConfig, record: &SkuRecord) -> bool {
    config.sync_url.is_some() && record.channels.get(&config.channel).is_some()
}

/// Tells every channel the SKU is listed on what it may sell of it now
/// (the record's `sellable`, never more). Ok only if every queue took it:
/// then the SKU counts the version as handed off.
pub async fn hand_off(env: &Env, record: &SkuRecord) -> Result<()> {
    let configs = configs(env).await?;
    let calls = configs.iter().filter(|c| listed(c, record)).map(|config| {
        let shard = shard_of(record.sku.as_str(), SHARDS);
        let name = queue_name(&config.channel, shard);
        let offer = ChannelCall::Offer {
            config: config.clone(),
            offers: vec![Offer {
                sku: record.sku.clone(),
                quantity: record.sellable(Some(&config.channel)),
                version: record.version,
            }],
        };
        async move { (call(env, &name, &offer).await, name) }
    });
    for (answer, name) in futures_util::future::join_all(calls).await {
        match answer {
            Ok(r) if r.status_code() == 200 => {}
            Ok(r) => {
                return Err(worker::Error::RustError(format!(
                    "sync queue {name} answered {}",
                    r.status_code()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
