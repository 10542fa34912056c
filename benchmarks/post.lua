-- wrk script: POST a small JSON object and print one machine-readable result line.
wrk.method = "POST"
wrk.body = '{"text":"hello world","n":42}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local seconds = summary.duration / 1000000
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    'JSON {"requests":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,"errors":%d}\n',
    summary.requests, summary.requests / seconds, latency:percentile(50), latency:percentile(99), errors))
end
