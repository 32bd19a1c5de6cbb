//! [`HttpReply`] → runtime `Response`: the only place headers are written.

use crate::api::HttpReply;
use worker::{Response, Result};

pub fn to_response(reply: &HttpReply) -> Result<Response> {
    let body = match (&reply.body, reply.csv) {
        (serde_json::Value::String(text), true) => text.clone(),
        (body, _) => serde_json::to_string(body).unwrap_or_else(|_| "{}".into()),
    };
    let mut response = Response::ok(body)?.with_status(reply.status);
    let headers = response.headers_mut();
    headers.set("Content-Type", reply.content_type())?;
    headers.set("Cache-Control", "no-store")?;
    for (name, value) in &reply.headers {
        headers.set(name, value)?;
    }
    Ok(response)
}
