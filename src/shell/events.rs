//! The one place events leave for the log: one JSON line each (`event
//! {...}`), stock changes, order status changes and operator alerts alike.
//! Live viewers get the same events from the feed objects, which SKU and
//! order objects publish to (see stubs::FeedClient).

use crate::domain::event::Event;
use worker::console_log;

pub fn emit(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        console_log!("event {line}");
    }
}
