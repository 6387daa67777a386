-- wrk script for the three endpoints of bench/http.py; the first script argument picks one:
--   get N        GET /products/{id}, id drawn uniformly from 1..N
--   list         GET /products?limit=50
--   write TOKEN  POST /products, a new sku each time (TOKEN, the thread and a counter)
-- Used as: wrk ... -s bench/load.lua http://127.0.0.1:PORT -- get 1000
-- Reads are formatted once per thread in init(), so wrk's CPU (shared with the server on a
-- small machine) goes to sending requests, not to building strings.

local mode = "get"
local prepared = {}
local count = 0
local threads = 0
local prefix = ""
local made = 0
local headers = { ["Content-Type"] = "application/json" }

function setup(thread)
  -- Each thread gets its own number: its seed, and its part of the skus it writes.
  threads = threads + 1
  thread:set("number", threads)
end

function init(args)
  mode = args[1] or "get"
  math.randomseed(os.time() * 1000 + (number or 0))
  if mode == "get" then
    count = tonumber(args[2]) or 1
    for id = 1, count do
      prepared[id] = wrk.format("GET", "/products/" .. id)
    end
  elseif mode == "list" then
    count = 1
    prepared[1] = wrk.format("GET", "/products?limit=50")
  elseif mode == "write" then
    prefix = (args[2] or "bench") .. "-" .. (number or 0) .. "-"
  else
    error("unknown mode " .. mode)
  end
end

function request()
  if mode ~= "write" then
    return prepared[math.random(count)]
  end
  made = made + 1
  local body = string.format(
    '{"sku": "%s%d", "name": "Benchmark product", "price": "9.99"}', prefix, made)
  return wrk.format("POST", "/products", headers, body)
end

-- One machine-readable line for bench/http.py; times are in microseconds.
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d"
      .. " p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(99)))
end
