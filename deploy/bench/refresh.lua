-- wrk driver for POST /api/v1/auth/refresh. A refresh token is single use (it rotates), so every
-- request must carry a token nobody has spent: each wrk thread walks its own slice of a pool of
-- pre-issued tokens, one line each, in order, and never sends the same one twice. If a thread
-- runs out it stops sending (counted in `exhausted`), rather than replaying spent tokens (which
-- would be 401 and revoke the session).
--
-- usage: wrk -t N -c 32 -d 10s -s refresh.lua URL -- TOKEN_FILE OUT_JSON N

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

tokens = {}
next_index = 1
codes = {}
exhausted = 0

function init(args)
   token_file = args[1]
   out_file = args[2]
   local nthreads = tonumber(args[3])
   local i = 0
   for line in io.lines(token_file) do
      if i % nthreads == id then
         tokens[#tokens + 1] = line
      end
      i = i + 1
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local token = tokens[next_index]
   if token == nil then
      exhausted = exhausted + 1
      -- Out of unspent tokens: a request that cannot succeed, and is counted as such.
      token = "pool-exhausted"
   end
   next_index = next_index + 1
   return wrk.format(nil, nil, nil, '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
   local key = tostring(status)
   if status == 503 or status == 429 then
      if headers["Retry-After"] == nil and headers["retry-after"] == nil then
         key = key .. "-no-retry-after"
      end
   end
   codes[key] = (codes[key] or 0) + 1
end

function done(summary, latency, requests)
   local merged = {}
   local exhausted_total = 0
   for _, thread in ipairs(threads) do
      local c = thread:get("codes")
      for k, v in pairs(c) do
         merged[k] = (merged[k] or 0) + v
      end
      exhausted_total = exhausted_total + thread:get("exhausted")
   end
   local parts = {}
   for k, v in pairs(merged) do
      parts[#parts + 1] = string.format('"%s": %d', k, v)
   end
   local f = io.open(threads[1]:get("out_file"), "w")
   f:write("{\n")
   f:write(string.format('  "requests": %d,\n', summary.requests))
   f:write(string.format('  "duration_us": %d,\n', summary.duration))
   f:write(string.format('  "p50_us": %d,\n', latency:percentile(50)))
   f:write(string.format('  "p99_us": %d,\n', latency:percentile(99)))
   f:write(string.format('  "max_us": %d,\n', latency.max))
   f:write(string.format('  "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d},\n',
      summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
      summary.errors.timeout))
   f:write(string.format('  "exhausted": %d,\n', exhausted_total))
   f:write('  "status": {' .. table.concat(parts, ", ") .. "}\n")
   f:write("}\n")
   f:close()
end
