#!/usr/bin/env bash
# Fan-out on bare workerd: VIEWERS (2000) real WebSockets on one room's
# feed, CHANGES (5) stock changes; prints when the last viewer has each.
# ROOM_FEED_SHARDS (4) feed objects share the room's viewers.
#   bash bench/fanout.sh            VIEWERS=5000 ROOM_FEED_SHARDS=1 bash bench/fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/target/bench
mkdir -p "$out"
workerd=$PWD/node_modules/@cloudflare/workerd-linux-64/bin/workerd
ratelimit=$PWD/node_modules/miniflare/dist/src/workers/ratelimit/ratelimit.worker.js
source bench/serve.sh
trap stop_all EXIT
bash scripts/build.sh >"$out/build.log" 2>&1
port=$(serve_edgestock fanout 1)
node bench/fanout.mjs "http://127.0.0.1:$port" "${VIEWERS:-2000}" "${CHANGES:-5}"
