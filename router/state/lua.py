"""The server-side scripts of the Redis state backend (Redis ≥ 7 / Valkey, standalone).

Each operation is one script, so a check-and-take is atomic across every replica: Redis runs a
script to completion before any other command. Time is the server's (``TIME``), so replicas
with skewed clocks still agree. The algorithms are those of the memory backend, line for line:
the token bucket of :mod:`router.limits`, the breaker of :mod:`router.breaker`, the ledger of
:mod:`router.budgets` (amounts in integer nano-dollars, so that sums are exact).

Budget scripts build their key names from the prefix they are given, so they need a
standalone Redis (not Cluster).
"""

from __future__ import annotations

_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) + tonumber(_t[2]) / 1000000
"""

# KEYS: rpm bucket, tpm bucket. ARGV: rpm limit, tpm limit (-1: none), tokens, window s, mode.
# Returns {0, level_rpm, level_tpm} when taken (mode "take") or peeked (mode "peek"),
# {which (1 rpm, 2 tpm), wait_ms (-1: never fits), limit, amount} when refused.
RATE_LIMIT = _NOW + """
local window = tonumber(ARGV[4])
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local amounts = {1, math.max(tonumber(ARGV[3]), 0)}
local levels = {0, 0}
local worst, worst_i = 0, 0
for i = 1, 2 do
  local limit = limits[i]
  if limit >= 0 then
    local h = redis.call('HMGET', KEYS[i], 'l', 'v', 't')
    local level = limit
    if tonumber(h[1]) == limit then
      level = math.min(limit, tonumber(h[2]) + math.max(0, now - tonumber(h[3])) * limit / window)
    end
    levels[i] = level
    local wait = 0
    if amounts[i] > level then
      if amounts[i] > limit then wait = -1 else wait = (amounts[i] - level) * window / limit end
    end
    if wait ~= 0 and worst ~= -1 and (wait == -1 or wait > worst) then worst, worst_i = wait, i end
  end
end
if ARGV[5] == 'peek' then
  return {0, string.format('%d', levels[1]), string.format('%d', levels[2])}
end
if worst_i ~= 0 then
  local ms = -1
  if worst > 0 then ms = math.ceil(worst * 1000) end
  return {worst_i, ms, string.format('%d', limits[worst_i]), string.format('%d', amounts[worst_i])}
end
for i = 1, 2 do
  if limits[i] >= 0 then
    local level = levels[i] - amounts[i]
    redis.call('HSET', KEYS[i], 'l', limits[i], 'v', level, 't', now)
    local full_in = 1
    if limits[i] > 0 then full_in = math.ceil((limits[i] - level) * window / limits[i]) + 1 end
    redis.call('EXPIRE', KEYS[i], full_in)
  end
end
return {0, string.format('%d', levels[1] - amounts[1]), string.format('%d', levels[2] - amounts[2])}
"""

# KEYS: tpm bucket. ARGV: limit, delta tokens (positive: used more), window s.
ADJUST_TOKENS = _NOW + """
local limit, delta, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'l', 'v', 't')
local level = limit
if tonumber(h[1]) == limit then
  level = math.min(limit, tonumber(h[2]) + math.max(0, now - tonumber(h[3])) * limit / window)
end
level = math.min(limit, level - delta)
redis.call('HSET', KEYS[1], 'l', limit, 'v', level, 't', now)
local full_in = 1
if limit > 0 then full_in = math.ceil((limit - level) * window / limit) + 1 end
redis.call('EXPIRE', KEYS[1], full_in)
return 1
"""

# KEYS: breaker hash. ARGV: op (state|allow|success|failure|release), threshold, cooldown s, ttl s.
# Returns {allowed 0/1, state, consecutive failures}.
BREAKER = _NOW + """
local op, threshold, cooldown = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 's', 'f', 'o', 'p')
local s = h[1] or 'closed'
local f = tonumber(h[2] or '0')
local o = tonumber(h[3] or '0')
local p = false
if h[4] then p = tonumber(h[4]) end
local allowed = 0
local function shown()
  if s == 'open' and now - o >= cooldown then return 'half_open' end
  return s
end
if op == 'state' then return {0, shown(), f} end
if op == 'allow' then
  if s == 'closed' then return {1, s, f} end
  if s == 'open' then
    if now - o < cooldown then return {0, s, f} end
    s, p = 'half_open', false
  end
  if p and now - p < math.max(cooldown, 1e-9) then
    allowed = 0
  else
    p, allowed = now, 1
  end
elseif op == 'success' then
  s, f, p = 'closed', 0, false
elseif op == 'failure' then
  f = f + 1
  if s == 'half_open' or (s == 'closed' and f >= threshold) then
    s, o, p = 'open', now, false
    redis.call('HINCRBY', KEYS[1], 'n', 1)
  end
elseif op == 'release' then
  if s == 'half_open' then p = false end
end
redis.call('HSET', KEYS[1], 's', s, 'f', f, 'o', o)
if p then redis.call('HSET', KEYS[1], 'p', p) else redis.call('HDEL', KEYS[1], 'p') end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {allowed, shown(), f}
"""

_LEDGER = _NOW + """
local P = ARGV[1]
local function book(day, what, name) return P .. 'b:' .. day .. ':' .. what .. ':' .. name end
local function close_hold(id, billed, today, day_ttl)
  local data = redis.call('HGET', P .. 'r:data', id)
  if not data then return 0 end
  local amount, day, key, team = string.match(data, '^(%d+)|([^|]*)|([^|]*)|(.*)$')
  redis.call('HDEL', P .. 'r:data', id)
  redis.call('ZREM', P .. 'r:open', id)
  redis.call('HINCRBY', book(day, 't', team), 'r', -tonumber(amount))
  redis.call('HINCRBY', book(day, 'k', key), 'r', -tonumber(amount))
  if billed >= 0 then
    for _, b in ipairs({book(today, 't', team), book(today, 'k', key)}) do
      redis.call('HINCRBY', b, 's', string.format('%d', billed))
      redis.call('EXPIRE', b, day_ttl)
    end
  end
  return 1
end
"""

# ARGV: prefix, day, team, key id, amount n$, team budget n$ (-1 none), key budget n$, hold ttl s,
# day ttl s. Returns {1, id} or {0, 'key'|'team', spent n$, held n$, budget n$}.
RESERVE = _LEDGER + """
local day, team, key = ARGV[2], ARGV[3], ARGV[4]
local amount, team_budget, key_budget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local hold_ttl, day_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'r:open', '-inf', now, 'LIMIT', 0, 64)) do
  close_hold(id, -1, day, day_ttl)
end
local checks = {{'key', book(day, 'k', key), key_budget}, {'team', book(day, 't', team), team_budget}}
for _, c in ipairs(checks) do
  if c[3] >= 0 then
    local h = redis.call('HMGET', c[2], 's', 'r')
    local spent, held = tonumber(h[1] or '0'), tonumber(h[2] or '0')
    if spent + held + amount > c[3] or spent + held >= c[3] then
      return {0, c[1], string.format('%d', spent), string.format('%d', held), string.format('%d', c[3])}
    end
  end
end
local id = redis.call('INCR', P .. 'r:seq')
redis.call('HSET', P .. 'r:data', id, string.format('%d', amount) .. '|' .. day .. '|' .. key .. '|' .. team)
redis.call('ZADD', P .. 'r:open', now + hold_ttl, id)
for _, c in ipairs(checks) do
  redis.call('HINCRBY', c[2], 'r', string.format('%d', amount))
  redis.call('EXPIRE', c[2], day_ttl)
end
return {1, id}
"""

# ARGV: prefix, id, billed n$ (-1: release), today, day ttl s. Returns 1 if it closed a hold.
CLOSE = _LEDGER + """
return close_hold(ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]))
"""
