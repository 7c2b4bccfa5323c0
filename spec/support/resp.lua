-- spec/support/resp.lua: a tiny blocking Redis client (RESP2 over
-- luasocket) and a redis-server of a test's own, for the Redis specs and
-- bench/redis.lua.
--
--   local resp = require("support.resp")
--   local srv = resp.server(dir)            -- redis-server on a free loopback
--                                           -- port, AOF on, data in dir
--   local r = assert(resp.connect(srv.port))
--   r:call("HGETALL", "counts")             -- reply (errors: nil, "ERR ...")
--   r:pipeline({ {"XADD", "s", "*", "v", "a"}, ... })   -- every reply, in order
--   srv:stop() ; srv:start()                -- SIGTERM (AOF flushed) / again,
--                                           -- same port and dir
--
-- The server process is started through support.proc, so proc.reap_all()
-- kills it by PID if a test fails half-way.
local socket = require("socket")
local proc = require("support.proc")

local M = {}

local function encode(args)
  local t = { "*" .. #args .. "\r\n" }
  for i = 1, #args do
    local a = tostring(args[i])
    t[#t + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return table.concat(t)
end
M.encode = encode

local C = {}
C.__index = C

-- Reads one reply. Error replies come back as { err = "..." }.
function C:read()
  local line, err = self.sock:receive("*l")
  if not line then return nil, err end
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then return rest
  elseif kind == "-" then return { err = rest }
  elseif kind == ":" then return tonumber(rest)
  elseif kind == "$" then
    local n = tonumber(rest)
    if n < 0 then return false end
    local s, e = self.sock:receive(n + 2)
    if not s then return nil, e end
    return s:sub(1, n)
  elseif kind == "*" then
    local n = tonumber(rest)
    if n < 0 then return false end
    local t = {}
    for i = 1, n do
      local v, e = self:read()
      if v == nil then return nil, e end
      t[i] = v
    end
    return t
  end
  return nil, "bad reply line " .. line
end

-- One command: its reply, or nil and a message (an error reply, a
-- connection failure).
function C:call(...)
  local ok, err = self.sock:send(encode({ ... }))
  if not ok then return nil, err end
  local v, e = self:read()
  if v == nil then return nil, e end
  if type(v) == "table" and v.err then return nil, v.err end
  return v
end

-- Many commands in one write (in chunks of 5000): the list of replies.
function C:pipeline(cmds)
  local out = {}
  local i = 1
  while i <= #cmds do
    local j = math.min(#cmds, i + 4999)
    local buf = {}
    for k = i, j do buf[#buf + 1] = encode(cmds[k]) end
    local ok, err = self.sock:send(table.concat(buf))
    if not ok then return nil, err end
    for _ = i, j do
      local v, e = self:read()
      if v == nil then return nil, e end
      out[#out + 1] = v
    end
    i = j + 1
  end
  return out
end

-- A hash as a Lua table (HGETALL).
function C:hgetall(key)
  local t, err = self:call("HGETALL", key)
  if not t then return nil, err end
  local h = {}
  for i = 1, #t, 2 do h[t[i]] = t[i + 1] end
  return h
end

-- Every entry of a stream: { {id, {field, value, ...}}, ... } (XRANGE in
-- pages of 10000).
function C:xrange_all(stream)
  local out, start = {}, "-"
  while true do
    local page, err = self:call("XRANGE", stream, start, "+", "COUNT", 10000)
    if not page then return nil, err end
    for _, e in ipairs(page) do out[#out + 1] = e end
    if #page < 10000 then return out end
    start = "(" .. page[#page][1]
  end
end

function C:close() self.sock:close() end

-- connect(port [, timeout]): a client, or nil and the last error.
function M.connect(port, timeout)
  local deadline = socket.gettime() + (timeout or 5)
  local last
  repeat
    local s = socket.tcp()
    s:settimeout(30)
    local ok, err = s:connect("127.0.0.1", port)
    if ok then
      local c = setmetatable({ sock = s }, C)
      local pong = c:call("PING")
      if pong == "PONG" then return c end
      last = "PING: " .. tostring(pong)
      s:close()
    else
      s:close()
      last = err
    end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return nil, "redis 127.0.0.1:" .. port .. ": " .. tostring(last)
end

-------------------------------------------------------------------------------
-- a redis-server of one's own

local S = {}
S.__index = S

-- Starts (again) on the same port and dir; waits until it answers PING
-- (after loading its AOF). Returns self.
function S:start()
  self.runs = self.runs + 1
  self.pid = proc.spawn({ "redis-server", "--port", self.port, "--bind", "127.0.0.1",
    "--save", "", "--appendonly", self.aof and "yes" or "no", "--appendfsync", self.fsync, "--dir", self.dir,
    "--daemonize", "no", "--logfile", self.dir .. "/redis-" .. self.runs .. ".log" })
  local c, err = M.connect(self.port, 10)
  assert(c, "redis-server did not come up: " .. tostring(err) .. "\n"
    .. proc.tail(proc.read_file(self.dir .. "/redis-" .. self.runs .. ".log") or ""))
  c:close()
  return self
end

-- SIGTERM (redis-server flushes its AOF and exits); waits for the exit.
function S:stop()
  if self.pid then
    local r = proc.stop(self.pid, "TERM", 10)
    self.pid = nil
    return r
  end
end

function S:url(db, prefix)
  return "redis://127.0.0.1:" .. self.port .. "/" .. (db or 0) .. (prefix and ("?prefix=" .. prefix) or "")
end

-- server(dir [, opts]): opts.fsync = "everysec" (default) | "always" | "no";
-- opts.aof = false: no append-only file (a restart loses everything).
function M.server(dir, opts)
  opts = opts or {}
  proc.mkdir_p(dir)
  local self = setmetatable({ dir = dir, port = opts.port or proc.free_port(), runs = 0,
    fsync = opts.fsync or "everysec", aof = opts.aof ~= false }, S)
  return self:start()
end

return M
