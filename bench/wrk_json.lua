-- wrk script of `bench/load.sh --json`: after the run, one JSON line with
-- requests/s, p50 and p99 latency in ms, and the failed requests.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests_per_s": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "requests": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
