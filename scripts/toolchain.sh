#!/usr/bin/env bash
# Installs what building and serving edgestock needs, each only if missing:
# the wasm32 target, worker-build, wasm-bindgen-cli at the exact version in
# Cargo.lock, and the npm packages (wrangler with workerd, binaryen's
# wasm-opt). Safe to run again; fast when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKER_BUILD_VERSION=0.8.7

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

if ! worker-build --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
  cargo install worker-build --version "$WORKER_BUILD_VERSION"
fi

# wasm-bindgen's CLI must match the library exactly. No --locked: the index
# here lacks some of the newest transitive versions the upstream lock names.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q " $bindgen_version\$"; then
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi

if [ ! -x node_modules/.bin/wrangler ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

# A newcomer's dev secrets: generated once, never committed (.gitignore).
# Each missing line is added, so an older .dev.vars gains the newer ones.
# DEV_SESSIONS=1 turns on the dev-only session and payment routes; it is
# never in wrangler.toml, so a deployment does not have them.
touch .dev.vars
for name in ADMIN_TOKEN BUYER_SESSION_SECRET PAYMENT_WEBHOOK_SECRET CARRIER_WEBHOOK_SECRET; do
  if ! grep -q "^$name=" .dev.vars; then
    printf '%s=%s\n' "$name" "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" >> .dev.vars
    echo "toolchain: added a fresh $name to .dev.vars (see .dev.vars.example)"
  fi
done
# The ledger's checkpoint key: an Ed25519 seed, 32 random bytes in hex.
if ! grep -q "^LEDGER_SIGNING_KEY=" .dev.vars; then
  printf 'LEDGER_SIGNING_KEY=%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >> .dev.vars
  echo "toolchain: added a fresh LEDGER_SIGNING_KEY to .dev.vars (see .dev.vars.example)"
fi
grep -q '^DEV_SESSIONS=' .dev.vars || echo 'DEV_SESSIONS=1' >> .dev.vars
