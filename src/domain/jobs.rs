//! Bulk fulfilment jobs (批量发货, bulk cancel and refund): what a merchant
//! uploads, read row by row (a bad row is a result, never a stop), and what
//! each row's answer from its order means. The job object runs the rows
//! and stores each result; these are the rules, tested natively.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a job does to each order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Ship,
    Cancel,
    Refund,
    /// Each order lists itself again in the merchant's index (and its
    /// buyer's): the index repaired from the orders themselves.
    Reindex,
}

/// The most rows one job takes.
pub const ROWS_MAX: usize = 20_000;

/// One row as uploaded: the order, and for shipping the carrier and number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    pub order: String,
    #[serde(default)]
    pub carrier: String,
    #[serde(default)]
    pub tracking_number: String,
}

/// Rows from a CSV upload (`order,carrier,tracking_number`, a header line
/// optional, a BOM tolerated) or a JSON one (`[{"order", "carrier",
/// "tracking_number"}]`). A line that cannot be read is kept as an error
/// for its row.
pub fn parse_rows(text: &str) -> Result<Vec<Result<JobRow, String>>, String> {
    let text = text.trim_start_matches('\u{feff}');
    let rows: Vec<Result<JobRow, String>> = if text.trim_start().starts_with('[') {
        let list: Vec<Value> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON array of rows: {e}"))?;
        list.into_iter()
            .map(|v| {
                let field = |k: &str| v[k].as_str().unwrap_or("").trim().to_owned();
                if !v.is_object() {
                    return Err("a row is an object".to_owned());
                }
                Ok(JobRow {
                    order: field("order"),
                    carrier: field("carrier"),
                    tracking_number: field("tracking_number"),
                })
            })
            .collect()
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !l.to_ascii_lowercase().starts_with("order,") && *l != "order")
            .map(|line| {
                let fields: Vec<&str> = line
                    .split(',')
                    .map(|f| f.trim().trim_matches('"'))
                    .collect();
                if fields.len() > 3 {
                    return Err(format!("{} fields, at most 3", fields.len()));
                }
                Ok(JobRow {
                    order: fields[0].to_owned(),
                    carrier: fields.get(1).copied().unwrap_or("").to_owned(),
                    tracking_number: fields.get(2).copied().unwrap_or("").to_owned(),
                })
            })
            .collect()
    };
    if rows.is_empty() || rows.len() > ROWS_MAX {
        return Err(format!("an upload has 1 to {ROWS_MAX} rows"));
    }
    Ok(rows)
}

/// What became of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Shipped,
    AlreadyShipped,
    Cancelled,
    Refunded,
    Reindexed,
    /// Already in the state the job wanted (cancelled, refunded).
    AlreadyDone,
    /// Not in a state the job can act on (ship: not paid yet).
    NotPaid,
    Refused,
    UnknownOrder,
    Invalid,
    /// The order could not be reached; the job tries the row again.
    Retry,
}

impl Outcome {
    pub fn failed(self) -> bool {
        matches!(
            self,
            Outcome::NotPaid | Outcome::Refused | Outcome::UnknownOrder | Outcome::Invalid
        )
    }
}

/// A row's outcome from its order's answer (status and body).
pub fn classify(kind: JobKind, status: u16, body: &Value) -> Outcome {
    let from = body["from"].as_str().unwrap_or("");
    match (kind, status) {
        (JobKind::Ship, 200) => Outcome::Shipped,
        (JobKind::Cancel, 200) => Outcome::Cancelled,
        (JobKind::Refund, 200) => Outcome::Refunded,
        (JobKind::Reindex, 200) => Outcome::Reindexed,
        (_, 404) => Outcome::UnknownOrder,
        (JobKind::Ship, 409) if matches!(from, "shipped" | "delivered") => Outcome::AlreadyShipped,
        (JobKind::Ship, 409) if body["type"] == "/problems/illegal-transition" => Outcome::NotPaid,
        (JobKind::Cancel, 409)
            if matches!(from, "cancelled" | "expired" | "rejected" | "failed") =>
        {
            Outcome::AlreadyDone
        }
        (JobKind::Refund, 409) if from == "refunded" => Outcome::AlreadyDone,
        (_, 409 | 422) if body["type"] != "/problems/order-busy" => Outcome::Refused,
        _ => Outcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uploads_are_read_row_by_row() {
        let csv =
            "\u{feff}order,carrier,tracking_number\no_1,SF,SF123\n\no_2, ZTO ,\"ZT9\"\na,b,c,d\n";
        let rows = parse_rows(csv).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].as_ref().unwrap().tracking_number, "SF123");
        assert_eq!(rows[1].as_ref().unwrap().carrier, "ZTO");
        assert_eq!(rows[1].as_ref().unwrap().tracking_number, "ZT9");
        assert!(rows[2].is_err());
        let json = r#"[{"order": "o_1", "carrier": "SF", "tracking_number": "1"}, 7]"#;
        let rows = parse_rows(json).unwrap();
        assert!(rows[0].is_ok() && rows[1].is_err());
        assert!(parse_rows("").is_err());
        assert!(parse_rows("[").is_err());
    }

    #[test]
    fn answers_become_outcomes() {
        let illegal = |from: &str| json!({"type": "/problems/illegal-transition", "from": from});
        assert_eq!(classify(JobKind::Ship, 200, &json!({})), Outcome::Shipped);
        assert_eq!(
            classify(JobKind::Ship, 409, &illegal("shipped")),
            Outcome::AlreadyShipped
        );
        assert_eq!(
            classify(JobKind::Ship, 409, &illegal("reserved")),
            Outcome::NotPaid
        );
        assert_eq!(
            classify(JobKind::Ship, 404, &json!({})),
            Outcome::UnknownOrder
        );
        assert_eq!(
            classify(JobKind::Cancel, 409, &illegal("cancelled")),
            Outcome::AlreadyDone
        );
        assert_eq!(
            classify(JobKind::Refund, 409, &illegal("reserved")),
            Outcome::Refused
        );
        assert_eq!(
            classify(JobKind::Ship, 409, &json!({"type": "/problems/order-busy"})),
            Outcome::Retry
        );
        assert_eq!(classify(JobKind::Ship, 503, &json!({})), Outcome::Retry);
    }
}
