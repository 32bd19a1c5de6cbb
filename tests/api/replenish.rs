//! Replenishment (补货) against the real runtime: crossing the reorder
//! point makes one request, the merchant confirms it (or auto does), the
//! supplier's endpoint is told, and receiving restocks once; incoming is
//! shown and never sold. And the sell-out estimate of a selling SKU.

use crate::app::{unique, App};
use crate::receiver::Receiver;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn requests(app: &App, sku: &str) -> Value {
    let reply = app
        .with(
            Method::GET,
            format!("/api/skus/{sku}/replenishments"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

async fn act(app: &App, sku: &str, id: &str, action: &str, key: &str) -> crate::app::Reply {
    let mut call = app.json_call(
        Method::POST,
        format!("/api/skus/{sku}/replenishments/{id}/{action}"),
        json!({}),
        true,
    );
    call.headers.push(("Idempotency-Key", key.to_owned()));
    app.send_keyed(call).await
}

pub async fn the_reorder_point_makes_one_request_that_restocks_once(app: App) {
    let merchant = Receiver::accepting().await;
    let supplier = Receiver::accepting().await;
    let (merchant_hook, _) = app
        .given_webhook(&merchant.url("/m"), &["replenishment_requested"])
        .await;
    let (supplier_hook, _) = app
        .given_webhook(&supplier.url("/s"), &["replenishment_confirmed"])
        .await;
    tokio::time::sleep(Duration::from_millis(2_300)).await;

    let sku = unique("restocked");
    app.given_sku(&sku, json!({"on_hand": 10})).await;
    let policy =
        json!({"mode": "suggest", "reorder_point": 4, "reorder_qty": 20, "supplier": "SUP-9"});
    let set = app
        .send(app.json_call(
            Method::PUT,
            format!("/api/skus/{sku}/replenishment"),
            policy,
            true,
        ))
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["replenishment"]["reorder_point"], json!(4));
    assert!(
        set.body["replenishment"].get("supplier").is_none(),
        "the SKU's public view leaves the supplier out"
    );
    for buyer in ["r1", "r2", "r3", "r4"] {
        assert_eq!(app.reserve(&sku, 2, buyer).await.status, 201);
    }
    // 10 − 6 crossed the point of 4; the fourth sale made no second request.
    let view = requests(&app, &sku).await;
    let listed = view["requests"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{view}");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["status"], json!("requested"));
    assert_eq!(listed[0]["qty"], json!(20));
    assert_eq!(listed[0]["supplier"], json!("SUP-9"));
    assert_eq!(view["incoming"], json!(0));
    let told = merchant.wait_for(&format!("sku:{sku}"), 1, 20).await;
    assert_eq!(told[0].body["type"], json!("replenishment_requested"));
    assert_eq!(told[0].body["data"]["request"]["id"], json!(id));

    let confirmed = act(&app, &sku, &id, "confirm", &unique("confirm")).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    assert_eq!(confirmed.body["status"], json!("confirmed"));
    assert_eq!(confirmed.body["sku"]["incoming"], json!(20));
    assert_eq!(
        confirmed.body["sku"]["available"],
        json!(2),
        "incoming is not available"
    );
    let order = supplier.wait_for(&format!("sku:{sku}"), 1, 20).await;
    assert_eq!(order[0].body["type"], json!("replenishment_confirmed"));
    assert_eq!(order[0].body["data"]["request"]["qty"], json!(20));
    assert_eq!(order[0].body["data"]["request"]["supplier"], json!("SUP-9"));
    // Incoming cannot be bought.
    app.reserve(&sku, 3, "r5")
        .await
        .assert_problem(409, "insufficient-stock");

    // Received twice with one key and once with another: restocked once.
    let key = unique("receive");
    let received = act(&app, &sku, &id, "receive", &key).await;
    assert_eq!(received.status, 200, "{:?}", received.body);
    assert_eq!(received.body["status"], json!("received"));
    assert_eq!(received.body["received"], json!(20));
    assert_eq!(
        act(&app, &sku, &id, "receive", &key).await.body,
        received.body
    );
    let again = act(&app, &sku, &id, "receive", &unique("receive")).await;
    assert_eq!(again.status, 200);
    assert_eq!(app.counts(&sku).await, (30, 8, 0, 22));
    let restocks: Vec<Value> = app
        .ledger(&sku)
        .await
        .into_iter()
        .filter(|e| e["movement"] == json!("restock"))
        .collect();
    assert_eq!(restocks.len(), 1, "{restocks:?}");
    assert_eq!(restocks[0]["reference"], json!(id));
    assert_eq!(restocks[0]["qty"], json!(20));
    act(&app, &sku, &id, "cancel", &unique("cancel"))
        .await
        .assert_problem(409, "replenishment-closed");
    let nobody = format!("rp_{}", "0".repeat(32));
    act(&app, &sku, &nobody, "confirm", &unique("confirm"))
        .await
        .assert_problem(404, "replenishment-not-found");

    // Auto: back under the point, the request is confirmed at once and
    // the supplier is told with no one asking.
    let auto = json!({"mode": "auto", "reorder_point": 25, "lead_time_s": 3600, "safety_stock": 5});
    let set = app
        .send(app.json_call(
            Method::PUT,
            format!("/api/skus/{sku}/replenishment"),
            auto,
            true,
        ))
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let view = requests(&app, &sku).await;
    assert_eq!(view["requests"][0]["status"], json!("confirmed"), "{view}");
    assert!(
        view["incoming"].as_u64().unwrap() >= 5,
        "computed: at least the safety stock"
    );
    let orders = supplier.wait_for(&format!("sku:{sku}"), 2, 20).await;
    assert_eq!(
        orders[1].body["data"]["request"]["id"],
        view["requests"][0]["id"]
    );

    // Bad policies are problems and change nothing.
    for bad in [
        json!({"mode": "sometimes", "reorder_point": 4}),
        json!({"mode": "auto"}),
        json!({"mode": "auto", "reorder_point": 4, "lead_time_s": 40_000_000}),
        json!({"mode": "auto", "reorder_point": 4, "reorder_qty": 0}),
    ] {
        app.send(app.json_call(
            Method::PUT,
            format!("/api/skus/{sku}/replenishment"),
            bad,
            true,
        ))
        .await
        .assert_problem(422, "invalid-body");
    }
    assert_eq!(requests(&app, &sku).await["policy"]["mode"], json!("auto"));
    for hook in [merchant_hook, supplier_hook] {
        app.with(
            Method::DELETE,
            format!("/api/webhooks/{hook}"),
            vec![app.bearer()],
        )
        .await;
    }
}

pub async fn a_selling_sku_says_when_it_will_sell_out(app: App) {
    let sku = unique("pacing");
    app.given_sku(&sku, json!({"on_hand": 400, "max_per_hold": 5}))
        .await;
    let idle = app.get_sku_now(&sku).await;
    assert_eq!(idle.body["sellout_s"], Value::Null, "nothing selling yet");
    // 40 units in about two seconds.
    for i in 0..20 {
        assert_eq!(app.reserve(&sku, 2, &format!("pace-{i}")).await.status, 201);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let selling = app.get_sku_now(&sku).await.body;
    let pace = selling["velocity"]["taken_per_min"].as_f64().unwrap();
    assert!(pace > 60.0, "units a minute: {selling}");
    let left = selling["sellout_s"].as_u64().expect("an estimate");
    // 360 units at the pace: the estimate is the units over the pace (the
    // pace shown is rounded up to whole units a minute).
    let expected = 360.0 / (pace / 60.0);
    assert!(
        (left as f64 - expected).abs() <= expected * 0.02 + 1.0,
        "{left} s vs {expected} s: {selling}"
    );

    // The same 40 units in the sales buckets: per second and per minute,
    // as JSON and as CSV; two releases count too.
    for name in ["pace-0", "pace-1"] {
        let holds = app.ledger(&sku).await;
        let hold = holds
            .iter()
            .find(|e| e["buyer"] == json!(name))
            .and_then(|e| e["hold"].as_str())
            .unwrap()
            .to_owned();
        assert_eq!(app.release_as(name, &sku, &hold).await.status, 200);
    }
    let stats = |query: &str| {
        app.with(
            Method::GET,
            format!("/api/skus/{sku}/stats?{query}"),
            vec![app.bearer()],
        )
    };
    for res in ["second", "minute", "hour"] {
        let body = stats(&format!("res={res}")).await.body;
        assert_eq!(body["totals"]["held"], json!(40), "{res}: {body}");
        assert_eq!(body["totals"]["released"], json!(4), "{res}: {body}");
        assert_eq!(body["totals"]["sold"], json!(0));
    }
    let seconds = stats("res=second").await.body;
    assert!(
        seconds["buckets"].as_array().unwrap().len() >= 2,
        "spread over seconds: {seconds}"
    );
    let csv = stats("res=second&format=csv").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.content_type.starts_with("text/csv"),
        "{}",
        csv.content_type
    );
    let text = app
        .client
        .get(format!(
            "{}/api/skus/{sku}/stats?res=minute&format=csv",
            app.base
        ))
        .header("Authorization", format!("Bearer {}", app.token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("start_ms,held,sold,released,expired"));
    let held: u64 = lines
        .map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(held, 40, "{text}");
    stats("res=fortnight")
        .await
        .assert_problem(400, "invalid-request");
}

pub async fn a_rooms_numbers_count_its_orders_once(app: App) {
    let room = unique("numbers-room");
    let (tee, cap) = (unique("numbers-tee"), unique("numbers-cap"));
    app.given_sku(&tee, json!({"on_hand": 50})).await;
    app.given_sku(&cap, json!({"on_hand": 50})).await;
    let setup = json!({"title": "Numbers", "items": [{"sku": tee, "title": "Tee"}, {"sku": cap, "title": "Cap"}]});
    let put = app
        .send(app.json_call(Method::PUT, format!("/api/rooms/{room}"), setup, true))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let mut orders = Vec::new();
    for (buyer, lines) in [
        ("n-ann", json!([{"sku": tee, "qty": 2}])),
        (
            "n-bob",
            json!([{"sku": tee, "qty": 1}, {"sku": cap, "qty": 1}]),
        ),
        ("n-cat", json!([{"sku": cap, "qty": 3}])),
    ] {
        let body = json!({"buyer": buyer, "channel": "douyin", "room": room, "lines": lines});
        let reply = app
            .send(app.json_call(Method::POST, "/api/orders".into(), body, true))
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        orders.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let paid = app
        .order_action(
            &orders[0],
            "pay",
            json!({"payment_ref": unique("pay"), "amount": 9_900}),
        )
        .await;
    assert_eq!(paid.status, 200, "{:?}", paid.body);
    let cancelled = app
        .send(app.json_call(
            Method::POST,
            format!("/api/orders/{}/cancel", orders[2]),
            json!({}),
            true,
        ))
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);

    let read = || {
        app.with(
            Method::GET,
            format!("/api/rooms/{room}/stats"),
            vec![app.bearer()],
        )
    };
    // Told after each reply: give the announcements a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let stats = read().await.body;
        if stats["session"]["cancelled"] == json!(1) && stats["session"]["paid"] == json!(1) {
            break stats;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let session = &stats["session"];
    assert_eq!(session["orders"], json!(3), "{stats}");
    assert_eq!(session["units_held"], json!(7));
    assert_eq!(session["units_sold"], json!(2));
    assert_eq!(session["gmv"], json!(9_900));
    assert_eq!(stats["conversion"], json!(0.3333));
    assert_eq!(stats["top_skus"][0]["sku"], json!(tee));
    assert_eq!(stats["top_skus"][0]["units_sold"], json!(2));
    let minutes: u64 = stats["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["orders"].as_u64().unwrap())
        .sum();
    assert_eq!(minutes, 3, "the minutes add up to the session");
    let csv = app
        .client
        .get(format!("{}/api/rooms/{room}/stats?format=csv", app.base))
        .header("Authorization", format!("Bearer {}", app.token))
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert!(
        text.starts_with("minute_ms,orders,units_held,paid,units_sold,gmv,expired,cancelled\n"),
        "{text}"
    );
    assert!(text.contains(",9900,"), "{text}");
    // From the paid order to its units and back: its line's hold names
    // the SKU's entries, and each entry names the order.
    let order = app.get_order(&orders[0]).await.body;
    let hold = order["lines"][0]["hold"].as_str().unwrap().to_owned();
    for query in [format!("order={}", orders[0]), format!("hold={hold}")] {
        let traced = app
            .with(
                Method::GET,
                format!("/api/skus/{tee}/ledger?{query}"),
                vec![app.bearer()],
            )
            .await;
        let entries = traced.body["entries"].as_array().unwrap();
        let movements: Vec<&Value> = entries.iter().map(|e| &e["movement"]).collect();
        assert_eq!(
            movements,
            [&json!("reserve"), &json!("commit")],
            "{query}: {entries:?}"
        );
        assert!(entries
            .iter()
            .all(|e| e["order"] == json!(orders[0]) && e["hold"] == json!(hold)));
    }
    app.with(
        Method::GET,
        format!("/api/skus/{tee}/ledger?order=o_nope"),
        vec![app.bearer()],
    )
    .await
    .assert_problem(400, "invalid-request");

    // A room nobody ordered in has zeros, and a stranger gets nothing.
    let empty = app
        .with(
            Method::GET,
            format!("/api/rooms/{}/stats", unique("quiet")),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(empty.body["session"]["orders"], json!(0));
    app.bare(Method::GET, format!("/api/rooms/{room}/stats"))
        .await
        .assert_problem(401, "unauthorized");
}
