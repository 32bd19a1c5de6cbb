#!/usr/bin/env bash
# Fails when the Worker's Wasm grows past its budget (gzip -9 bytes, as
# Cloudflare counts the compressed upload). The budget is the size measured
# when it was set plus a little headroom: raise it on purpose, with the
# reason in docs/benchmarks.md, never by accident.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${BUNDLE_BUDGET_GZIP:-930000}
wasm=build/index_bg.wasm
[ -f "$wasm" ] || { echo "bundle: $wasm is missing (scripts/build.sh)" >&2; exit 1; }
raw=$(stat -c %s "$wasm")
gz=$(gzip -9c "$wasm" | wc -c)
echo "bundle: $wasm $raw bytes, $gz gzip (budget $budget)"
if [ "$gz" -gt "$budget" ]; then
  echo "bundle: over budget by $((gz - budget)) bytes; find the weight with twiggy (docs/benchmarks.md)" >&2
  exit 1
fi
