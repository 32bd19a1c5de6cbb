# Serving helpers for bench/run.sh and bench/fanout.sh (sourced): each
# target on its own bare workerd and fresh state directory under $out.
# Expects $out, $workerd and $ratelimit.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_up() {
  local name=$1 port=$2
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/api/health" >/dev/null && return
    sleep 0.1
  done
  echo "bench: $name did not start; see $out/$name/workerd.log" >&2
  exit 1
}

# edgestock: the build, with wrangler.toml's bindings; $2 is the merge
# window in ms (0: off), $3 the SKU read cache's in ms (default 0: off).
serve_edgestock() {
  local name=$1 merge=$2 cache=${3:-0} dir=$out/$1 port
  port=$(free_port)
  rm -rf "$dir" && mkdir -p "$dir/state"
  cp -r build "$dir/build"
  cp "$ratelimit" "$dir/ratelimit.worker.js"
  sed -e "s|@STATE@|$dir/state|" -e "s|@PORT@|$port|" -e "s|@BUILD@|build|" \
      -e "s|@RATELIMIT@|ratelimit.worker.js|" \
      -e 's|@RISK_BINDING@|(name = "RISK", durableObjectNamespace = "RiskObject"), (name = "HOOK", durableObjectNamespace = "HookObject"),|' \
      -e 's|@RISK_NAMESPACE@|(className = "RiskObject", uniqueKey = "edgestock-risk", enableSql = true), (className = "HookObject", uniqueKey = "edgestock-hook", enableSql = true),|' \
      -e "s|@HOLD_CAP@|${HOLD_CAP:-20}|" -e "s|@MERGE@|$merge|" -e "s|@CACHE@|$cache|" -e "s|@GROUP@|${SKU_GROUP_COMMIT:-1}|" \
      -e "s|@SHARDS@|${ROOM_FEED_SHARDS:-4}|" bench/workerd.capnp.in >"$dir/config.capnp"
  "$workerd" serve --experimental "$dir/config.capnp" >"$dir/workerd.log" 2>&1 &
  echo $! >"$dir/pid"
  wait_up "$name" "$port"
  echo "$port"
}

# The JavaScript baseline (hop=0) or the empty hop (hop=1).
serve_baseline() {
  local name=$1 hop=$2 dir=$out/$1 port
  port=$(free_port)
  rm -rf "$dir" && mkdir -p "$dir/state"
  cp bench/baseline/worker.js "$dir/worker.js"
  sed -e "s|@STATE@|$dir/state|" -e "s|@PORT@|$port|" -e "s|@HOP@|$hop|" \
      bench/baseline/workerd.capnp.in >"$dir/config.capnp"
  "$workerd" serve --experimental "$dir/config.capnp" >"$dir/workerd.log" 2>&1 &
  echo $! >"$dir/pid"
  wait_up "$name" "$port"
  echo "$port"
}

stop_all() { for p in "$out"/*/pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; rm -f "$p"; done; }
