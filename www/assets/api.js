// Calls to the edgestock API. Failures are RFC 9457 problems: their detail
// is what a person sees.
export async function api(method, path, body, { token, key } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = `Bearer ${token}`;
  if (key) headers["Idempotency-Key"] = key;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || data.title || `HTTP ${response.status}`);
    error.problem = data;
    throw error;
  }
  return data;
}

// A buyer session. On a real storefront the merchant's backend mints it
// (a JWT signed with BUYER_SESSION_SECRET, see the README's trust model);
// on `wrangler dev` with DEV_SESSIONS=1 the dev route does. Kept until a
// minute before it expires.
export async function buyerSession(buyer) {
  const stored = JSON.parse(localStorage.getItem("edgestock.session") || "null");
  if (stored && stored.buyer === buyer && stored.expires_at > Date.now() + 60000) return stored.token;
  const session = await api("POST", "/api/dev/session", { buyer });
  localStorage.setItem("edgestock.session", JSON.stringify(session));
  return session.token;
}

export function randomKey() {
  return crypto.randomUUID();
}

/// "12 left", "only 3 left", "sold out"; during a rush, how long at this
/// pace ("~40 s left at this pace").
export function badge(stock) {
  if (stock.available === 0) return { text: "Sold out", level: "out" };
  // The pace is the one at the SKU's latest change: shown while it is fresh.
  const changed = stock.at_ms ?? stock.updated_at ?? 0;
  const fresh = Date.now() - changed < 30000;
  const pace = fresh && stock.sellout_s && stock.sellout_s <= 600 ? ` · ~${stock.sellout_s} s at this pace` : "";
  if (stock.low_stock) return { text: `Only ${stock.available} left${pace}`, level: "low" };
  return { text: `${stock.available} left${pace}`, level: "ok" };
}

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

export function when(ms) {
  return new Date(ms).toLocaleTimeString();
}
