//! The HTTP contract, as plain Rust: routes, bodies, answers and errors.
//! The Worker shell only moves bytes in and out of these functions, so the
//! whole contract is tested natively.

mod error;
pub mod routes;
pub mod session;
pub mod wire;

pub use error::{ApiError, RateScope, Refusal, RATE_PERIOD_S};
pub use routes::Route;

use serde_json::Value;

/// A response before it becomes a runtime `Response`: status, JSON body and
/// extra headers. Problems carry `application/problem+json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReply {
    pub status: u16,
    pub body: Value,
    pub problem: bool,
    /// The body is a CSV string, sent as text.
    pub csv: bool,
    pub headers: Vec<(&'static str, String)>,
}

impl HttpReply {
    pub fn json(status: u16, body: Value) -> HttpReply {
        HttpReply {
            status,
            body,
            problem: false,
            csv: false,
            headers: Vec::new(),
        }
    }

    /// A CSV document (an export), 200.
    pub fn csv(text: String) -> HttpReply {
        HttpReply {
            status: 200,
            body: Value::String(text),
            problem: false,
            csv: true,
            headers: Vec::new(),
        }
    }

    pub fn problem(status: u16, body: Value) -> HttpReply {
        HttpReply {
            status,
            body,
            problem: true,
            csv: false,
            headers: Vec::new(),
        }
    }

    pub fn content_type(&self) -> &'static str {
        if self.problem {
            "application/problem+json"
        } else if self.csv {
            "text/csv; charset=utf-8"
        } else {
            "application/json"
        }
    }
}
