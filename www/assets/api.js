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

// The storefront kit's own helpers: these pages use the kit they serve.
export { randomKey, badgeText as badge } from "/kit/edgestock.js";

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

export function when(ms) {
  return new Date(ms).toLocaleTimeString();
}
