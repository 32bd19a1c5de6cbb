#!/usr/bin/env bash
# The whole check, as CI runs it: system packages and toolchain, formatting
# and lints, the deployable bundle, then every test (core tables, the
# simulations, the API and WebSocket tests against wrangler dev, and the
# pages in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh
bash scripts/toolchain.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings

# Builds the worker and the bundle Cloudflare would receive.
npx wrangler deploy --dry-run --outdir target/deploy-dry-run
# ... and it stays within its size budget.
bash scripts/bundle-budget.sh

# The API tests reuse the worker just built.
EDGESTOCK_PREBUILT=1 cargo test
