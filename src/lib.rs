//! edgestock: real-time inventory for live-stream commerce.
//!
//! `domain` holds the rules and `api` the HTTP contract; both are plain Rust
//! and tested natively. `shell` (wasm32 only) is the Cloudflare Worker and
//! the SKU Durable Object around them. ARCHITECTURE.md has the map.

pub mod api;
pub mod domain;

#[cfg(target_arch = "wasm32")]
mod shell;
