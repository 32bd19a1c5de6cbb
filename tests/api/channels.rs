//! Selling platforms end to end, through the fake platform (a real local
//! HTTP server speaking each adapter's formats): signed order intake with
//! resends and reorderings, channel allocation, and the outbound stock
//! sync with its log.

use super::app::{unique, App, Call, Reply};
use super::platform::{FakePlatform, Kind, OrderMessage, Status};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;

/// A channel name no other test uses (channels are one registry).
fn channel(prefix: &str) -> String {
    unique(prefix).to_ascii_lowercase().replace('.', "-")
}

async fn connect(app: &App, channel: &str, platform: &FakePlatform) {
    let reply = app
        .send_retrying(app.json_call(
            Method::PUT,
            format!("/api/channels/{channel}"),
            platform.connect_body(),
            true,
        ))
        .await;
    // 200: a first try the dev proxy dropped had already connected it.
    assert!(matches!(reply.status, 200 | 201), "{:?}", reply.body);
    assert!(
        reply.body.get("secret").is_none(),
        "the secret is never shown"
    );
}

/// Lists the SKU on the channel, selling from the shared pool.
async fn list(app: &App, sku: &str, channel: &str) {
    let reply = app
        .send_retrying(app.json_call(
            Method::PUT,
            format!("/api/skus/{sku}/channels/{channel}"),
            json!({}),
            true,
        ))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

/// Waits out the objects' 2 s cache of the connected channels, so the
/// SKU's next change goes to the channels just connected.
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
}

async fn disconnect(app: &App, channel: &str) {
    let r = app
        .send_retrying(Call {
            method: Method::DELETE,
            path: format!("/api/channels/{channel}"),
            body: None,
            headers: vec![app.bearer()],
        })
        .await;
    // 404: a first try the dev proxy dropped had already disconnected it.
    assert!(matches!(r.status, 200 | 404), "{:?}", r.body);
}

/// Sends a platform's signed request to edgestock (retrying what the dev
/// proxy drops: the platform resends, and intake is idempotent).
async fn send(app: &App, platform: &FakePlatform, channel: &str, batch: &[OrderMessage]) -> Reply {
    let (path, headers, content_type, body) = platform.request(channel, batch);
    let mut h: Vec<(&str, String)> = vec![("Content-Type", content_type)];
    let owned: Vec<(String, String)> = headers;
    let leaked: Vec<(&'static str, String)> = owned
        .into_iter()
        .map(|(k, v)| (&*Box::leak(k.into_boxed_str()), v))
        .collect();
    h.extend(leaked);
    let call = Call {
        method: Method::POST,
        path,
        body: Some(body),
        headers: h,
    };
    app.send_retrying(call).await
}

fn msg(id: &str, order: &str, status: Status, sku: &str, qty: u64) -> OrderMessage {
    OrderMessage {
        id: id.into(),
        order: order.into(),
        status,
        buyer: format!("buyer-{order}"),
        lines: vec![(sku.into(), qty)],
    }
}

async fn channel_status(app: &App, channel: &str) -> Value {
    let reply = app
        .with(
            Method::GET,
            format!("/api/channels/{channel}/sync?limit=1000"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

fn accepted(reply: &Reply, platform: Kind) -> bool {
    match platform {
        Kind::Douyin => reply.status == 200 && reply.body["code"] == 0,
        Kind::Taobao => reply.status == 200 && reply.body["success"] == true,
        Kind::Kuaishou => reply.status == 200 && reply.body["result"] == 1,
        Kind::Wechat => reply.status == 200,
        Kind::Generic => reply.status == 200,
    }
}

/// Three platforms sell one SKU at once, each order created then paid,
/// with resends and a paid-before-created reordering: exactly on_hand
/// units are sold, never one twice, every platform ends showing the true
/// number (0), and each channel's sync state says so.
pub async fn a_live_sale_on_three_platforms_sells_exactly_on_hand(app: App) {
    let sku = unique("live3");
    app.given_sku(&sku, json!({"on_hand": 30, "max_per_hold": 5}))
        .await;
    let kinds = [Kind::Douyin, Kind::Taobao, Kind::Kuaishou];
    let mut platforms = Vec::new();
    for kind in kinds {
        let name = channel(&format!("{}-", &kind.name()[..2]));
        let platform = FakePlatform::start(kind, "app-key-1", &unique("secret"), 0).await;
        connect(&app, &name, &platform).await;
        list(&app, &sku, &name).await;
        platforms.push((name, Arc::new(platform)));
    }
    settle().await;
    // Before any sale, a change makes every platform show the number.
    let reply = app
        .admin_post(&sku, "restock", json!({"qty": 1, "reason": "count"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    for (_, p) in &platforms {
        p.wait_shows(&sku, 31, 30).await;
    }
    // 20 orders of 1 unit on each platform (60 for 31 units), all at once.
    let mut tasks = Vec::new();
    for (name, platform) in &platforms {
        for n in 0..20 {
            let (app, platform, name, sku) =
                (app.clone(), platform.clone(), name.clone(), sku.clone());
            tasks.push(tokio::spawn(async move {
                let order = format!("P{n}");
                let created = msg(&format!("c{n}"), &order, Status::Created, &sku, 1);
                let paid = msg(&format!("p{n}"), &order, Status::Paid, &sku, 1);
                if n % 5 == 0 {
                    // Paid arrives first; created later changes nothing.
                    let r = send(&app, &platform, &name, std::slice::from_ref(&paid)).await;
                    assert!(accepted(&r, platform.kind), "{:?}", r.body);
                    send(&app, &platform, &name, std::slice::from_ref(&created)).await;
                } else {
                    send(&app, &platform, &name, std::slice::from_ref(&created)).await;
                    send(&app, &platform, &name, std::slice::from_ref(&paid)).await;
                }
                // The platform resends both.
                send(&app, &platform, &name, &[created]).await;
                send(&app, &platform, &name, &[paid]).await;
            }));
        }
    }
    for t in tasks {
        t.await.expect("a platform task");
    }
    let (on_hand, reserved, sold, available) = app.counts(&sku).await;
    assert_eq!((on_hand, reserved, sold, available), (31, 0, 31, 0));
    let audit = app.audit(&sku).await;
    assert_eq!(audit["ok"], true, "{audit}");
    // Every platform ends showing 0, and no push ever showed more than the
    // SKU had left at that version (a channel never shows more than it
    // may sell: the numbers only go down in a sale).
    let mut refused_total = 0;
    for (name, platform) in &platforms {
        platform.wait_shows(&sku, 0, 30).await;
        let calls = platform.calls_for(&sku);
        assert!(
            calls.iter().all(|c| c.signed),
            "{name}: unsigned push: {calls:?}"
        );
        let mut last_version = 0;
        for c in calls.iter().filter(|c| c.accepted) {
            let v: u64 = c.idempotent_id.rsplit(':').next().unwrap().parse().unwrap();
            assert!(v >= last_version, "{name}: pushes out of order: {calls:?}");
            last_version = v;
            assert!(c.quantity <= 31);
        }
        let status = channel_status(&app, name).await;
        let row = status["skus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["sku"] == json!(sku))
            .cloned()
            .expect("the SKU in the channel's sync state");
        assert_eq!(row["synced_quantity"], 0, "{row}");
        assert_eq!(row["pending"], false, "{row}");
        assert!(row["synced_at"].as_u64().is_some());
        assert!(!status["log"].as_array().unwrap().is_empty());
        refused_total += status["exceptions"].as_array().unwrap().len();
    }
    // 60 orders for 31 units: 29 refused, each once, as exceptions.
    assert_eq!(refused_total, 29, "one exception per refused order");
    for (name, _) in &platforms {
        disconnect(&app, name).await;
    }
}

/// A dedicated bucket, a safety floor and a maximum: each channel sells
/// and is shown only its share; the storefront sells the pool; giving the
/// bucket back returns its units.
pub async fn allocation_gives_each_channel_its_share(app: App) {
    let sku = unique("alloc");
    app.given_sku(&sku, json!({"on_hand": 100, "max_per_hold": 50}))
        .await;
    let dy = channel("dy-");
    let tb = channel("tb-");
    let douyin = FakePlatform::start(Kind::Douyin, "k", &unique("s"), 0).await;
    let taobao = FakePlatform::start(Kind::Taobao, "k", &unique("s"), 0).await;
    connect(&app, &dy, &douyin).await;
    connect(&app, &tb, &taobao).await;
    settle().await;
    let put = |channel: &str, body: Value| {
        app.json_call(
            Method::PUT,
            format!("/api/skus/{sku}/channels/{channel}"),
            body,
            true,
        )
    };
    let r = app.send_retrying(put(&dy, json!({"dedicated": 30}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = app
        .send_retrying(put(&tb, json!({"safety_floor": 50, "max_listed": 15})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["pool"], 70);
    assert_eq!(r.body["channels"][&dy]["sellable"], 30);
    assert_eq!(r.body["channels"][&tb]["sellable"], 15);
    // A bucket bigger than the pool is refused and changes nothing.
    let r = app.send_retrying(put(&tb, json!({"dedicated": 71}))).await;
    r.assert_problem(409, "allocation-pool-short");
    let r = app.send_retrying(put(&tb, json!({"percent": 0}))).await;
    r.assert_problem(422, "invalid-body");
    douyin.wait_shows(&sku, 30, 30).await;
    taobao.wait_shows(&sku, 15, 30).await;
    // Taobao asks for 16: more than its 15; refused, the platform told.
    let r = send(
        &app,
        &taobao,
        &tb,
        &[msg("t1", "T1", Status::Created, &sku, 16)],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Douyin sells its 30 from the bucket; the 31st is refused.
    for n in 0..3 {
        let r = send(
            &app,
            &douyin,
            &dy,
            &[msg(
                &format!("d{n}"),
                &format!("D{n}"),
                Status::Paid,
                &sku,
                10,
            )],
        )
        .await;
        assert_eq!(r.body["code"], 0, "{:?}", r.body);
    }
    let r = send(
        &app,
        &douyin,
        &dy,
        &[msg("d9", "D9", Status::Paid, &sku, 1)],
    )
    .await;
    assert_eq!(r.body["code"], 0, "{:?}", r.body);
    let body = app.get_sku_now(&sku).await.body;
    assert_eq!(body["sold"], 30, "{body}");
    assert_eq!(body["channels"][&dy]["sellable"], 0);
    assert_eq!(body["pool"], 70, "douyin's sales came from its bucket");
    douyin.wait_shows(&sku, 0, 30).await;
    let exceptions = channel_status(&app, &dy).await["exceptions"].clone();
    assert_eq!(exceptions.as_array().unwrap().len(), 1, "{exceptions}");
    assert!(exceptions[0]["reason"].as_str().unwrap().contains(&sku));
    // The storefront sells the pool: a reservation of 50 of 70 is fine.
    let r = app.reserve(&sku, 50, &app.viewer).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // Taobao's floor: the pool is 20 now, 20 - 50 → nothing to sell.
    taobao.wait_shows(&sku, 0, 30).await;
    // Douyin's bucket back to the pool (shared again): it sells the pool.
    let r = app.send_retrying(put(&dy, json!({}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["pool"], 20);
    assert_eq!(r.body["channels"][&dy]["dedicated"], Value::Null);
    douyin.wait_shows(&sku, 20, 30).await;
    // Unlisted from taobao: no rules, no more pushes.
    let r = app
        .send_retrying(Call {
            method: Method::DELETE,
            path: format!("/api/skus/{sku}/channels/{tb}"),
            body: None,
            headers: vec![app.bearer()],
        })
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["channels"].get(&tb).is_none(), "{:?}", r.body);
    let audit = app.audit(&sku).await;
    assert_eq!(audit["ok"], true, "{audit}");
    disconnect(&app, &dy).await;
    disconnect(&app, &tb).await;
}

/// A platform failing its stock calls is retried with backoff, a burst of
/// changes reaches it as its last number, and the log shows each try.
pub async fn a_failing_platform_is_retried_and_sees_the_last_number(app: App) {
    let sku = unique("flaky");
    app.given_sku(&sku, json!({"on_hand": 50})).await;
    let name = channel("wx-");
    let platform = FakePlatform::start(Kind::Wechat, "wxapp", &unique("token"), 0).await;
    *platform.fail_sku.lock().unwrap() = sku.clone();
    platform
        .fail_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    connect(&app, &name, &platform).await;
    list(&app, &sku, &name).await;
    settle().await;
    for _ in 0..20 {
        let r = app
            .admin_post(
                &sku,
                "adjustments",
                json!({"delta": -1, "reason": "damaged"}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    platform.wait_shows(&sku, 30, 60).await;
    let calls = platform.calls_for(&sku);
    assert!(
        calls.len() < 20,
        "a burst of 20 changes is coalesced: {calls:?}"
    );
    let failed = calls.iter().filter(|c| !c.accepted).count();
    assert_eq!(failed, 2, "{calls:?}");
    // Tries after a failure wait: the gaps grow.
    let status = channel_status(&app, &name).await;
    let log = status["log"].as_array().unwrap();
    let failures: Vec<&Value> = log
        .iter()
        .filter(|l| l["ok"] == false && l["sku"] == json!(sku))
        .collect();
    assert_eq!(failures.len(), 2, "{log:?}");
    assert!(failures
        .iter()
        .all(|l| l["error"].as_str().unwrap().contains("errcode")));
    let mut ats: Vec<u64> = calls.iter().map(|c| c.at_ms).collect();
    ats.sort();
    assert!(ats.len() >= 3);
    assert!(
        ats[1] - ats[0] >= 700,
        "a retry waits about a second: {ats:?}"
    );
    assert!(ats[2] - ats[1] >= 1_500, "and then about two: {ats:?}");
    disconnect(&app, &name).await;
}

/// Bad messages and bad channel input are problems and change nothing.
pub async fn bad_channel_input_is_a_problem_and_changes_nothing(app: App) {
    let sku = unique("chbad");
    app.given_sku(&sku, json!({"on_hand": 5})).await;
    let name = channel("gen-");
    let platform = FakePlatform::start(Kind::Generic, "", &unique("s"), 0).await;
    connect(&app, &name, &platform).await;
    settle().await;
    let good = msg("g1", "G1", Status::Paid, &sku, 1);
    // Signed with another secret: 401, nothing sold.
    let other = FakePlatform::start(Kind::Generic, "", "not-the-secret", 0).await;
    let r = send(&app, &other, &name, std::slice::from_ref(&good)).await;
    r.assert_problem(401, "channel-signature-invalid");
    // No signature at all.
    let r = app
        .send_retrying(app.json_call(
            Method::POST,
            format!("/api/channels/{name}/messages"),
            json!({"messages": []}),
            false,
        ))
        .await;
    r.assert_problem(401, "channel-signature-invalid");
    // Signed, but not the format: 400.
    let bad = OrderMessage {
        lines: vec![("bad sku!".into(), 1)],
        ..good.clone()
    };
    let r = send(&app, &platform, &name, &[bad]).await;
    r.assert_problem(422, "invalid-body");
    // An unknown channel: 404.
    let r = send(
        &app,
        &platform,
        "no-such-channel",
        std::slice::from_ref(&good),
    )
    .await;
    r.assert_problem(404, "channel-not-found");
    assert_eq!(app.counts(&sku).await, (5, 0, 0, 5));
    // Connecting: bad platform, bad URL, bad rate; the admin token needed.
    for body in [
        json!({"platform": "myspace", "secret": "s"}),
        json!({"platform": "generic", "secret": "s", "sync_url": "ftp://x"}),
        json!({"platform": "generic", "secret": "s", "rate_per_s": 0}),
        json!({"platform": "generic"}),
    ] {
        let r = app
            .send_retrying(app.json_call(
                Method::PUT,
                format!("/api/channels/{}", channel("x-")),
                body.clone(),
                true,
            ))
            .await;
        assert_eq!(r.status / 100, 4, "{body}: {:?}", r.body);
        assert_eq!(r.content_type, "application/problem+json");
    }
    let r = app
        .send_retrying(app.json_call(
            Method::PUT,
            format!("/api/channels/{name}"),
            json!({"platform": "generic"}),
            false,
        ))
        .await;
    assert_eq!(r.status, 401);
    let r = app
        .with(Method::GET, format!("/api/channels/{name}"), vec![])
        .await;
    assert_eq!(r.status, 401);
    // The good message goes through once, and again as a duplicate.
    let r = send(&app, &platform, &name, std::slice::from_ref(&good)).await;
    assert_eq!(r.body["results"][0]["result"], "accepted", "{:?}", r.body);
    assert_eq!(r.body["results"][0]["status"], "paid");
    let r = send(&app, &platform, &name, std::slice::from_ref(&good)).await;
    assert_eq!(r.body["results"][0]["result"], "duplicate", "{:?}", r.body);
    // Cancelled on the platform: the unit comes back.
    let r = send(
        &app,
        &platform,
        &name,
        &[msg("g2", "G1", Status::Refunded, &sku, 1)],
    )
    .await;
    assert_eq!(r.body["results"][0]["status"], "refunded", "{:?}", r.body);
    assert_eq!(app.counts(&sku).await, (5, 0, 0, 5));
    // A cancel before the order was ever seen: a late create takes nothing.
    let r = send(
        &app,
        &platform,
        &name,
        &[msg("g3", "G2", Status::Cancelled, &sku, 1)],
    )
    .await;
    assert_eq!(r.body["results"][0]["status"], "cancelled", "{:?}", r.body);
    let r = send(
        &app,
        &platform,
        &name,
        &[msg("g4", "G2", Status::Created, &sku, 1)],
    )
    .await;
    assert_eq!(r.body["results"][0]["result"], "ignored", "{:?}", r.body);
    assert_eq!(app.counts(&sku).await, (5, 0, 0, 5));
    disconnect(&app, &name).await;
}

/// The SKU's deduction mode decides what a platform order takes:
/// 拍下减库存 (at_order) sells at "created", 付款减库存 (at_payment) takes
/// nothing until "paid"; a cancel gives back what was taken.
pub async fn the_skus_deduction_mode_governs_platform_orders(app: App) {
    let at_order = unique("ded-order");
    let at_payment = unique("ded-pay");
    app.given_sku(&at_order, json!({"on_hand": 5, "deduction": "at_order"}))
        .await;
    app.given_sku(
        &at_payment,
        json!({"on_hand": 5, "deduction": "at_payment"}),
    )
    .await;
    let name = channel("ks-");
    let platform = FakePlatform::start(Kind::Kuaishou, "ks-app", &unique("s"), 0).await;
    connect(&app, &name, &platform).await;
    settle().await;
    let r = send(
        &app,
        &platform,
        &name,
        &[msg("k1", "K1", Status::Created, &at_order, 2)],
    )
    .await;
    assert_eq!(r.body["result"], 1, "{:?}", r.body);
    assert_eq!(app.counts(&at_order).await, (5, 0, 2, 3), "sold at created");
    let r = send(
        &app,
        &platform,
        &name,
        &[msg("k2", "K2", Status::Created, &at_payment, 2)],
    )
    .await;
    assert_eq!(r.body["result"], 1, "{:?}", r.body);
    assert_eq!(
        app.counts(&at_payment).await,
        (5, 0, 0, 5),
        "nothing at created"
    );
    send(
        &app,
        &platform,
        &name,
        &[msg("k3", "K2", Status::Paid, &at_payment, 2)],
    )
    .await;
    assert_eq!(
        app.counts(&at_payment).await,
        (5, 0, 2, 3),
        "sold when paid"
    );
    // Cancelled on the platform after it sold at created: back to stock.
    send(
        &app,
        &platform,
        &name,
        &[msg("k4", "K1", Status::Cancelled, &at_order, 2)],
    )
    .await;
    assert_eq!(app.counts(&at_order).await, (5, 0, 0, 5));
    disconnect(&app, &name).await;
}

/// However many SKUs change at once, pushes to one slow platform keep to
/// its rate (4 a second here: one a second from each of its 4 queues).
pub async fn pushes_keep_to_the_platforms_rate(app: App) {
    let name = channel("rate-");
    let platform = FakePlatform::start(Kind::Generic, "", &unique("s"), 0).await;
    // A slow platform, too: each push waits 200 ms for its answer.
    platform
        .delay_ms
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let mut body = platform.connect_body();
    body["rate_per_s"] = json!(4);
    let reply = app
        .send_retrying(app.json_call(Method::PUT, format!("/api/channels/{name}"), body, true))
        .await;
    assert!(matches!(reply.status, 200 | 201), "{:?}", reply.body);
    settle().await;
    let skus: Vec<String> = (0..12).map(|_| unique("rate")).collect();
    for (i, sku) in skus.iter().enumerate() {
        app.given_sku(sku, json!({"on_hand": 10 + i})).await;
    }
    for sku in &skus {
        list(&app, sku, &name).await;
    }
    for (i, sku) in skus.iter().enumerate() {
        platform.wait_shows(sku, 10 + i as u64, 60).await;
    }
    let mut at: Vec<u64> = platform
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| skus.contains(&c.sku))
        .map(|c| c.at_ms)
        .collect();
    at.sort();
    assert!(at.len() >= 12, "{at:?}");
    for (i, start) in at.iter().enumerate() {
        let within = at[i..].iter().take_while(|t| **t < start + 900).count();
        assert!(within <= 4, "{within} pushes within 0.9 s: {at:?}");
    }
    assert!(
        at[at.len() - 1] - at[0] >= 1_500,
        "12 pushes at 4 a second: {at:?}"
    );
    disconnect(&app, &name).await;
}
