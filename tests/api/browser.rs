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
