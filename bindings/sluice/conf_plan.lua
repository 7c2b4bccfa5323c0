-- sluice.conf_plan: the plan of a valid conf, and its description.
--
-- Turns the checked, ordered nodes (conf_check, conf_graph) into the plan
-- table plan.c reads and the workers decode: the nodes (ids in topological
-- order), their instances (gids) and the thread each runs on (round-robin
-- over the workers; a forward operator with its upstream's instance), the
-- channels between instances on different threads (or direct calls between
-- operators on the same one) and the dead-letter channels. The layout is the
-- "Plan" section of docs/architecture.md. M.build's steps: kind_defaults,
-- plan_nodes, plan_instances, plan_channels. M.describe is a plan as a few
-- lines of text (logged when a pipeline starts).

local kinds = require("sluice.kinds")

local M = {}

-- What a kind adds to its nodes once the pipeline's name is known (the
-- redis source's group and consumer: sluice.kinds).
local function kind_defaults(c)
  local P, opts = c.P, c.opts
  for _, d in ipairs(c.decls) do
    local n = d.node
    local k = n and n.kind and kinds.find(d.type, n.kind)
    if k and k.plan then k.plan(n, P, opts) end
  end
end

---------------------------------------------------------------------------
-- nodes

-- The plan's node for n (id, first instance gid); id_of: declaration -> id.
local function plan_node(n, id, gid, id_of)
  local node = {
    id = id, name = n.name, type = n.type, kind = n.kind, line = n.line,
    parallelism = n.parallelism, first_gid = gid, inputs = {},
  }
  for _, u in ipairs(n.in_decls or {}) do
    node.inputs[#node.inputs + 1] = { node = id_of[u],
      grouping = n.type == "operator" and n.grouping or "shuffle" }
  end
  if n.type == "source" or n.type == "sink" then
    -- the kind's fields, as checked (plan.c hands them to C as settings)
    for _, f in ipairs(kinds.find(n.type, n.kind).fields) do
      local to = f.to or f[1]
      node[to] = n[to]
    end
  end
  if n.type == "sink" then
    node.dead_from = {}
  elseif n.type == "operator" then
    node.script, node.chunkname, node.params = n.script, n.chunkname, n.params
    node.grouping = n.grouping
    node.on_error, node.jit, node.allow = n.on_error, n.jit, n.allow
    node.dead_letter = n.dead_letter_decl and id_of[n.dead_letter_decl] or nil
  end
  return node
end

-- plan.nodes (ids in c.order), plan.n_nodes and plan.n_instances.
local function plan_nodes(plan, order)
  local id_of = {}
  for i, d in ipairs(order) do id_of[d] = i - 1 end
  local gid = 0
  for i, d in ipairs(order) do
    local n = d.node
    plan.nodes[i - 1] = plan_node(n, i - 1, gid, id_of)
    gid = gid + n.parallelism
  end
  plan.n_nodes = #order
  plan.n_instances = gid
end

---------------------------------------------------------------------------
-- instances and threads

-- The thread of instance k of an operator: its upstream operator's for
-- forward, else the next worker round-robin (rr: { next = N }).
local function operator_thread(plan, node, k, workers, rr)
  if node.grouping == "forward" then
    for _, e in ipairs(node.inputs) do
      local u = plan.nodes[e.node]
      if u.type == "operator" then
        return plan.instances[u.first_gid + k].thread
      end
    end
  end
  local t = rr.next % workers + 1
  rr.next = rr.next + 1
  return t
end

local function plan_instances(plan, workers)
  local rr = { next = 0 }
  for id = 0, plan.n_nodes - 1 do
    local node = plan.nodes[id]
    for k = 0, node.parallelism - 1 do
      local inst = { gid = node.first_gid + k, node = id, index = k, thread = 0,
                     inputs = 0, in_channels = {}, chained_from = {}, outs = {} }
      if node.type == "operator" then
        inst.thread = operator_thread(plan, node, k, workers, rr)
      end
      plan.instances[inst.gid] = inst
    end
  end
end

---------------------------------------------------------------------------
-- channels

-- A new channel from instance from to instance to; returns its cid.
local function channel(plan, from, to)
  local cid = plan.n_channels
  local ch = { cid = cid, from = from.gid, to = to.gid,
               producer = from.thread, consumer = to.thread }
  plan.channels[cid] = ch
  to.in_channels[#to.in_channels + 1] = cid
  plan.n_channels = cid + 1
  return ch.cid
end

-- Upstream instance up (index ui of node u) to node's instances, along
-- input e: out, up's entry in its outs.
local function connect_out(plan, u, ui, up, node, e, out)
  for di = 0, node.parallelism - 1 do
    local down = plan.instances[node.first_gid + di]
    if e.grouping ~= "forward" or ui == di then
      -- Two operator instances on one worker: no channel, the Lua
      -- value is passed by a direct call (chaining for forward; a
      -- local exchange for the other groupings).
      local same = u.type == "operator" and node.type == "operator"
        and up.thread == down.thread
      if same and e.grouping == "forward" then
        out.chained = down.gid
        down.chained_from[#down.chained_from + 1] = up.gid
      elseif same then
        out.direct = out.direct or {}
        out.direct[di] = down.gid
        down.chained_from[#down.chained_from + 1] = up.gid
      else
        out.channels[di] = channel(plan, up, down)
      end
    end
  end
end

local function plan_input_channels(plan)
  for id = 0, plan.n_nodes - 1 do
    local node = plan.nodes[id]
    for _, e in ipairs(node.inputs) do
      local u = plan.nodes[e.node]
      for ui = 0, u.parallelism - 1 do
        local up = plan.instances[u.first_gid + ui]
        local out = { node = id, grouping = e.grouping, channels = {} }
        up.outs[#up.outs + 1] = out
        connect_out(plan, u, ui, up, node, e, out)
      end
    end
  end
end

local function plan_dead_letter_channels(plan)
  for id = 0, plan.n_nodes - 1 do
    local node = plan.nodes[id]
    if node.type == "operator" and node.dead_letter then
      local sink = plan.nodes[node.dead_letter]
      sink.dead_from[#sink.dead_from + 1] = id
      local sinst = plan.instances[sink.first_gid]
      for k = 0, node.parallelism - 1 do
        local inst = plan.instances[node.first_gid + k]
        inst.dead = channel(plan, inst, sinst)
      end
    end
  end
end

-- Sets plan.channels and plan.n_channels, the instances' outs, in_channels,
-- chained_from, dead and inputs (how many feed each).
local function plan_channels(plan)
  plan.n_channels = 0
  plan_input_channels(plan)
  plan_dead_letter_channels(plan)
  for g = 0, plan.n_instances - 1 do
    local inst = plan.instances[g]
    inst.inputs = #inst.in_channels + #inst.chained_from
  end
end

---------------------------------------------------------------------------
-- the plan

-- Needs a conf without errors: c.decls with their nodes, c.P, c.order,
-- c.guarantee, c.reason, c.opts and the conf's paths. Returns the plan.
function M.build(c)
  local opts, P = c.opts, c.P
  kind_defaults(c)
  local workers = opts.workers or P.workers or opts.cores or 1
  local plan = {
    file = c.abs, dir = c.dir, conf_arg = c.path,
    name = P.name, workers = workers, threads = workers + 1,
    guarantee = c.guarantee, guarantee_reason = c.reason,
    max_parallelism = P.max_parallelism,
    checkpoint = P.checkpoint, admin = P.admin,
    nodes = {}, instances = {}, channels = {},
  }
  plan_nodes(plan, c.order)
  plan_instances(plan, workers)
  plan_channels(plan)
  return plan
end

function M.describe(plan)
  local out = {}
  out[#out + 1] = string.format(
    "pipeline '%s' (%s): %d nodes, %d instances, %d channels, %d workers",
    plan.name, plan.file, plan.n_nodes, plan.n_instances, plan.n_channels, plan.workers)
  out[#out + 1] = string.format("guarantee %s (%s)", plan.guarantee, plan.guarantee_reason or "")
  for id = 0, plan.n_nodes - 1 do
    local n = plan.nodes[id]
    local ins = {}
    for _, e in ipairs(n.inputs) do
      ins[#ins + 1] = plan.nodes[e.node].name .. (n.type == "operator" and ("/" .. e.grouping) or "")
    end
    for _, nid in ipairs(n.dead_from or {}) do ins[#ins + 1] = plan.nodes[nid].name .. "/dead_letter" end
    local threads = {}
    for k = 0, n.parallelism - 1 do
      threads[#threads + 1] = tostring(plan.instances[n.first_gid + k].thread)
    end
    out[#out + 1] = string.format("  %d %s '%s'%s x%d on thread %s%s", id, n.type, n.name,
      n.kind and (" (" .. n.kind .. ")") or "", n.parallelism, table.concat(threads, ","),
      #ins > 0 and (" <- " .. table.concat(ins, ", ")) or "")
  end
  return table.concat(out, "\n") .. "\n"
end

return M
