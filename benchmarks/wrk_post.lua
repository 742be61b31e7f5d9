-- wrk script: POST the body in $WRK_BODY_FILE with $WRK_CONTENT_TYPE and the headers in
-- $WRK_HEADERS (a flat JSON object of strings), then print one WRK_JSON line when done.
-- $WRK_METHOD=GET sends no body instead.
wrk.method = os.getenv("WRK_METHOD") or "POST"
if wrk.method ~= "GET" then
  local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
  wrk.body = f:read("*a")
  f:close()
end
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
local extra = os.getenv("WRK_HEADERS") or "{}"
for k, v in string.gmatch(extra, '"([^"]+)"%s*:%s*"([^"]*)"') do
  wrk.headers[k] = v
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
