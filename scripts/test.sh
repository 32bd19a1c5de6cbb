#!/usr/bin/env bash
# The whole check, as CI runs it: toolchain, formatting and lints, the
# deployable bundle, then every test (core tables, the simulation, and the
# API tests against wrangler dev).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/toolchain.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings

# Builds the worker and the bundle Cloudflare would receive.
npx wrangler deploy --dry-run --outdir target/deploy-dry-run

# The API tests reuse the worker just built.
EDGESTOCK_PREBUILT=1 cargo test
