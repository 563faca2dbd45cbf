-- A paced keep-alive load: each connection waits PACE_MS between a response
-- and its next request, so the offered rate is fixed (about connections /
-- PACE_MS per ms) and below what any proxy here saturates at: the latency
-- then shows what a proxy adds to a request, not how long its queue is.
-- wrk times a request from its send, so the pause is not counted.
local pace = tonumber(os.getenv("PACE_MS") or "5")

delay = function()
  return pace
end

done = function(summary, latency, requests)
  io.write(string.format("PCT p50=%d p99=%d p999=%d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
