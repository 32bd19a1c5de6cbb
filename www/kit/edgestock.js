// edgestock storefront kit: one ES module, no build step.
//
//   <script type="module" src="https://<your worker>/kit/edgestock.js"></script>
//   <edgestock-stock-badge sku="tee-red-m"></edgestock-stock-badge>
//   <edgestock-buy-button sku="tee-red-m" session-url="/edgestock-session"></edgestock-buy-button>
//
// It talks to the worker it was loaded from (its own URL's origin), so a
// shop on another origin needs that origin in the worker's ALLOWED_ORIGINS.
// A buyer session is a JWT the shop's backend mints (BUYER_SESSION_SECRET):
// the buy button fetches it from `session-url` (the response body is the
// token, or JSON with a `token`), or the page calls `configure({ session })`.
// Types: edgestock.d.ts beside this file.

/** The storefront routes this client calls: [method, path template]. The
 *  tests check each against the worker's OpenAPI document. */
export const routes = {
  getSku: ["GET", "/api/skus/{sku}"],
  reserve: ["POST", "/api/skus/{sku}/reservations"],
  getHold: ["GET", "/api/skus/{sku}/reservations/{hold}"],
  release: ["DELETE", "/api/skus/{sku}/reservations/{hold}"],
  createOrder: ["POST", "/api/orders"],
  getOrder: ["GET", "/api/orders/{order}"],
  cancelOrder: ["POST", "/api/orders/{order}/cancel"],
  buyerOrders: ["GET", "/api/buyers/{buyer}/orders"],
  getRoom: ["GET", "/api/rooms/{room}"],
  skuLive: ["GET", "/api/skus/{sku}/live"],
  roomLive: ["GET", "/api/rooms/{room}/live"],
  orderLive: ["GET", "/api/orders/{order}/live"],
};

const here = new URL(import.meta.url);
const settings = { base: here.origin, session: null };

/** Where the API is and how to get a buyer session. */
export function configure({ base, session } = {}) {
  if (base) settings.base = String(base).replace(/\/$/, "");
  if (session !== undefined) settings.session = session;
}

/** An API failure: an RFC 9457 problem, whose `detail` a person can read. */
export class EdgestockError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function fill(template, params) {
  return template.replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(params[name]));
}

/** Calls one route. `token`: a buyer session; `key`: an Idempotency-Key. */
export async function call(name, params = {}, { body, token, key, query } = {}) {
  const [method, template] = routes[name];
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  if (key) headers["Idempotency-Key"] = key;
  const url = settings.base + fill(template, params) + (query ? `?${new URLSearchParams(query)}` : "");
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new EdgestockError(response.status, data);
  return data;
}

/** The typed client: one function per storefront route. */
export const client = {
  getSku: (sku) => call("getSku", { sku }),
  reserve: (sku, qty, { token, key = randomKey() } = {}) => call("reserve", { sku }, { body: { qty }, token, key }),
  getHold: (sku, hold, { token } = {}) => call("getHold", { sku, hold }, { token }),
  release: (sku, hold, { token } = {}) => call("release", { sku, hold }, { token }),
  createOrder: ({ lines, channel = "own", room }, { token, key = randomKey() } = {}) =>
    call("createOrder", {}, { body: room ? { channel, room, lines } : { channel, lines }, token, key }),
  getOrder: (order, { token } = {}) => call("getOrder", { order }, { token }),
  cancelOrder: (order, reason, { token } = {}) => call("cancelOrder", { order }, { body: reason ? { reason } : {}, token }),
  buyerOrders: (buyer, { token } = {}) => call("buyerOrders", { buyer }, { token }),
  getRoom: (room) => call("getRoom", { room }),
};

export function randomKey() {
  return crypto.randomUUID();
}

/** The buyer's session token, from `configure({ session })` or `url`. */
export async function session(url) {
  const source = settings.session || url;
  if (!source) throw new EdgestockError(401, { detail: "no buyer session: give session-url or configure({ session })" });
  if (typeof source === "function") return source();
  if (typeof source === "string" && !source.startsWith("/") && !source.includes("://")) return source;
  const response = await fetch(source, { credentials: "include" });
  if (!response.ok) throw new EdgestockError(response.status, { detail: "could not get a buyer session" });
  const text = await response.text();
  try { return JSON.parse(text).token; } catch { return text.trim(); }
}

/** What a badge says: "12 left", "Only 3 left · ~40 s at this pace",
 *  "Sold out". The storefront's own number when channels set units aside. */
export function badgeText(stock) {
  const available = stock.storefront ?? stock.available;
  if (available === 0) return { text: "Sold out", level: "out", available };
  const changed = stock.at_ms ?? stock.updated_at ?? 0;
  const fresh = Date.now() - changed < 30000;
  const pace = fresh && stock.sellout_s && stock.sellout_s <= 600 ? ` · ~${stock.sellout_s} s at this pace` : "";
  if (stock.low_stock) return { text: `Only ${available} left${pace}`, level: "low", available };
  return { text: `${available} left${pace}`, level: "ok", available };
}

/** A live feed over a WebSocket: reconnects with backoff and jitter,
 *  keeps itself alive with pings, resumes from the versions it saw.
 *  `protocols`: an async function giving the subprotocols for each
 *  connect (an order feed's session rides there as "bearer.<token>"). */
export function openFeed(path, { onMessage, onState = () => {}, protocols } = {}) {
  const versions = {};
  let socket = null;
  let attempt = 0;
  let pinger = null;
  let closedByUs = false;
  const url = () => settings.base.replace(/^http/, "ws") + path;

  async function connect() {
    onState("connecting");
    try {
      socket = new WebSocket(url(), protocols ? await protocols() : undefined);
    } catch {
      return retry();
    }
    socket.onopen = () => {
      attempt = 0;
      onState("live");
      if (Object.keys(versions).length) socket.send(JSON.stringify({ type: "resume", versions }));
      pinger = setInterval(() => socket.readyState === 1 && socket.send("ping"), 25000);
    };
    socket.onmessage = (event) => {
      if (event.data === "pong") return;
      const message = JSON.parse(event.data);
      if (message.type === "stock") versions[message.sku] = message.version;
      if (message.type === "snapshot") for (const s of message.skus) versions[s.sku] = s.version;
      onMessage(message);
    };
    socket.onclose = () => {
      clearInterval(pinger);
      if (!closedByUs) retry();
    };
  }

  function retry() {
    onState("offline");
    // 0.5 s, 1 s, 2 s … up to 15 s, with jitter.
    const delay = Math.min(15000, 500 * 2 ** attempt++) * (0.75 + Math.random() / 2);
    setTimeout(connect, delay);
  }

  connect();
  return { close() { closedByUs = true; socket && socket.close(); } };
}

// One feed per SKU on a page, shared by every element showing it.
const skuFeeds = new Map();
function watchSku(sku, listener) {
  let entry = skuFeeds.get(sku);
  if (!entry) {
    entry = { listeners: new Set(), last: null, state: "connecting" };
    entry.feed = openFeed(`/api/skus/${encodeURIComponent(sku)}/live`, {
      onState: (state) => { entry.state = state; for (const l of entry.listeners) l({ state }); },
      onMessage: (m) => {
        const stock = m.type === "snapshot" ? m.skus.find((s) => s.sku === sku) : m.type === "stock" ? m : null;
        if (!stock) return;
        entry.last = stock;
        for (const l of entry.listeners) l({ stock });
      },
    });
    skuFeeds.set(sku, entry);
  }
  entry.listeners.add(listener);
  if (entry.last) listener({ stock: entry.last });
  listener({ state: entry.state });
  return () => {
    entry.listeners.delete(listener);
    if (entry.listeners.size === 0) { entry.feed.close(); skuFeeds.delete(sku); }
  };
}

const Base = typeof HTMLElement === "undefined" ? class {} : HTMLElement;

/** <edgestock-stock-badge sku="…">: the true number, live. Sets
 *  `data-level` (ok, low, out) and `data-state` (connecting, live, offline). */
export class StockBadge extends Base {
  static observedAttributes = ["sku"];
  connectedCallback() { this.#watch(); }
  disconnectedCallback() { this.stop?.(); this.stop = null; }
  attributeChangedCallback() { if (this.isConnected) this.#watch(); }
  #watch() {
    this.stop?.();
    const sku = this.getAttribute("sku");
    if (!sku) return;
    this.setAttribute("role", "status");
    this.setAttribute("aria-live", "polite");
    if (!this.textContent) this.textContent = "…";
    this.stop = watchSku(sku, ({ stock, state }) => {
      if (state) this.dataset.state = state;
      if (stock) {
        const b = badgeText(stock);
        this.textContent = b.text;
        this.dataset.level = b.level;
        this.dataset.available = String(b.available);
      }
    });
  }
}

/** <edgestock-buy-button sku="…" qty="1" session-url="/session" room="…">:
 *  places an order for the signed-in buyer; disabled while sold out.
 *  Fires `edgestock-order` (detail: the order) or `edgestock-error`
 *  (detail: the problem). */
export class BuyButton extends Base {
  static observedAttributes = ["sku"];
  connectedCallback() {
    if (!this.button) {
      this.button = document.createElement("button");
      this.button.type = "button";
      this.button.textContent = this.getAttribute("label") || "Buy";
      this.button.addEventListener("click", () => this.buy());
      this.append(this.button);
    }
    this.#watch();
  }
  disconnectedCallback() { this.stop?.(); this.stop = null; }
  attributeChangedCallback() { if (this.isConnected) this.#watch(); }
  #watch() {
    this.stop?.();
    const sku = this.getAttribute("sku");
    if (!sku) return;
    this.stop = watchSku(sku, ({ stock }) => {
      if (stock) this.button.disabled = badgeText(stock).available === 0;
    });
  }
  async buy() {
    const sku = this.getAttribute("sku");
    const qty = Number(this.getAttribute("qty") || 1);
    this.button.disabled = true;
    try {
      const token = await session(this.getAttribute("session-url"));
      const order = await client.createOrder(
        { lines: [{ sku, qty }], room: this.getAttribute("room") || undefined, channel: this.getAttribute("channel") || "own" },
        { token },
      );
      this.dataset.result = "ordered";
      this.dispatchEvent(new CustomEvent("edgestock-order", { detail: order, bubbles: true }));
    } catch (e) {
      this.dataset.result = "error";
      this.dispatchEvent(new CustomEvent("edgestock-error", { detail: e.problem || { detail: e.message }, bubbles: true }));
    } finally {
      this.button.disabled = false;
    }
  }
}

if (typeof customElements !== "undefined") {
  if (!customElements.get("edgestock-stock-badge")) customElements.define("edgestock-stock-badge", StockBadge);
  if (!customElements.get("edgestock-buy-button")) customElements.define("edgestock-buy-button", BuyButton);
}
