//! Stop the server, start it again on the same persisted state: what was
//! acknowledged is still there, and time kept running for the holds. And a
//! SKU whose stored counts were tampered with while it was down refuses
//! changes (fails closed) and says so.

use crate::app::{now_ms, unique, App};
use crate::harness::Server;
use crate::live::{connect, next, Socket};
use edgestock::domain::checkpoint::{public_key, verify_export, Checkpoint, ExportReport};
use edgestock::domain::ledger::LedgerEntry;
use edgestock::domain::types::SkuId;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// Rewrites, in the stopped server's files, the stored record of `sku`:
/// its `reserved` count set to `reserved` (python3's sqlite3, as an
/// operator's slip or a disk fault would).
fn tamper(server: &Server, sku: &str, reserved: u64) {
    let script = r#"
import glob, json, sqlite3, sys
state, sku, reserved = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = 0
for path in glob.glob(state + "/**/*.sqlite", recursive=True):
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT body FROM sku WHERE id = 1").fetchall()
    except sqlite3.Error:
        continue
    for (body,) in rows:
        record = json.loads(body)
        if record["sku"] == sku:
            record["reserved"] = reserved
            db.execute("UPDATE sku SET body = ? WHERE id = 1", (json.dumps(record),))
            db.commit()
            done += 1
print(done)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&server.state_dir)
        .arg(sku)
        .arg(reserved.to_string())
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "the SKU's row was found and changed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rewrites, in the stopped server's files, ledger entry `seq` of `sku`:
/// its `qty` plus one, hashes left as they were (what someone with
/// database access would do to hide a unit).
fn tamper_ledger(server: &Server, sku: &str, seq: u64) {
    let script = r#"
import glob, json, sqlite3, sys
state, sku, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = 0
for path in glob.glob(state + "/**/*.sqlite", recursive=True):
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT body FROM sku WHERE id = 1").fetchall()
    except sqlite3.Error:
        continue
    if not rows or json.loads(rows[0][0])["sku"] != sku:
        continue
    (body,) = db.execute("SELECT body FROM ledger WHERE seq = ?", (seq,)).fetchone()
    entry = json.loads(body)
    entry["qty"] += 1
    db.execute("UPDATE ledger SET body = ? WHERE seq = ?", (json.dumps(entry), seq))
    db.commit()
    done += 1
print(done)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&server.state_dir)
        .arg(sku)
        .arg(seq.to_string())
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "the ledger row was found and changed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ledger's export checked as a merchant would, offline: the chain,
/// and the checkpoint against the published public key.
async fn verify_offline(app: &App, sku: &str) -> ExportReport {
    let key = app
        .bare(Method::GET, "/.well-known/edgestock-ledger-key".into())
        .await;
    assert_eq!(key.status, 200, "{:?}", key.body);
    assert_eq!(key.body["alg"], json!("Ed25519"));
    let public = public_key(key.body["public_key"].as_str().unwrap()).expect("a public key");
    let export = app
        .with(
            Method::GET,
            format!("/api/skus/{sku}/ledger/export?limit=1000"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(export.status, 200, "{:?}", export.body);
    let entries: Vec<LedgerEntry> = serde_json::from_value(export.body["entries"].clone()).unwrap();
    let checkpoint: Checkpoint = serde_json::from_value(export.body["checkpoint"].clone()).unwrap();
    assert_eq!(checkpoint.key_id, key.body["key_id"].as_str().unwrap());
    verify_export(&SkuId::parse(sku).unwrap(), &entries, &checkpoint, &public)
}

async fn verify_online(app: &App, sku: &str) -> Value {
    let reply = app
        .with(
            Method::GET,
            format!("/api/skus/{sku}/ledger/verify"),
            vec![app.bearer()],
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

/// A viewer on a SKU's feed, past its snapshot.
async fn viewer_of(app: &App, sku: &str) -> Socket {
    let mut viewer = connect(app, &format!("/api/skus/{sku}/live"), None)
        .await
        .expect("a viewer");
    next(&mut viewer, Duration::from_secs(5))
        .await
        .expect("snapshot");
    viewer
}

pub async fn state_survives_a_restart(app: App, server: &mut Server) {
    let kept = unique("durable");
    app.given_sku(&kept, json!({"on_hand": 20, "per_buyer_limit": 10}))
        .await;
    let sold = app.reserve(&kept, 4, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.commit(&kept, &sold).await;
    let key = unique("key");
    let live = app.reserve_keyed(&kept, 3, &app.viewer, Some(&key)).await;
    let live_id = live.body["id"].as_str().unwrap().to_owned();
    let lapsing = unique("lapsing");
    app.given_sku(&lapsing, json!({"on_hand": 5, "hold_seconds": 2}))
        .await;
    let short = app.reserve(&lapsing, 5, &app.viewer).await;
    let short_expiry = short.body["expires_at"].as_u64().unwrap();
    let kept_before = app.get_sku(&kept).await.body;
    let ledger_before = app.ledger(&kept).await;
    // A SKU with a live hold of 3, and a viewer on its feed (so the SKU
    // pushes to the feed).
    // A ledger to rewrite: five entries, exported (and so checkpointed)
    // and verified before the stop.
    let chained = unique("chained");
    app.given_sku(&chained, json!({"on_hand": 10})).await;
    let held = app.reserve(&chained, 2, &app.viewer).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.commit(&chained, &held).await;
    app.admin_post(&chained, "restock", json!({"qty": 5})).await;
    app.admin_post(
        &chained,
        "adjustments",
        json!({"delta": -1, "reason": "damaged"}),
    )
    .await;
    let before = verify_online(&app, &chained).await;
    assert_eq!(before["ok"], json!(true), "{before}");
    assert_eq!(before["checked"], json!(5));
    let offline = verify_offline(&app, &chained).await;
    assert!(offline.chain.ok && offline.checkpoint_ok, "{offline:?}");
    assert_eq!(offline.chain.head_seq, 5);
    let broken = unique("broken");
    app.given_sku(&broken, json!({"on_hand": 10})).await;
    assert_eq!(app.reserve(&broken, 3, &app.viewer).await.status, 201);
    let viewer = viewer_of(&app, &broken).await;
    drop(viewer);

    server.stop();
    tamper(server, &broken, 0);
    tamper_ledger(server, &chained, 3);
    // The short hold's time passes while nothing is running.
    let down_until = short_expiry + 500;
    if now_ms() < down_until {
        tokio::time::sleep(Duration::from_millis(down_until - now_ms())).await;
    }
    server.start().await;

    // Untouched SKU first: its pending expiry must be honoured by the alarm.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let looked_at = now_ms();
    let ledger = app.ledger(&lapsing).await;
    let expiry = ledger
        .iter()
        .find(|e| e["movement"] == json!("expire"))
        .expect("the lapsed hold expired");
    assert!(expiry["at_ms"].as_u64().unwrap() < looked_at);
    assert_eq!(app.counts(&lapsing).await, (5, 0, 0, 5));

    assert_eq!(app.get_sku(&kept).await.body, kept_before);
    assert_eq!(app.ledger(&kept).await, ledger_before);
    assert_eq!(
        app.get_hold(&kept, &sold).await.body["status"],
        json!("committed")
    );
    assert_eq!(
        app.get_hold(&kept, &live_id).await.body["status"],
        json!("held")
    );
    // The idempotency record survived: the retry answers as before.
    let retry = app.reserve_keyed(&kept, 3, &app.viewer, Some(&key)).await;
    assert_eq!(retry.body, live.body);
    // The purchase tally survived: 4 bought + 3 held + 4 > 10.
    app.reserve(&kept, 4, &app.viewer)
        .await
        .assert_problem(409, "buyer-limit-exceeded");
    assert_eq!(app.commit(&kept, &live_id).await.status, 200);
    assert_eq!(app.counts(&kept).await, (20, 0, 7, 13));

    // The rewritten ledger entry is named, online and offline, and the
    // checkpoint made before the stop no longer matches the chain.
    let after = verify_online(&app, &chained).await;
    assert_eq!(after["ok"], json!(false), "{after}");
    assert_eq!(after["first_bad"]["seq"], json!(3), "{after}");
    assert_eq!(after["checked"], json!(2));
    assert_eq!(after["checkpoint"]["seq"], json!(5));
    assert_eq!(after["checkpoint"]["on_chain"], json!(false));
    assert_eq!(after["checkpoint"]["signature_ok"], json!(true));
    let offline = verify_offline(&app, &chained).await;
    assert!(!offline.chain.ok, "{offline:?}");
    assert_eq!(offline.chain.first_bad.as_ref().unwrap().seq, 3);
    assert!(!offline.checkpoint_ok, "{offline:?}");
    // An untouched SKU still verifies.
    assert_eq!(verify_online(&app, &kept).await["ok"], json!(true));

    // The tampered SKU: reserved says 0 while a hold of 3 is live. It
    // refuses every change (a release would have taken reserved below
    // zero), tells its viewers, and its audit names the drift.
    let mut viewer = viewer_of(&app, &broken).await;
    let refused = app.reserve(&broken, 1, &app.viewer).await;
    refused.assert_problem(503, "sku-quarantined");
    app.admin_post(&broken, "restock", json!({"qty": 1}))
        .await
        .assert_problem(503, "sku-quarantined");
    let alert = loop {
        let message = next(&mut viewer, Duration::from_secs(5))
            .await
            .expect("an alert reaches the viewer");
        if message["type"] == json!("alert") {
            break message;
        }
    };
    assert_eq!(alert["kind"], json!("quarantined"), "{alert}");
    assert!(
        alert["detail"]
            .as_str()
            .unwrap()
            .contains("live holds sum 3"),
        "{alert}"
    );
    let audit = app.audit(&broken).await;
    assert_eq!(audit["ok"], json!(false), "{audit}");
    assert_eq!(audit["from_holds"]["reserved"], json!(3));
    assert_eq!(audit["record"]["reserved"], json!(0));
    assert!(!audit["quarantined"].as_array().unwrap().is_empty());
    // Reads still answer (with the numbers as stored), and nothing moved.
    assert_eq!(app.get_sku(&broken).await.body["on_hand"], json!(10));
    assert_eq!(app.ledger(&broken).await.len(), 2);
}
