//! The merchant's order index: a room's orders found by filters, paged by a
//! stable cursor, counted per status, exported for fulfilment (CSV with a
//! BOM) and summed into a picking list that matches the SKUs' sold counts.

use super::app::{now_ms, unique, App, Call};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

async fn query(app: &App, q: &str) -> super::app::Reply {
    app.send_retrying(Call {
        method: Method::GET,
        path: format!("/api/orders?{q}"),
        body: None,
        headers: vec![app.bearer()],
    })
    .await
}

pub async fn a_rooms_orders_are_found_paged_and_exported(app: App) {
    let room = unique("idx-room");
    let tee = unique("idx-tee");
    let cap = unique("idx-cap");
    app.given_sku(&tee, json!({"on_hand": 100})).await;
    app.given_sku(&cap, json!({"on_hand": 100})).await;
    let started = now_ms();
    let mut orders: Vec<(String, Vec<(String, u64)>)> = Vec::new();
    for i in 0..30u64 {
        let buyer = format!("idx-{i}-{}", &room[room.len() - 4..]);
        let mut lines = vec![(tee.clone(), 1 + i % 2)];
        if i % 3 == 0 {
            lines.push((cap.clone(), 1));
        }
        let body = json!({
            "buyer": buyer, "channel": "own", "room": room,
            "lines": lines.iter().map(|(s, q)| json!({"sku": s, "qty": q})).collect::<Vec<_>>(),
        });
        let mut call = app.json_call(Method::POST, "/api/orders".into(), body, false);
        call.headers.push(app.as_buyer(&buyer));
        call.headers.push(("Idempotency-Key", unique("idx-key")));
        let r = app.send_keyed(call).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        app.note_owner(&r, &buyer);
        orders.push((r.body["id"].as_str().unwrap().to_owned(), lines));
    }
    // 20 paid, 5 of the others cancelled, 5 left reserved.
    for (i, (id, _)) in orders.iter().enumerate() {
        let r = if i < 20 {
            app.order_action(id, "pay", json!({"payment_ref": unique("idx-pay")}))
                .await
        } else if i < 25 {
            app.order_action(id, "cancel", json!({})).await
        } else {
            continue;
        };
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // The index trails the orders by about a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let counts = loop {
        let r = query(&app, &format!("room={room}&limit=1000")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let c = r.body["counts"].clone();
        if c["paid"] == 20 && c["cancelled"] == 5 && c["reserved"] == 5 {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "the index shows {c}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(counts.as_object().unwrap().len(), 3, "{counts}");
    // Paged by 7 with the cursor: every order once, in creation order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(a) => format!("room={room}&limit=7&after={a}"),
            None => format!("room={room}&limit=7"),
        };
        let r = query(&app, &q).await;
        let page = r.body["orders"].as_array().unwrap().clone();
        assert!(page.len() <= 7);
        seen.extend(page);
        match r.body["next_after"].as_str() {
            Some(a) => after = Some(a.to_owned()),
            None => break,
        }
    }
    let ids: Vec<&str> = seen.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 30);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        30,
        "no order twice"
    );
    let times: Vec<u64> = seen
        .iter()
        .map(|o| o["created_at"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // Filters: a SKU, a status, a buyer; and the same orders by time.
    let r = query(&app, &format!("room={room}&sku={cap}&limit=1000")).await;
    assert_eq!(r.body["orders"].as_array().unwrap().len(), 10);
    let r = query(&app, &format!("room={room}&status=paid&limit=1000")).await;
    assert_eq!(r.body["orders"].as_array().unwrap().len(), 20);
    let r = query(
        &app,
        &format!(
            "sku={tee}&from={}&to={}&limit=1000",
            started - 1000,
            now_ms() + 1000
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["orders"].as_array().unwrap().len(),
        30,
        "by the hour partitions"
    );
    // The fulfilment export: the paid orders, one row per line, with a BOM.
    let csv = app
        .client
        .get(format!(
            "{}/api/exports/orders?room={room}&format=csv",
            app.base
        ))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert!(text.starts_with('\u{feff}'), "a BOM for spreadsheet tools");
    let paid_lines: usize = orders[..20].iter().map(|(_, l)| l.len()).sum();
    assert_eq!(text.lines().count(), 1 + paid_lines, "{text}");
    // The picking list matches what the SKUs sold.
    let r = app
        .with(
            Method::GET,
            format!("/api/exports/picking?room={room}"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["orders"], 20);
    let picked: HashMap<String, u64> = r.body["skus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s: &Value| {
            (
                s["sku"].as_str().unwrap().to_owned(),
                s["units"].as_u64().unwrap(),
            )
        })
        .collect();
    for sku in [&tee, &cap] {
        let (_, _, sold, _) = app.counts(sku).await;
        assert_eq!(picked[sku], sold, "{sku}");
    }
}

pub async fn bad_order_queries_are_problems(app: App) {
    for q in [
        "status=bogus",
        "limit=0",
        "limit=1001",
        "from=10&to=5",
        "from=0&to=999999999999",
        "colour=red",
        "after=nonsense",
        "sku=bad%20sku",
        "room=a/b",
        "format=xml",
    ] {
        let r = query(&app, q).await;
        r.assert_problem(400, "invalid-request");
    }
    let r = app.with(Method::GET, "/api/orders".into(), vec![]).await;
    assert_eq!(r.status, 401);
    let r = app
        .with(
            Method::GET,
            "/api/exports/orders".into(),
            vec![app.as_buyer("someone")],
        )
        .await;
    assert_eq!(r.status / 100, 4);
    assert_ne!(r.status, 200);
}
