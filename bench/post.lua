-- wrk script: POST /api/v1/tasks/add with {"args":{"x":1,"y":2}} and the bearer token
-- from BENCH_TOKEN; counts every answer that is not 2xx (wrk's own counter skips 3xx).
--   BENCH_TOKEN=... wrk -t2 -c16 -d10s --latency -s bench/post.lua http://127.0.0.1:PORT/api/v1/tasks/add

local token = os.getenv("BENCH_TOKEN") or ""
wrk.method = "POST"
wrk.body = '{"args":{"x":1,"y":2}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   non2xx = 0
   first_bad = ""
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if first_bad == "" then
         first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200)
      end
   end
end

function done(summary, latency, requests)
   local total = 0
   local bad = ""
   for _, thread in ipairs(threads) do
      total = total + thread:get("non2xx")
      local b = thread:get("first_bad")
      if bad == "" and b ~= nil then bad = b end
   end
   io.write(string.format("non2xx: %d\n", total))
   if bad ~= "" then
      io.write("first_non2xx: " .. string.gsub(bad, "\n", " ") .. "\n")
   end
end
