//! The functional core: stock rules with no I/O, no clock and no `worker`
//! import. Everything here runs natively under `cargo test`.

pub mod allocation;
pub mod audit;
pub mod automation;
pub mod buckets;
pub mod channel_sync;
pub mod checkpoint;
pub mod event;
pub mod hold_cap;
pub mod intake;
pub mod jobs;
pub mod ledger;
pub mod live;
pub mod notice;
pub mod order;
pub mod order_index;
pub mod replenish;
pub mod risk;
pub mod room_stats;
pub mod stats;
pub mod stock;
pub mod store;
pub mod types;

#[cfg(test)]
mod risk_tests;
#[cfg(test)]
mod tests;
