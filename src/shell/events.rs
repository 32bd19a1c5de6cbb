//! The one place events leave the process. For now they go to the log as
//! one JSON line each; live push will fan them out over WebSockets from here.

use crate::domain::event::Event;
use worker::console_log;

pub fn emit(event: &Event) {
    if let Ok(line) = serde_json::to_string(event) {
        console_log!("event {line}");
    }
}
