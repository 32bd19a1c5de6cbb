#!/usr/bin/env bash
# A hot SKU's reservations on bare workerd (no wrangler dev proxy), driven by
# wrk: every request a one-unit hold by another viewer (its own buyer
# session). Compares this checkout with earlier commits, served side by side
# and measured in interleaved rounds:
#
#   bash bench/run.sh                 # this checkout only
#   bash bench/run.sh ecfd874         # and the commit before buyer sessions
#
# ROUNDS (3), DURATION (10s), CONNECTIONS (32) and THREADS (2) tune it. Each
# round uses a fresh SKU; after each, the SKU's counters are checked: nothing
# oversold, on_hand = available + reserved + sold, and every 201 a unit held.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
out=$root/target/bench
mkdir -p "$out"
workerd=$root/node_modules/@cloudflare/workerd-linux-64/bin/workerd
ratelimit=$root/node_modules/miniflare/dist/src/workers/ratelimit/ratelimit.worker.js
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
[ -x "$workerd" ] || { echo "bench: workerd is missing (npm ci)" >&2; exit 1; }

# Builds `ref` (or this checkout: "current") into $out/<name>/build.
build() {
  local name=$1 ref=$2
  if [ "$ref" = current ]; then
    bash scripts/build.sh >"$out/$name.build.log" 2>&1
    rm -rf "${out:?}/$name" && mkdir -p "$out/$name" && cp -r build "$out/$name/build"
  else
    local src=$out/src-$name
    if [ ! -d "$src" ]; then git worktree add --detach "$src" "$ref" >/dev/null; fi
    ln -sfn "$root/node_modules" "$src/node_modules"
    (cd "$src" && CARGO_TARGET_DIR=$out/target-$name bash scripts/build.sh) >"$out/$name.build.log" 2>&1
    rm -rf "${out:?}/$name" && mkdir -p "$out/$name" && cp -r "$src/build" "$out/$name/build"
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Serves $out/<name>/build on a fresh state directory; prints the port.
serve() {
  local name=$1 port risk_binding="" risk_namespace=""
  port=$(free_port)
  if grep -q RiskObject "$out/$name/build/index.js"; then
    risk_binding='(name = "RISK", durableObjectNamespace = "RiskObject"),'
    risk_namespace='(className = "RiskObject", uniqueKey = "edgestock-risk", enableSql = true),'
  fi
  rm -rf "$out/$name/state" && mkdir -p "$out/$name/state"
  # capnp embeds are paths relative to the config file.
  cp "$ratelimit" "$out/$name/ratelimit.worker.js"
  sed -e "s|@STATE@|$out/$name/state|" -e "s|@PORT@|$port|" -e "s|@BUILD@|build|" \
      -e "s|@RATELIMIT@|ratelimit.worker.js|" -e "s|@RISK_BINDING@|$risk_binding|" \
      -e "s|@RISK_NAMESPACE@|$risk_namespace|" -e "s|@HOLD_CAP@|${HOLD_CAP:-20}|" bench/workerd.capnp.in >"$out/$name/config.capnp"
  "$workerd" serve --experimental "$out/$name/config.capnp" >"$out/$name/workerd.log" 2>&1 &
  echo $! >"$out/$name/pid"
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && { echo "$port"; return; }
    sleep 0.1
  done
  echo "bench: $name did not start; see $out/$name/workerd.log" >&2
  exit 1
}

stop_all() { for p in "$out"/*/pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; rm -f "$p"; done; }
trap stop_all EXIT

node bench/tokens.mjs $((40000 * rounds)) "$out/tokens.lua"

names=(current)
refs=(current)
for ref in "$@"; do names+=("at-$ref"); refs+=("$ref"); done
declare -A ports mode
for i in "${!names[@]}"; do
  echo "bench: building ${refs[$i]}" >&2
  build "${names[$i]}" "${refs[$i]}"
  ports[${names[$i]}]=$(serve "${names[$i]}")
  # Before buyer sessions, a reservation named its buyer in the body.
  if grep -q BUYER_SESSION_SECRET "$out/${names[$i]}/build/index.js" 2>/dev/null \
     || grep -q "BUYER_SESSION_SECRET" "$out/${names[$i]}/build/index_bg.wasm"; then
    mode[${names[$i]}]=session
  else
    mode[${names[$i]}]=body
  fi
done

results=$out/results.txt
rm -f "$out"/*.wrk.err
: >"$results"
for round in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    port=${ports[$name]}
    sku="hot-$round-$RANDOM"
    curl -sf -X PUT "http://127.0.0.1:$port/api/skus/$sku" -H "Authorization: Bearer bench-admin-token" \
      -H "Content-Type: application/json" -d '{"on_hand": 1000000000}' >/dev/null
    line=$(MODE=${mode[$name]} SKU=$sku TOKENS=$out/tokens.lua ROUND=$round PER_ROUND=40000 \
      wrk -t"$threads" -c"$connections" -d"$duration" -s bench/reserve.lua "http://127.0.0.1:$port" 2>>"$out/$name.wrk.err" | grep '^RESULT')
    counts=$(curl -sf "http://127.0.0.1:$port/api/skus/$sku")
    ok=$(python3 - "$line" "$counts" "$connections" <<'PY'
import json, re, sys
line, counts, conns = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
got = dict(re.findall(r"(\w+)=([\d.]+)", line))
held = int(got["requests"]) - int(got["non201"])
on_hand, reserved, sold, available = (counts[k] for k in ("on_hand", "reserved", "sold", "available"))
assert on_hand == available + reserved + sold, counts
assert min(reserved, sold, available) >= 0, counts
# Every 201 is a unit held; requests cut off by wrk's clock may add a few.
assert held <= reserved <= held + conns, (held, counts)
print("ok")
PY
)
    echo "$name round=$round $line check=$ok" | tee -a "$results"
  done
done

python3 - "$results" "${names[@]}" <<'PY'
import re, statistics, sys
path, names = sys.argv[1], sys.argv[2:]
rows = {n: [] for n in names}
for line in open(path):
    name = line.split()[0]
    got = dict(re.findall(r"(\w+)=([\d.]+)", line))
    rows[name].append(got)
print()
print(f"{'version':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-201':>10}")
med = {}
for n in names:
    r = rows[n]
    rps = statistics.median(float(x["rps"]) for x in r)
    p50 = statistics.median(float(x["p50_ms"]) for x in r)
    p99 = statistics.median(float(x["p99_ms"]) for x in r)
    bad = sum(int(x["non201"]) for x in r)
    med[n] = rps
    print(f"{n:<16}{rps:>10.0f}{p50:>10.2f}{p99:>10.2f}{bad:>10}")
for n in names[1:]:
    print(f"current / {n}: {med['current'] / med[n]:.2f}x requests per second")
PY
