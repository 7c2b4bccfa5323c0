-- End to end: the wordcount pipeline (file -> split -> key -> count -> file)
-- at several parallelisms gives exactly the counts computed here, and the
-- shipped example conf/wordcount.conf runs.
local proc = require("support.proc")

local SRC = proc.source_dir()

-- The split rule of scripts/split.lua.
local function count_words(text, counts)
  counts = counts or {}
  for line in text:gmatch("[^\n]*") do
    for w in line:gmatch("%S+") do
      w = w:lower():match("^%p*(.-)%p*$")
      if w ~= "" then counts[w] = (counts[w] or 0) + 1 end
    end
  end
  return counts
end

local function expected_lines(counts)
  local out = {}
  for w, n in pairs(counts) do out[#out + 1] = w .. " " .. n end
  return proc.sorted(out)
end

-- Deterministic text: 20000 lines of words from a vocabulary with case,
-- punctuation, apostrophes, hyphens and punctuation-only tokens.
local VOCAB = {
  "The", "river", "came", "down,", "out", "of", "the", "HILLS", "in", "spring",
  "miller's", "well-kept", "--", "(wheel)", "water.", "Ford;", "and", "a", "stone",
  "'quoted'", "mill", "Harrow", "...", "night?", "day!", "x", "\"said\"", "grain",
  "don't", "re-entry",
}
local function gen_text(nlines)
  local seed = 12345
  local parts = {}
  for i = 1, nlines do
    local words = {}
    seed = (seed * 1103515245 + 12345) % 2147483648
    local n = seed % 12 -- 0..11 words: some lines are empty
    for j = 1, n do
      seed = (seed * 1103515245 + 12345) % 2147483648
      words[j] = VOCAB[seed % #VOCAB + 1]
      if seed % 97 == 0 then words[j] = words[j] .. i end -- a few rare words
    end
    parts[i] = table.concat(words, seed % 5 == 0 and "  " or " ")
  end
  return table.concat(parts, "\n") .. "\n"
end

local CONF = [[
pipeline "wc" { workers = 2 }
source   "lines" { kind = "file", path = "data/text.txt" }
operator "split" { script = "scripts/split.lua", from = "lines", parallelism = %d }
operator "count" { script = "scripts/count.lua", from = "split", grouping = "key", parallelism = %d }
sink     "out"   { kind = "file", path = "%s", from = "count" }
]]

describe("e2e wordcount", function()
  local dir, text, expected

  setup(function()
    text = gen_text(20000)
    expected = expected_lines(count_words(text))
    assert.is_true(#expected > 30)
  end)

  before_each(function()
    dir = proc.tmpdir()
    proc.write_tree(dir, {
      ["data/text.txt"] = text,
      ["scripts/split.lua"] = assert(proc.read_file(SRC .. "/scripts/split.lua")),
      ["scripts/count.lua"] = assert(proc.read_file(SRC .. "/scripts/count.lua")),
    })
  end)

  after_each(function()
    proc.reap_all()
    proc.rm_rf(dir)
  end)

  local cases = {
    { split = 1, count = 1, workers = 1 },
    { split = 1, count = 1, workers = 2 },
    { split = 4, count = 4, workers = 2 },
    { split = 4, count = 4, workers = 4 },
  }
  local results = {}
  for _, c in ipairs(cases) do
    local name = string.format("split x%d, count x%d, --workers %d", c.split, c.count, c.workers)
    it(name .. " gives exactly the expected counts", function()
      local out = "out/counts-" .. c.split .. "-" .. c.count .. ".txt"
      proc.mkdir_p(dir .. "/out")
      local conf = proc.write_file(dir .. "/wc.conf", CONF:format(c.split, c.count, out))
      local code, stdout, stderr = proc.run_sluice(conf, { "--workers", tostring(c.workers) }, 60)
      assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
      local got = proc.sorted(proc.file_lines(dir .. "/" .. out))
      assert.are.equal(#expected, #got, "number of distinct words")
      assert.are.same(expected, got)
      results[name] = got
    end)
  end

  it("gives the same sorted output at every parallelism", function()
    local first
    for _, got in pairs(results) do
      first = first or got
      assert.are.same(first, got)
    end
  end)

  it("runs the shipped example conf/wordcount.conf", function()
    local code, stdout, stderr = proc.run({ proc.bin(), "run", "conf/wordcount.conf" }, 60, { cwd = SRC })
    assert.are.equal(0, code, "exit code; stderr:\n" .. proc.tail(stderr))
    local want = expected_lines(count_words(assert(proc.read_file(SRC .. "/conf/data/sample.txt"))))
    assert.are.same(want, proc.sorted(proc.lines(stdout)))
  end)
end)
