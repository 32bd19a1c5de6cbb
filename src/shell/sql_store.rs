//! The SKU object's SQLite schema and the [`Store`] over it. Rows hold the
//! core's types as JSON, with the columns that queries need beside them.

use super::txn::{Atomic, Statement, Tables};
use crate::api::wire::LedgerFilter;
use crate::domain::checkpoint::Checkpoint;
use crate::domain::ledger::{LedgerEntry, Tail};
use crate::domain::live::FeedName;
use crate::domain::notice::Notice;
use crate::domain::stats::{tally, Resolution, Tally};
use crate::domain::stock::{
    Changes, Hold, HoldStatus, Replay, SkuRecord, Stock, REPLAY_RETENTION_MS,
};
use crate::domain::store::Store;
use crate::domain::types::{BuyerId, ReplayKey, ReservationId, SkuId};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sku (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS holds (id TEXT PRIMARY KEY, status TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS holds_by_status ON holds (status);
CREATE TABLE IF NOT EXISTS buyers (buyer TEXT PRIMARY KEY, bought INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replays (key TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS replays_by_age ON replays (at_ms);
CREATE TABLE IF NOT EXISTS feeds (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS notices (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channel_sync (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stats (res INTEGER NOT NULL, start INTEGER NOT NULL, held INTEGER NOT NULL, sold INTEGER NOT NULL, released INTEGER NOT NULL, expired INTEGER NOT NULL, PRIMARY KEY (res, start));
";

#[derive(Debug)]
pub struct StoreError(pub String);

impl From<worker::Error> for StoreError {
    fn from(e: worker::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(format!("stored JSON: {e}"))
    }
}

#[derive(Deserialize)]
struct BodyRow {
    body: String,
}

#[derive(Deserialize)]
struct CountRow {
    n: i64,
}

pub struct SqlStore {
    sql: SqlStorage,
    /// Runs a step's writes in one transaction.
    atomic: Atomic,
    /// Its tables. A SKU never set up has none, and reading it (a GET, a
    /// viewer's socket) must not create them: nothing is stored for a SKU
    /// until a write, which makes them in its own transaction.
    tables: Tables,
    /// Replays written since the count was last trimmed.
    replays_written: u32,
    /// Whether merchant notices wait in the outbox (known after the
    /// first look; set by each save that writes one).
    notices_waiting: Option<bool>,
    /// Steps that wrote sales buckets since old buckets were last dropped.
    stats_written: u32,
}

/// A SKU keeps at most this many idempotency answers (besides dropping
/// those older than the retention); checked every [`REPLAY_TRIM_EVERY`]
/// writes.
pub const REPLAYS_MAX: u64 = 100_000;
/// A SKU keeps its newest this many ledger entries. Each entry records the
/// state it left, so the audit replays from the first one kept.
pub const LEDGER_MAX: u64 = 1_000_000;
/// Holds that ended without a sale (released, expired) are kept this long
/// after they ended, then dropped; sales (committed, returned) are kept,
/// as the record of what was sold and what a refund may return.
pub const ENDED_HOLD_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
const REPLAY_TRIM_EVERY: u32 = 1_000;
/// Old sales buckets are dropped every this many steps that wrote some.
const STATS_PRUNE_EVERY: u32 = 200;

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_owned())
}

fn int(n: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(n as i64)
}

impl SqlStore {
    pub fn open(sql: SqlStorage, atomic: Atomic) -> Result<SqlStore, StoreError> {
        let tables = Tables::detect(&sql, "sku", SCHEMA)?;
        if tables.made() {
            // An object made by an older version gets the newer tables (a
            // no-op once they exist).
            sql.exec(SCHEMA, None)?;
        }
        Ok(SqlStore {
            tables,
            sql,
            atomic,
            replays_written: 0,
            notices_waiting: None,
            stats_written: 0,
        })
    }

    /// Whether merchant notices wait in the outbox.
    pub fn notices_waiting(&mut self) -> Result<bool, StoreError> {
        if let Some(waiting) = self.notices_waiting {
            return Ok(waiting);
        }
        let waiting = self.tables.made()
            && self.count(
                "SELECT count(*) AS n FROM (SELECT 1 FROM notices LIMIT 1)",
                vec![],
            )? > 0;
        self.notices_waiting = Some(waiting);
        Ok(waiting)
    }

    /// The oldest notices in the outbox, with their sequence numbers.
    pub fn notices(&self, limit: usize) -> Result<Vec<(u64, Notice)>, StoreError> {
        #[derive(Deserialize)]
        struct Row {
            seq: i64,
            body: String,
        }
        if !self.tables.made() {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT seq, body FROM notices ORDER BY seq LIMIT ?",
                vec![int(limit as u64)],
            )?
            .to_array()?;
        rows.iter()
            .map(|r| Ok((r.seq.max(0) as u64, serde_json::from_str(&r.body)?)))
            .collect()
    }

    /// Drops the outbox's notices up to `seq` (every endpoint has them).
    pub fn drop_notices(&mut self, seq: u64) -> Result<(), StoreError> {
        self.sql
            .exec("DELETE FROM notices WHERE seq <= ?", vec![int(seq)])?;
        self.notices_waiting = None;
        Ok(())
    }

    fn bodies<T: DeserializeOwned>(
        &self,
        query: &str,
        args: Vec<SqlStorageValue>,
    ) -> Result<Vec<T>, StoreError> {
        let rows: Vec<BodyRow> = self.sql.exec(query, args)?.to_array()?;
        rows.iter()
            .map(|r| serde_json::from_str(&r.body).map_err(StoreError::from))
            .collect()
    }

    fn count(&self, query: &str, args: Vec<SqlStorageValue>) -> Result<u64, StoreError> {
        let rows: Vec<CountRow> = self.sql.exec(query, args)?.to_array()?;
        Ok(rows.first().map_or(0, |r| r.n.max(0) as u64))
    }

    /// Loads the SKU into memory: its record and live holds. `sku` names it
    /// when no record exists yet; None (an alarm on an empty object) loads
    /// nothing.
    pub fn load(&self, sku: Option<&SkuId>) -> Result<Option<Stock>, StoreError> {
        if !self.tables.made() {
            return Ok(sku.map(|sku| Stock::load(sku.clone(), None, Vec::new(), Tail::EMPTY)));
        }
        let record: Option<SkuRecord> = self
            .bodies("SELECT body FROM sku WHERE id = 1", vec![])?
            .into_iter()
            .next();
        let Some(sku) = record.as_ref().map(|r| r.sku.clone()).or(sku.cloned()) else {
            return Ok(None);
        };
        let live: Vec<Hold> = self.bodies(
            "SELECT body FROM holds WHERE status = ?",
            vec![text(HoldStatus::Held.as_str())],
        )?;
        let last: Option<LedgerEntry> = self
            .bodies("SELECT body FROM ledger ORDER BY seq DESC LIMIT 1", vec![])?
            .into_iter()
            .next();
        Ok(Some(Stock::load(
            sku,
            record,
            live,
            Tail::after(last.as_ref()),
        )))
    }

    /// The feeds (rooms, the SKU's own) this SKU pushes its changes to.
    pub fn feeds(&self) -> Result<Vec<FeedName>, StoreError> {
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        if !self.tables.made() {
            return Ok(Vec::new());
        }
        let rows: Vec<Name> = self.sql.exec("SELECT name FROM feeds", None)?.to_array()?;
        Ok(rows
            .iter()
            .filter_map(|r| FeedName::parse(&r.name).ok())
            .collect())
    }

    pub fn add_feed(&mut self, feed: &FeedName) -> Result<(), StoreError> {
        let insert = (
            "INSERT OR IGNORE INTO feeds (name) VALUES (?)",
            vec![text(&feed.to_string())],
        );
        Ok(self.tables.write(&self.atomic, vec![insert])?)
    }

    pub fn remove_feed(&self, feed: &FeedName) -> Result<(), StoreError> {
        if !self.tables.made() {
            return Ok(());
        }
        self.sql.exec(
            "DELETE FROM feeds WHERE name = ?",
            vec![text(&feed.to_string())],
        )?;
        Ok(())
    }

    /// Every hold that counts: live and committed (for the audit).
    pub fn holds(&self) -> Result<Vec<Hold>, StoreError> {
        if !self.tables.made() {
            return Ok(Vec::new());
        }
        self.bodies(
            "SELECT body FROM holds WHERE status IN (?, ?)",
            vec![
                text(HoldStatus::Held.as_str()),
                text(HoldStatus::Committed.as_str()),
            ],
        )
    }

    /// Sales buckets of `res` starting in [from, to), oldest first.
    pub fn stats(
        &self,
        res: Resolution,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Tally)>, StoreError> {
        #[derive(Deserialize)]
        struct Row {
            start: i64,
            held: i64,
            sold: i64,
            released: i64,
            expired: i64,
        }
        if !self.tables.made() {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT start, held, sold, released, expired FROM stats WHERE res = ? AND start >= ? AND start < ? ORDER BY start LIMIT 5000",
                vec![int(res.code()), int(from), int(to)],
            )?
            .to_array()?;
        let n = |v: i64| v.max(0) as u64;
        Ok(rows
            .iter()
            .map(|r| {
                let tally = Tally {
                    held: n(r.held),
                    sold: n(r.sold),
                    released: n(r.released),
                    expired: n(r.expired),
                };
                (n(r.start), tally)
            })
            .collect())
    }

    /// The SKU version whose per-channel numbers every sync queue has
    /// (0: none yet). The outbox of the outbound sync is the version
    /// itself, committed with each change: a version above this one is
    /// owed to the channels.
    pub fn synced_version(&self) -> Result<u64, StoreError> {
        if !self.tables.made() {
            return Ok(0);
        }
        #[derive(Deserialize)]
        struct Row {
            version: i64,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT version FROM channel_sync WHERE id = 1", vec![])?
            .to_array()?;
        Ok(rows.first().map_or(0, |r| r.version.max(0) as u64))
    }

    pub fn set_synced_version(&mut self, version: u64) -> Result<(), StoreError> {
        let row = (
            "INSERT OR REPLACE INTO channel_sync (id, version) VALUES (1, ?)",
            vec![int(version)],
        );
        Ok(self.tables.write(&self.atomic, vec![row])?)
    }

    /// The newest signed checkpoint of the ledger, if any.
    pub fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        if !self.tables.made() {
            return Ok(None);
        }
        Ok(self
            .bodies(
                "SELECT body FROM checkpoints ORDER BY seq DESC LIMIT 1",
                vec![],
            )?
            .into_iter()
            .next())
    }

    pub fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let row = (
            "INSERT OR REPLACE INTO checkpoints (seq, body) VALUES (?, ?)",
            vec![
                int(checkpoint.seq),
                text(&serde_json::to_string(checkpoint)?),
            ],
        );
        Ok(self.tables.write(&self.atomic, vec![row])?)
    }

    /// Every stored entry in order, read a page at a time (never the whole
    /// ledger at once); a read that fails ends the walk and is left in
    /// `failed`.
    pub fn walk_ledger<'a>(
        &'a self,
        mut after: u64,
        failed: &'a std::cell::RefCell<Option<StoreError>>,
    ) -> impl Iterator<Item = LedgerEntry> + 'a {
        let mut page = Vec::<LedgerEntry>::new().into_iter();
        std::iter::from_fn(move || loop {
            if let Some(entry) = page.next() {
                after = entry.seq;
                return Some(entry);
            }
            match self.ledger(after, 1_000) {
                Ok(next) if !next.is_empty() => page = next.into_iter(),
                Ok(_) => return None,
                Err(e) => {
                    *failed.borrow_mut() = Some(e);
                    return None;
                }
            }
        })
    }

    /// One order's or one hold's entries (a scan of the ledger; admin
    /// reads only).
    pub fn ledger_of(
        &self,
        after: u64,
        limit: usize,
        filter: &LedgerFilter,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        if !self.tables.made() {
            return Ok(Vec::new());
        }
        let (path, id) = match filter {
            LedgerFilter::Order(order) => ("$.order", order.as_str()),
            LedgerFilter::Hold(hold) => ("$.hold", hold.as_str()),
        };
        self.bodies(
            "SELECT body FROM ledger WHERE seq > ? AND json_extract(body, ?) = ? ORDER BY seq LIMIT ?",
            vec![int(after), text(path), text(id), int(limit.min(i64::MAX as usize) as u64)],
        )
    }

    pub fn ledger(&self, after: u64, limit: usize) -> Result<Vec<LedgerEntry>, StoreError> {
        if !self.tables.made() {
            return Ok(Vec::new());
        }
        self.bodies(
            "SELECT body FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
            vec![int(after), int(limit.min(i64::MAX as usize) as u64)],
        )
    }
}

impl Store for SqlStore {
    type Error = StoreError;

    fn load_hold(&self, id: &ReservationId) -> Result<Option<Hold>, StoreError> {
        if !self.tables.made() {
            return Ok(None);
        }
        Ok(self
            .bodies(
                "SELECT body FROM holds WHERE id = ?",
                vec![text(id.as_str())],
            )?
            .into_iter()
            .next())
    }

    fn load_replay(&self, key: &ReplayKey) -> Result<Option<Replay>, StoreError> {
        if !self.tables.made() {
            return Ok(None);
        }
        Ok(self
            .bodies(
                "SELECT body FROM replays WHERE key = ?",
                vec![text(key.as_str())],
            )?
            .into_iter()
            .next())
    }

    fn load_bought(&self, buyer: &BuyerId) -> Result<u64, StoreError> {
        if !self.tables.made() {
            return Ok(0);
        }
        self.count(
            "SELECT bought AS n FROM buyers WHERE buyer = ?",
            vec![text(buyer.as_str())],
        )
    }

    /// Every write of a step runs without an `await` between them, so the
    /// Durable Object commits them as one implicit transaction, before the
    /// reply leaves (the output gate).
    fn save(&mut self, stock: &Stock, changes: &Changes) -> Result<(), StoreError> {
        let mut writes: Vec<Statement> = Vec::new();
        if changes.record {
            if let Some(record) = stock.record() {
                writes.push((
                    "INSERT OR REPLACE INTO sku (id, body) VALUES (1, ?)",
                    vec![text(&serde_json::to_string(record)?)],
                ));
            }
        }
        for id in &changes.holds {
            if let Some(hold) = stock.hold(id) {
                writes.push((
                    "INSERT OR REPLACE INTO holds (id, status, body) VALUES (?, ?, ?)",
                    vec![
                        text(id.as_str()),
                        text(hold.status.as_str()),
                        text(&serde_json::to_string(hold)?),
                    ],
                ));
            }
        }
        for buyer in &changes.bought {
            writes.push((
                "INSERT OR REPLACE INTO buyers (buyer, bought) VALUES (?, ?)",
                vec![text(buyer.as_str()), int(stock.bought(buyer))],
            ));
        }
        for entry in &changes.ledger {
            writes.push((
                "INSERT INTO ledger (seq, body) VALUES (?, ?)",
                vec![int(entry.seq), text(&serde_json::to_string(entry)?)],
            ));
        }
        // The sales buckets, from the same entries.
        let deltas = tally(&changes.ledger);
        for (res, start, t) in &deltas {
            writes.push((
                "INSERT INTO stats (res, start, held, sold, released, expired) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (res, start) DO UPDATE SET held = held + excluded.held, sold = sold + excluded.sold, \
                 released = released + excluded.released, expired = expired + excluded.expired",
                vec![
                    int(res.code()),
                    int(*start),
                    int(t.held),
                    int(t.sold),
                    int(t.released),
                    int(t.expired),
                ],
            ));
        }
        let prune_stats = !deltas.is_empty() && self.stats_written + 1 >= STATS_PRUNE_EVERY;
        if prune_stats {
            let newest = deltas.iter().map(|(_, start, _)| *start).max().unwrap_or(0);
            for res in Resolution::ALL {
                writes.push((
                    "DELETE FROM stats WHERE res = ? AND start < ?",
                    vec![int(res.code()), int(newest.saturating_sub(res.kept_ms()))],
                ));
            }
        }
        // The outbox: a notice is stored with the change that made it.
        for notice in &changes.notices {
            writes.push((
                "INSERT INTO notices (body) VALUES (?)",
                vec![text(&serde_json::to_string(notice)?)],
            ));
        }
        // Answers older than the retention go as new ones arrive: an index
        // range delete, usually of nothing.
        if let Some(newest) = changes
            .replays
            .iter()
            .filter_map(|k| stock.replay(k))
            .map(|r| r.at_ms)
            .max()
        {
            writes.push((
                "DELETE FROM replays WHERE at_ms < ?",
                vec![int(newest.saturating_sub(REPLAY_RETENTION_MS))],
            ));
        }
        let mut written = 0;
        for key in &changes.replays {
            if let Some(replay) = stock.replay(key) {
                writes.push((
                    "INSERT OR REPLACE INTO replays (key, at_ms, body) VALUES (?, ?, ?)",
                    vec![
                        text(key.as_str()),
                        int(replay.at_ms),
                        text(&serde_json::to_string(replay)?),
                    ],
                ));
                written += 1;
            }
        }
        // And past the count cap, the oldest go: now and then, since
        // finding the cut walks the index.
        let trim = self.replays_written + written >= REPLAY_TRIM_EVERY;
        if trim {
            writes.push((
                "DELETE FROM replays WHERE at_ms < (SELECT at_ms FROM replays ORDER BY at_ms DESC LIMIT 1 OFFSET ?)",
                vec![int(REPLAYS_MAX)],
            ));
            // The same now-and-then pass bounds the ledger and the ended
            // holds (see ARCHITECTURE.md, retention).
            writes.push((
                "DELETE FROM ledger WHERE seq <= (SELECT MAX(seq) FROM ledger) - ?",
                vec![int(LEDGER_MAX)],
            ));
            if let Some(now) = stock.record().map(|r| r.updated_at_ms) {
                writes.push((
                    "DELETE FROM holds WHERE status IN (?, ?) AND json_extract(body, '$.resolved_at_ms') < ?",
                    vec![
                        text(HoldStatus::Released.as_str()),
                        text(HoldStatus::Expired.as_str()),
                        int(now.saturating_sub(ENDED_HOLD_RETENTION_MS)),
                    ],
                ));
            }
        }
        // All of the step, or none of it.
        self.tables.write(&self.atomic, writes)?;
        if !changes.notices.is_empty() {
            self.notices_waiting = Some(true);
        }
        if prune_stats {
            self.stats_written = 0;
        } else if !deltas.is_empty() {
            self.stats_written += 1;
        }
        self.replays_written = if trim {
            0
        } else {
            self.replays_written + written
        };
        Ok(())
    }
}
