//! Bulk fulfilment: a session of 2,000 orders across SKUs, whose picking
//! list matches what the SKUs sold, its paid orders shipped from one CSV
//! upload with duplicates and bad rows (exact per-row results, no order
//! shipped twice), the same upload again changing nothing, and a bulk
//! cancel that returns stock.

use super::app::{unique, App, Call, Reply};
use reqwest::Method;
use serde_json::{json, Value};

async fn upload(app: &App, query: &str, body: String, content_type: &str) -> Reply {
    app.send(Call {
        method: Method::POST,
        path: format!("/api/jobs?{query}"),
        body: Some(body),
        headers: vec![app.bearer(), ("Content-Type", content_type.to_owned())],
    })
    .await
}

async fn finished(app: &App, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let r = app
            .send_retrying(Call {
                method: Method::GET,
                path: format!("/api/jobs/{id}"),
                body: None,
                headers: vec![app.bearer()],
            })
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        if r.body["state"] == "done" {
            return r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id}: {}/{}",
            r.body["done"],
            r.body["total"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub async fn a_sessions_paid_orders_ship_in_bulk_once(app: App) {
    let room = unique("bulk-room");
    let skus = [
        unique("bulk-a"),
        unique("bulk-b"),
        unique("bulk-c"),
        unique("bulk-d"),
    ];
    for sku in &skus {
        app.given_sku(sku, json!({"on_hand": 1000, "hold_seconds": 3600}))
            .await;
    }
    // 2,000 orders in the room across four SKUs, 1,500 of them paid.
    const ORDERS: usize = 2_000;
    const PAID: usize = 1_500;
    // 500 viewers with four orders each, from 20 networks, in waves of
    // 250: one local workerd keeps every object it touched for a while,
    // and its SQLite memory is shared by all of them.
    let mut ids = Vec::new();
    for wave in (0..ORDERS).collect::<Vec<_>>().chunks(250) {
        let tasks: Vec<_> = wave
        .iter()
        .map(|&i| {
            let (app, room, sku) = (app.clone(), room.clone(), skus[i % 4].clone());
            tokio::spawn(async move {
                let buyer = format!("bulk-{}-{}", i % 500, &room[room.len() - 4..]);
                let body = json!({"buyer": buyer, "channel": "own", "room": room, "lines": [{"sku": sku, "qty": 1}]});
                let mut call = app.json_call(Method::POST, "/api/orders".into(), body, false);
                call.headers.push(app.as_buyer(&buyer));
                call.headers.push(("Idempotency-Key", unique("bulk-key")));
                call.headers.push(("CF-Connecting-IP", format!("2001:db8:b::{:x}", i % 20)));
                let r = app.send_keyed(call).await;
                assert_eq!(r.status, 201, "{:?}", r.body);
                assert_eq!(r.body["status"], "reserved", "{:?}", r.body);
                app.note_owner(&r, &buyer);
                let id = r.body["id"].as_str().unwrap().to_owned();
                if i < PAID {
                    // Idempotent by its payment_ref: retried if the dev proxy drops it.
                    let pay = json!({"payment_ref": format!("bulk-pay-{i}")});
                    let paid = app.send_retrying(app.order_call(&id, "pay", pay)).await;
                    assert_eq!(paid.status, 200, "{:?}", paid.body);
                }
                id
            })
        })
        .collect();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
    }
    // The picking list of the session's paid orders is what the SKUs sold
    // (once the index, which trails the orders, has them all).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let picking = loop {
        let r = app
            .with(
                Method::GET,
                format!("/api/exports/picking?room={room}"),
                vec![app.bearer()],
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        if r.body["orders"] == PAID {
            break r.body;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", r.body);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    for sku in &skus {
        let units = picking["skus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sku"] == json!(sku))
            .and_then(|s| s["units"].as_u64());
        let (_, _, sold, _) = app.counts(sku).await;
        assert_eq!(units, Some(sold), "{sku}: {picking}");
    }
    let sold: u64 = picking["skus"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["units"].as_u64())
        .sum();
    assert_eq!(sold, PAID as u64);
    // The upload: every paid order, 20 of them twice, 5 unpaid ones, 3
    // orders that do not exist, 2 unreadable rows.
    let mut csv = String::from("\u{feff}order,carrier,tracking_number\n");
    for (i, id) in ids[..PAID].iter().enumerate() {
        csv.push_str(&format!("{id},SF,SF{i:06}\n"));
    }
    for (i, id) in ids[..20].iter().enumerate() {
        csv.push_str(&format!("{id},SF,SF{i:06}\n"));
    }
    for (i, id) in ids[PAID..PAID + 5].iter().enumerate() {
        csv.push_str(&format!("{id},ZTO,ZT{i}\n"));
    }
    for _ in 0..3 {
        csv.push_str(&format!("o_{},SF,SF999\n", "0123456789abcdef".repeat(2)));
    }
    csv.push_str(&format!("{},SF\n", ids[0]));
    csv.push_str("a,b,c,d\n");
    let r = upload(&app, "kind=ship", csv.clone(), "text/csv").await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["total"], PAID + 30);
    let job = r.body["id"].as_str().unwrap().to_owned();
    let done = finished(&app, &job).await;
    let counts = &done["counts"];
    assert_eq!(counts["shipped"], PAID, "{counts}");
    assert_eq!(counts["already_shipped"], 20, "{counts}");
    assert_eq!(counts["not_paid"], 5, "{counts}");
    assert_eq!(counts["unknown_order"], 3, "{counts}");
    assert_eq!(counts["invalid"], 2, "{counts}");
    assert_eq!(done["failed"], 10);
    let results = done["results"].as_array().unwrap();
    assert_eq!(results.len(), PAID + 30);
    assert_eq!(results[0]["outcome"], "shipped");
    assert_eq!(results[PAID + 29]["outcome"], "invalid");
    // Each paid order shipped once, with its own tracking number.
    for (i, id) in ids[..PAID].iter().enumerate().step_by(97) {
        let order = app.get_order(id).await.body;
        assert_eq!(order["status"], "shipped", "{order}");
        let shipped = order["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["status"] == "shipped")
            .count();
        assert_eq!(shipped, 1, "{order}");
        assert!(order.to_string().contains(&format!("SF{i:06}")), "{order}");
    }
    // The same upload again: nothing changes.
    let again = upload(&app, "kind=ship", csv, "text/plain").await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    let done = finished(&app, again.body["id"].as_str().unwrap()).await;
    assert_eq!(
        done["counts"]["already_shipped"],
        PAID + 20,
        "{}",
        done["counts"]
    );
    assert!(
        done["counts"].get("shipped").is_none(),
        "{}",
        done["counts"]
    );
    // A recall: the five unpaid orders cancelled in bulk, their units back.
    let rows: Vec<Value> = ids[PAID..PAID + 5]
        .iter()
        .map(|id| json!({"order": id}))
        .collect();
    let mut before = 0;
    for sku in &skus {
        before += app.counts(sku).await.1;
    }
    let r = upload(
        &app,
        "kind=cancel&reason=recall",
        Value::Array(rows).to_string(),
        "application/json",
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let done = finished(&app, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["cancelled"], 5, "{}", done["counts"]);
    let mut after = 0;
    for sku in &skus {
        after += app.counts(sku).await.1;
    }
    assert_eq!(before - after, 5, "five held units back");
    let order = app.get_order(&ids[PAID]).await.body;
    assert!(order.to_string().contains("recall"), "{order}");
}

pub async fn bad_job_input_is_a_problem(app: App) {
    for (query, body) in [
        ("kind=teleport", "o_x,SF,1"),
        ("", "o_x,SF,1"),
        ("kind=ship&colour=red", "o_x,SF,1"),
        ("kind=ship", ""),
        ("kind=ship", "[1,"),
        ("kind=refund&restock=maybe", "o_x"),
    ] {
        let r = upload(&app, query, body.into(), "text/csv").await;
        assert_eq!(r.status / 100, 4, "{query} {body}: {:?}", r.body);
        assert_eq!(r.content_type, "application/problem+json", "{query}");
    }
    let r = app
        .with(
            Method::GET,
            format!("/api/jobs/j_{}", "a".repeat(32)),
            vec![app.bearer()],
        )
        .await;
    r.assert_problem(404, "job-not-found");
    let r = app
        .with(Method::GET, "/api/jobs/nope".into(), vec![app.bearer()])
        .await;
    r.assert_problem(404, "job-not-found");
    let r = app
        .with(
            Method::GET,
            format!("/api/jobs/j_{}", "a".repeat(32)),
            vec![],
        )
        .await;
    assert_eq!(r.status, 401);
}

/// A bulk job cut off by a server restart resumes by itself and ships
/// every order exactly once; an index that lost those orders is repaired
/// from the orders by a reindex job.
pub async fn a_bulk_job_survives_a_restart(app: App, server: &mut super::harness::Server) {
    let sku = unique("bulk-restart");
    app.given_sku(&sku, json!({"on_hand": 1000})).await;
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let (app, sku) = (app.clone(), sku.clone());
            tokio::spawn(async move {
                let buyer = format!("bulk-r-{i}-{}", &sku[sku.len() - 4..]);
                let body =
                    json!({"buyer": buyer, "channel": "own", "lines": [{"sku": sku, "qty": 1}]});
                let mut call = app.json_call(Method::POST, "/api/orders".into(), body, false);
                call.headers.push(app.as_buyer(&buyer));
                call.headers.push(("Idempotency-Key", unique("bulk-r-key")));
                let r = app.send_keyed(call).await;
                assert_eq!(r.status, 201, "{:?}", r.body);
                app.note_owner(&r, &buyer);
                let id = r.body["id"].as_str().unwrap().to_owned();
                let pay = json!({"payment_ref": format!("bulk-r-pay-{i}-{sku}")});
                let paid = app.send_retrying(app.order_call(&id, "pay", pay)).await;
                assert_eq!(paid.status, 200, "{:?}", paid.body);
                id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let csv: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!("{id},YTO,YT{i:05}\n"))
        .collect();
    let r = upload(&app, "kind=ship", csv, "text/csv").await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = r.body["id"].as_str().unwrap().to_owned();
    // Stop the server once the job has started and before it is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let done_before = loop {
        let r = app
            .with(Method::GET, format!("/api/jobs/{job}"), vec![app.bearer()])
            .await;
        let done = r.body["done"].as_u64().unwrap_or(0);
        if done > 0 {
            break done;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    server.stop();
    server.start().await;
    let done = finished(&app, &job).await;
    assert!(done_before < 300, "stopped mid-job ({done_before} done)");
    assert_eq!(done["counts"]["shipped"], 300, "{}", done["counts"]);
    assert_eq!(done["failed"], 0);
    for id in ids.iter().step_by(23) {
        let order = app.get_order(id).await.body;
        let shipped = order["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["status"] == "shipped")
            .count();
        assert_eq!(shipped, 1, "{order}");
    }

    // The index lost these orders (their rows deleted from its files while
    // the server is down): a reindex job lists them again from the orders.
    let listed = |app: App, sku: String| async move {
        let path = format!("/api/orders?sku={sku}&limit=1000");
        let r = app.with(Method::GET, path, vec![app.bearer()]).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["counts"]["shipped"].as_u64().unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while listed(app.clone(), sku.clone()).await < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the index never caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    server.stop();
    let script = r#"
import glob, sqlite3, sys
state, ids = sys.argv[1], sys.argv[2].split(",")
gone = 0
for path in glob.glob(state + "/**/*.sqlite", recursive=True):
    db = sqlite3.connect(path)
    try:
        columns = [c[1] for c in db.execute("PRAGMA table_info(orders)")]
        if "skus" not in columns:
            continue
        gone += db.execute("DELETE FROM orders WHERE id IN (%s)" % ",".join("?" * len(ids)), ids).rowcount
        db.commit()
    except sqlite3.Error:
        continue
print(gone)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&server.state_dir)
        .arg(ids.join(","))
        .output()
        .expect("python3");
    let gone: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        gone >= 300,
        "index rows deleted: {gone} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.start().await;
    assert_eq!(
        listed(app.clone(), sku.clone()).await,
        0,
        "the index lost them"
    );
    let mut rows: String = ids.iter().map(|id| format!("{id}\n")).collect();
    rows.push_str(&format!("o_{}\n", "0123456789abcdef".repeat(2)));
    let r = upload(&app, "kind=reindex", rows, "text/csv").await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let done = finished(&app, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["reindexed"], 300, "{}", done["counts"]);
    assert_eq!(done["counts"]["unknown_order"], 1, "{}", done["counts"]);
    assert_eq!(
        listed(app.clone(), sku.clone()).await,
        300,
        "listed again, as shipped"
    );
}

/// A carrier's signed delivery update moves a shipped order to delivered,
/// once; an unsigned one is refused and changes nothing.
pub async fn a_carriers_signed_update_delivers(app: App) {
    let sku = unique("carrier");
    app.given_sku(&sku, json!({"on_hand": 5})).await;
    let order = app.given_order(&app.viewer, &[(&sku, 1)]).await;
    let paid = app
        .order_action(&order, "pay", json!({"payment_ref": unique("carrier-pay")}))
        .await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    let tracking = unique("SF");
    let shipped = app
        .order_action(
            &order,
            "ship",
            json!({"carrier": "SF", "tracking_number": tracking}),
        )
        .await;
    assert_eq!(shipped.status, 200, "{:?}", shipped.body);
    let unshipped = app.given_order(&app.viewer, &[(&sku, 1)]).await;
    let body = json!({"events": [
        {"order": order, "tracking_number": tracking, "status": "delivered"},
        {"order": unshipped, "tracking_number": "X1", "status": "delivered"},
        {"order": format!("o_{}", "9".repeat(32)), "tracking_number": "X2", "status": "delivered"},
        {"order": order, "tracking_number": tracking, "status": "in_transit"},
    ]})
    .to_string();
    let secret = format!("{}-carriers", app.token);
    let sign = |body: &str| {
        let now = super::app::now_ms() / 1000;
        edgestock::api::session::sign_body(now, body.as_bytes(), secret.as_bytes())
    };
    let post = |signature: Option<String>| {
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        if let Some(s) = signature {
            headers.push(("Edgestock-Signature", s));
        }
        Call {
            method: Method::POST,
            path: "/api/carriers/deliveries".into(),
            body: Some(body.clone()),
            headers,
        }
    };
    let forged = app.send(post(Some(sign("something else")))).await;
    forged.assert_problem(401, "unauthorized");
    let unsigned = app.send(post(None)).await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(app.get_order(&order).await.body["status"], "shipped");
    let r = app.send_retrying(post(Some(sign(&body)))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let results: Vec<&Value> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| &x["result"])
        .collect();
    assert_eq!(
        results,
        [
            &json!("delivered"),
            &json!("not_shipped"),
            &json!("unknown_order"),
            &json!("ignored")
        ]
    );
    assert_eq!(app.get_order(&order).await.body["status"], "delivered");
    let again = app.send_retrying(post(Some(sign(&body)))).await;
    assert_eq!(
        again.body["results"][0]["result"], "delivered",
        "the same update again: its first answer"
    );
    let timeline = app.get_order(&order).await.body["timeline"].clone();
    let delivered = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "delivered")
        .count();
    assert_eq!(delivered, 1, "{timeline}");
}

/// A job's progress comes over its own live feed, to the merchant only:
/// rows done only go up, and the last event says done with every row.
pub async fn a_jobs_progress_comes_over_its_feed(app: App) {
    use crate::live::{connect, connect_with, next};
    let sku = unique("bulk-feed");
    app.given_sku(&sku, json!({"on_hand": 100, "hold_seconds": 3600}))
        .await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            app.given_order(&format!("feed-{i}-{}", &sku[sku.len() - 4..]), &[(&sku, 1)])
                .await,
        );
    }
    let rows: Vec<Value> = ids.iter().map(|id| json!({"order": id})).collect();
    let r = upload(
        &app,
        "kind=cancel&reason=feed",
        Value::Array(rows).to_string(),
        "application/json",
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = r.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/jobs/{job}/live");
    assert_eq!(
        connect(&app, &path, None).await.err(),
        Some(401),
        "no token"
    );
    let buyer = format!("edgestock, bearer.{}", app.session("feed-watcher"));
    assert_eq!(
        connect_with(&app, &path, None, Some(&buyer)).await.err(),
        Some(401),
        "a buyer's session is not the merchant's"
    );
    let bogus = "/api/jobs/j_nope/live";
    assert_eq!(connect(&app, bogus, None).await.err(), Some(404));
    let admin = format!("edgestock, bearer.{}", app.token);
    let mut socket = connect_with(&app, &path, None, Some(&admin))
        .await
        .expect("the merchant watches the job");
    let mut seen: Vec<u64> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let last = loop {
        assert!(std::time::Instant::now() < deadline, "progress: {seen:?}");
        let Some(event) = next(&mut socket, std::time::Duration::from_secs(30)).await else {
            panic!("no progress within 30 s: {seen:?}");
        };
        let events: Vec<Value> = match event["type"].as_str() {
            Some("snapshot") => event["orders"].as_array().cloned().unwrap_or_default(),
            Some("job") => vec![event],
            _ => continue,
        };
        let mut finished = None;
        for e in events.into_iter().filter(|e| e["type"] == "job") {
            assert_eq!(e["job"], json!(job));
            assert_eq!(e["total"], json!(60));
            let done = e["done"].as_u64().unwrap();
            assert!(
                seen.last().is_none_or(|d| done >= *d),
                "{seen:?} then {done}"
            );
            seen.push(done);
            if e["state"] == "done" {
                finished = Some(e);
            }
        }
        if let Some(e) = finished {
            break e;
        }
    };
    assert_eq!(last["done"], json!(60), "{last}");
    assert_eq!(last["failed"], json!(0), "{last}");
    let status = finished(&app, &job).await;
    assert_eq!(status["counts"]["cancelled"], 60, "{}", status["counts"]);
}
