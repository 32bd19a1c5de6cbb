//! The merchant's order queries at the router: which index partitions a
//! query reads (one room's, or the hours of a time range), the pages
//! merged by the stable cursor, and the fulfilment exports built on them.

use super::index_object::{self, IndexCall};
use crate::api::wire::OrderQuery;
use crate::api::{ApiError, HttpReply};
use crate::domain::order_index::{
    csv, hours_between, merge, picking, Cursor, Filter, IndexRow, HOUR_MS, RANGE_HOURS_MAX,
};
use serde_json::{json, Value};
use worker::{console_error, Date, Env};

type Outcome<T> = std::result::Result<T, ApiError>;

/// An export reads at most this many orders (about a big session's).
const EXPORT_MAX: usize = 50_000;

fn internal(e: impl std::fmt::Display) -> ApiError {
    console_error!("order queries: {e}");
    ApiError::Internal
}

/// The partitions a filter reads: its room's, else the hours of its time
/// range (default: the last 24 hours, at most 72).
fn partitions(filter: &mut Filter) -> Outcome<Vec<String>> {
    if let Some(room) = &filter.room {
        return Ok(vec![format!("room:{room}")]);
    }
    let now = Date::now().as_millis();
    let to = filter.to.unwrap_or(now);
    let from = filter.from.unwrap_or(to.saturating_sub(24 * HOUR_MS));
    filter.from = Some(from);
    filter.to = Some(to);
    hours_between(from, to).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "a time range covers at most {RANGE_HOURS_MAX} hours; name a room for a longer one"
        ))
    })
}

/// One page of the query across its partitions, and the counts per status
/// when asked.
async fn page(
    env: &Env,
    parts: &[String],
    filter: &Filter,
    after: Option<Cursor>,
    limit: usize,
    counts: bool,
) -> Outcome<(Vec<IndexRow>, Option<Cursor>, Value)> {
    let call = IndexCall::Query {
        filter: filter.clone(),
        after,
        // One more than asked, to know whether more follow.
        limit: limit + 1,
        counts,
    };
    let answers =
        futures_util::future::join_all(parts.iter().map(|p| index_object::call(env, p, &call)))
            .await;
    let mut pages = Vec::new();
    let mut totals = serde_json::Map::new();
    for answer in answers {
        let mut answer = answer.map_err(internal)?;
        if answer.status_code() != 200 {
            return Err(ApiError::Retry);
        }
        let body: Value = answer.json().await.map_err(internal)?;
        let rows: Vec<IndexRow> = serde_json::from_value(body["rows"].clone()).map_err(internal)?;
        pages.push(rows);
        if let Some(per) = body["counts"].as_object() {
            for (status, n) in per {
                let sum = totals.get(status).and_then(Value::as_u64).unwrap_or(0)
                    + n.as_u64().unwrap_or(0);
                totals.insert(status.clone(), json!(sum));
            }
        }
    }
    let (rows, next) = merge(pages, limit);
    Ok((rows, next, Value::Object(totals)))
}

/// `GET /api/orders?…`: a page, the cursor of the next, counts per status.
pub async fn list(env: &Env, mut q: OrderQuery) -> Outcome<HttpReply> {
    let parts = partitions(&mut q.filter)?;
    let (rows, next, counts) = page(env, &parts, &q.filter, q.after, q.limit, true).await?;
    Ok(HttpReply::json(
        200,
        json!({
            "orders": rows.iter().map(IndexRow::to_json).collect::<Vec<_>>(),
            "next_after": next.map(|c| c.encode()),
            "counts": counts,
        }),
    ))
}

/// Every order of the query (paid ones unless a status is named), up to
/// [`EXPORT_MAX`].
async fn all(env: &Env, q: &mut OrderQuery) -> Outcome<Vec<IndexRow>> {
    if q.filter.status.is_none() {
        q.filter.status = Some("paid".into());
    }
    let parts = partitions(&mut q.filter)?;
    let mut rows = Vec::new();
    let mut after = q.after.clone();
    loop {
        let (page_rows, next, _) = page(env, &parts, &q.filter, after, 1000, false).await?;
        rows.extend(page_rows);
        match next {
            Some(c) if rows.len() < EXPORT_MAX => after = Some(c),
            Some(_) => {
                return Err(ApiError::InvalidRequest(format!(
                    "more than {EXPORT_MAX} orders: narrow the time range"
                )))
            }
            None => return Ok(rows),
        }
    }
}

/// `GET /api/exports/orders?…&format=csv|json`: for fulfilment.
pub async fn export(env: &Env, mut q: OrderQuery) -> Outcome<HttpReply> {
    let rows = all(env, &mut q).await?;
    if q.csv {
        let mut reply = HttpReply::csv(csv(&rows));
        reply.headers.push((
            "Content-Disposition",
            "attachment; filename=\"orders.csv\"".into(),
        ));
        return Ok(reply);
    }
    Ok(HttpReply::json(
        200,
        json!({
            "orders": rows.iter().map(IndexRow::to_json).collect::<Vec<_>>(),
            "count": rows.len(),
        }),
    ))
}

/// `GET /api/exports/picking?…`: units per SKU (拣货单).
pub async fn picking_list(env: &Env, mut q: OrderQuery) -> Outcome<HttpReply> {
    let rows = all(env, &mut q).await?;
    let lines: Vec<Value> = picking(&rows)
        .into_iter()
        .map(|(sku, units, orders)| json!({"sku": sku, "units": units, "orders": orders}))
        .collect();
    Ok(HttpReply::json(
        200,
        json!({ "skus": lines, "orders": rows.len(), "status": q.filter.status }),
    ))
}
