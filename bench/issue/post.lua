-- wrk script: POST one pre-built JSON body per request, each thread on its own slice of the
-- bodies file (so one-time tokens are never sent twice). Prints machine-readable results.
local bodies = {}
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "2")
  local i = 0
  for line in io.lines(os.getenv("BODIES")) do
    if i % nthreads == id then
      table.insert(bodies, line)
    end
    i = i + 1
  end
  index = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  index = index + 1
  return wrk.format(nil, nil, nil, bodies[(index - 1) % #bodies + 1])
end

function done(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
            + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d errors=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f\n",
    summary.requests, bad, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
