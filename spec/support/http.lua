-- spec/support/http.lua: speaking to the admin API from specs, with no curl:
-- one HTTP/1.1 request per luasocket connection, and a line-by-line
-- validator of the Prometheus text format 0.0.4 (counters, gauges and
-- histograms).
--
--   local http = require("support.http")
--   local status, body, raw = http.get(port, "/status")
--   local samples = http.parse_metrics(body)        -- asserts the format
--   http.metric(samples, "sluice_up")               -- sum of matching samples
--   http.metric(samples, "sluice_operator_records_in_total", 'operator="count"')
local proc = require("support.proc")

local M = {}

-- One request (raw bytes) on a new connection; returns status (nil when
-- the server closed without answering), body, the whole response.
-- opts.half_close: shut the sending side after the request;
-- opts.timeout: seconds to wait for the answer (default 5).
function M.request(port, raw, opts)
  opts = opts or {}
  local c = assert(proc.connect("127.0.0.1", port, 5))
  c:settimeout(opts.timeout or 5)
  proc.send_all(c, raw, 5) -- may fail when the server answers early
  if opts.half_close then c:shutdown("send") end
  local resp, _, partial = c:receive("*a")
  c:close()
  resp = resp or partial
  if not resp or resp == "" then return nil, nil, resp end
  local status = tonumber(resp:match("^HTTP/1%.1 (%d%d%d) "))
  local body = resp:match("\r\n\r\n(.*)$")
  return status, body, resp
end

function M.get(port, path, opts)
  return M.request(port, "GET " .. path .. " HTTP/1.1\r\nHost: localhost\r\n\r\n", opts)
end

function M.post(port, path, opts)
  return M.request(port, "POST " .. path ..
    " HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n", opts)
end

-- Prometheus text format 0.0.4, one pattern per kind of line.
local NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*"
local LABEL = "[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\n]*\""
local NUMBER = "[-+]?[0-9]*%.?[0-9]+[eE]?[-+]?[0-9]*"

-- name, value, labels text (without le) and le of one sample line, or nil.
local function check_sample(line)
  local name, rest = line:match("^(" .. NAME .. ")(.*)$")
  if not name then return nil end
  local labels = ""
  if rest:sub(1, 1) == "{" then
    local after
    labels, after = rest:match("^{(.-)}(.*)$")
    if not labels then return nil end
    local i = 1
    while i <= #labels do
      local s, e = labels:find("^" .. LABEL, i)
      if not s then return nil end
      i = e + 1
      if i <= #labels then
        if labels:sub(i, i) ~= "," then return nil end
        i = i + 1
      end
    end
    rest = after
  end
  local v = rest:match("^ (%S+)$")
  if not v then return nil end
  if not (v:match("^" .. NUMBER .. "$") or v == "NaN" or v == "+Inf" or v == "-Inf") then
    return nil
  end
  local le = labels:match(',?le="([^"]*)"')
  local series = labels:gsub(',?le="[^"]*"', "")
  return name, tonumber(v), series, le
end

-- The family a sample belongs to: a histogram's _bucket/_sum/_count
-- samples belong to the histogram's name.
local function family_of(types, name)
  if types[name] then return name, "" end
  for _, suffix in ipairs({ "_bucket", "_sum", "_count" }) do
    local base = name:sub(1, -#suffix - 1)
    if name:sub(-#suffix) == suffix and types[base] == "histogram" then
      return base, suffix
    end
  end
end

-- A histogram series: le ascending, counts cumulative, +Inf last and equal
-- to _count, _sum present.
local function check_histogram(fam, series, h)
  local where = fam .. "{" .. series .. "}"
  assert(#h.buckets > 0, "histogram without buckets: " .. where)
  local prev_le, prev_n = -math.huge, 0
  for _, b in ipairs(h.buckets) do
    local le = b.le == "+Inf" and math.huge or tonumber(b.le)
    assert(le, "bad le: " .. where .. " le=" .. tostring(b.le))
    assert(le > prev_le, "le not ascending: " .. where)
    assert(b.n >= prev_n, "buckets not cumulative: " .. where)
    prev_le, prev_n = le, b.n
  end
  assert(prev_le == math.huge, "no +Inf bucket: " .. where)
  assert(h.count == prev_n, "+Inf bucket ~= _count: " .. where)
  assert(h.sum, "no _sum: " .. where)
end

-- Validates an exposition; returns { [name] = { samples } } or fails.
-- A histogram's samples are filed under their own names (NAME_bucket with
-- `le` in its line, NAME_sum, NAME_count).
function M.parse_metrics(text)
  local types, samples, hists = {}, {}, {}
  assert(text:sub(-1) == "\n", "the exposition must end with a newline")
  for _, line in ipairs(proc.lines(text)) do
    if line:sub(1, 1) == "#" then
      local help = line:match("^# HELP (" .. NAME .. ") %S.*$")
      local tname, t = line:match("^# TYPE (" .. NAME .. ") (%a+)$")
      assert(help or tname, "bad comment line: " .. line)
      if tname then
        assert(t == "counter" or t == "gauge" or t == "histogram", "bad type: " .. line)
        assert(not types[tname], "TYPE given twice: " .. line)
        types[tname] = t
      end
    else
      local name, v, series, le = check_sample(line)
      assert(name, "bad sample line: " .. line)
      local fam, suffix = family_of(types, name)
      assert(fam, "sample before its TYPE: " .. line)
      if types[fam] == "counter" then
        assert(name:match("_total$"), "a counter's name ends in _total: " .. line)
        assert(v >= 0, "negative counter: " .. line)
      elseif types[fam] == "histogram" then
        local key = fam .. "{" .. series .. "}"
        local h = hists[key] or { fam = fam, series = series, buckets = {} }
        hists[key] = h
        if suffix == "_bucket" then
          assert(le, "a bucket without le: " .. line)
          h.buckets[#h.buckets + 1] = { le = le, n = v }
        elseif suffix == "_sum" then
          h.sum = v
        else
          h.count = v
        end
      end
      assert(name:match("^sluice_"), "not prefixed sluice_: " .. line)
      samples[name] = samples[name] or {}
      samples[name][#samples[name] + 1] = { line = line, value = v }
    end
  end
  for _, h in pairs(hists) do check_histogram(h.fam, h.series, h) end
  return samples
end

-- The sum of the samples of `name` whose line contains `match` (plain),
-- or nil when there is none.
function M.metric(samples, name, match)
  local total, found = 0, false
  for _, s in ipairs(samples[name] or {}) do
    if not match or s.line:find(match, 1, true) then
      total, found = total + s.value, true
    end
  end
  return found and total or nil
end

-- GET /metrics, validated.
function M.metrics(port)
  local status, body = M.get(port, "/metrics")
  assert(status == 200, "GET /metrics: " .. tostring(status) .. " " .. tostring(body))
  return M.parse_metrics(body)
end

return M
