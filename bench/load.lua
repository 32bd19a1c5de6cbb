-- wrk: one kind of request against one target, each reservation or order
-- by another viewer (a buyer session each, from TOKENS).
--   KIND=reserve  POST /api/skus/$SKU/reservations {"qty":1}
--   KIND=get      GET  /api/skus/$SKU
--   KIND=order    POST /api/orders, one unit of each of $SKUS (comma list)
-- SLICE picks this run's viewers (PER_SLICE tokens each), so no viewer
-- reserves twice in a run; each wrk thread takes its own part.
local kind = os.getenv("KIND") or "reserve"
local sku = os.getenv("SKU")
local skus = os.getenv("SKUS") or ""
local per_slice = tonumber(os.getenv("PER_SLICE") or "20000")
local threads = {}

function setup(thread)
  local slice = tonumber(os.getenv("SLICE") or "0")
  thread:set("offset", slice * per_slice + #threads * math.floor(per_slice / 4))
  table.insert(threads, thread)
end

function init(args)
  if kind ~= "get" then dofile(os.getenv("TOKENS")) end
  counter = offset
  refused = 0
  if kind == "order" then
    local lines = {}
    for s in string.gmatch(skus, "[^,]+") do
      table.insert(lines, '{"sku":"' .. s .. '","qty":1}')
    end
    order_body = '{"channel":"douyin","lines":[' .. table.concat(lines, ",") .. ']}'
  end
end

function request()
  counter = counter + 1
  if kind == "get" then
    return wrk.format("GET", "/api/skus/" .. sku)
  end
  local headers = { ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[(counter % #tokens) + 1] }
  if kind == "order" then
    return wrk.format("POST", "/api/orders", headers, order_body)
  end
  return wrk.format("POST", "/api/skus/" .. sku .. "/reservations", headers, '{"qty":1}')
end

function response(status, headers, body)
  local want = (kind == "get") and 200 or 201
  if status ~= want then
    refused = refused + 1
    if refused <= 3 then io.stderr:write(kind .. " status " .. status .. ": " .. body .. "\n") end
  end
end

function done(summary, latency, requests)
  local refused_total = 0
  for _, t in ipairs(threads) do refused_total = refused_total + t:get("refused") end
  local e = summary.errors
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d refused=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, refused_total, e.connect + e.read + e.write + e.timeout))
end
