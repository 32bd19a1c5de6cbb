// The storefront kit on a shop of another origin, in real headless
// Chromium: this script serves the example shop (tests/browser/shop.html,
// one script tag from the worker) on its own port, with a /session route
// that hands out a buyer session as the shop's backend would; the badge
// must count down live while another client buys, and the buy button must
// place an order.
//   node tests/browser/kit.mjs <base-url> <admin-token> <shop-port> <buyer-session> <screenshot-dir>
import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { readFileSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const [base, token, shopPort, buyerSession, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const here = dirname(fileURLToPath(import.meta.url));
const sku = `oolong-${Date.now().toString(36)}`;

async function admin(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: body && JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

await admin("PUT", `/api/skus/${sku}`, { on_hand: 10, low_stock_threshold: 2 });
const page = readFileSync(join(here, "shop.html"), "utf8").replaceAll("{{WORKER}}", base).replaceAll("{{SKU}}", sku);
const shop = createServer((req, res) => {
  if (req.url === "/session") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    return res.end(buyerSession);
  }
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  res.end(page);
});
await new Promise((resolve) => shop.listen(Number(shopPort), "127.0.0.1", resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const tab = await browser.newPage({ viewport: { width: 390, height: 700 } });
  const problems = [];
  tab.on("pageerror", (e) => problems.push(e.message));
  tab.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  await tab.goto(`http://127.0.0.1:${shopPort}/`);
  const badge = tab.locator("edgestock-stock-badge");
  await badge.filter({ hasText: /^10 left/ }).waitFor({ timeout: 15000 });
  await tab.locator("edgestock-stock-badge[data-state=live]").waitFor({ timeout: 15000 });
  // Another client buys while the shop is open: the badge counts down.
  for (const [n, left] of [[3, /^7 left/], [4, /^3 left/]]) {
    await admin("POST", `/api/skus/${sku}/reservations`, { qty: n, buyer: `other-${n}` });
    await badge.filter({ hasText: left }).waitFor({ timeout: 10000 });
  }
  // The shop's buyer buys one through the kit's button.
  await tab.locator("edgestock-buy-button button").click();
  await tab.locator("#log", { hasText: /Ordered: o_[0-9a-f]{32} \(reserved\)/ }).waitFor({ timeout: 10000 });
  await badge.filter({ hasText: /^Only 2 left/ }).waitFor({ timeout: 10000 });
  if ((await badge.getAttribute("data-level")) !== "low") throw new Error("the badge is not marked low");
  await tab.screenshot({ path: join(shots, "kit-shop.png"), fullPage: true });
  // Sold out: the button is disabled.
  await admin("POST", `/api/skus/${sku}/reservations`, { qty: 2, buyer: "other-last" });
  await badge.filter({ hasText: "Sold out" }).waitFor({ timeout: 10000 });
  await tab.locator("edgestock-buy-button button[disabled]").waitFor({ timeout: 10000 });
  if (problems.length) throw new Error(`page errors: ${problems.join(" | ")}`);
  console.log("kit on another origin ok");
} finally {
  await browser.close();
  shop.close();
}
