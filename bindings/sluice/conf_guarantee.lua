-- sluice.conf_guarantee: the delivery guarantee a pipeline runs with.
--
-- at_most_once, at_least_once or exactly_once, and why. Set by the conf
-- (pipeline { guarantee = ... }), it is checked against what the sources
-- and sinks can give: replayable sources for at_least_once; replayable
-- sources, committing sinks and a checkpoint block for exactly_once. Left
-- out, it is the strongest they allow. docs/checkpoints.md tells why.

local kinds = require("sluice.kinds")

local M = {}

-- kind name -> true, read off the registry (sluice.kinds)
local REPLAYABLE, COMMITTING_SINKS = {}, {}
for _, k in ipairs(kinds.sources) do REPLAYABLE[k.name] = k.replayable end
for _, k in ipairs(kinds.sinks) do COMMITTING_SINKS[k.name] = k.committing end

-- Needs c.graph_nodes (conf_graph), c.P, c.pipeline_decl and
-- c.checkpoint_given (conf_check). Sets c.guarantee and c.reason.
function M.choose(c)
  local ferr = c.ferr
  local graph_nodes, P = c.graph_nodes, c.P
  local pipeline_decl, checkpoint_given = c.pipeline_decl, c.checkpoint_given

  -- guarantee
  local sources_in, sinks_in = {}, {}
  for _, d in ipairs(graph_nodes) do
    if d.type == "source" and d.node.kind then sources_in[#sources_in + 1] = d end
    if d.type == "sink" and d.node.kind then sinks_in[#sinks_in + 1] = d end
  end
  local unreplayable, uncommitting
  for _, d in ipairs(sources_in) do
    if not REPLAYABLE[d.node.kind] then unreplayable = unreplayable or d end
  end
  for _, d in ipairs(sinks_in) do
    if not COMMITTING_SINKS[d.node.kind] then uncommitting = uncommitting or d end
  end
  -- An error for every source or sink in `list` whose kind cannot give it.
  local function refuse(d, list, kinds, guarantee, what, gives)
    for _, s in ipairs(list) do
      if not kinds[s.node.kind] then
        ferr(d, "guarantee", string.format("%s cannot be given: %s '%s' (%s) %s",
          guarantee, what, s.name, s.node.kind, gives))
      end
    end
  end
  local guarantee, reason
  if P.guarantee then
    guarantee = P.guarantee
    reason = "set by the conf"
    local d = pipeline_decl
    if guarantee == "exactly_once" then
      if not checkpoint_given then
        ferr(d, "guarantee", "exactly_once needs checkpointing (a checkpoint block)")
      end
      refuse(d, sources_in, REPLAYABLE, "exactly_once", "source",
        "is not replayable (at_most_once only)")
      refuse(d, sinks_in, COMMITTING_SINKS, "exactly_once", "sink",
        "does not commit (at_least_once at best)")
    elseif guarantee == "at_least_once" then
      refuse(d, sources_in, REPLAYABLE, "at_least_once", "source",
        "is not replayable (at_most_once only)")
    end
  else
    if unreplayable then
      guarantee = "at_most_once"
      reason = string.format("source '%s' (%s) is not replayable", unreplayable.name,
        unreplayable.node.kind)
    elseif not checkpoint_given then
      guarantee = "at_least_once"
      reason = "no checkpoint block: replayable sources restart from their beginning"
    elseif uncommitting then
      guarantee = "at_least_once"
      reason = string.format("sink '%s' (%s) does not commit", uncommitting.name,
        uncommitting.node.kind)
    else
      guarantee = "exactly_once"
      reason = "replayable sources, committing sinks and checkpoints"
    end
  end

  c.guarantee, c.reason = guarantee, reason
end

return M
