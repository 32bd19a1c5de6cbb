//! Live push: what a feed (a live room, one SKU, one order) sends to its
//! viewers, and the rules a feed keeps: versions only move forward, an alert
//! when a SKU crosses into low stock or sells out, and the caps on what a
//! viewer may send. Plain Rust; the feed object is the shell.

use super::event::{AlertKind, Event, EVENT_VERSION};
pub use super::types::RoomId;
use super::types::{Invalid, OrderId, SkuId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A viewer's message may be at most this long.
pub const INCOMING_BYTES_MAX: usize = 1024;
/// And a viewer may send at most this many messages per window.
pub const INCOMING_PER_WINDOW_MAX: u32 = 20;
pub const INCOMING_WINDOW_MS: u64 = 10_000;
/// Order events a feed keeps for a snapshot.
pub const RECENT_ORDERS_MAX: usize = 50;

/// Which feed: the object that holds its sockets is named by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FeedName {
    Room(RoomId),
    Sku(SkuId),
    Order(OrderId),
    /// A bulk job's progress, for the merchant's console (`j_<32 hex>`).
    Job(String),
}

/// Whether `raw` is a job id as the router draws them: `j_` and 32 hex.
pub fn is_job_id(raw: &str) -> bool {
    raw.strip_prefix("j_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl FeedName {
    pub fn parse(raw: &str) -> Result<FeedName, Invalid> {
        let (kind, id) = raw
            .split_once(':')
            .ok_or_else(|| Invalid("a feed is room:, sku: or order: and an id".into()))?;
        Ok(match kind {
            "room" => FeedName::Room(RoomId::parse(id)?),
            "sku" => FeedName::Sku(SkuId::parse(id)?),
            "order" => FeedName::Order(OrderId::parse(id)?),
            "job" if is_job_id(id) => FeedName::Job(id.to_owned()),
            _ => {
                return Err(Invalid(
                    "a feed is room:, sku:, order: or job: and an id".into(),
                ))
            }
        })
    }
}

impl std::fmt::Display for FeedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedName::Room(r) => write!(f, "room:{r}"),
            FeedName::Sku(s) => write!(f, "sku:{s}"),
            FeedName::Order(o) => write!(f, "order:{o}"),
            FeedName::Job(j) => write!(f, "job:{j}"),
        }
    }
}

impl TryFrom<String> for FeedName {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        FeedName::parse(&raw)
    }
}

impl From<FeedName> for String {
    fn from(f: FeedName) -> String {
        f.to_string()
    }
}

/// A product shown in a room, in the host's order, with its title.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomItem {
    pub sku: SkuId,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSetup {
    pub title: String,
    pub items: Vec<RoomItem>,
}

/// What a viewer may send: a resume with the versions it saw last.
/// (`ping` is answered by the runtime with `pong` without waking the feed.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ViewerMessage {
    Resume { versions: BTreeMap<SkuId, u64> },
}

/// The feed's memory: the latest stock of each SKU and recent order events.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    pub room: Option<RoomSetup>,
    pub stock: BTreeMap<SkuId, Event>,
    pub orders: Vec<Event>,
}

fn stock_version(event: &Event) -> Option<(&SkuId, u64, bool, u64)> {
    match event {
        Event::Stock {
            sku,
            version,
            low_stock,
            available,
            ..
        } => Some((sku, *version, *low_stock, *available)),
        _ => None,
    }
}

impl FeedState {
    /// Takes in an event; returns what to send viewers (nothing for a stock
    /// state older than the one held: pushes can arrive out of order).
    pub fn publish(&mut self, event: Event) -> Vec<String> {
        let mut out = Vec::new();
        if matches!(event, Event::Alert { .. }) {
            // Passed on as it happens; a snapshot holds states, not alerts.
            out.push(to_json(&event));
            return out;
        }
        match stock_version(&event) {
            Some((sku, version, low, available)) => {
                let before = self
                    .stock
                    .get(sku)
                    .and_then(stock_version)
                    .map(|(_, v, l, a)| (v, l, a));
                if before.is_some_and(|(v, _, _)| v >= version) {
                    return out;
                }
                let sku = sku.clone();
                let alert = match before {
                    Some((_, _, was)) if was > 0 && available == 0 => Some(AlertKind::SoldOut),
                    Some((_, was_low, _)) if !was_low && low && available > 0 => {
                        Some(AlertKind::LowStock)
                    }
                    _ => None,
                };
                out.push(to_json(&event));
                if let Some(kind) = alert {
                    out.push(to_json(&Event::Alert {
                        v: EVENT_VERSION,
                        sku: sku.clone(),
                        kind,
                        available,
                        detail: None,
                    }));
                }
                self.stock.insert(sku, event);
            }
            None => {
                out.push(to_json(&event));
                self.orders.push(event);
                if self.orders.len() > RECENT_ORDERS_MAX {
                    self.orders.remove(0);
                }
            }
        }
        out
    }

    pub fn snapshot(&self, feed: &FeedName) -> String {
        let skus = match &self.room {
            // A room lists its SKUs in the host's order.
            Some(room) => room
                .items
                .iter()
                .filter_map(|i| self.stock.get(&i.sku).cloned())
                .collect(),
            None => self.stock.values().cloned().collect(),
        };
        to_json(&Event::Snapshot {
            v: EVENT_VERSION,
            feed: feed.clone(),
            room: self.room.clone(),
            skus,
            orders: self.orders.clone(),
        })
    }

    /// A resume: the current state of each SKU newer than the version the
    /// viewer saw (stock messages carry whole states, so the latest one
    /// covers every change missed), or a snapshot if it names SKUs the feed
    /// does not know.
    pub fn resume(&self, feed: &FeedName, seen: &BTreeMap<SkuId, u64>) -> Vec<String> {
        if seen.keys().any(|sku| !self.stock.contains_key(sku)) {
            return vec![self.snapshot(feed)];
        }
        self.stock
            .iter()
            .filter(|(sku, event)| {
                let version = stock_version(event).map_or(0, |(_, v, _, _)| v);
                seen.get(*sku).is_none_or(|s| version > *s)
            })
            .map(|(_, event)| to_json(event))
            .collect()
    }
}

pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Per-socket flood control, kept in the socket's attachment so it survives
/// hibernation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub window_start_ms: u64,
    pub count: u32,
}

impl Meter {
    /// Counts a message at `now`; false once the socket is over its rate.
    pub fn admit(&mut self, now: u64) -> bool {
        if now >= self.window_start_ms + INCOMING_WINDOW_MS {
            self.window_start_ms = now;
            self.count = 0;
        }
        self.count += 1;
        self.count <= INCOMING_PER_WINDOW_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(sku: &str, version: u64, available: u64, low: bool) -> Event {
        Event::Stock {
            v: 1,
            sku: SkuId::parse(sku).unwrap(),
            on_hand: 10,
            reserved: 10 - available,
            sold: 0,
            available,
            low_stock: low,
            version,
            at_ms: version,
            sellout_s: None,
            incoming: 0,
            storefront: None,
        }
    }

    #[test]
    fn versions_only_move_forward() {
        let mut feed = FeedState::default();
        assert_eq!(feed.publish(stock("a", 2, 9, false)).len(), 1);
        assert!(feed.publish(stock("a", 1, 10, false)).is_empty());
        assert!(feed.publish(stock("a", 2, 9, false)).is_empty());
        assert_eq!(feed.publish(stock("a", 3, 8, false)).len(), 1);
    }

    #[test]
    fn crossing_into_low_stock_or_sold_out_raises_an_alert() {
        let mut feed = FeedState::default();
        feed.publish(stock("a", 1, 9, false));
        let low = feed.publish(stock("a", 2, 2, true));
        assert!(low[1].contains("low_stock"), "{low:?}");
        assert_eq!(feed.publish(stock("a", 3, 1, true)).len(), 1, "already low");
        let out = feed.publish(stock("a", 4, 0, true));
        assert!(out[1].contains("sold_out"), "{out:?}");
    }

    #[test]
    fn a_resume_sends_only_what_moved_on() {
        let feed_name = FeedName::parse("room:r").unwrap();
        let mut feed = FeedState::default();
        feed.publish(stock("a", 5, 5, false));
        feed.publish(stock("b", 7, 5, false));
        let seen: BTreeMap<SkuId, u64> = [
            (SkuId::parse("a").unwrap(), 5),
            (SkuId::parse("b").unwrap(), 6),
        ]
        .into();
        let out = feed.resume(&feed_name, &seen);
        assert_eq!(out.len(), 1);
        assert!(out[0].contains(r#""version":7"#));
        let unknown: BTreeMap<SkuId, u64> = [(SkuId::parse("zz").unwrap(), 1)].into();
        assert!(feed.resume(&feed_name, &unknown)[0].contains("snapshot"));
    }

    #[test]
    fn a_socket_over_its_rate_is_refused() {
        let mut meter = Meter::default();
        for _ in 0..INCOMING_PER_WINDOW_MAX {
            assert!(meter.admit(1_000));
        }
        assert!(!meter.admit(1_001));
        assert!(meter.admit(1_000 + INCOMING_WINDOW_MS));
    }

    #[test]
    fn feed_names_round_trip() {
        for raw in [
            "room:live-1",
            "sku:tee",
            &format!("order:o_{}", "a".repeat(32)),
        ] {
            assert_eq!(FeedName::parse(raw).unwrap().to_string(), raw);
        }
        assert!(FeedName::parse("chat:x").is_err());
        assert!(FeedName::parse("room:bad id").is_err());
    }
}
