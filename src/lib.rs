//! edgestock: real-time inventory and orders for live-stream commerce.
//!
//! `domain` holds the rules (stock, orders, live feeds, risk, the hold cap,
//! the audit) and `api` the HTTP contract (routes, bodies, problems,
//! sessions); both are plain Rust and tested natively. `shell` (wasm32 only)
//! is the Cloudflare Worker around them: the router and the Durable Objects
//! (SKU, order, buyer, feed, risk). ARCHITECTURE.md has the map.

pub mod api;
pub mod channels;
pub mod domain;

#[cfg(target_arch = "wasm32")]
mod shell;
