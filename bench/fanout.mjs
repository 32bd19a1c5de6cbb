// Fan-out: VIEWERS real WebSockets on one live room's feed, then CHANGES
// stock changes of the room's SKU, one at a time; for each, the time from
// the write's answer to the last viewer holding the new state.
//   node bench/fanout.mjs <base-url> [viewers] [changes]
import WebSocket from "ws";

const [base, viewers = "2000", changes = "5"] = process.argv.slice(2);
const n = Number(viewers);
const admin = { Authorization: "Bearer bench-admin-token", "Content-Type": "application/json" };
const suffix = `${Date.now()}`;
const room = `fan-room-${suffix}`;
const sku = `fan-sku-${suffix}`;

async function call(method, path, body) {
  const response = await fetch(`${base}${path}`, { method, headers: admin, body: body && JSON.stringify(body) });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

await call("PUT", `/api/skus/${sku}`, { on_hand: 1000000 });
await call("PUT", `/api/rooms/${room}`, { title: "Fan-out", items: [{ sku, title: "Hot" }] });

// Each viewer: the highest version seen, and when each version arrived.
const seen = Array.from({ length: n }, () => new Map());
const url = `${base.replace("http", "ws")}/api/rooms/${room}/live`;
let open = 0;
const sockets = [];
const started = Date.now();
await new Promise((resolve, reject) => {
  for (let i = 0; i < n; i++) {
    const socket = new WebSocket(url);
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString());
      const versions = message.type === "snapshot" ? message.skus : message.type === "stock" ? [message] : [];
      for (const s of versions) if (s.sku === sku && !seen[i].has(s.version)) seen[i].set(s.version, Date.now());
    });
    socket.on("open", () => { if (++open === n) resolve(); });
    socket.on("error", reject);
    sockets.push(socket);
  }
});
console.log(`fanout: ${n} viewers connected in ${Date.now() - started} ms`);

const results = [];
for (let c = 0; c < Number(changes); c++) {
  const t0 = Date.now();
  const { version } = await call("POST", `/api/skus/${sku}/restock`, { qty: 1 });
  const answered = Date.now();
  // Wait until every viewer has it (or 10 s).
  while (Date.now() - answered < 10000 && seen.some((m) => !m.has(version))) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const arrivals = seen.map((m) => m.get(version)).filter(Boolean).map((t) => t - answered).sort((a, b) => a - b);
  const pct = (p) => arrivals[Math.min(arrivals.length - 1, Math.floor((p / 100) * arrivals.length))];
  results.push({ version, got: arrivals.length, p50: pct(50), p99: pct(99), last: arrivals[arrivals.length - 1], write_ms: answered - t0 });
  console.log(`fanout: change ${c + 1} (version ${version}): ${arrivals.length}/${n} viewers, p50 ${pct(50)} ms, p99 ${pct(99)} ms, last ${arrivals[arrivals.length - 1]} ms after the write's answer`);
  await new Promise((r) => setTimeout(r, 300));
}
for (const s of sockets) s.terminate();
const worst = Math.max(...results.map((r) => r.last));
const all = results.every((r) => r.got === n);
console.log(`RESULT viewers=${n} changes=${results.length} all_delivered=${all} worst_last_ms=${worst}`);
process.exit(all ? 0 : 1);
