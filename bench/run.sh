#!/usr/bin/env bash
# The hot-SKU benchmark, one command:   bash bench/run.sh
#
# Builds the worker and serves three targets on bare workerd (the binary
# the wrangler npm package ships; no dev proxy, which is itself the
# bottleneck), each on a fresh state directory:
#   edgestock  this checkout, configured like wrangler.toml (bench/workerd.capnp.in),
#              with request merging and the SKU read cache off
#              (MERGE_WINDOW_MS=0, SKU_READ_CACHE_MS=0): every request
#              reaches the SKU object on its own
#   merged     as shipped: merging on (a 1 ms window) and reads cached for
#              500 ms per isolate
#   js         a plain JavaScript Worker + Durable Object doing the same
#              reservation with SQLite (bench/baseline/worker.js): the
#              baseline a team would write first
#   hop        the same Worker forwarding to an object that answers at once:
#              the runtime's ceiling for one hop per request
# and drives them with wrk, interleaved, ROUNDS times: one-unit reservations
# of one hot SKU by a new viewer each at 32 and at 256 connections (and,
# merged only, at 256 on the SKU split into 8 stock buckets), GET of that
# SKU, and (edgestock only) orders over 3 SKUs. After every reservation
# run the SKU's counters are checked: nothing oversold, on_hand = available
# + reserved + sold, and every 201 a unit held. It prints one table with
# medians and the ratios of edgestock and merged to js and to hop, and the
# bundle.
#
# ROUNDS (3), DURATION (10s), THREADS (2) and SCENARIOS (all) tune it;
# SKU_GROUP_COMMIT=0 turns group commit off in the edgestock servers.
# Results go to target/bench/ (results.txt, table.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
threads=${THREADS:-2}
out=$root/target/bench
mkdir -p "$out"
workerd=$root/node_modules/@cloudflare/workerd-linux-64/bin/workerd
ratelimit=$root/node_modules/miniflare/dist/src/workers/ratelimit/ratelimit.worker.js
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
[ -x "$workerd" ] || { echo "bench: workerd is missing (npm ci)" >&2; exit 1; }

source bench/serve.sh
trap stop_all EXIT

echo "bench: building" >&2
bash scripts/build.sh >"$out/build.log" 2>&1
per_slice=20000
node bench/tokens.mjs $((per_slice * 4 * rounds)) "$out/tokens.lua"
declare -A ports
ports[edgestock]=$(serve_edgestock edgestock 0)
ports[merged]=$(serve_edgestock merged 1 500)
ports[js]=$(serve_baseline js 0)
ports[hop]=$(serve_baseline hop 1)

put_sku() {
  curl -sf -X PUT "http://127.0.0.1:$1/api/skus/$2" -H "Authorization: Bearer bench-admin-token" \
    -H "Content-Type: application/json" -d '{"on_hand": 1000000000, "max_per_hold": 5}' >/dev/null
}

# One wrk run; prints its RESULT line.
drive() {
  local target=$1 kind=$2 conns=$3 slice=$4 sku=$5 skus=${6:-}
  KIND=$kind SKU=$sku SKUS=$skus SLICE=$slice PER_SLICE=$per_slice TOKENS=$out/tokens.lua \
    wrk -t"$threads" -c"$conns" -d"$duration" --timeout 10s -s bench/load.lua \
    "http://127.0.0.1:${ports[$target]}" 2>>"$out/$target.wrk.err" | grep '^RESULT'
}

# The reservation answers against the counters.
check() {
  local port=$1 sku=$2 line=$3 conns=$4
  python3 - "$line" "$(curl -sf -H 'Cache-Control: no-cache' "http://127.0.0.1:$port/api/skus/$sku")" "$conns" <<'PY'
import json, re, sys
line, counts, conns = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
got = dict(re.findall(r"(\w+)=([\d.]+)", line))
held = int(got["requests"]) - int(got["refused"])
on_hand, reserved, sold, available = (counts[k] for k in ("on_hand", "reserved", "sold", "available"))
assert on_hand == available + reserved + sold, counts
assert min(reserved, sold, available) >= 0, counts
# Every 201 is a unit held; requests cut off by wrk's clock may add a few.
assert held <= reserved <= held + conns, (held, counts)
print("ok")
PY
}

results=$out/results.txt
rm -f "$out"/*.wrk.err
: >"$results"
for round in $(seq "$rounds"); do
  for scenario in ${SCENARIOS:-reserve32 reserve256 split256 get order3}; do
    for target in edgestock merged js hop; do
      port=${ports[$target]}
      sku="hot-$round-$scenario-$RANDOM"
      line="" checked=-
      case $scenario in
        reserve32|reserve256)
          conns=${scenario#reserve}
          slice=$(( (round - 1) * 4 + (conns == 32 ? 0 : 1) ))
          [ "$target" = hop ] || put_sku "$port" "$sku"
          line=$(drive "$target" reserve "$conns" "$slice" "$sku")
          [ "$target" = hop ] || checked=$(check "$port" "$sku" "$line" "$conns")
          ;;
        split256)
          # The same SKU split into 8 stock buckets first (merged only).
          [ "$target" = merged ] || continue
          put_sku "$port" "$sku"
          curl -sf -X POST "http://127.0.0.1:$port/api/skus/$sku/split" \
            -H "Authorization: Bearer bench-admin-token" -H "Content-Type: application/json" \
            -d '{"buckets": 8}' >/dev/null
          line=$(drive "$target" reserve 256 $(( (round - 1) * 4 + 3 )) "$sku")
          checked=$(check "$port" "$sku" "$line" 256)
          ;;
        get)
          [ "$target" = hop ] || put_sku "$port" "$sku"
          line=$(drive "$target" get 32 0 "$sku")
          ;;
        order3)
          [ "$target" = edgestock ] || [ "$target" = merged ] || continue
          skus="$sku-a,$sku-b,$sku-c"
          for s in ${skus//,/ }; do put_sku "$port" "$s"; done
          line=$(drive "$target" order 32 $(( (round - 1) * 4 + 2 )) "$sku" "$skus")
          ;;
      esac
      echo "$scenario $target round=$round $line check=$checked" | tee -a "$results"
    done
  done
done

wasm=build/index_bg.wasm
python3 - "$results" "$wasm" "$(stat -c %s "$wasm")" "$(gzip -9c "$wasm" | wc -c)" \
  "$(cat build/index.js | wc -c)" <<'PY' | tee "$out/table.txt"
import re, statistics, sys
path, wasm, raw, gz, js = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = {}
for line in open(path):
    scenario, target = line.split()[:2]
    got = dict(re.findall(r"(\w+)=([\d.]+)", line))
    if "rps" in got:
        runs.setdefault((scenario, target), []).append(got)
med = lambda rows, k: statistics.median(float(r[k]) for r in rows)
print()
print(f"{'scenario':<12}{'target':<11}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'/js':>7}{'/hop':>7}")
for scenario in ["reserve32", "reserve256", "split256", "get", "order3"]:
    for target in ["edgestock", "merged", "js", "hop"]:
        rows = runs.get((scenario, target))
        if not rows:
            continue
        rps = med(rows, "rps")
        errors = sum(int(r["refused"]) + int(r["socket_errors"]) for r in rows)
        # A split SKU is compared with the others' unsplit one.
        base = "reserve256" if scenario == "split256" else scenario
        ratio = lambda other: (f"{rps / med(runs[(base, other)], 'rps'):.2f}x"
                               if target in ("edgestock", "merged") and (base, other) in runs else "")
        print(f"{scenario:<12}{target:<11}{rps:>9.0f}{med(rows, 'p50_ms'):>9.2f}{med(rows, 'p99_ms'):>9.2f}"
              f"{errors:>8}{ratio('js'):>7}{ratio('hop'):>7}")
print(f"\nbundle: {wasm} {raw / 1024:.0f} KB raw, {gz / 1024:.0f} KB gzip; index.js {js / 1024:.0f} KB")
PY
