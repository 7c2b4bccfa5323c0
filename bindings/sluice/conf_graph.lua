-- sluice.conf_graph: the conf's declarations as a graph.
--
-- Links each operator and sink to its inputs (`from`) and each operator to
-- its dead-letter sink, checks what only the graph shows (undeclared or
-- sink inputs, sinks without input, forward between unequal parallelisms,
-- cycles) and puts the nodes in the order conf_plan numbers them: sources
-- first, in declaration order, then every node after its inputs (Kahn's,
-- the earliest declared ready node first). A cycle is reported once, as
-- its shortest path, at the `from` line of its first declared node.
-- M.build's steps: link (the edges and what they show), adjacency,
-- topo_order, and report_cycles when some nodes could not be placed.

local util = require("sluice.conf_util")

local fmtval = util.fmtval

local M = {}

---------------------------------------------------------------------------
-- edges and what they show

-- Sets n.in_decls of operator or sink d: its declared inputs that are not sinks.
local function link_inputs(c, d, n)
  n.in_decls = {}
  for _, name in ipairs(n.from_names) do
    local u = c.by_name[name]
    if not u then
      c.ferr(d, "from", "input '" .. name .. "' is not declared")
    elseif u.type == "sink" then
      c.ferr(d, "from", "input '" .. name .. "' is a sink (a sink has no output)")
    else
      n.in_decls[#n.in_decls + 1] = u
    end
  end
end

-- Sets n.dead_letter_decl of operator d; dl_used: sink name -> true.
local function link_dead_letter(c, d, n, dl_used)
  local ferr = c.ferr
  local dl = d.fields.dead_letter
  if dl == nil then
    if n.on_error == "dead_letter" then
      ferr(d, "on_error", 'on_error = "dead_letter" needs dead_letter = "SINK" (a sink declared without from)')
    end
    return
  end
  if type(dl) ~= "string" then
    ferr(d, "dead_letter", "dead_letter must be the name of a sink (got " .. fmtval(dl) .. ")")
  else
    local s = c.by_name[dl]
    if not s then
      ferr(d, "dead_letter", "dead_letter '" .. dl .. "' is not declared")
    elseif s.type ~= "sink" then
      ferr(d, "dead_letter", "dead_letter '" .. dl .. "' is not a sink")
    elseif s.fields.from ~= nil then
      ferr(d, "dead_letter", "dead_letter '" .. dl ..
        "' must be a sink declared without from (it has from)")
      dl_used[dl] = true
    else
      dl_used[dl] = true
      if n.on_error == "dead_letter" then n.dead_letter_decl = s end
    end
  end
  if d.fields.on_error ~= nil and n.on_error ~= "dead_letter" and not n.on_error_bad then
    ferr(d, "dead_letter", 'dead_letter is used only with on_error = "dead_letter" (on_error is "'
      .. n.on_error .. '")')
  end
end

-- A sink fed neither by from nor as a dead letter.
local function check_unfed_sinks(c, dl_used)
  for _, d in ipairs(c.nodes_decl) do
    if d.type == "sink" and d.fields.from == nil and not dl_used[d.name] and not d.duplicate
      and not d.broken then
      c.err(d.line, "sink '" .. d.name .. "' has no input")
    end
  end
end

-- forward needs equal parallelism
local function check_forward(c)
  for _, d in ipairs(c.nodes_decl) do
    local n = d.node
    if d.type == "operator" and n.grouping == "forward" then
      for _, u in ipairs(n.in_decls) do
        if u.node.parallelism ~= n.parallelism then
          c.ferr(d, "grouping", string.format(
            "forward from '%s' needs equal parallelism ('%s' has %d, '%s' has %d)",
            u.name, u.name, u.node.parallelism, d.name, n.parallelism))
        end
      end
    end
  end
end

local function link(c)
  local dl_used = {} -- sink name -> true
  for _, d in ipairs(c.nodes_decl) do
    local n = d.node
    if d.type ~= "source" then link_inputs(c, d, n) end
    if d.type == "operator" then link_dead_letter(c, d, n, dl_used) end
  end
  check_unfed_sinks(c, dl_used)
  check_forward(c)
end

---------------------------------------------------------------------------
-- topological order: sources first (declaration order), then Kahn's with
-- the earliest declared ready node first. Dead-letter edges count.

-- preds[v][u] = true and succs[u] = { v, ... } (in the order first linked).
local function adjacency(graph_nodes)
  local preds, succs = {}, {}
  for _, d in ipairs(graph_nodes) do preds[d] = {}; succs[d] = {} end
  local function edge(u, v)
    if preds[v] and succs[u] and not preds[v][u] then
      preds[v][u] = true
      succs[u][#succs[u] + 1] = v
    end
  end
  for _, d in ipairs(graph_nodes) do
    for _, u in ipairs(d.node.in_decls or {}) do edge(u, d) end
    if d.node.dead_letter_decl then edge(d, d.node.dead_letter_decl) end
  end
  return preds, succs
end

-- The order and placed (d -> true): the nodes not on or after a cycle.
local function topo_order(graph_nodes, preds, succs)
  local order, placed = {}, {}
  local indeg = {}
  for _, d in ipairs(graph_nodes) do
    local k = 0
    for _ in pairs(preds[d]) do k = k + 1 end
    indeg[d] = k
  end
  local function place(d)
    order[#order + 1] = d
    placed[d] = true
    for _, v in ipairs(succs[d]) do indeg[v] = indeg[v] - 1 end
  end
  for _, d in ipairs(graph_nodes) do
    if d.type == "source" then place(d) end
  end
  while true do
    local pick
    for _, d in ipairs(graph_nodes) do
      if not placed[d] and indeg[d] == 0 then pick = d; break end
    end
    if not pick then break end
    place(pick)
  end
  return order, placed
end

---------------------------------------------------------------------------
-- cycles

-- Tarjan's strongly connected components among rest (the unplaced nodes),
-- each as a set, in the order they complete.
local function components(rest, succs, placed)
  local index, low, onstack, stack, idx = {}, {}, {}, {}, 0
  local comps = {}
  local function strong(v)
    idx = idx + 1; index[v] = idx; low[v] = idx
    stack[#stack + 1] = v; onstack[v] = true
    for _, w in ipairs(succs[v]) do
      if not placed[w] then
        if not index[w] then
          strong(w); low[v] = math.min(low[v], low[w])
        elseif onstack[w] then
          low[v] = math.min(low[v], index[w])
        end
      end
    end
    if low[v] == index[v] then
      local comp = {}
      repeat
        local w = table.remove(stack); onstack[w] = nil; comp[w] = true
      until w == v
      comps[#comps + 1] = comp
    end
  end
  for _, d in ipairs(rest) do if not index[d] then strong(d) end end
  return comps
end

-- The shortest path start -> ... -> start inside comp, as text.
local function shortest_cycle(start, comp, succs)
  local prev, queue, found = {}, { start }, false
  local qi = 1
  while qi <= #queue and not found do
    local v = queue[qi]; qi = qi + 1
    for _, w in ipairs(succs[v]) do
      if w == start then prev[start] = v; found = true; break end
      if comp[w] and prev[w] == nil then prev[w] = v; queue[#queue + 1] = w end
    end
  end
  local path = { start.name }
  local v = prev[start]
  while v ~= start do table.insert(path, 1, v.name); v = prev[v] end
  table.insert(path, 1, start.name)
  return table.concat(path, " -> ")
end

-- Reports each cycle among the nodes left unplaced, at the `from` line of
-- its first declared node.
local function report_cycles(c, graph_nodes, preds, succs, placed)
  local rest = {}
  for _, d in ipairs(graph_nodes) do if not placed[d] then rest[#rest + 1] = d end end
  local cycles = {}
  for _, comp in ipairs(components(rest, succs, placed)) do
    local start
    local size = 0
    for _, d in ipairs(rest) do
      if comp[d] then size = size + 1; start = start or d end
    end
    if size > 1 or preds[start][start] then
      cycles[#cycles + 1] = { d = start, text = shortest_cycle(start, comp, succs) }
    end
  end
  for _, cy in ipairs(cycles) do
    c.err(c.field_line(cy.d, "from"), "cycle: " .. cy.text)
  end
end

-- Needs c.nodes_decl and c.by_name (conf_check). Sets n.in_decls and
-- n.dead_letter_decl on the nodes, c.graph_nodes (the nodes that are not
-- duplicates) and c.order.
function M.build(c)
  link(c)
  local graph_nodes = {}
  for _, d in ipairs(c.nodes_decl) do
    if not d.duplicate then graph_nodes[#graph_nodes + 1] = d end
  end
  local preds, succs = adjacency(graph_nodes)
  local order, placed = topo_order(graph_nodes, preds, succs)
  if #order < #graph_nodes then
    report_cycles(c, graph_nodes, preds, succs, placed)
  end
  c.graph_nodes, c.order = graph_nodes, order
end

return M
