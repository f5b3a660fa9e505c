-- wrk script: POST a realistic Instantly delivery on every request.
-- BENCH_TEMPLATE: file holding the JSON body with __ID__ marks (bench/payloads.py template()).
-- BENCH_MODE=unique: every request carries a new email_id and lead (a new event each time);
-- BENCH_MODE=same: every request repeats one delivery (duplicates after the first).
-- Prints one JSON line at the end for bench/webhook_bench.py to read.

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(os.getenv("BENCH_TEMPLATE"), "r"))
  template = file:read("*a")
  file:close()
  mode = os.getenv("BENCH_MODE") or "unique"
  run = os.getenv("BENCH_RUN") or "run"
  counter = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Bridge-Secret"] = os.getenv("BENCH_SECRET")
  if mode == "same" then
    wrk.body = template:gsub("__ID__", run .. "-same")
  end
end

function request()
  if mode == "same" then
    return wrk.format()
  end
  counter = counter + 1
  local body = template:gsub("__ID__", string.format("%s-%d-%d", run, tid, counter))
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d,'
      .. ' "write_errors": %d, "timeouts": %d, "non_2xx": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
