// Writes a Lua file of buyer session JWTs (HS256 under the bench's
// BUYER_SESSION_SECRET), one buyer each, for wrk to send: a stampede of
// distinct viewers.   node bench/tokens.mjs <count> <out.lua>
import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";

const [count, out] = [Number(process.argv[2] || 50000), process.argv[3]];
const b64 = (x) => Buffer.from(JSON.stringify(x)).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const header = b64({ alg: "HS256", typ: "JWT" });
const lines = [];
for (let i = 0; i < count; i++) {
  const body = `${header}.${b64({ sub: `viewer-${i}`, iat: now, exp: now + 3600 })}`;
  const sig = createHmac("sha256", "bench-session-secret").update(body).digest("base64url");
  lines.push(`"${body}.${sig}"`);
}
writeFileSync(out, `tokens = {\n${lines.join(",\n")}\n}\n`);
