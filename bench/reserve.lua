-- wrk: one-unit reservations of one hot SKU, each by another viewer.
-- MODE=session sends a buyer session (today's contract); MODE=body names
-- the buyer in the body (the contract before buyer sessions).
local mode = os.getenv("MODE") or "session"
local sku = os.getenv("SKU")
local counter = 0
local threads = {}

-- Each round's viewers are new (ROUND picks a slice of the tokens), and
-- each thread takes its own half of the slice.
local per_round = tonumber(os.getenv("PER_ROUND") or "40000")
function setup(thread)
  local round = tonumber(os.getenv("ROUND") or "1")
  thread:set("offset", (round - 1) * per_round + #threads * math.floor(per_round / 2))
  table.insert(threads, thread)
end

function init(args)
  if mode == "session" then dofile(os.getenv("TOKENS")) end
  counter = offset
  errors = 0
  refused = 0
end

function request()
  counter = counter + 1
  local path = "/api/skus/" .. sku .. "/reservations"
  if mode == "session" then
    local token = tokens[(counter % #tokens) + 1]
    return wrk.format("POST", path,
      { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token },
      '{"qty":1}')
  end
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" },
    '{"qty":1,"buyer":"viewer-' .. counter .. '"}')
end

function response(status, headers, body)
  if status ~= 201 then
    refused = refused + 1
    if refused <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
end

function done(summary, latency, requests)
  local refused_total = 0
  for _, t in ipairs(threads) do refused_total = refused_total + t:get("refused") end
  local e = summary.errors
  io.stderr:write(string.format("errors: connect=%d read=%d write=%d timeout=%d status=%d\n",
    e.connect, e.read, e.write, e.timeout, e.status))
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d non201=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, refused_total,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status))
end
