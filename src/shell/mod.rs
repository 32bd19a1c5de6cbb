//! The Cloudflare Worker: the stateless router, and the Durable Objects
//! behind it (one per SKU, order, buyer, feed, and the risk subjects and
//! hold-ledger shards), which reach each other through `stubs`. Each is a
//! thin shell: load, apply the core, save in one transaction (`txn`),
//! answer, publish. Only compiled for wasm32.

mod auth;
mod automation_object;
mod buyer_object;
mod channel_object;
mod channels;
mod events;
mod feed_object;
mod hold_gate;
mod hook_object;
mod hooks;
mod http;
mod index_object;
mod intake;
mod job_object;
mod limits;
mod merge;
mod order_object;
mod order_queries;
mod read_cache;
mod risk_object;
mod router;
mod routing;
mod sku_object;
mod sql_store;
mod stubs;
mod txn;

use worker::{event, Context, Env, Request, Response, Result};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    router::handle(req, env, ctx).await
}
