//! The fake selling platform the API tests use, by hand: it connects
//! itself to an edgestock worker as a channel, prints every stock push it
//! receives (with whether its signature checked out), and sends signed
//! order messages when asked.
//!
//! ```text
//! cargo run --example fake_platform -- --edgestock http://127.0.0.1:8787 \
//!     --token "$ADMIN_TOKEN" --platform douyin --channel douyin-demo [--port 9100]
//! ```
//!
//! Then type commands on stdin:
//!
//! ```text
//! list <sku>                        list the SKU on the channel (shared pool)
//! order <id> <status> <sku> <qty>   send one message (status: created, paid,
//!                                   cancelled, refunded); again = a resend
//! burst <n> <sku>                   n orders of 1, created then paid, at once
//! fail <n>                          fail the next n stock pushes
//! slow <ms>                         answer stock pushes after ms
//! shows <sku>                       the number the platform shows
//! ```

#[path = "../tests/platform/mod.rs"]
mod platform;

use platform::{FakePlatform, Kind, OrderMessage, Status};
use std::io::BufRead;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    p: &FakePlatform,
    channel: &str,
    batch: &[OrderMessage],
) -> String {
    let (path, headers, content_type, body) = p.request(channel, batch);
    let mut request = client
        .post(format!("{base}{path}"))
        .header("Content-Type", content_type)
        .body(body);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    match request.send().await {
        Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = arg(&args, "--edgestock").unwrap_or_else(|| "http://127.0.0.1:8787".into());
    let token = arg(&args, "--token").expect("--token <ADMIN_TOKEN>");
    let kind = Kind::parse(&arg(&args, "--platform").unwrap_or_else(|| "generic".into()))
        .expect("--platform generic|douyin|kuaishou|taobao|wechat");
    let channel = arg(&args, "--channel").unwrap_or_else(|| kind.name().to_owned());
    let port: u16 = arg(&args, "--port").map_or(0, |p| p.parse().expect("--port"));
    let secret = format!("fake-{}", std::process::id());
    let p = Arc::new(FakePlatform::start(kind, "fake-app", &secret, port).await);
    let client = reqwest::Client::new();
    let connected = client
        .put(format!("{base}/api/channels/{channel}"))
        .bearer_auth(&token)
        .json(&p.connect_body())
        .send()
        .await
        .expect("edgestock answers");
    println!(
        "{} platform on port {}; channel {channel}: {}",
        kind.name(),
        p.port,
        connected.status()
    );
    // Print pushes as they arrive.
    let watched = p.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let calls = watched.calls.lock().unwrap().clone();
            for c in &calls[seen..] {
                println!(
                    "push: {} = {} ({}) signed={} accepted={}",
                    c.sku, c.quantity, c.idempotent_id, c.signed, c.accepted
                );
            }
            seen = calls.len();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["list", sku] => {
                let r = client
                    .put(format!("{base}/api/skus/{sku}/channels/{channel}"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({}))
                    .send()
                    .await;
                println!("{:?}", r.map(|r| r.status()));
            }
            ["order", id, status, sku, qty] => {
                let status = match *status {
                    "created" => Status::Created,
                    "paid" => Status::Paid,
                    "cancelled" => Status::Cancelled,
                    _ => Status::Refunded,
                };
                let m = OrderMessage {
                    id: format!("{id}-{status:?}"),
                    order: id.to_string(),
                    status,
                    buyer: format!("buyer-{id}"),
                    lines: vec![(sku.to_string(), qty.parse().unwrap_or(1))],
                };
                println!("{}", send(&client, &base, &p, &channel, &[m]).await);
            }
            ["burst", n, sku] => {
                let n: u32 = n.parse().unwrap_or(10);
                let runs = (0..n).map(|i| {
                    let (client, base, p, channel, sku) = (
                        client.clone(),
                        base.clone(),
                        p.clone(),
                        channel.clone(),
                        sku.to_string(),
                    );
                    async move {
                        let order = format!("B{}-{i}", std::process::id());
                        for status in [Status::Created, Status::Paid] {
                            let m = OrderMessage {
                                id: format!("{order}-{status:?}"),
                                order: order.clone(),
                                status,
                                buyer: format!("buyer-{i}"),
                                lines: vec![(sku.clone(), 1)],
                            };
                            send(&client, &base, &p, &channel, &[m]).await;
                        }
                    }
                });
                futures::future::join_all(runs).await;
                println!("burst of {n} sent");
            }
            ["fail", n] => p.fail_next.store(n.parse().unwrap_or(1), Ordering::SeqCst),
            ["slow", ms] => p.delay_ms.store(ms.parse().unwrap_or(0), Ordering::SeqCst),
            ["shows", sku] => println!("{sku}: {:?}", p.shows(sku)),
            _ => println!("? list | order | burst | fail | slow | shows"),
        }
    }
}
