-- wrk script for bench/gateway/run.sh, scenario "pull": every request is
--   POST /api/sync/pull  {"cursor":0}  with  Authorization: Bearer $BTP_BENCH_TOKEN
-- (run.sh registers a user once and passes its token in the environment).
-- Only wrk.* fields are set, no request()/response() functions, so wrk keeps its fast
-- path: the request is formatted once and resent as is.
local token = os.getenv("BTP_BENCH_TOKEN")
if token == nil or token == "" then
    error("BTP_BENCH_TOKEN is not set (run this through bench/gateway/run.sh)")
end

wrk.method = "POST"
wrk.body = '{"cursor":0}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
