-- wrk script: OCSP requests, POST and GET alternating, one line of the requests file each.
-- Each line is "P <hex of the DER request>" or "G <path of a GET request>"; POSTs go to
-- OCSP_PATH (the responder's URL path). Prints one machine-readable result line.
local reqs = {}

-- wrk's own resolve() tests each address with a connection it closes at once, unused; openssl
-- ocsp 3.0 then loops on that connection's end of file and never serves another. Skip the test.
function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup(host, service)
end
local index = 0

local function unhex(s)
  return (s:gsub("..", function(cc) return string.char(tonumber(cc, 16)) end))
end

function init(args)
  local path = os.getenv("OCSP_PATH") or "/"
  local offset = tonumber(os.getenv("WRK_OFFSET") or "0")
  for line in io.lines(os.getenv("REQUESTS")) do
    local kind, rest = line:sub(1, 1), line:sub(3)
    local headers = {["Host"] = "127.0.0.1"}
    if os.getenv("CONNECTION_CLOSE") == "1" then
      headers["Connection"] = "close"  -- a connection per request, as openssl ocsp serves
    end
    if kind == "P" then
      headers["Content-Type"] = "application/ocsp-request"
      table.insert(reqs, wrk.format("POST", path, headers, unhex(rest)))
    else
      table.insert(reqs, wrk.format("GET", rest, headers, nil))
    end
  end
  index = math.random(#reqs) + offset
end

function request()
  index = index + 1
  return reqs[(index - 1) % #reqs + 1]
end

function done(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
            + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d errors=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f\n",
    summary.requests, bad, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
