-- wrk script: GET /products/{id} with id drawn uniformly from 1..N (N = first script argument).
-- Used as: wrk ... -s bench/random_ids.lua http://127.0.0.1:PORT -- N
-- The requests are formatted once per thread in init(), so wrk's CPU (shared with the server
-- on a small machine) goes to sending requests, not to building strings.

local prepared = {}
local count = 0
local threads = 0

function setup(thread)
  -- Each thread gets its own seed; otherwise both would ask for the same ids in step.
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  count = tonumber(args[1]) or 1
  math.randomseed(os.time() * 1000 + (seed or 0))
  for id = 1, count do
    prepared[id] = wrk.format("GET", "/products/" .. id)
  end
end

function request()
  return prepared[math.random(count)]
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
