-- wrk script: POST /v1/redemptions, each request a distinct code.
-- Codes come from the file in env CODES (one a line, as exported by
-- GET /v1/campaigns/{id}/codes); each wrk thread takes every Nth code.
-- Usage: CODES=codes.txt WRK_THREADS=2 TOKEN=... wrk -t2 -c64 -d10s -s redeem.lua http://127.0.0.1:8080

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  nthreads = tonumber(os.getenv("WRK_THREADS") or "2")
  codes = {}
  local i = 0
  for line in io.lines(os.getenv("CODES")) do
    if i % nthreads == id then
      table.insert(codes, line)
    end
    i = i + 1
  end
  next_code = 1
end

function request()
  local code = codes[next_code]
  next_code = next_code + 1
  if code == nil then
    code = "EXHAUSTED"
  end
  local body = '{"code":"' .. code .. '","user":"u' .. id .. '-' .. next_code .. '"}'
  return wrk.format("POST", "/v1/redemptions", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")}, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
