-- Spec of bindings/sluice/conf.lua: conf loading, validation and planning.
-- Run: LUA_PATH="bindings/?.lua;;" busted --lua=luajit spec/lua/conf_spec.lua
local conf = require("sluice.conf")

local CWD = io.popen("pwd"):read("*l")
local D = "spec/fixtures/conf/"

local function load(name, opts)
  opts = opts or {}
  opts.cwd = opts.cwd or CWD
  opts.cores = opts.cores or 2
  return conf.load(D .. name, opts)
end

local function errors_of(name)
  local plan, errs = load(name)
  assert.is_nil(plan)
  return errs
end

-- every bad fixture and the exact errors it gives, in order
local BAD = {
  bad_syntax = { "2: unexpected symbol near '='" },
  bad_runtime = { "3: attempt to index global 'nothing' (a nil value)" },
  bad_endless = { "2: the conf takes too long to evaluate (an endless loop?)" },
  bad_unknown_field = {
    "5: operator 'op': unknown field 'paralelism' (did you mean 'parallelism'?)",
    "6: operator 'op': unknown field 'colour'",
  },
  bad_field_for_other_kind = { "1: source 'a': field 'path' does not apply to kind 'stdin'" },
  bad_unknown_kind = {
    "1: source 'a': unknown source kind \"kafka\" (file, stdin, tcp, generator, redis)",
    "3: sink 'b': unknown sink kind \"s3\" (stdout, file, tcp, redis, null)",
  },
  bad_redis_kind = {
    "1: source 'a': missing required field 'stream'",
    "3: sink 'c': missing required field 'key'",
    "3: sink 'c': command must be xadd, hset, set or publish (got \"lpush\")",
    "4: source 'd': url must be \"redis://[:PASSWORD@]HOST:PORT[/DB]\" (got \"http://x\")",
    "4: source 'd': start must be \"first\" or \"last\" (got \"middle\")",
    "5: source 'd': connect_timeout must be a duration like \"5s\" (got \"soon\")",
  },
  bad_missing_kind = { "1: source 'a': missing required field 'kind' (file, stdin, tcp, generator, redis)" },
  bad_missing_path = {
    "1: source 'a': missing required field 'path'",
    "2: sink 'b': missing required field 'path'",
  },
  bad_missing_listen = { "1: source 'a': missing required field 'listen'" },
  bad_missing_connect = { "2: sink 'b': missing required field 'connect'" },
  bad_missing_script = { "2: operator 'op': missing required field 'script'" },
  bad_missing_from = { "2: operator 'op': missing required field 'from'" },
  bad_missing_input = { "4: operator 'op': input 'nope' is not declared" },
  bad_from_sink = { "3: operator 'op': input 'b' is a sink (a sink has no output)" },
  bad_cycle = { "2: cycle: x -> y -> z -> x", "7: cycle: self -> self" },
  bad_duplicate = { "2: duplicate name 'a' (first declared at line 1)" },
  bad_parallelism = {
    "2: operator 'op': parallelism must be an integer >= 1 (got \"two\")",
    "3: operator 'op2': parallelism must be an integer >= 1 (got 0)",
    "4: operator 'op3': parallelism must be an integer >= 1 (got 1.5)",
  },
  bad_parallelism_source = {
    "1: source 'a': parallelism is not allowed on a source (it always has one instance)",
    "2: sink 'b': parallelism is not allowed on a sink (it always has one instance)",
  },
  bad_max_parallelism = { "3: operator 'op': parallelism 8 exceeds max_parallelism 4" },
  bad_workers = { "2: workers must be an integer >= 1 (got 0)" },
  bad_count = {
    "1: source 'a': count must be an integer >= 0 (leave it out for no end) (got -5)",
    "1: source 'a': rate must be a number >= 0 (records per second, 0 = unlimited) (got -1)",
  },
  bad_max_line = {
    "1: source 'a': follow must be true or false (got \"yes\")",
    "1: source 'a': max_line must be an integer >= 1 (got 0)",
    "2: source 'c': max_line must be an integer >= 1 (got 10.5)",
  },
  bad_hostport = {
    "1: source 'a': listen must be \"HOST:PORT\" with an IPv4 address, [IPv6] or localhost and a port 0-65535 (got \"example.com:80\")",
    "2: source 'c': listen must be \"HOST:PORT\" with an IPv4 address, [IPv6] or localhost and a port 0-65535 (got \"127.0.0.1:99999\")",
    "3: sink 'b': connect must be \"HOST:PORT\" with an IPv4 address, [IPv6] or localhost and a port 1-65535 (got \"127.0.0.1:0\")",
    "4: sink 'd': connect must be \"HOST:PORT\" with an IPv4 address, [IPv6] or localhost and a port 1-65535 (got \"127.0.0.1\")",
  },
  bad_grouping = { "2: operator 'op': grouping must be shuffle, key, broadcast or forward (got \"hash\")" },
  bad_forward = { "5: operator 'y': forward from 'x' needs equal parallelism ('x' has 2, 'y' has 3)" },
  bad_on_error = { "2: operator 'op': on_error must be skip, dead_letter or stop (got \"ignore\")" },
  bad_dead_letter_missing = {
    "4: operator 'op': on_error = \"dead_letter\" needs dead_letter = \"SINK\" (a sink declared without from)",
  },
  bad_dead_letter_target = {
    "2: operator 'x': dead_letter 'nope' is not declared",
    "3: operator 'y': dead_letter 'x' is not a sink",
    "4: operator 'z': dead_letter 'b' must be a sink declared without from (it has from)",
  },
  bad_dead_letter_on_error = {
    "4: operator 'x': dead_letter is used only with on_error = \"dead_letter\" (on_error is \"stop\")",
  },
  bad_sink_no_input = { "3: sink 'lonely' has no input" },
  bad_two_pipelines = { "2: more than one pipeline declaration (the first is at line 1)" },
  bad_guarantee = { "1: guarantee must be at_most_once, at_least_once or exactly_once (got \"once\")" },
  bad_exactly_once = { "2: exactly_once needs checkpointing (a checkpoint block)" },
  bad_at_least_once_tcp = {
    "2: at_least_once cannot be given: source 'a' (tcp) is not replayable (at_most_once only)",
  },
  bad_checkpoint_admin = {
    '3: admin must be "HOST:PORT" with an IPv4 address, [IPv6] or localhost and a port 0-65535 (got "127.0.0.1")',
  },
  bad_checkpoint_fields = {
    "2: checkpoint.every must be a duration like \"500ms\", \"1s\", \"2m\" (got \"soon\")",
    "3: checkpoint.keep must be a whole number >= 1 (got 0)",
    "4: checkpoint.store must be \"file://PATH\", \"redis://HOST:PORT/DB\" or \"memory:\" (got \"redis:/x\")",
  },
  bad_params = {
    "2: operator 'x': params must be a table (got \"fast\")",
    "4: operator 'y': params may hold only booleans, numbers, strings and tables: params.f is a function",
  },
  bad_allow = {
    "2: operator 'x': allow must be a list of strings among \"io\", \"os\", \"ffi\", \"require\"",
    "3: operator 'y': jit must be true or false (got \"no\")",
    "3: operator 'y': allow must be a list of strings among \"io\", \"os\", \"ffi\", \"require\"",
  },
  bad_no_source = { "1: no source declared", "2: sink 'b' has no input" },
  bad_script_missing = {
    "4: operator 'x': cannot read script '../scripts/missing.lua': No such file or directory",
  },
  bad_declaration = {
    "2: sink: expected a name, as in sink \"name\" { ... } (got a table)",
    "3: sink 'b': expected a table of fields { ... } (got \"c\")",
    "4: sink 'd': missing its fields table, as in sink \"d\" { ... }",
    "5: operator 'bad name': a name may hold only letters, digits, '_', '-' and '.'",
    "6: sink 'e': fields must be name = value pairs (found a value at [1])",
  },
  bad_many = {
    "1: workers must be an integer >= 1 (got 0)",
    "2: source 'a': count must be an integer >= 0 (leave it out for no end) (got -1)",
    "3: operator 'x': grouping must be shuffle, key, broadcast or forward (got \"fwd\")",
    "4: sink 'b': unknown field 'colour'",
  },
}

describe("sluice.conf errors", function()
  local names = {}
  for name in pairs(BAD) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    it(name .. ".conf", function()
      local want = {}
      for i, m in ipairs(BAD[name]) do want[i] = D .. name .. ".conf:" .. m end
      assert.same(want, errors_of(name .. ".conf"))
    end)
  end

  it("every bad_*.conf fixture has expectations", function()
    for f in io.popen("ls " .. D):lines() do
      local n = f:match("^(bad_.*)%.conf$")
      if n and n ~= "bad_script_syntax" then assert.is_not_nil(BAD[n], n) end
    end
  end)

  it("reports a script that does not compile in the script's terms", function()
    assert.same({ "spec/fixtures/scripts/bad_syntax.lua:4: ')' expected (to close '(' at line 3) near 'end'" },
      errors_of("bad_script_syntax.conf"))
  end)

  it("reports a conf that cannot be read", function()
    local plan, errs = conf.load("spec/fixtures/conf/nope.conf", { cwd = CWD })
    assert.is_nil(plan)
    assert.same({ "spec/fixtures/conf/nope.conf:1: cannot read the conf: No such file or directory" }, errs)
  end)

  it("uses the path as given, also when absolute", function()
    local p = CWD .. "/" .. D .. "bad_workers.conf"
    local _, errs = conf.load(p, {})
    assert.same({ p .. ":2: workers must be an integer >= 1 (got 0)" }, errs)
  end)

  it("gives the sandbox nothing but the four declarations", function()
    local tmp = os.tmpname()
    local f = io.open(tmp, "w")
    f:write('source "a" { kind = "stdin" }\nsink "b" { kind = "stdout", from = "a" }\nprint(os)\n')
    f:close()
    local _, errs = conf.load(tmp, {})
    os.remove(tmp)
    assert.same({ tmp .. ":3: attempt to call global 'print' (a nil value)" }, errs)
  end)
end)

describe("sluice.conf plans", function()
  local function node(plan, name)
    for i = 0, plan.n_nodes - 1 do
      if plan.nodes[i].name == name then return plan.nodes[i] end
    end
  end
  local function insts(plan, name)
    local n = node(plan, name)
    local t = {}
    for k = 0, n.parallelism - 1 do t[#t + 1] = plan.instances[n.first_gid + k] end
    return t
  end
  local function threads(plan, name)
    local t = {}
    for _, i in ipairs(insts(plan, name)) do t[#t + 1] = i.thread end
    return t
  end
  -- every plan must be internally consistent
  local function check_consistent(plan)
    assert.equal(plan.workers + 1, plan.threads)
    local nch = 0
    for cid, ch in pairs(plan.channels) do
      nch = nch + 1
      assert.equal(cid, ch.cid)
      assert.equal(plan.instances[ch.from].thread, ch.producer)
      assert.equal(plan.instances[ch.to].thread, ch.consumer)
    end
    assert.equal(plan.n_channels, nch)
    local seen_in = {}
    for g = 0, plan.n_instances - 1 do
      local inst = plan.instances[g]
      assert.equal(g, inst.gid)
      assert.equal(#inst.in_channels + #inst.chained_from, inst.inputs)
      for _, c in ipairs(inst.in_channels) do
        assert.equal(g, plan.channels[c].to)
        assert.is_nil(seen_in[c]); seen_in[c] = true
      end
      for _, out in ipairs(inst.outs) do
        for _, c in pairs(out.channels) do assert.equal(g, plan.channels[c].from) end
        for _, dg in pairs(out.direct or {}) do
          local d = plan.instances[dg]
          assert.equal(inst.thread, d.thread)
          assert.are_not.equal("forward", out.grouping)
        end
        if out.chained then
          local d = plan.instances[out.chained]
          assert.equal(inst.thread, d.thread)
          assert.equal("forward", out.grouping)
        end
      end
      if plan.nodes[inst.node].type ~= "operator" then assert.equal(0, inst.thread) end
    end
    assert.equal(plan.n_channels, (function() local c = 0 for _ in pairs(seen_in) do c = c + 1 end return c end)())
    -- topological: every input comes earlier
    for i = 0, plan.n_nodes - 1 do
      assert.equal(i, plan.nodes[i].id)
      for _, e in ipairs(plan.nodes[i].inputs) do assert.is_true(e.node < i) end
    end
  end

  it("plans the wordcount example", function()
    local plan = assert(load("good_wordcount.conf"))
    check_consistent(plan)
    assert.equal("wordcount", plan.name)
    assert.equal(CWD .. "/" .. D .. "good_wordcount.conf", plan.file)
    assert.equal(CWD .. "/spec/fixtures/conf", plan.dir)
    assert.equal(2, plan.workers)
    assert.equal(3, plan.threads)
    assert.equal("at_least_once", plan.guarantee)
    assert.equal(4, plan.n_nodes)
    assert.equal(6, plan.n_instances)
    -- lines->split: 2; split->count key 2x2: 2 across workers (the 2 pairs
    -- on one worker are direct calls); count->out: 2
    assert.equal(6, plan.n_channels)
    local lines = plan.nodes[0]
    assert.same({ "lines", "source", "file", 6, 1, 0 },
      { lines.name, lines.type, lines.kind, lines.line, lines.parallelism, lines.first_gid })
    assert.equal(CWD .. "/spec/fixtures/data/lines.txt", lines.path)
    assert.equal(false, lines.follow)
    assert.equal(1048576, lines.max_line)
    local split = plan.nodes[1]
    assert.equal(CWD .. "/spec/fixtures/scripts/split.lua", split.script)
    assert.equal("@spec/fixtures/scripts/split.lua", split.chunkname)
    assert.same({}, split.params)
    assert.same({}, split.allow)
    assert.equal("skip", split.on_error)
    assert.is_true(split.jit)
    assert.same({ { node = 0, grouping = "shuffle" } }, split.inputs)
    local count = plan.nodes[2]
    assert.equal(8, count.line)
    assert.same({ { node = 1, grouping = "key" } }, count.inputs)
    assert.equal(CWD .. "/spec/fixtures/conf/out/counts.txt", plan.nodes[3].path)
    assert.same({ 1, 2 }, threads(plan, "split"))
    assert.same({ 1, 2 }, threads(plan, "count"))
    assert.same({ 0 }, threads(plan, "out"))
    assert.equal(2, insts(plan, "out")[1].inputs)
  end)

  it("--workers overrides the conf, and cores is the default", function()
    local plan = assert(load("good_wordcount.conf", { workers = 4 }))
    assert.equal(4, plan.workers)
    assert.equal(5, plan.threads)
    plan = assert(load("good_key.conf", { cores = 3 }))
    assert.equal(3, plan.workers)
    assert.same({ 1, 2 }, threads(plan, "a"))
    assert.same({ 3, 1, 2 }, threads(plan, "b"))
  end)

  it("key grouping p=2 -> p=3 makes 6 channels", function()
    local plan = assert(load("good_key.conf"))
    check_consistent(plan)
    assert.equal("good_key", plan.name)
    -- gen->a 2, a->b: 3 across workers + 3 direct, b->out 3
    assert.equal(8, plan.n_channels)
    assert.same({ 1, 2 }, threads(plan, "a"))       -- round robin over 2 workers
    assert.same({ 1, 2, 1 }, threads(plan, "b"))
    for _, ai in ipairs(insts(plan, "a")) do
      assert.equal(1, #ai.outs)
      local out = ai.outs[1]
      assert.equal("key", out.grouping)
      assert.equal(node(plan, "b").id, out.node)
      assert.is_nil(out.chained)
      for k = 0, 2 do
        local bk = insts(plan, "b")[k + 1]
        if bk.thread == ai.thread then
          -- same worker: a direct call, no channel
          assert.is_nil(out.channels[k])
          assert.equal(bk.gid, out.direct[k])
        else
          local ch = plan.channels[out.channels[k]]
          assert.equal(bk.gid, ch.to)
          assert.equal(ai.thread, ch.producer)
        end
      end
    end
    for _, bi in ipairs(insts(plan, "b")) do assert.equal(2, bi.inputs) end
    assert.equal(3, insts(plan, "out")[1].inputs)
    local gen = node(plan, "gen")
    assert.equal(100, gen.count)
    assert.equal(0, gen.rate)
  end)

  it("broadcast makes a channel per pair", function()
    local plan = assert(load("good_broadcast.conf"))
    check_consistent(plan)
    assert.equal(6, plan.n_channels) -- 2 + 2 across workers (+ 2 direct) + 2
    local b = node(plan, "b")
    assert.equal(3, b.line)
    assert.same({ { node = node(plan, "a").id, grouping = "broadcast" } }, b.inputs)
    for _, ai in ipairs(insts(plan, "a")) do
      local out = ai.outs[1]
      for k = 0, 1 do -- each downstream instance: a channel or a direct call
        assert.is_true((out.channels[k] ~= nil) ~= ((out.direct or {})[k] ~= nil))
      end
    end
    assert.equal(10, node(plan, "gen").count)
  end)

  it("forward chains instances on the same worker", function()
    local plan = assert(load("good_forward.conf", { cores = 8 }))
    check_consistent(plan)
    assert.equal(2, plan.workers) -- from the conf
    assert.same({ 1, 2, 1 }, threads(plan, "split"))
    assert.same({ 1, 2, 1 }, threads(plan, "upper"))   -- placed with split[i]
    assert.same({ 2, 1 }, threads(plan, "count"))      -- round robin goes on
    local split, upper = insts(plan, "split"), insts(plan, "upper")
    for i = 1, 3 do
      local out = split[i].outs[1]
      assert.equal("forward", out.grouping)
      assert.equal(upper[i].gid, out.chained)
      assert.is_nil(next(out.channels))
      assert.same({ split[i].gid }, upper[i].chained_from)
      assert.same({}, upper[i].in_channels)
      assert.equal(1, upper[i].inputs)
    end
    -- gen->split 3, upper->count 3x2 = 3 across workers + 3 direct, count->out 2
    assert.equal(8, plan.n_channels)
  end)

  it("forward from a source is a channel", function()
    local tmp = os.tmpname()
    local f = io.open(tmp, "w")
    f:write('source "a" { kind = "generator" }\n'
      .. 'operator "x" { script = "' .. CWD .. '/spec/fixtures/scripts/upper.lua", from = "a", grouping = "forward" }\n'
      .. 'sink "b" { kind = "stdout", from = "x" }\n')
    f:close()
    local plan = assert(conf.load(tmp, { cores = 1 }))
    os.remove(tmp)
    check_consistent(plan)
    local a = plan.instances[0]
    assert.is_nil(a.outs[1].chained)
    assert.is_not_nil(a.outs[1].channels[0])
    assert.equal(-1, plan.nodes[0].count)
    assert.equal(0, plan.nodes[0].rate)
  end)

  it("dead letters get a channel per operator instance", function()
    local plan = assert(load("good_dead_letter.conf"))
    check_consistent(plan)
    local dead = node(plan, "dead")
    local risky, guessed = node(plan, "risky"), node(plan, "guessed")
    assert.equal("dead_letter", risky.on_error)
    assert.equal(dead.id, risky.dead_letter)
    assert.equal("dead_letter", guessed.on_error) -- implied by dead_letter
    assert.equal(dead.id, guessed.dead_letter)
    assert.same({ risky.id, guessed.id }, dead.dead_from)
    assert.same({}, dead.inputs)
    assert.is_true(dead.id > guessed.id) -- after the operators that feed it
    assert.same({ limit = 3, names = { "a", "b" } }, risky.params)
    assert.is_false(risky.jit)
    assert.same({ os = true }, risky.allow)
    local dinst = insts(plan, "dead")[1]
    assert.equal(3, dinst.inputs)
    for _, name in ipairs({ "risky", "guessed" }) do
      for _, i in ipairs(insts(plan, name)) do
        local ch = plan.channels[i.dead]
        assert.equal(i.gid, ch.from)
        assert.equal(dinst.gid, ch.to)
        assert.equal(i.thread, ch.producer)
        assert.equal(0, ch.consumer)
      end
    end
    assert.is_nil(insts(plan, "out")[1].dead)
    -- gen->risky 2, risky->guessed 1 across workers (+ 1 direct), guessed->out 1, dead 3
    assert.equal(7, plan.n_channels)
  end)

  it("orders nodes topologically, sources first, stable by declaration", function()
    local plan = assert(load("good_topo.conf"))
    check_consistent(plan)
    local names = {}
    for i = 0, plan.n_nodes - 1 do names[#names + 1] = plan.nodes[i].name end
    assert.same({ "src2", "src1", "b", "a", "join", "out" }, names)
    assert.same({ 1 }, threads(plan, "b"))
    assert.same({ 2 }, threads(plan, "a"))
    assert.same({ 1 }, threads(plan, "join"))
    local join = node(plan, "join")
    assert.same({ { node = 3, grouping = "shuffle" }, { node = 2, grouping = "shuffle" } }, join.inputs)
    assert.same({ { node = 4, grouping = "shuffle" }, { node = 2, grouping = "shuffle" } },
      node(plan, "out").inputs)
    local src1 = node(plan, "src1")
    assert.equal("/tmp/in.txt", src1.path)
    assert.is_true(src1.follow)
    assert.equal(4096, src1.max_line)
    -- b feeds join and out: two outs
    assert.equal(2, #insts(plan, "b")[1].outs)
  end)

  it("defaults the guarantee from the sources", function()
    local plan = assert(load("good_tcp.conf"))
    check_consistent(plan)
    assert.equal("at_most_once", plan.guarantee)
    assert.equal("source 'net' (tcp) is not replayable", plan.guarantee_reason)
    assert.equal("127.0.0.1:0", node(plan, "net").listen)
    assert.equal(65536, node(plan, "net").max_line)
    assert.equal("[::1]:9000", node(plan, "out").connect)
    plan = assert(load("good_key.conf"))
    assert.equal("at_least_once", plan.guarantee)
    plan = assert(load("good_stdin.conf"))
    assert.equal("at_most_once", plan.guarantee)
    assert.equal(16, plan.max_parallelism)
    assert.equal(128, assert(load("good_key.conf")).max_parallelism)
  end)

  it("encodes and decodes a plan", function()
    local plan = assert(load("good_dead_letter.conf"))
    local s = conf.encode_plan(plan)
    assert.equal("string", type(s))
    assert.same(plan, conf.decode_plan(s))
  end)

  it("describes a plan", function()
    local plan = assert(load("good_forward.conf"))
    local s = conf.describe(plan)
    assert.matches("pipeline 'fwd'", s, 1, true)
    assert.matches("guarantee at_least_once", s, 1, true)
    assert.matches("operator 'upper' x3 on thread 1,2,1 <- split/forward", s, 1, true)
  end)

  it("reports several errors at once and no plan", function()
    local plan, errs = load("bad_many.conf")
    assert.is_nil(plan)
    assert.equal(4, #errs)
  end)
end)
