-- spec/support/proc.lua: processes, files, ports and sockets for the
-- end-to-end specs (spec/e2e/*_spec.lua).
--
--   local proc = require("support.proc")
--   local pid = proc.spawn({ proc.bin(), "run", conf }, { stdout = p1, stderr = p2 })
--   local code = proc.wait(pid, 10)     -- 0.. | "signal N" | nil on timeout
--   proc.kill(pid, "TERM")
--   local code, out, err = proc.run({ proc.bin(), "check", conf }, 10)
--   proc.reap_all()                     -- in after_each: SIGKILL + reap every
--                                       -- process this module started, by PID
--
-- Every process started through spawn/run is remembered by its PID until it
-- has been reaped, so that an after_each can kill whatever a failing test
-- left running (one kill(2) per PID; never by name, never a group).

local unistd = require("posix.unistd")
local pwait = require("posix.sys.wait")
local psignal = require("posix.signal")
local fcntl = require("posix.fcntl")
local pstdlib = require("posix.stdlib")
local dirent = require("posix.dirent")
local socket = require("socket")

local M = {}

local SIG = {
  HUP = psignal.SIGHUP, INT = psignal.SIGINT, KILL = psignal.SIGKILL,
  TERM = psignal.SIGTERM, STOP = psignal.SIGSTOP, CONT = psignal.SIGCONT,
  USR1 = psignal.SIGUSR1,
}
M.SIG = SIG

local live = {}    -- pid -> true while started and not reaped
local reaped = {}  -- pid -> exit result, once reaped

M.sleep = function(s) socket.sleep(s) end
M.now = socket.gettime

-------------------------------------------------------------------------------
-- paths and files

local cwd = unistd.getcwd()

local function abs(p)
  if not p or p:sub(1, 1) == "/" then return p end
  return cwd .. "/" .. p
end
M.abs = abs

-- The binary under test and the repo root, as absolute paths.
function M.bin()
  local b = os.getenv("SLUICE_BIN")
  assert(b and b ~= "", "SLUICE_BIN is not set (the path of the sluice binary)")
  return abs(b)
end

function M.source_dir()
  return abs(os.getenv("SLUICE_SOURCE_DIR") or cwd)
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

function M.exists(path)
  return unistd.access(path) == 0
end

-- Lines of s (without "\n"); a last line without "\n" counts, a trailing
-- "\n" does not make an empty last line.
function M.lines(s)
  local out = {}
  if not s or s == "" then return out end
  for l in (s:sub(-1) == "\n" and s or s .. "\n"):gmatch("(.-)\n") do
    out[#out + 1] = l
  end
  return out
end

-- A sorted copy of a list (strings compared as strings).
function M.sorted(list)
  local t = {}
  for i = 1, #list do t[i] = list[i] end
  table.sort(t, function(a, b) return tostring(a) < tostring(b) end)
  return t
end

function M.file_lines(path)
  return M.lines(M.read_file(path) or "")
end

function M.tmpdir()
  return assert(pstdlib.mkdtemp("/tmp/sluice-e2e-XXXXXX"))
end

function M.rm_rf(path)
  if not path then return end
  assert(path:match("^/tmp/sluice%-e2e%-"), "rm_rf: refusing to delete " .. path)
  os.execute("rm -rf '" .. path:gsub("'", "'\\''") .. "'")
end

function M.mkdir_p(path)
  os.execute("mkdir -p '" .. path:gsub("'", "'\\''") .. "'")
  return path
end

-- Writes files under dir from { ["rel/path"] = "contents", ... }.
function M.write_tree(dir, files)
  for rel, content in pairs(files) do
    local p = dir .. "/" .. rel
    local d = p:match("^(.*)/[^/]*$")
    if d and d ~= dir then M.mkdir_p(d) end
    M.write_file(p, content)
  end
end

-------------------------------------------------------------------------------
-- processes

local function close_inherited_fds()
  local ok, fds = pcall(dirent.dir, "/proc/self/fd")
  if not ok then return end
  for _, name in ipairs(fds) do
    local fd = tonumber(name)
    if fd and fd > 2 then unistd.close(fd) end
  end
end

local function open_or_die(path, flags, mode)
  local fd = fcntl.open(path, flags, mode)
  if not fd then
    io.stderr:write("proc.spawn: cannot open " .. tostring(path) .. "\n")
    unistd._exit(126)
  end
  return fd
end

-- spawn(args, opts) -> pid. args[1] is the program (searched in PATH).
-- opts: stdout, stderr (paths, truncated; default /dev/null), stdin (path,
-- default /dev/null), env (table: name -> string, or false to unset), cwd.
function M.spawn(args, opts)
  opts = opts or {}
  assert(type(args) == "table" and args[1], "spawn: args must be a list")
  io.stdout:flush()
  io.stderr:flush()
  local pid, err = unistd.fork()
  assert(pid, err)
  if pid == 0 then
    local ok, msg = pcall(function()
      local O = fcntl
      local fin = open_or_die(opts.stdin or "/dev/null", O.O_RDONLY)
      local fout = open_or_die(opts.stdout or "/dev/null", O.O_WRONLY + O.O_CREAT + O.O_TRUNC, 420)
      local ferr = open_or_die(opts.stderr or "/dev/null", O.O_WRONLY + O.O_CREAT + O.O_TRUNC, 420)
      unistd.dup2(fin, 0)
      unistd.dup2(fout, 1)
      unistd.dup2(ferr, 2)
      close_inherited_fds()
      if opts.env then
        for k, v in pairs(opts.env) do
          if v == false then pstdlib.setenv(k, nil) else pstdlib.setenv(k, tostring(v), true) end
        end
      end
      if opts.cwd then assert(unistd.chdir(opts.cwd)) end
      local argt = {}
      for i = 2, #args do argt[i - 1] = tostring(args[i]) end
      argt[0] = args[1]
      local _, e = unistd.execp(args[1], argt)
      io.stderr:write("proc.spawn: cannot exec " .. tostring(args[1]) .. ": " .. tostring(e) .. "\n")
    end)
    if not ok then io.stderr:write("proc.spawn: " .. tostring(msg) .. "\n") end
    unistd._exit(127)
  end
  live[pid] = true
  return pid
end

local function result_of(status, code)
  if status == "exited" then return code end
  return "signal " .. tostring(code)
end

-- Non-blocking: the result if pid has ended (0.., "signal N"), else nil.
function M.poll(pid)
  if reaped[pid] ~= nil then return reaped[pid] end
  local p, status, code = pwait.wait(pid, pwait.WNOHANG)
  if p == nil then
    -- not our child any more (or never was): treat as gone
    live[pid] = nil
    reaped[pid] = "unknown: " .. tostring(status)
    return reaped[pid]
  end
  if p == 0 or status == "stopped" then return nil end
  live[pid] = nil
  reaped[pid] = result_of(status, code)
  return reaped[pid]
end

-- wait(pid, timeout_s) -> exit code, "signal N", or nil on timeout.
function M.wait(pid, timeout)
  local deadline = socket.gettime() + (timeout or 10)
  while true do
    local r = M.poll(pid)
    if r ~= nil then return r end
    if socket.gettime() >= deadline then return nil end
    socket.sleep(0.02)
  end
end

function M.alive(pid)
  return M.poll(pid) == nil
end

-- kill(pid, sig): sig a number or "TERM", "INT", "KILL", ... (default TERM).
-- Does nothing for a process that has already been reaped.
function M.kill(pid, sig)
  if not pid or reaped[pid] ~= nil or not live[pid] then return false end
  if type(sig) == "string" then sig = assert(SIG[sig], "unknown signal " .. sig) end
  return psignal.kill(pid, sig or psignal.SIGTERM) == 0
end

-- SIGKILLs and reaps every process started here that is still running.
function M.reap_all()
  for pid in pairs(live) do
    if M.poll(pid) == nil then
      psignal.kill(pid, psignal.SIGKILL)
      M.wait(pid, 5)
    end
  end
end

-- Stops pid: sig (default TERM), then SIGKILL if it has not ended within
-- grace seconds. Returns its exit result.
function M.stop(pid, sig, grace)
  if M.poll(pid) ~= nil then return M.poll(pid) end
  M.kill(pid, sig or "TERM")
  local r = M.wait(pid, grace or 5)
  if r == nil then
    M.kill(pid, "KILL")
    r = M.wait(pid, 5)
  end
  return r
end

-- run(args, timeout, opts) -> code ("signal N" / nil on timeout), stdout, stderr.
-- On timeout the process is killed (by PID) and its output so far returned.
function M.run(args, timeout, opts)
  opts = opts or {}
  local dir = M.tmpdir()
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.stdout, o.stderr = dir .. "/stdout", dir .. "/stderr"
  local pid = M.spawn(args, o)
  local code = M.wait(pid, timeout or 30)
  if code == nil then
    M.kill(pid, "KILL")
    M.wait(pid, 5)
  end
  local out, err = M.read_file(o.stdout) or "", M.read_file(o.stderr) or ""
  M.rm_rf(dir)
  return code, out, err
end

-- Resident set of pid in kB (VmRSS), or nil when it is gone.
function M.rss_kb(pid)
  local s = M.read_file("/proc/" .. pid .. "/status")
  if not s then return nil end
  local kb = s:match("VmRSS:%s*(%d+)%s*kB")
  return kb and tonumber(kb)
end

-- Polls fn() every interval (default 20 ms) until it returns a truthy value
-- (returned) or timeout seconds have passed (returns nil).
function M.wait_for(fn, timeout, interval)
  local deadline = socket.gettime() + (timeout or 10)
  while true do
    local v = fn()
    if v then return v end
    if socket.gettime() >= deadline then return nil end
    socket.sleep(interval or 0.02)
  end
end

-------------------------------------------------------------------------------
-- sockets

-- A free loopback TCP port (bound then released).
function M.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- connect(host, port, timeout): retries until the peer listens; returns a
-- connected luasocket tcp client or nil, err after timeout seconds.
-- If pid is given, gives up as soon as that process has ended.
function M.connect(host, port, timeout, pid)
  local deadline = socket.gettime() + (timeout or 10)
  local last
  while socket.gettime() < deadline do
    if pid and M.poll(pid) ~= nil then
      return nil, "process " .. pid .. " ended: " .. tostring(M.poll(pid))
    end
    local c = socket.tcp()
    c:settimeout(1)
    local ok, err = c:connect(host, port)
    if ok then return c end
    c:close()
    last = err
    socket.sleep(0.02)
  end
  return nil, "cannot connect to " .. host .. ":" .. port .. ": " .. tostring(last)
end

-- Sends all of s on a blocking socket (timeout seconds); true or nil, err.
function M.send_all(c, s, timeout)
  c:settimeout(timeout or 10)
  local i = 1
  while i <= #s do
    local last, err, partial = c:send(s, i)
    if last then
      i = last + 1
    else
      if partial and partial >= i then i = partial + 1 end
      if err ~= "timeout" then return nil, err end
      return nil, err
    end
  end
  return true
end

-------------------------------------------------------------------------------
-- helpers for sluice runs

-- Starts `sluice run CONF [flags...]`; output into dir/stdout, dir/stderr.
function M.start_sluice(conf, flags, opts)
  opts = opts or {}
  local dir = opts.dir or conf:match("^(.*)/[^/]*$")
  local args = { M.bin(), "run", conf }
  for _, f in ipairs(flags or {}) do args[#args + 1] = f end
  return M.spawn(args, {
    stdout = opts.stdout or (dir .. "/stdout"),
    stderr = opts.stderr or (dir .. "/stderr"),
    stdin = opts.stdin, env = opts.env, cwd = opts.cwd,
  })
end

-- Runs `sluice run CONF [flags...]` to its end (timeout seconds, killed on
-- timeout): code, stdout, stderr.
function M.run_sluice(conf, flags, timeout, opts)
  local args = { M.bin(), "run", conf }
  for _, f in ipairs(flags or {}) do args[#args + 1] = f end
  return M.run(args, timeout or 60, opts)
end

-- Escapes a string for use in a Lua pattern.
function M.pesc(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- A message for assertions: the tail of a (log) string.
function M.tail(s, n)
  n = n or 2000
  if not s then return "" end
  if #s <= n then return s end
  return "..." .. s:sub(-n)
end

return M
