//! The pages in real headless Chromium (Debian's, at /usr/bin/chromium or
//! $CHROMIUM_BIN), driven by playwright-core from tests/browser/. Screenshots
//! land in target/screenshots/ for a person to look at.

use crate::app::App;
use std::process::Command;

pub async fn the_storefront_and_console_work_in_chromium(app: App) {
    let root = env!("CARGO_MANIFEST_DIR");
    let shots = format!("{root}/target/screenshots");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(format!("{root}/tests/browser/storefront.mjs"))
            .args([&app.base, &app.token, &shots])
            .current_dir(root)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("storefront and console ok"), "{stdout}");
}

/// The storefront kit embedded with one script tag in a shop on another
/// origin (served by tests/browser/kit.mjs, allowed by ALLOWED_ORIGINS):
/// its badge counts down live while another client buys, and its button
/// places an order with the session the shop's backend hands out.
pub async fn the_kit_works_on_a_shop_of_another_origin(app: App) {
    let root = env!("CARGO_MANIFEST_DIR");
    let shots = format!("{root}/target/screenshots");
    let port = *crate::harness::SHOP_PORT
        .get()
        .expect("the server chose the shop's port");
    let session = app.session(&app.viewer);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(format!("{root}/tests/browser/kit.mjs"))
            .args([&app.base, &app.token, &port.to_string(), &session, &shots])
            .current_dir(root)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kit test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("kit on another origin ok"), "{stdout}");
}

/// The console's orders page with a thousand orders: find, page, export,
/// ship from a file, cancel a selection, switch an automation
/// (tests/browser/orders.mjs).
pub async fn the_orders_page_fulfils_a_session_in_chromium(app: App) {
    let root = env!("CARGO_MANIFEST_DIR");
    let shots = format!("{root}/target/screenshots");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(format!("{root}/tests/browser/orders.mjs"))
            .args([&app.base, &app.token, &shots])
            .current_dir(root)
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "orders page failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("orders page ok"), "{stdout}");
}
