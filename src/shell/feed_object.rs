//! A feed object: one per live room, per SKU and per order, holding that
//! feed's viewers' WebSockets through the hibernation API (an idle viewer
//! costs nothing), the feed's latest state in SQLite (so a woken feed still
//! knows it), and the fan-out of each published event to every viewer.
//! SKU objects publish coalesced stock states here; order objects publish
//! status changes.

use super::http::to_response;
use super::order_object::internal_request;
use super::sku_object::{SkuCall, SkuClient, SkuOp};
use crate::api::{ApiError, HttpReply};
use crate::domain::event::{Event, EVENT_VERSION};
use crate::domain::live::{
    to_json, FeedName, FeedState, Meter, RoomSetup, ViewerMessage, INCOMING_BYTES_MAX,
};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use worker::{
    console_error, durable_object, Date, DurableObject, Env, Request, Response, Result,
    SqlStorageValue, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedCall {
    Publish { feed: FeedName, event: Event },
    SetupRoom { feed: FeedName, room: RoomSetup },
    Snapshot { feed: FeedName },
}

pub struct FeedClient;

impl FeedClient {
    fn stub(env: &Env, feed: &FeedName) -> Result<worker::Stub> {
        env.durable_object("FEED")?.get_by_name(&feed.to_string())
    }

    pub async fn call(env: &Env, feed: &FeedName, call: &FeedCall) -> Result<Response> {
        Self::stub(env, feed)?
            .fetch_with_request(internal_request(call)?)
            .await
    }

    /// Best effort: a viewer missing one push gets the next, or resumes.
    pub async fn publish(env: &Env, feed: &FeedName, event: &Event) {
        let call = FeedCall::Publish {
            feed: feed.clone(),
            event: event.clone(),
        };
        if let Err(e) = Self::call(env, feed, &call).await {
            console_error!("publish to {feed}: {e}");
        }
    }

    /// Hands a viewer's upgrade request to the feed's object.
    pub async fn connect(env: &Env, feed: &FeedName, req: Request) -> Result<Response> {
        let mut req = req;
        req.headers_mut()?.set("X-Feed", &feed.to_string())?;
        Self::stub(env, feed)?.fetch_with_request(req).await
    }
}

#[durable_object]
pub struct FeedObject {
    state: State,
    env: Env,
    feed: RefCell<Option<(FeedName, FeedState)>>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    body: String,
}

impl DurableObject for FeedObject {
    fn new(state: State, env: Env) -> Self {
        let schema = "CREATE TABLE IF NOT EXISTS feed (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL, body TEXT NOT NULL);";
        if let Err(e) = state.storage().sql().exec(schema, None) {
            console_error!("feed object: schema: {e}");
        }
        // Answered by the runtime without waking the object.
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        FeedObject {
            state,
            env,
            feed: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if let Some(name) = req.headers().get("X-Feed")? {
            let protocol = req.headers().get("Sec-WebSocket-Protocol")?;
            return match FeedName::parse(&name) {
                Ok(feed) => self.accept(feed, protocol).await,
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

impl FeedObject {
    fn load(&self) -> Result<Option<(FeedName, FeedState)>> {
        if let Some(loaded) = self.feed.borrow().as_ref() {
            return Ok(Some(loaded.clone()));
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

    fn save(&self, feed: &FeedName, state: &FeedState) -> Result<()> {
        self.state.storage().sql().exec(
            "INSERT OR REPLACE INTO feed (id, name, body) VALUES (1, ?, ?)",
            vec![
                SqlStorageValue::String(feed.to_string()),
                SqlStorageValue::String(serde_json::to_string(state)?),
            ],
        )?;
        *self.feed.borrow_mut() = Some((feed.clone(), state.clone()));
        Ok(())
    }

    /// The feed's state, creating it (and subscribing to its SKU, for a SKU
    /// feed) the first time.
    async fn ensure(&self, feed: &FeedName) -> Result<FeedState> {
        if let Some((_, state)) = self.load()? {
            return Ok(state);
        }
        let mut state = FeedState::default();
        if let FeedName::Sku(sku) = feed {
            if let Some(event) = subscribe(&self.env, sku, feed).await {
                state.publish(event);
            }
        }
        self.save(feed, &state)?;
        Ok(state)
    }

    /// Accepts a viewer; `protocol` is the subprotocol the router selected
    /// (an order feed's), which the handshake must name.
    async fn accept(&self, feed: FeedName, protocol: Option<String>) -> Result<Response> {
        let state = self.ensure(&feed).await?;
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
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
                    let mut state = self.ensure(&feed).await?;
                    let messages = state.publish(event);
                    if !messages.is_empty() {
                        self.save(&feed, &state)?;
                        self.broadcast(&messages);
                    }
                    Ok(HttpReply::json(200, serde_json::json!({ "ok": true })))
                }
                FeedCall::SetupRoom { feed, room } => {
                    let mut state = self.ensure(&feed).await?;
                    let before: Vec<_> = state
                        .room
                        .iter()
                        .flat_map(|r| r.items.iter().map(|i| i.sku.clone()))
                        .collect();
                    for item in &room.items {
                        if let Some(event) = subscribe(&self.env, &item.sku, &feed).await {
                            state.publish(event);
                        }
                    }
                    for sku in before
                        .iter()
                        .filter(|s| !room.items.iter().any(|i| i.sku == **s))
                    {
                        unsubscribe(&self.env, sku, &feed).await;
                        state.stock.remove(sku);
                    }
                    state.room = Some(room);
                    self.save(&feed, &state)?;
                    let snapshot = state.snapshot(&feed);
                    self.broadcast(std::slice::from_ref(&snapshot));
                    Ok(HttpReply::json(200, serde_json::from_str(&snapshot)?))
                }
                FeedCall::Snapshot { feed } => {
                    let state = self.ensure(&feed).await?;
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
        for ws in self.state.get_websockets() {
            for message in messages {
                // A socket that fails is gone; the runtime closes it.
                if ws.send_with_str(message).is_err() {
                    break;
                }
            }
        }
    }
}

/// Asks a SKU to push its changes to `feed`; answers its current state.
async fn subscribe(env: &Env, sku: &crate::domain::types::SkuId, feed: &FeedName) -> Option<Event> {
    let call = SkuCall {
        sku: sku.clone(),
        op: SkuOp::Subscribe { feed: feed.clone() },
    };
    let mut response = SkuClient::new(env, sku).ok()?.call(&call).await.ok()?;
    response.json::<Option<Event>>().await.ok().flatten()
}

async fn unsubscribe(env: &Env, sku: &crate::domain::types::SkuId, feed: &FeedName) {
    let call = SkuCall {
        sku: sku.clone(),
        op: SkuOp::Unsubscribe { feed: feed.clone() },
    };
    if let Ok(client) = SkuClient::new(env, sku) {
        let _ = client.call(&call).await;
    }
}
