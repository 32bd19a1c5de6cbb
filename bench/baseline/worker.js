// The baseline a team would write first: a plain JavaScript Worker and one
// Durable Object per SKU with SQLite, doing the same reservation as
// edgestock (a verified buyer session, a JSON body, a check of what is
// available, the count and a hold row written, a 201 with the hold), and
// nothing else: no idempotency, ledger, limits, risk or live push.
// HOP=1 makes it the empty hop instead: the Worker forwards to the object,
// which answers at once; the runtime's ceiling for one hop per request.
import { DurableObject } from "cloudflare:workers";

const enc = new TextEncoder();
let keyPromise;
function hmacKey(secret) {
  keyPromise ??= crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  return keyPromise;
}
function b64urlBytes(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}
async function buyerOf(request, env) {
  const auth = request.headers.get("Authorization") || "";
  const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
  const [h, p, s] = token.split(".");
  if (!s) return null;
  const ok = await crypto.subtle.verify("HMAC", await hmacKey(env.BUYER_SESSION_SECRET), b64urlBytes(s), enc.encode(`${h}.${p}`));
  if (!ok) return null;
  const claims = JSON.parse(new TextDecoder().decode(b64urlBytes(p)));
  return claims.exp * 1000 > Date.now() ? claims.sub : null;
}
const json = (status, body) => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const m = url.pathname.match(/^\/api\/skus\/([A-Za-z0-9._-]{1,64})(\/reservations)?$/);
    if (url.pathname === "/api/health") return json(200, { ok: true });
    if (!m) return json(404, { title: "not found" });
    const stub = env.SKU.get(env.SKU.idFromName(m[1]));
    if (env.HOP === "1") return stub.fetch("https://sku/", { method: request.method === "GET" ? "GET" : "POST" });
    if (m[2] && request.method === "POST") {
      const buyer = await buyerOf(request, env);
      if (!buyer) return json(401, { title: "unauthorized" });
      let body;
      try { body = await request.json(); } catch { return json(400, { title: "bad json" }); }
      if (!Number.isInteger(body.qty) || body.qty < 1) return json(422, { title: "bad qty" });
      return stub.fetch("https://sku/reserve", { method: "POST", body: JSON.stringify({ sku: m[1], buyer, qty: body.qty }) });
    }
    if (request.method === "PUT") return stub.fetch("https://sku/setup", { method: "POST", body: JSON.stringify({ sku: m[1], ...(await request.json()) }) });
    return stub.fetch("https://sku/get", { method: "POST", body: JSON.stringify({ sku: m[1] }) });
  },
};

export class SkuObject extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.hop = env.HOP === "1";
    if (!this.hop) {
      this.sql.exec("CREATE TABLE IF NOT EXISTS sku (id TEXT PRIMARY KEY, on_hand INTEGER, reserved INTEGER)");
      this.sql.exec("CREATE TABLE IF NOT EXISTS holds (id TEXT PRIMARY KEY, buyer TEXT, qty INTEGER, expires_at INTEGER)");
    }
  }
  async fetch(request) {
    if (this.hop) return new Response("{}", { status: request.method === "GET" ? 200 : 201 });
    const call = await request.json();
    const path = new URL(request.url).pathname;
    const row = this.sql.exec("SELECT on_hand, reserved FROM sku WHERE id = ?", call.sku).toArray()[0];
    if (path === "/setup") {
      this.sql.exec("INSERT OR REPLACE INTO sku (id, on_hand, reserved) VALUES (?, ?, ?)", call.sku, call.on_hand, row ? row.reserved : 0);
      return json(200, { sku: call.sku, on_hand: call.on_hand });
    }
    if (!row) return json(404, { title: "sku not found" });
    const available = row.on_hand - row.reserved;
    if (path === "/get") return json(200, { sku: call.sku, on_hand: row.on_hand, reserved: row.reserved, sold: 0, available });
    if (call.qty > available) return json(409, { title: "insufficient stock", available });
    const id = crypto.randomUUID();
    const expires_at = Date.now() + 300_000;
    this.sql.exec("UPDATE sku SET reserved = reserved + ? WHERE id = ?", call.qty, call.sku);
    this.sql.exec("INSERT INTO holds (id, buyer, qty, expires_at) VALUES (?, ?, ?, ?)", id, call.buyer, call.qty, expires_at);
    return json(201, { id, sku: call.sku, qty: call.qty, buyer: call.buyer, status: "held", expires_at, available: available - call.qty });
  }
}
