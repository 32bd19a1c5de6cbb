//! The merchant's order index: where a merchant finds any order (by room,
//! time, status, channel, SKU, buyer) without a global object in the
//! path of placing one.
//!
//! The index is partitioned: every order is listed in the partition of the
//! hour it was created (`hour:2026112408`, UTC) and, if it came from a live
//! room, in that room's (`room:<room>`). Order objects upsert their row
//! after the reply, from the same owed work as their webhooks (retried by
//! their alarm until it lands), so the index trails the orders by about a
//! second and catches up after any failure; a row only ever moves forward
//! (`updated_at`), so a late retry cannot undo a newer status.
//!
//! A query goes to one room's partition, or to the hour partitions of a
//! time range (at most [`RANGE_HOURS_MAX`]), and pages by a stable cursor:
//! (created_at, id), the order every partition sorts by.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::order::{Order, OrderStatus};

/// A time-range query covers at most this many hour partitions (3 days).
pub const RANGE_HOURS_MAX: u64 = 72;
pub const HOUR_MS: u64 = 3_600_000;

/// One order as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRow {
    pub id: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub status: String,
    pub room: Option<String>,
    pub channel: String,
    pub buyer: String,
    /// (SKU, units) per line.
    pub lines: Vec<(String, u64)>,
    pub amount: Option<u64>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub platform_order: Option<String>,
    /// Raised by an automation for a person to look at.
    #[serde(default)]
    pub flagged: bool,
    /// Confirmed for fulfilment (by a merchant or `auto_confirm`).
    #[serde(default)]
    pub confirmed: bool,
}

impl IndexRow {
    pub fn of(o: &Order) -> IndexRow {
        IndexRow {
            id: o.id.to_string(),
            created_at: o.created_at_ms,
            // A rule's flag or confirmation moves the row on too.
            updated_at: o
                .timeline
                .last()
                .map_or(o.created_at_ms, |t| t.at_ms)
                .max(o.automations.last().map_or(0, |a| a.at_ms))
                .max(o.confirmed.as_ref().map_or(0, |c| c.at_ms)),
            status: o.status.as_str().to_owned(),
            room: o.room.as_ref().map(|r| r.to_string()),
            channel: o.channel.to_string(),
            buyer: o.buyer.to_string(),
            lines: o
                .lines
                .iter()
                .map(|l| (l.sku.to_string(), l.qty.get()))
                .collect(),
            amount: o.payment_amount,
            carrier: o.shipment.as_ref().map(|s| s.carrier.clone()),
            tracking_number: o.shipment.as_ref().map(|s| s.tracking_number.clone()),
            platform_order: o.platform_order.clone(),
            flagged: !o.flags.is_empty(),
            confirmed: o.confirmed.is_some(),
        }
    }

    /// The partitions that list this order.
    pub fn partitions(&self) -> Vec<String> {
        let mut names = vec![hour_partition(self.created_at)];
        if let Some(room) = &self.room {
            names.push(format!("room:{room}"));
        }
        names
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "room": self.room,
            "channel": self.channel,
            "buyer": self.buyer,
            "lines": self.lines.iter().map(|(sku, qty)| json!({"sku": sku, "qty": qty})).collect::<Vec<_>>(),
            "amount": self.amount,
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
            "platform_order": self.platform_order,
            "flagged": self.flagged,
            "confirmed": self.confirmed,
        })
    }
}

/// `hour:YYYYMMDDHH` (UTC) of a time in ms.
pub fn hour_partition(ms: u64) -> String {
    let (y, m, d, h) = civil(ms);
    format!("hour:{y:04}{m:02}{d:02}{h:02}")
}

/// The hour partitions covering [from, to], oldest first; None when the
/// range is empty or longer than [`RANGE_HOURS_MAX`].
pub fn hours_between(from: u64, to: u64) -> Option<Vec<String>> {
    if to < from {
        return None;
    }
    let (first, last) = (from / HOUR_MS, to / HOUR_MS);
    if last - first + 1 > RANGE_HOURS_MAX {
        return None;
    }
    Some(
        (first..=last)
            .map(|h| hour_partition(h * HOUR_MS))
            .collect(),
    )
}

/// (year, month, day, hour) in UTC: Howard Hinnant's days-to-civil.
fn civil(ms: u64) -> (i64, u32, u32, u32) {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let hour = (secs.rem_euclid(86_400) / 3600) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d, hour)
}

/// What a merchant asks the index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub room: Option<String>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub status: Option<String>,
    pub channel: Option<String>,
    pub sku: Option<String>,
    pub buyer: Option<String>,
}

impl Filter {
    /// Whether a row matches (the partitions apply the same in SQL; this
    /// is the rule, and what the tests check them against).
    pub fn matches(&self, r: &IndexRow) -> bool {
        self.room
            .as_ref()
            .is_none_or(|x| r.room.as_ref() == Some(x))
            && self.from.is_none_or(|x| r.created_at >= x)
            && self.to.is_none_or(|x| r.created_at <= x)
            && self.status.as_ref().is_none_or(|x| &r.status == x)
            && self.channel.as_ref().is_none_or(|x| &r.channel == x)
            && self.buyer.as_ref().is_none_or(|x| &r.buyer == x)
            && self
                .sku
                .as_ref()
                .is_none_or(|x| r.lines.iter().any(|(s, _)| s == x))
    }
}

/// A page position: after this (created_at, id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub created_at: u64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    pub fn decode(raw: &str) -> Option<Cursor> {
        let (at, id) = raw.split_once('.')?;
        let ok = id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        ok.then(|| {
            Some(Cursor {
                created_at: at.parse().ok()?,
                id: id.to_owned(),
            })
        })
        .flatten()
    }

    pub fn before(&self, r: &IndexRow) -> bool {
        (self.created_at, self.id.as_str()) < (r.created_at, r.id.as_str())
    }
}

/// Merges partitions' pages (each sorted) into one page of `limit`, with
/// the cursor of its last row when more may follow. A row listed in two
/// partitions (its hour and its room) appears once.
pub fn merge(pages: Vec<Vec<IndexRow>>, limit: usize) -> (Vec<IndexRow>, Option<Cursor>) {
    let mut all: Vec<IndexRow> = pages.into_iter().flatten().collect();
    all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    all.dedup_by(|a, b| a.id == b.id);
    let more = all.len() > limit;
    all.truncate(limit);
    let next = more.then(|| all.last()).flatten().map(|r| Cursor {
        created_at: r.created_at,
        id: r.id.clone(),
    });
    (all, next)
}

/// Whether an order in this status is to be fulfilled (paid, not shipped).
pub fn to_fulfil(status: &str) -> bool {
    status == OrderStatus::Paid.as_str()
}

/// The fulfilment export: one CSV row per order line, UTF-8 with a BOM so
/// spreadsheet tools read Chinese text right.
pub fn csv(rows: &[IndexRow]) -> String {
    let mut out = String::from("\u{feff}order,created_at,status,room,channel,buyer,sku,qty,amount,carrier,tracking_number,platform_order\r\n");
    for r in rows {
        for (sku, qty) in &r.lines {
            let fields = [
                r.id.clone(),
                r.created_at.to_string(),
                r.status.clone(),
                r.room.clone().unwrap_or_default(),
                r.channel.clone(),
                r.buyer.clone(),
                sku.clone(),
                qty.to_string(),
                r.amount.map(|a| a.to_string()).unwrap_or_default(),
                r.carrier.clone().unwrap_or_default(),
                r.tracking_number.clone().unwrap_or_default(),
                r.platform_order.clone().unwrap_or_default(),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
    }
    out
}

/// A CSV field, quoted when it needs to be, and never read as a formula
/// by a spreadsheet (a leading = + - @ gets a quote mark).
fn csv_field(raw: &str) -> String {
    let guarded = if raw.starts_with(['=', '+', '-', '@']) {
        format!("'{raw}")
    } else {
        raw.to_owned()
    };
    if guarded.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// Units per SKU over the orders: the picking list (拣货单).
pub fn picking(rows: &[IndexRow]) -> Vec<(String, u64, u64)> {
    let mut per: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for r in rows {
        for (sku, qty) in &r.lines {
            let e = per.entry(sku.as_str()).or_default();
            e.0 += qty;
            e.1 += 1;
        }
    }
    per.into_iter()
        .map(|(sku, (units, orders))| (sku.to_owned(), units, orders))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, at: u64, status: &str, lines: &[(&str, u64)]) -> IndexRow {
        IndexRow {
            id: id.into(),
            created_at: at,
            updated_at: at,
            status: status.into(),
            room: Some("spring".into()),
            channel: "own".into(),
            buyer: "b".into(),
            lines: lines.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
            amount: None,
            carrier: None,
            tracking_number: None,
            platform_order: None,
            flagged: false,
            confirmed: false,
        }
    }

    #[test]
    fn hours_are_utc_and_ranges_bounded() {
        // 2026-11-24 08:15 UTC.
        assert_eq!(hour_partition(1_795_508_100_000), "hour:2026112408");
        assert_eq!(hour_partition(0), "hour:1970010100");
        // 2024-02-29 23:59:59 UTC: a leap day.
        assert_eq!(hour_partition(1_709_251_199_000), "hour:2024022923");
        let h = hours_between(1_795_508_100_000, 1_795_508_100_000 + 2 * HOUR_MS).unwrap();
        assert_eq!(h, ["hour:2026112408", "hour:2026112409", "hour:2026112410"]);
        assert!(hours_between(0, RANGE_HOURS_MAX * HOUR_MS).is_none());
        assert!(hours_between(10, 5).is_none());
    }

    #[test]
    fn pages_merge_once_in_cursor_order() {
        let a = vec![
            row("o_a", 1, "paid", &[("tee", 1)]),
            row("o_c", 3, "paid", &[]),
        ];
        let b = vec![row("o_b", 2, "paid", &[]), row("o_c", 3, "paid", &[])];
        let (page, next) = merge(vec![a, b], 2);
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["o_a", "o_b"]
        );
        let next = next.unwrap();
        assert_eq!(Cursor::decode(&next.encode()), Some(next.clone()));
        assert!(next.before(&row("o_c", 3, "paid", &[])));
        assert!(!next.before(&row("o_b", 2, "paid", &[])));
        assert!(Cursor::decode("x.o_a").is_none());
        assert!(Cursor::decode("5.o'; drop").is_none());
    }

    #[test]
    fn the_export_has_a_bom_and_guards_formulas() {
        let mut r = row("o_a", 1, "paid", &[("tee", 2), ("cap", 1)]);
        r.buyer = "=HYPERLINK(\"x\")".into();
        let text = csv(&[r.clone()]);
        assert!(text.starts_with('\u{feff}'));
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{text}");
        let pick = picking(&[r.clone(), r]);
        assert_eq!(pick, [("cap".to_string(), 2, 2), ("tee".to_string(), 4, 2)]);
        let f = Filter {
            sku: Some("cap".into()),
            status: Some("paid".into()),
            ..Filter::default()
        };
        assert!(f.matches(&row("o_z", 1, "paid", &[("cap", 1)])));
        assert!(!f.matches(&row("o_z", 1, "paid", &[("tee", 1)])));
    }
}
