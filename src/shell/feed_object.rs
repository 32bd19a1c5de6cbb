//! A feed object: one per live room, per SKU and per order, holding that
//! feed's viewers' WebSockets through the hibernation API (an idle viewer
//! costs nothing), the feed's latest state in SQLite (so a woken feed still
//! knows it), and the fan-out of each published event to every viewer.
//! SKU objects publish coalesced stock states here; order objects publish
//! status changes.

use super::http::to_response;
use super::stubs::{FeedCall, OrderCall, OrderClient, OrderOp, SkuCall, SkuClient, SkuOp};
use super::txn::{Atomic, Tables};
use crate::api::{ApiError, HttpReply};
use crate::domain::event::{Event, EVENT_VERSION};
use crate::domain::live::{to_json, FeedName, FeedState, Meter, ViewerMessage, INCOMING_BYTES_MAX};
use crate::domain::room_stats::{OrderFact, RoomStats};
use crate::domain::stock::StockError;
use serde::Deserialize;
use std::cell::RefCell;
use worker::{
    console_error, durable_object, Date, DurableObject, Env, Request, Response, Result,
    SqlStorageValue, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

#[durable_object]
pub struct FeedObject {
    state: State,
    /// The table and the row are written in one transaction.
    atomic: Atomic,
    env: Env,
    feed: RefCell<Option<(FeedName, FeedState)>>,
    /// Its table, made by its first save: a viewer of a room never set up
    /// stores nothing.
    tables: Tables,
    /// The room's numbers' tables, made by the first order told.
    stats_tables: Tables,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    body: String,
}

impl DurableObject for FeedObject {
    fn new(state: State, env: Env) -> Self {
        // Answered by the runtime without waking the object.
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let tables = Tables::detect(&state.storage().sql(), "feed", SCHEMA)
            .unwrap_or_else(|_| Tables::unknown(SCHEMA));
        let stats_tables = Tables::detect(&state.storage().sql(), "room_stats", STATS_SCHEMA)
            .unwrap_or_else(|_| Tables::unknown(STATS_SCHEMA));
        let (state, atomic) = Atomic::from_state(state);
        FeedObject {
            state,
            atomic,
            env,
            feed: RefCell::new(None),
            tables,
            stats_tables,
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if let Some(name) = req.headers().get("X-Feed")? {
            let protocol = req.headers().get("Sec-WebSocket-Protocol")?;
            let shard = req.headers().get("X-Feed-Shard")?;
            return match FeedName::parse(&name) {
                Ok(feed) => {
                    let mut response = self.accept(feed, protocol).await?;
                    if let Some(shard) = shard {
                        response.headers_mut().set("Edgestock-Feed-Shard", &shard)?;
                    }
                    Ok(response)
                }
                Err(_) => to_response(&ApiError::Internal.to_reply()),
            };
        }
        let reply = match req.json::<FeedCall>().await {
            Ok(call) => self.handle(call).await,
            Err(_) => ApiError::Internal.to_reply(),
        };
        to_response(&reply)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let text = match message {
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        if text.len() > INCOMING_BYTES_MAX {
            refuse(
                &ws,
                "message-too-large",
                "messages are at most 1024 bytes",
                1009,
            );
            return Ok(());
        }
        let mut meter: Meter = ws.deserialize_attachment()?.unwrap_or_default();
        let admitted = meter.admit(Date::now().as_millis());
        ws.serialize_attachment(meter)?;
        if !admitted {
            refuse(
                &ws,
                "too-many-messages",
                "at most 20 messages per 10 seconds",
                1008,
            );
            return Ok(());
        }
        match serde_json::from_str::<ViewerMessage>(&text) {
            Ok(ViewerMessage::Resume { versions }) => {
                if let Some((feed, state)) = self.load()? {
                    for message in state.resume(&feed, &versions) {
                        let _ = ws.send_with_str(message);
                    }
                }
            }
            Err(_) => {
                let _ = ws.send_with_str(error_json(
                    "unknown-message",
                    "send {\"type\":\"resume\",\"versions\":{...}} or ping",
                ));
            }
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        let _ = ws.close(Some(1000), Some("bye"));
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: worker::Error) -> Result<()> {
        Ok(())
    }
}

fn error_json(code: &str, detail: &str) -> String {
    to_json(&Event::Error {
        v: EVENT_VERSION,
        code: code.to_owned(),
        detail: detail.to_owned(),
    })
}

fn refuse(ws: &WebSocket, code: &str, detail: &str, close_code: u16) {
    let _ = ws.send_with_str(error_json(code, detail));
    let _ = ws.close(Some(close_code), Some(code));
}

/// The most viewers one feed holds (the runtime allows 32,768 hibernating
/// sockets per object); `FEED_SOCKETS_MAX` may set fewer.
const SOCKETS_MAX: usize = 32_000;
/// The feed's one table: its name and state, as JSON.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS feed (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL, body TEXT NOT NULL);";

/// A room's numbers (its first shard only), made by the first order told.
const STATS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS room_stats (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tallied (key TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tallied_by_age ON tallied (at_ms);";

/// Order changes remembered (against a second count) this long.
const TALLIED_KEPT_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The tag of a socket that holds a seat.
const VIEWER: &str = "viewer";

impl FeedObject {
    fn sockets_max(&self) -> usize {
        self.env
            .var("FEED_SOCKETS_MAX")
            .ok()
            .and_then(|v| v.to_string().parse::<usize>().ok())
            .filter(|n| (1..=SOCKETS_MAX).contains(n))
            .unwrap_or(SOCKETS_MAX)
    }

    fn load(&self) -> Result<Option<(FeedName, FeedState)>> {
        if let Some(loaded) = self.feed.borrow().as_ref() {
            return Ok(Some(loaded.clone()));
        }
        if !self.tables.made() {
            return Ok(None);
        }
        let rows: Vec<Row> = self
            .state
            .storage()
            .sql()
            .exec("SELECT name, body FROM feed WHERE id = 1", None)?
            .to_array()?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let loaded = (
            FeedName::parse(&row.name).map_err(|e| worker::Error::RustError(e.0))?,
            serde_json::from_str(&row.body)?,
        );
        *self.feed.borrow_mut() = Some(loaded.clone());
        Ok(Some(loaded))
    }

    fn room_stats(&self) -> Result<RoomStats> {
        if !self.stats_tables.made() {
            return Ok(RoomStats::default());
        }
        #[derive(Deserialize)]
        struct Body {
            body: String,
        }
        let rows: Vec<Body> = self
            .state
            .storage()
            .sql()
            .exec("SELECT body FROM room_stats WHERE id = 1", None)?
            .to_array()?;
        Ok(match rows.first() {
            Some(row) => serde_json::from_str(&row.body)?,
            None => RoomStats::default(),
        })
    }

    /// Counts an order's status change once: the key and the numbers are
    /// written together, and a change told again finds its key.
    fn tally(&self, fact: &OrderFact) -> Result<()> {
        #[derive(Deserialize)]
        struct Count {
            n: i64,
        }
        if self.stats_tables.made() {
            let seen: Vec<Count> = self
                .state
                .storage()
                .sql()
                .exec(
                    "SELECT count(*) AS n FROM tallied WHERE key = ?",
                    vec![SqlStorageValue::String(fact.key())],
                )?
                .to_array()?;
            if seen.first().is_some_and(|c| c.n > 0) {
                return Ok(());
            }
        }
        let mut stats = self.room_stats()?;
        stats.add(fact);
        let at = SqlStorageValue::Integer(fact.at_ms.min(i64::MAX as u64) as i64);
        let forget = fact
            .at_ms
            .saturating_sub(TALLIED_KEPT_MS)
            .min(i64::MAX as u64) as i64;
        self.stats_tables.write(
            &self.atomic,
            vec![
                (
                    "INSERT OR REPLACE INTO room_stats (id, body) VALUES (1, ?)",
                    vec![SqlStorageValue::String(serde_json::to_string(&stats)?)],
                ),
                (
                    "INSERT INTO tallied (key, at_ms) VALUES (?, ?)",
                    vec![SqlStorageValue::String(fact.key()), at],
                ),
                (
                    "DELETE FROM tallied WHERE at_ms < ?",
                    vec![SqlStorageValue::Integer(forget)],
                ),
            ],
        )
    }

    fn save(&self, feed: &FeedName, state: &FeedState) -> Result<()> {
        let row = (
            "INSERT OR REPLACE INTO feed (id, name, body) VALUES (1, ?, ?)",
            vec![
                SqlStorageValue::String(feed.to_string()),
                SqlStorageValue::String(serde_json::to_string(state)?),
            ],
        );
        if let Err(e) = self.tables.write(&self.atomic, vec![row]) {
            // Memory may be ahead of storage: reload on the next call.
            *self.feed.borrow_mut() = None;
            return Err(e);
        }
        *self.feed.borrow_mut() = Some((feed.clone(), state.clone()));
        Ok(())
    }

    /// The feed's state, creating it the first time a viewer asks: a SKU
    /// feed subscribes to its SKU (none for a SKU never set up), an order
    /// feed starts from the order's latest status. A room feed is stored
    /// only once the merchant sets the room up; until then a viewer gets an
    /// empty one, and nothing is written.
    async fn ensure(&self, feed: &FeedName) -> Result<Option<FeedState>> {
        if let Some((_, state)) = self.load()? {
            return Ok(Some(state));
        }
        let first = match feed {
            FeedName::Sku(sku) => match subscribe(&self.env, sku, feed, false).await {
                Subscribed::State(event) => Some(event),
                Subscribed::Unknown => return Ok(None),
                Subscribed::Failed => None,
            },
            FeedName::Order(order) => latest_order_event(&self.env, order).await,
            FeedName::Room(_) => return Ok(Some(FeedState::default())),
            // A job's feed starts empty; the job publishes its progress.
            FeedName::Job(_) => None,
        };
        // Read again after the await: a viewer arriving meanwhile may have
        // stored the feed, and publishes may have landed in it since.
        let mut state = self.load()?.map(|(_, s)| s).unwrap_or_default();
        if let Some(event) = first {
            state.publish(event);
        }
        self.save(feed, &state)?;
        Ok(Some(state))
    }

    /// Accepts a viewer; `protocol` is the subprotocol the router selected
    /// (an order feed's), which the handshake must name.
    async fn accept(&self, feed: FeedName, protocol: Option<String>) -> Result<Response> {
        let Some(state) = self.ensure(&feed).await? else {
            return to_response(&ApiError::Stock(StockError::SkuNotFound).to_reply());
        };
        // Viewers are tagged: a socket turned away (accepted only to be
        // told why) never takes a seat, however long its close takes.
        let viewers = self.state.get_websockets_with_tag(VIEWER).len();
        if viewers >= self.sockets_max() {
            // Accepted only to say why, then closed: "try again later".
            let pair = WebSocketPair::new()?;
            self.state.accept_web_socket(&pair.server);
            refuse(
                &pair.server,
                "feed-full",
                &format!("this feed has its {viewers} viewers; try again in a moment"),
                1013,
            );
            return Response::from_websocket(pair.client);
        }
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[VIEWER]);
        pair.server.serialize_attachment(Meter::default())?;
        pair.server.send_with_str(state.snapshot(&feed))?;
        let response = Response::from_websocket(pair.client)?;
        match protocol {
            Some(protocol) => {
                let headers = worker::Headers::new();
                headers.set("Sec-WebSocket-Protocol", &protocol)?;
                Ok(response.with_headers(headers))
            }
            None => Ok(response),
        }
    }

    async fn handle(&self, call: FeedCall) -> HttpReply {
        let result: Result<HttpReply> = async {
            match call {
                FeedCall::Publish { feed, event } => {
                    // A feed nobody has asked for (an order nobody watches,
                    // a room never set up) stores nothing; a job's feed keeps
                    // its progress, so a console that connects late sees it.
                    let stored = self.load()?;
                    let mut state = stored.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
                    let messages = state.publish(event);
                    if !messages.is_empty() {
                        if stored.is_some() || matches!(feed, FeedName::Job(_)) {
                            self.save(&feed, &state)?;
                        }
                        self.broadcast(&messages);
                    }
                    Ok(HttpReply::json(200, serde_json::json!({ "ok": true })))
                }
                FeedCall::SetupRoom { feed, room } => {
                    let before: Vec<_> = self
                        .ensure(&feed)
                        .await?
                        .and_then(|s| s.room)
                        .iter()
                        .flat_map(|r| r.items.iter().map(|i| i.sku.clone()))
                        .collect();
                    // The SKU calls first; the state is read and changed
                    // only after the last await, so publishes that land
                    // meanwhile are kept, not overwritten by a stale copy.
                    let mut fetched = Vec::new();
                    for item in &room.items {
                        if let Subscribed::State(event) =
                            subscribe(&self.env, &item.sku, &feed, true).await
                        {
                            fetched.push(event);
                        }
                    }
                    let dropped: Vec<_> = before
                        .into_iter()
                        .filter(|s| !room.items.iter().any(|i| i.sku == *s))
                        .collect();
                    for sku in &dropped {
                        unsubscribe(&self.env, sku, &feed).await;
                    }
                    let mut state = self.load()?.map(|(_, s)| s).unwrap_or_default();
                    for event in fetched {
                        state.publish(event);
                    }
                    for sku in &dropped {
                        state.stock.remove(sku);
                    }
                    state.room = Some(room);
                    self.save(&feed, &state)?;
                    let snapshot = state.snapshot(&feed);
                    self.broadcast(std::slice::from_ref(&snapshot));
                    Ok(HttpReply::json(200, serde_json::from_str(&snapshot)?))
                }
                FeedCall::Tally { fact } => {
                    self.tally(&fact)?;
                    Ok(HttpReply::json(200, serde_json::json!({ "ok": true })))
                }
                FeedCall::RoomStats { csv } => {
                    let stats = self.room_stats()?;
                    Ok(if csv {
                        HttpReply::csv(stats.csv())
                    } else {
                        HttpReply::json(200, room_stats_json(&stats))
                    })
                }
                FeedCall::Snapshot { feed } => {
                    let state = self.ensure(&feed).await?.unwrap_or_default();
                    Ok(HttpReply::json(
                        200,
                        serde_json::from_str(&state.snapshot(&feed))?,
                    ))
                }
            }
        }
        .await;
        result.unwrap_or_else(|e| {
            console_error!("feed object: {e}");
            ApiError::Internal.to_reply()
        })
    }

    fn broadcast(&self, messages: &[String]) {
        for ws in self.state.get_websockets_with_tag(VIEWER) {
            for message in messages {
                // A socket that fails is gone; the runtime closes it.
                if ws.send_with_str(message).is_err() {
                    break;
                }
            }
        }
    }
}

enum Subscribed {
    State(Event),
    /// The SKU was never set up.
    Unknown,
    /// Not reached, or set up but with nothing to say yet.
    Failed,
}

/// Asks a SKU to push its changes to `feed`; answers its current state.
async fn subscribe(
    env: &Env,
    sku: &crate::domain::types::SkuId,
    feed: &FeedName,
    even_unknown: bool,
) -> Subscribed {
    let call = SkuCall {
        sku: sku.clone(),
        bucket: None,
        buyer: None,
        op: SkuOp::Subscribe {
            feed: feed.clone(),
            even_unknown,
        },
    };
    let answer = async {
        let mut response = SkuClient::new(env, sku)?.call(&call).await?;
        if response.status_code() == 404 {
            return Ok(Subscribed::Unknown);
        }
        Ok::<_, worker::Error>(match response.json::<Option<Event>>().await? {
            Some(event) => Subscribed::State(event),
            None => Subscribed::Failed,
        })
    };
    answer.await.unwrap_or(Subscribed::Failed)
}

/// An order's latest status, for its feed's first viewer.
async fn latest_order_event(env: &Env, order: &crate::domain::types::OrderId) -> Option<Event> {
    let call = OrderCall {
        order: order.clone(),
        op: OrderOp::Latest,
    };
    let mut response = OrderClient::new(env, order).ok()?.call(&call).await.ok()?;
    if response.status_code() != 200 {
        return None;
    }
    response.json::<Option<Event>>().await.ok().flatten()
}

async fn unsubscribe(env: &Env, sku: &crate::domain::types::SkuId, feed: &FeedName) {
    let call = SkuCall {
        sku: sku.clone(),
        bucket: None,
        buyer: None,
        op: SkuOp::Unsubscribe { feed: feed.clone() },
    };
    if let Ok(client) = SkuClient::new(env, sku) {
        let _ = client.call(&call).await;
    }
}

/// A room's numbers as the merchant reads them.
fn room_stats_json(stats: &RoomStats) -> serde_json::Value {
    let per_minute: Vec<serde_json::Value> = stats
        .minutes
        .iter()
        .map(|(minute, c)| {
            let mut row = serde_json::to_value(c).unwrap_or_default();
            row["minute"] = serde_json::json!(minute);
            row
        })
        .collect();
    let top: Vec<serde_json::Value> = stats
        .top_skus(10)
        .into_iter()
        .map(|(sku, c)| serde_json::json!({"sku": sku, "units_sold": c.units_sold, "units_held": c.units_held}))
        .collect();
    serde_json::json!({
        "since": stats.since_ms,
        "session": stats.session,
        "conversion": stats.conversion(),
        "expired_rate": stats.expired_rate(),
        "top_skus": top,
        "per_minute": per_minute,
    })
}
