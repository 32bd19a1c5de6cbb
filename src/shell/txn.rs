//! One atomic write: the runtime's `storage.transactionSync`, which
//! workers-rs 0.8 does not bind. Every statement of a step runs inside it,
//! so a step's writes commit together or not at all: a failure midway
//! (a storage limit, a constraint) leaves what was there before.

use wasm_bindgen::prelude::*;
use worker::worker_sys::DurableObjectState;
use worker::{SqlStorage, SqlStorageValue, State};

#[wasm_bindgen]
extern "C" {
    /// The object's storage, as the runtime hands it over.
    type TxnStorage;

    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(this: &TxnStorage, body: &JsValue) -> Result<JsValue, JsValue>;
}

/// A statement and its arguments, run later inside a transaction.
pub type Statement = (&'static str, Vec<SqlStorageValue>);

/// The handle that runs statements atomically.
#[derive(Clone)]
pub struct Atomic {
    /// None only if the runtime gave no storage: then every write fails
    /// (closed), never runs half.
    storage: Option<JsValue>,
    sql: SqlStorage,
}

impl Atomic {
    /// Takes the object's `State` apart for its raw storage and gives it
    /// back whole (the runtime's state is only borrowed here).
    pub fn from_state(state: State) -> (State, Atomic) {
        let raw: DurableObjectState = state._inner();
        let storage = raw.storage().ok().map(JsValue::from);
        let state = State::from(raw);
        let sql = state.storage().sql();
        (state, Atomic { storage, sql })
    }

    /// Runs `statements` in order, all or nothing.
    pub fn run(&self, statements: Vec<Statement>) -> worker::Result<()> {
        if statements.is_empty() {
            return Ok(());
        }
        let sql = self.sql.clone();
        let body = Closure::once_into_js(move || -> Result<JsValue, JsValue> {
            for (query, args) in statements {
                sql.exec(query, args)
                    .map_err(|e| JsValue::from_str(&e.to_string()))?;
            }
            Ok(JsValue::UNDEFINED)
        });
        let Some(storage) = &self.storage else {
            return Err(worker::Error::RustError("no transactional storage".into()));
        };
        let storage: &TxnStorage = storage.unchecked_ref();
        storage
            .transaction_sync(&body)
            .map(|_| ())
            .map_err(|e| worker::Error::RustError(format!("transaction rolled back: {e:?}")))
    }
}
