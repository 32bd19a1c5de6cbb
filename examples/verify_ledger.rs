//! Checks a SKU's ledger export offline, with no access to the server:
//!
//! ```sh
//! KEY=$(curl -s localhost:8787/.well-known/edgestock-ledger-key | sed -n 's/.*"public_key":"\([0-9a-f]*\)".*/\1/p')
//! curl -s localhost:8787/api/skus/tee-red-m/ledger/export?limit=1000 -H "Authorization: Bearer $TOKEN" > page1.json
//! cargo run --example verify_ledger -- "$KEY" page1.json [page2.json …]
//! ```
//!
//! Pages (follow `next_after`) are joined by sequence number; the last
//! page's checkpoint is checked. Exit status 0 when the chain holds and
//! passes through the signed checkpoint, 1 when not (the first bad entry
//! is named), 2 for unusable input.

use edgestock::domain::checkpoint::{public_key, verify_export, Checkpoint};
use edgestock::domain::ledger::LedgerEntry;
use edgestock::domain::types::SkuId;
use std::collections::BTreeMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(why) => {
            eprintln!("verify_ledger: {why}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: verify_ledger <public key hex> <export.json>…";
    let key = args.next().ok_or(usage)?;
    let public = public_key(&key).ok_or("the public key is not 64 hex digits of an Ed25519 key")?;
    let mut entries: BTreeMap<u64, LedgerEntry> = BTreeMap::new();
    let mut last: Option<(SkuId, Checkpoint)> = None;
    let files: Vec<String> = args.collect();
    if files.is_empty() {
        return Err(usage.into());
    }
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
        let page: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
        let sku = SkuId::parse(page["sku"].as_str().unwrap_or(""))
            .map_err(|e| format!("{file}: sku: {}", e.0))?;
        let page_entries: Vec<LedgerEntry> = serde_json::from_value(page["entries"].clone())
            .map_err(|e| format!("{file}: entries: {e}"))?;
        for entry in page_entries {
            entries.insert(entry.seq, entry);
        }
        if let Ok(checkpoint) = serde_json::from_value::<Checkpoint>(page["checkpoint"].clone()) {
            last = Some((sku, checkpoint));
        }
    }
    let (sku, checkpoint) = last.ok_or("no page has a checkpoint (is LEDGER_SIGNING_KEY set?)")?;
    let entries: Vec<LedgerEntry> = entries.into_values().collect();
    let report = verify_export(&sku, &entries, &checkpoint, &public);
    println!(
        "{sku}: {} entries checked, head {} {}",
        report.chain.checked, report.chain.head_seq, report.chain.head_hash
    );
    if let Some(bad) = &report.chain.first_bad {
        println!("BROKEN at entry {}: {}", bad.seq, bad.reason);
    }
    println!(
        "{}: {}",
        if report.checkpoint_ok {
            "checkpoint ok"
        } else {
            "CHECKPOINT FAILS"
        },
        report.detail
    );
    Ok(report.chain.ok && report.checkpoint_ok)
}
