//! The kill test: mixed load (reservations, commits, releases, expiries,
//! restocks, orders, payments, cancels) against bare workerd, SIGKILLed at
//! random moments and started again on the same state, several rounds.
//! Every request carries an Idempotency-Key; one that got no answer (the
//! process died under it) is sent again, same key, once the server is back,
//! as a client would. Then the audit: every acknowledged write present
//! exactly once, every retried key applied once, every SKU's counters equal
//! to what its ledger and holds say and to what the clients were told,
//! every order's lines matching its SKUs' holds, no hold past its expiry.
//!
//! `KILL_ROUNDS` (default 6) sets the number of kills.

use crate::app::{now_ms, unique, unique_address, App, Call, Reply};
use crate::harness::{Secrets, Workerd};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SKUS: usize = 3;
const ON_HAND: u64 = 400;
const HOLD_SECONDS: u64 = 3;

#[derive(Clone, Debug)]
enum Auth {
    Admin,
    Buyer(String),
    Payment,
}

/// One keyed request, rebuilt (fresh session, fresh signature) per attempt.
#[derive(Clone, Debug)]
struct Req {
    what: What,
    method: Method,
    path: String,
    body: Value,
    key: String,
    auth: Auth,
}

#[derive(Clone, Debug)]
enum What {
    Reserve { sku: usize, qty: u64 },
    Commit { sku: usize, hold: String },
    Release { sku: usize, hold: String },
    Restock { sku: usize, qty: u64 },
    Create,
    Pay { order: String },
    Cancel { order: String },
}

/// What the clients were told, by requests answered for good.
#[derive(Default, Debug)]
struct Told {
    /// Reservation key → (SKU, hold id, qty), for every 201.
    reserved: HashMap<String, (usize, String, u64)>,
    committed: Vec<(usize, String, u64)>,
    released: Vec<(usize, String)>,
    restocked: Vec<(usize, u64)>,
    /// Order id → lines (SKU index, hold id, qty), for every 201.
    orders: BTreeMap<String, Vec<(usize, String, u64)>>,
    paid: HashSet<String>,
    cancelled: HashSet<String>,
    /// The final answer to each order's pay or cancel (every request is
    /// answered in the end): a transition that took effect must have been
    /// answered as such, also when the answer came on a retry.
    answers: HashMap<(String, &'static str), u16>,
    answered: u64,
    /// Keys sent again after getting no answer, and answered then.
    retried: u64,
}

struct Load {
    app: App,
    skus: Vec<String>,
    told: Mutex<Told>,
    stop: AtomicBool,
}

fn build(app: &App, req: &Req) -> Call<'static> {
    let body = req.body.to_string();
    let mut headers = vec![
        ("Content-Type", "application/json".to_owned()),
        ("Idempotency-Key", req.key.clone()),
    ];
    headers.push(match &req.auth {
        Auth::Admin => app.bearer(),
        Auth::Buyer(buyer) => app.as_buyer(buyer),
        Auth::Payment => app.payment_signature(&body),
    });
    Call {
        method: req.method.clone(),
        path: req.path.clone(),
        body: Some(body),
        headers,
    }
}

/// An answer for good, or None: no response (the process died, or was
/// down), or a 5xx (ours say "retry with the same key").
async fn attempt(app: &App, req: &Req) -> Option<Reply> {
    match app.try_send(build(app, req)).await {
        Ok(reply) if reply.status < 500 => Some(reply),
        _ => None,
    }
}

impl Load {
    /// Records an answer; returns follow-up requests it makes possible.
    fn record(&self, req: &Req, reply: &Reply, retried: bool) {
        let mut told = self.told.lock().unwrap();
        told.answered += 1;
        told.retried += u64::from(retried);
        let ok = reply.status < 300;
        match &req.what {
            What::Pay { order } => {
                told.answers.insert((order.clone(), "paid"), reply.status);
            }
            What::Cancel { order } => {
                told.answers
                    .insert((order.clone(), "cancelled"), reply.status);
            }
            _ => {}
        }
        match &req.what {
            What::Reserve { sku, qty } if reply.status == 201 => {
                let hold = reply.body["id"].as_str().expect("hold id").to_owned();
                let before = told
                    .reserved
                    .insert(req.key.clone(), (*sku, hold.clone(), *qty));
                assert!(
                    before.is_none_or(|(_, h, _)| h == hold),
                    "key {} answered two holds",
                    req.key
                );
            }
            What::Commit { sku, hold } if ok => {
                let qty = reply.body["qty"].as_u64().expect("qty");
                told.committed.push((*sku, hold.clone(), qty));
            }
            What::Release { sku, hold } if ok => told.released.push((*sku, hold.clone())),
            What::Restock { sku, qty } if ok => told.restocked.push((*sku, *qty)),
            What::Create if reply.status == 201 => {
                let id = reply.body["id"].as_str().expect("order id").to_owned();
                let lines = reply.body["lines"]
                    .as_array()
                    .expect("lines")
                    .iter()
                    .map(|l| {
                        let sku = self
                            .skus
                            .iter()
                            .position(|s| l["sku"] == json!(s))
                            .expect("one of ours");
                        let hold = l["hold"].as_str().expect("hold").to_owned();
                        (sku, hold, l["qty"].as_u64().expect("qty"))
                    })
                    .collect();
                told.orders.insert(id, lines);
            }
            What::Pay { order } if ok => {
                told.paid.insert(order.clone());
            }
            What::Cancel { order } if ok => {
                told.cancelled.insert(order.clone());
            }
            _ => {}
        }
    }

    /// One client: a stream of requests; what gets no answer waits for the
    /// server to be back and is sent again with its key.
    async fn client(self: Arc<Self>, n: u64) -> Vec<Req> {
        let mut rng = crate::common::Rng(0x6b11 + n);
        // A network of its own, as each viewer has (the address limit).
        let app = App {
            address: unique_address(),
            ..self.app.clone()
        };
        let mut unanswered: Vec<Req> = Vec::new();
        let mut holds: Vec<(usize, String, String)> = Vec::new();
        let mut orders: Vec<(String, String)> = Vec::new();
        let mut i = 0;
        while !self.stop.load(Ordering::Relaxed) {
            i += 1;
            let key = format!("kill-{n}-{i}");
            let sku = rng.below(SKUS as u64) as usize;
            let buyer = format!("kb-{n}-{}", rng.below(1_000_000));
            let req = match rng.below(100) {
                0..=39 => {
                    let qty = 1 + rng.below(2);
                    Req {
                        what: What::Reserve { sku, qty },
                        method: Method::POST,
                        path: format!("/api/skus/{}/reservations", self.skus[sku]),
                        body: json!({"qty": qty, "buyer": buyer}),
                        key,
                        auth: Auth::Buyer(buyer),
                    }
                }
                40..=54 if !holds.is_empty() => {
                    let (sku, hold, buyer) =
                        holds.swap_remove(rng.below(holds.len() as u64) as usize);
                    if rng.chance(60) {
                        Req {
                            what: What::Commit {
                                sku,
                                hold: hold.clone(),
                            },
                            method: Method::POST,
                            path: format!(
                                "/api/skus/{}/reservations/{hold}/commit",
                                self.skus[sku]
                            ),
                            body: json!({}),
                            key,
                            auth: Auth::Admin,
                        }
                    } else {
                        Req {
                            what: What::Release {
                                sku,
                                hold: hold.clone(),
                            },
                            method: Method::DELETE,
                            path: format!("/api/skus/{}/reservations/{hold}", self.skus[sku]),
                            body: json!({}),
                            key,
                            auth: Auth::Buyer(buyer),
                        }
                    }
                }
                55..=62 => {
                    let qty = 1 + rng.below(3);
                    Req {
                        what: What::Restock { sku, qty },
                        method: Method::POST,
                        path: format!("/api/skus/{}/restock", self.skus[sku]),
                        body: json!({"qty": qty}),
                        key,
                        auth: Auth::Admin,
                    }
                }
                63..=84 => {
                    let other = (sku + 1 + rng.below(SKUS as u64 - 1) as usize) % SKUS;
                    let lines = json!([
                        {"sku": self.skus[sku], "qty": 1 + rng.below(2)},
                        {"sku": self.skus[other], "qty": 1},
                    ]);
                    Req {
                        what: What::Create,
                        method: Method::POST,
                        path: "/api/orders".into(),
                        body: json!({"buyer": buyer, "channel": "douyin", "lines": lines}),
                        key,
                        auth: Auth::Buyer(buyer),
                    }
                }
                _ if !orders.is_empty() => {
                    let (order, buyer) =
                        orders.swap_remove(rng.below(orders.len() as u64) as usize);
                    if rng.chance(65) {
                        Req {
                            what: What::Pay {
                                order: order.clone(),
                            },
                            method: Method::POST,
                            path: format!("/api/orders/{order}/pay"),
                            body: json!({"payment_ref": format!("pay-{order}")}),
                            key,
                            auth: Auth::Payment,
                        }
                    } else {
                        Req {
                            what: What::Cancel {
                                order: order.clone(),
                            },
                            method: Method::POST,
                            path: format!("/api/orders/{order}/cancel"),
                            body: json!({}),
                            key,
                            auth: Auth::Buyer(buyer),
                        }
                    }
                }
                _ => continue,
            };
            match attempt(&app, &req).await {
                Some(reply) => {
                    self.record(&req, &reply, false);
                    if let (What::Reserve { sku, .. }, 201) = (&req.what, reply.status) {
                        if let (Some(hold), Auth::Buyer(b)) = (reply.body["id"].as_str(), &req.auth)
                        {
                            holds.push((*sku, hold.to_owned(), b.clone()));
                        }
                    }
                    if let (What::Create, 201, Auth::Buyer(b)) =
                        (&req.what, reply.status, &req.auth)
                    {
                        if let Some(id) = reply.body["id"].as_str() {
                            orders.push((id.to_owned(), b.clone()));
                        }
                    }
                }
                None => {
                    unanswered.push(req);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // Earlier requests left without an answer go again now and then.
            if !unanswered.is_empty() && rng.chance(20) {
                let req = unanswered.remove(0);
                match attempt(&app, &req).await {
                    Some(reply) => self.record(&req, &reply, true),
                    None => unanswered.push(req),
                }
            }
        }
        unanswered
    }
}

pub async fn killed_at_random_it_loses_nothing_and_doubles_nothing(base: &App, secrets: &Secrets) {
    let rounds: usize = std::env::var("KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut server = Workerd::new(secrets, 1_000);
    server.start().await;
    let app = App {
        base: server.base(),
        address: unique_address(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        ..base.clone()
    };
    let skus: Vec<String> = (0..SKUS).map(|i| unique(&format!("kill{i}"))).collect();
    for sku in &skus {
        app.given_sku(
            sku,
            json!({"on_hand": ON_HAND, "hold_seconds": HOLD_SECONDS}),
        )
        .await;
    }
    let load = Arc::new(Load {
        app: app.clone(),
        skus: skus.clone(),
        told: Mutex::default(),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..6)
        .map(|n| tokio::spawn(load.clone().client(n)))
        .collect();
    let mut rng = crate::common::Rng(now_ms());
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(800 + rng.below(2_200))).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(200 + rng.below(500))).await;
        server.start().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop.store(true, Ordering::Relaxed);
    // Every request still unanswered is sent again until it is answered.
    let mut left: Vec<Req> = Vec::new();
    for client in clients {
        left.extend(client.await.expect("client task"));
    }
    for req in left {
        let mut tries = 0;
        loop {
            if let Some(reply) = attempt(&app, &req).await {
                load.record(&req, &reply, true);
                break;
            }
            tries += 1;
            assert!(tries < 50, "{} {} never answered", req.method, req.path);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Let every hold and unpaid order run out, by alarm.
    tokio::time::sleep(Duration::from_secs(HOLD_SECONDS + 3)).await;
    let told = std::mem::take(&mut *load.told.lock().unwrap());
    audit(&app, &skus, &told, rounds).await;
}

/// The admin's view of something, retrying briefly while an alarm catches up.
async fn admin_get(app: &App, path: &str) -> Reply {
    app.send(Call {
        method: Method::GET,
        path: path.to_owned(),
        body: None,
        headers: vec![app.bearer()],
    })
    .await
}

async fn audit(app: &App, skus: &[String], told: &Told, rounds: usize) {
    let mut lost = 0u64;
    let mut doubled = 0u64;
    let mut drift = 0u64;
    let mut problems: Vec<String> = Vec::new();
    // Orders: each settles (paid, or cancelled, or expired by its alarm),
    // and its lines' holds say the same.
    let mut sold_by_orders = [0u64; SKUS];
    for (order, lines) in &told.orders {
        let mut status = Value::Null;
        for _ in 0..40 {
            status = admin_get(app, &format!("/api/orders/{order}")).await.body["status"].clone();
            if status != json!("reserved") && status != json!("placing") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let want_hold = match status.as_str() {
            Some("paid") => "committed",
            // Failed: paying found a hold gone, and gave every line back
            // (a line sold in the same round is returned).
            Some("cancelled" | "expired" | "failed") => "released|expired|returned",
            other => {
                problems.push(format!("order {order} ended {other:?}"));
                continue;
            }
        };
        if told.paid.contains(order) && status != json!("paid") {
            lost += 1;
            problems.push(format!("order {order} was told paid, is {status}"));
        }
        if told.cancelled.contains(order) && status != json!("cancelled") {
            lost += 1;
            problems.push(format!("order {order} was told cancelled, is {status}"));
        }
        // The converse: a pay or cancel that took effect, answered otherwise
        // (a retried key answered 409 illegal-transition).
        if let Some(done) = status.as_str() {
            if let Some(answer) = told.answers.get(&(order.clone(), done)) {
                if *answer >= 300 {
                    lost += 1;
                    problems.push(format!(
                        "order {order} is {done}, but its request was answered {answer}"
                    ));
                }
            }
        }
        for (sku, hold, qty) in lines {
            let reply = admin_get(
                app,
                &format!("/api/skus/{}/reservations/{hold}", skus[*sku]),
            )
            .await;
            let got = reply.body["status"]
                .as_str()
                .unwrap_or("missing")
                .to_owned();
            if !want_hold.split('|').any(|w| w == got) {
                problems.push(format!(
                    "order {order} is {status} but its hold {hold} is {got}"
                ));
            }
            if status == json!("paid") {
                sold_by_orders[*sku] += qty;
            }
        }
    }
    for (i, sku) in skus.iter().enumerate() {
        let report = admin_get(app, &format!("/api/skus/{sku}/audit")).await.body;
        if report["ok"] != json!(true) {
            drift += 1;
            problems.push(format!("{sku} drifts: {}", report["drift"]));
        }
        let ledger = app.ledger(sku).await;
        let movements = |m: &'static str| ledger.iter().filter(move |e| e["movement"] == json!(m));
        // Storefront reservations (no order): one ledger entry per key told 201.
        let told_holds: Vec<&String> = told
            .reserved
            .values()
            .filter(|(s, _, _)| *s == i)
            .map(|(_, h, _)| h)
            .collect();
        let reserves: Vec<&Value> = movements("reserve")
            .filter(|e| e["order"].is_null())
            .collect();
        for hold in &told_holds {
            match reserves.iter().filter(|e| e["hold"] == json!(hold)).count() {
                1 => {}
                0 => {
                    lost += 1;
                    problems.push(format!(
                        "{sku}: hold {hold} was told reserved, is not in the ledger"
                    ));
                }
                n => {
                    doubled += 1;
                    problems.push(format!("{sku}: hold {hold} reserved {n} times"));
                }
            }
        }
        // A reserve nobody was told about is a retry that made a second hold.
        let extra = reserves.len().saturating_sub(told_holds.len()) as u64;
        if extra > 0 {
            doubled += extra;
            problems.push(format!("{sku}: {extra} reserve(s) no client was told of"));
        }
        let restocked: u64 = told
            .restocked
            .iter()
            .filter(|(s, _)| *s == i)
            .map(|(_, q)| q)
            .sum();
        let restock_entries: u64 = movements("restock")
            .map(|e| e["qty"].as_u64().unwrap_or(0))
            .sum();
        if restock_entries != restocked {
            problems.push(format!(
                "{sku}: restocks told {restocked}, ledger {restock_entries}"
            ));
            if restock_entries > restocked {
                doubled += 1;
            } else {
                lost += 1;
            }
        }
        // The counters against what the clients were told.
        let committed: u64 = told
            .committed
            .iter()
            .filter(|(s, _, _)| *s == i)
            .map(|(_, _, q)| q)
            .sum();
        let body = app.get_sku(sku).await.body;
        let counts = (&body["on_hand"], &body["reserved"], &body["sold"]);
        let want = (
            json!(ON_HAND + restocked),
            json!(0),
            json!(committed + sold_by_orders[i]),
        );
        if (counts.0.clone(), counts.1.clone(), counts.2.clone()) != want {
            problems.push(format!(
                "{sku}: (on_hand, reserved, sold) {counts:?}, told {want:?}"
            ));
        }
        for (s, hold) in told.released.iter().filter(|(s, _)| *s == i) {
            let got = admin_get(app, &format!("/api/skus/{}/reservations/{hold}", skus[*s])).await;
            if got.body["status"] != json!("released") {
                lost += 1;
                problems.push(format!(
                    "{sku}: hold {hold} was told released, is {}",
                    got.body["status"]
                ));
            }
        }
        // No hold outlives its expiry (the alarm returned them all).
        let holds = admin_get(app, &format!("/api/skus/{sku}/holds")).await.body;
        let late = holds["holds"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter(|h| {
                        h["expires_at"]
                            .as_u64()
                            .is_some_and(|at| at + 2_000 < now_ms())
                    })
                    .count()
            })
            .unwrap_or(0);
        if late > 0 {
            problems.push(format!("{sku}: {late} hold(s) live past their expiry"));
        }
    }
    println!(
        "kill test: {rounds} kills, {} acknowledged writes ({} reservations, {} orders, {} paid), \
         {} answered only on a retry after a kill; lost {lost}, doubled {doubled}, drift {drift}",
        told.answered,
        told.reserved.len(),
        told.orders.len(),
        told.paid.len(),
        told.retried,
    );
    assert!(
        told.retried > 0,
        "no request was cut off by a kill: the test proved nothing"
    );
    assert!(
        told.reserved.len() > 50 && !told.orders.is_empty(),
        "too little load: {told:?}"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
