//! One atomic write: the runtime's `storage.transactionSync`, which
//! workers-rs 0.8 does not bind. Every statement of a step runs inside it,
//! so a step's writes commit together or not at all: a failure midway
//! (a storage limit, a constraint) leaves what was there before.

use std::cell::Cell;
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

/// An object's tables, made by its first write, in that write's
/// transaction: reading an object never written stores nothing, and the
/// schema and the first rows land together or not at all.
pub struct Tables {
    schema: &'static str,
    made: Cell<bool>,
}

impl Tables {
    /// Whether `table` (one of `schema`'s) exists says whether the schema
    /// was made.
    pub fn detect(sql: &SqlStorage, table: &str, schema: &'static str) -> worker::Result<Tables> {
        #[derive(serde::Deserialize)]
        struct Count {
            n: i64,
        }
        let rows: Vec<Count> = sql
            .exec(
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?",
                vec![SqlStorageValue::String(table.to_owned())],
            )?
            .to_array()?;
        Ok(Tables {
            schema,
            made: Cell::new(rows.first().is_some_and(|r| r.n > 0)),
        })
    }

    /// Tables taken as not made (the first write makes them, `IF NOT
    /// EXISTS`), for an object that cannot tell.
    pub fn unknown(schema: &'static str) -> Tables {
        Tables {
            schema,
            made: Cell::new(false),
        }
    }

    pub fn made(&self) -> bool {
        self.made.get()
    }

    /// Runs `writes` atomically, after the schema if it is not made yet.
    pub fn write(&self, atomic: &Atomic, mut writes: Vec<Statement>) -> worker::Result<()> {
        if !self.made.get() {
            writes.insert(0, (self.schema, Vec::new()));
        }
        atomic.run(writes)?;
        self.made.set(true);
        Ok(())
    }
}
