-- Printed after a wrk run so the benchmark can read p50/p99/p99.9 (µs).
done = function(summary, latency, requests)
  io.write(string.format("PCT p50=%d p99=%d p999=%d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
