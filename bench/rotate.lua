-- wrk script: each request carries the next value from a file, in a header.
--   BENCH_VALUES    file, one value per line (tokens, or a Cookie header value)
--   BENCH_HEADER    header name (default Authorization)
--   BENCH_PREFIX    text before the value (default "Bearer ")
--   BENCH_OFFSET    index of the first value (default 0), so that successive
--                   runs can walk on through the file
--   BENCH_DELAY_MS  pause after each answer, per connection (pacing; none by
--                   default)
-- Thread i of n sends values offset+i, offset+i+n, ...: the threads never
-- send the same value, so N requests in all send N distinct values while
-- N < lines.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  table.insert(threads, thread)
  next_id = next_id + 1
end

function init(args)
  values = {}
  for line in io.lines(os.getenv("BENCH_VALUES")) do
    if #line > 0 then values[#values + 1] = line end
  end
  header = os.getenv("BENCH_HEADER") or "Authorization"
  prefix = os.getenv("BENCH_PREFIX")
  if prefix == nil then prefix = "Bearer " end
  stride = tonumber(os.getenv("BENCH_THREADS") or "1")
  i = id + tonumber(os.getenv("BENCH_OFFSET") or "0")
  pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
end

function request()
  local v = values[(i % #values) + 1]
  i = i + stride
  return wrk.format(nil, nil, { [header] = prefix .. v })
end

-- Defined only when pacing: wrk takes another (timer) path for every
-- request once a script has delay().
if tonumber(os.getenv("BENCH_DELAY_MS") or "0") > 0 then
  function delay()
    return pause
  end
end
