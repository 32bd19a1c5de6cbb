#!/usr/bin/env bash
# The build wrangler runs (wrangler.toml [build]): worker-build with the
# locally installed wasm-bindgen, wasm-opt (npm binaryen) and esbuild (npm),
# so nothing is downloaded at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
# The API tests build once, then start wrangler dev on the prebuilt worker.
if [ -n "${EDGESTOCK_PREBUILT:-}" ] && [ -f build/index.js ]; then
  exit 0
fi
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen)}"
export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
worker-build --release
# worker-build's own wasm-opt pass (-O) runs before wasm-bindgen has its say;
# a -Oz pass over the final module takes about 10 % more off the gzipped
# bundle (docs/benchmarks.md). Its feature flags are what the module uses.
"$WASM_OPT_BIN" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
  build/index_bg.wasm -o build/index_bg.wasm
