// The storefront and the merchant console in real headless Chromium
// (Debian's), against the server the API tests started.
//   node tests/browser/storefront.mjs <base-url> <admin-token> <screenshot-dir>
// Exits non-zero with a message on the first failed expectation.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createServer } from "node:http";

const [base, token, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const unique = (p) => `${p}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;

async function admin(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: body && JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

const room = unique("room");
const tee = unique("tee");
const cap = unique("cap");
await admin("PUT", `/api/skus/${tee}`, { on_hand: 12, low_stock_threshold: 3 });
await admin("PUT", `/api/skus/${cap}`, { on_hand: 4, low_stock_threshold: 3 });
await admin("PUT", `/api/rooms/${room}`, { title: "Spring drop 春季上新", items: [{ sku: tee, title: "Red tee, M" }, { sku: cap, title: "Canvas cap" }] });
// A webhook endpoint that refuses every delivery (nothing listens on port
// 9): the console shows its retries. Registered first, so it hears of the
// sell-out below.
const hook = await admin("POST", "/api/webhooks", { url: "http://127.0.0.1:9/refused", events: ["sold_out"] });

// A selling platform that takes every stock push (the generic format:
// any 2xx is success), and the tee listed on it: the console shows what
// it was told.
const pushes = [];
const platform = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => { pushes.push(JSON.parse(body || "{}")); res.writeHead(200); res.end("{}"); });
});
await new Promise((resolve) => platform.listen(0, "127.0.0.1", resolve));
const channel = unique("shop").toLowerCase();
await admin("PUT", `/api/channels/${channel}`, { platform: "generic", secret: "browser-secret", sync_url: `http://127.0.0.1:${platform.address().port}/stock` });
await new Promise((r) => setTimeout(r, 2500)); // the objects' 2 s cache of channels
await admin("PUT", `/api/skus/${tee}/channels/${channel}`, {});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic"],
  // playwright gives every launch a fresh, empty profile directory.
});
try {
  const viewer = await browser.newPage({ viewport: { width: 390, height: 844 } }); // a phone
  const problems = [];
  viewer.on("pageerror", (e) => problems.push(e.message));
  await viewer.goto(`${base}/?room=${room}`);
  const teeBadge = viewer.locator(`[data-sku="${tee}"] .badge`);
  await teeBadge.filter({ hasText: "12 left" }).waitFor({ timeout: 10000 });
  // 4 available is above the threshold of 3: not low yet.
  await viewer.locator(`[data-sku="${cap}"] .badge`).filter({ hasText: /^4 left$/ }).waitFor({ timeout: 10000 });
  await viewer.locator("#connection[data-state=live]").waitFor({ timeout: 10000 });
  await viewer.screenshot({ path: join(shots, "viewer.png"), fullPage: true });

  // Buy two tees through the page.
  await viewer.locator(`[data-sku="${tee}"] select`).selectOption("2");
  await viewer.locator(`[data-sku="${tee}"] .buy`).click();
  await teeBadge.filter({ hasText: "10 left" }).waitFor({ timeout: 10000 });
  await viewer.locator("#order-status", { hasText: "reserved" }).waitFor({ timeout: 10000 });
  const orderHref = await viewer.locator("#order-link").getAttribute("href");
  const orderId = new URL(orderHref, base).searchParams.get("id");
  await viewer.screenshot({ path: join(shots, "viewer-reserved.png"), fullPage: true });

  // The merchant's console shows the order in the room's feed, masked: a
  // room is public, so it names no order id and no buyer id.
  const buyer = await viewer.evaluate(() => localStorage.getItem("edgestock.buyer"));
  const masked = `${buyer[0]}***${buyer[buyer.length - 1]}`;
  const feedItem = (status) => console_.locator("#feed li", { hasText: masked }).filter({ hasText: status });
  const console_ = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  console_.on("pageerror", (e) => problems.push(e.message));
  await console_.goto(`${base}/console.html`);
  await console_.fill("#token", token);
  await console_.click("#token-form button");
  await console_.fill("#watch-room", room);
  await console_.click("#watch-form button");
  await feedItem("reserved").first().waitFor({ timeout: 10000 });
  if ((await console_.locator("#feed").innerText()).includes(buyer)) throw new Error("the room feed shows a buyer id");
  await console_.locator("#stock tr", { hasText: "Red tee, M" }).filter({ hasText: "10" }).waitFor({ timeout: 10000 });

  // The viewer pays through the page: dev mode's stand-in provider signs
  // the callback. An unsigned callback from anyone else is refused.
  const forged = await fetch(`${base}/api/orders/${orderId}/pay`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ payment_ref: "forged" }),
  });
  if (forged.status !== 401) throw new Error(`an unsigned pay answered ${forged.status}`);
  await viewer.locator("#pay").click();
  await viewer.locator("#order-status", { hasText: "paid" }).waitFor({ timeout: 10000 });
  await feedItem("paid").first().waitFor({ timeout: 10000 });
  await viewer.screenshot({ path: join(shots, "viewer-paid.png"), fullPage: true });
  await console_.screenshot({ path: join(shots, "console.png"), fullPage: true });

  // Risk review: a rule for this room only sends a 2-unit order to the
  // console's queue; the merchant approves it there.
  const rules = await admin("GET", "/api/risk/rules");
  const reviewRule = { id: "t-browser-review", action: "review", rooms: [room], check: { large_order: { max_units: 1 } } };
  await admin("PUT", "/api/risk/rules", { rules: [...rules.rules, reviewRule], review_hold_s: rules.review_hold_s });
  await new Promise((r) => setTimeout(r, 5500)); // every isolate's rule cache
  const inReview = await admin("POST", "/api/orders", { buyer: "reviewed", channel: "own", room, lines: [{ sku: tee, qty: 2 }] });
  await admin("PUT", "/api/risk/rules", { rules: rules.rules, review_hold_s: rules.review_hold_s });
  if (inReview.status !== "pending_review") throw new Error(`the order is ${inReview.status}, not in review`);
  await console_.click("#reviews-refresh");
  const row = console_.locator(`#reviews tr[data-order="${inReview.id}"]`);
  await row.filter({ hasText: "t-browser-review" }).waitFor({ timeout: 10000 });
  await console_.screenshot({ path: join(shots, "console-review.png"), fullPage: true });
  await row.locator("button.approve").click();
  await row.waitFor({ state: "detached", timeout: 10000 });
  const approved = await admin("GET", `/api/orders/${inReview.id}`);
  if (approved.status !== "reserved") throw new Error(`approved order is ${approved.status}`);

  // Another buyer takes the last caps: the badge says sold out.
  await admin("POST", "/api/orders", { buyer: "other", channel: "own", room, lines: [{ sku: cap, qty: 4 }] });
  await viewer.locator(`[data-sku="${cap}"] .badge`, { hasText: "Sold out" }).waitFor({ timeout: 10000 });
  if (!(await viewer.locator(`[data-sku="${cap}"] .buy`).isDisabled())) throw new Error("buy stays enabled when sold out");

  // A rush on the tee, ordered for named buyers: the console's chart of
  // units taken a second and its sell-out column follow it.
  await Promise.all(Array.from({ length: 6 }, (_, i) =>
    admin("POST", "/api/orders", { buyer: unique("rush"), channel: "own", room, lines: [{ sku: tee, qty: 1 }] })));
  await console_.locator("#chart canvas").first().waitFor({ timeout: 10000 });
  await console_.waitForFunction(() => {
    const m = /(\d+) units taken/.exec(document.querySelector("#chart-totals").textContent);
    return m && Number(m[1]) >= 10; // 2 bought, 2 in review, 6 in the rush
  }, null, { timeout: 15000 });
  await console_.locator(`#stock tr[data-sku="${tee}"] .sellout`, { hasText: /~\d+ s/ }).waitFor({ timeout: 10000 });
  // The room's numbers: the rush's six orders among the room's orders, the
  // paid one, and a chart of each minute.
  await console_.waitForFunction(() => Number(document.querySelector('[data-number="orders"]')?.textContent) >= 8,
    null, { timeout: 15000 });
  await console_.locator('[data-number="paid"]', { hasText: /^[1-9]/ }).waitFor({ timeout: 10000 });
  await console_.locator("#room-chart canvas").first().waitFor({ timeout: 10000 });
  await console_.screenshot({ path: join(shots, "console-rush.png"), fullPage: true });

  // The refused endpoint's sold_out delivery: pending, tried, resendable.
  await console_.click("#hooks-refresh");
  await console_.locator(`#hooks button[data-hook="${hook.id}"]`).click();
  const delivery = console_.locator("#deliveries tr", { hasText: `sku:${cap}` }).filter({ hasText: "sold_out" });
  await delivery.first().waitFor({ timeout: 15000 });
  await delivery.first().locator("button.resend").click();
  await console_.locator("#done", { hasText: "Resent" }).waitFor({ timeout: 10000 });
  await admin("DELETE", `/api/webhooks/${hook.id}`);

  // The channel's sync: the tee's number as the platform last took it.
  const teeNow = (await admin("GET", `/api/skus/${tee}`)).available;
  await console_.click("#channels-refresh");
  await console_.locator(`#channels button[data-channel="${channel}"]`).click();
  const synced = console_.locator(`#channel-skus tr[data-sku="${tee}"][data-pending="false"] td:nth-child(2)`,
    { hasText: new RegExp(`^${teeNow}$`) });
  for (let i = 0; i < 40 && !(await synced.count()); i++) {
    await new Promise((r) => setTimeout(r, 500));
    await console_.click("#channels-refresh");
  }
  await synced.waitFor({ timeout: 5000 });
  if (pushes.at(-1)?.quantity !== teeNow) throw new Error(`the platform shows ${pushes.at(-1)?.quantity}, not ${teeNow}`);
  await console_.screenshot({ path: join(shots, "console-channels.png"), fullPage: true });
  await admin("DELETE", `/api/channels/${channel}`);

  // Accessibility basics: every control has a name.
  const unnamed = await viewer.evaluate(() => [...document.querySelectorAll("button, select, input")]
    .filter((el) => !el.hidden && !el.closest("[hidden]"))
    .filter((el) => !(el.getAttribute("aria-label") || el.labels?.length || el.textContent.trim())).length);
  if (unnamed) throw new Error(`${unnamed} controls have no accessible name`);
  if (problems.length) throw new Error(`page errors: ${problems.join("; ")}`);
  console.log(`browser: storefront and console ok (order ${orderId}); screenshots in ${shots}`);
} finally {
  await browser.close();
  platform.close();
}
