"""The rate limiter's Lua scripts: each touches one limited subject's keys (one cluster slot)."""

from __future__ import annotations

from modelport.protocol.scripts import NOW, WRITES

# One subject's spend (hash, money in micro-units): 'day' and 'month' as "period:amount", 'total' as
# ":amount", and 'alert:day' / 'alert:month' / 'alert:total' as "period:level" (the last alert raised).
SPENT = """
local function spent(field, period)
  local stored = redis.call('HGET', KEYS[5], field)
  if not stored then return 0 end
  local at, amount = string.match(stored, '^([^:]*):(-?%d+)$')
  if at == period then return tonumber(amount) end
  return 0
end
"""

# KEYS: one subject's request window, token window, day counter, running set, spend (see keys.limit_keys).
# ARGV: requests/min, tokens/min, tokens/day, concurrent (0 = unlimited), token estimate, request id,
# lease ms, budgets per day, month and in all (micro-units, 0 = none), the request's most cost (micro-units),
# the day and month periods, ms until each ends. Counts are written with '%d' (Lua would write 1e+14 for
# large numbers, unreadable later). Returns {verdict, retry ms, requests in window, tokens in window, window
# reset ms, spent, budget}; verdict 'ok' means the request is counted and its tokens and cost reserved. A
# budget admits a request while nothing is spent, else only one that fits: the most a budget is overspent
# by is one request's reservation.
ADMIT = WRITES + NOW + SPENT + """
local rpm, tpm, tpd, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local estimate, id, lease = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local function reset(key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #oldest == 0 then return 60000 end
  return math.max(1, tonumber(oldest[2]) + 60000 - now)
end
local requests = redis.call('ZCARD', KEYS[1])
local tokens = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  tokens = tokens + tonumber(string.match(member, ':(%d+)$'))
end
local today = math.floor(now / 86400000)
local day_used = 0
local stored = redis.call('GET', KEYS[3])
if stored then
  local day, used = string.match(stored, '^(%d+):(%d+)$')
  if tonumber(day) == today then day_used = tonumber(used) end
end
if rpm > 0 and requests >= rpm then
  return {'requests', reset(KEYS[1]), requests, tokens, reset(KEYS[1])}
end
if tpm > 0 and tokens > 0 and tokens + estimate > tpm then
  return {'tokens', reset(KEYS[2]), requests, tokens, reset(KEYS[2])}
end
if tpd > 0 and day_used > 0 and day_used + estimate > tpd then
  local ms = (today + 1) * 86400000 - now
  return {'daily_tokens', ms, requests, tokens, ms}
end
if conc > 0 and redis.call('ZCARD', KEYS[4]) >= conc then
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  return {'concurrency', math.max(1000, tonumber(first[2]) - now), requests, tokens, reset(KEYS[1])}
end
local cost = tonumber(ARGV[11])
if (tonumber(ARGV[8]) > 0 or tonumber(ARGV[9]) > 0 or tonumber(ARGV[10]) > 0)
    and redis.call('HEXISTS', KEYS[5], 'seeded') == 0 then
  return {'unseeded', 0, requests, tokens, 0, 0, 0}
end
local day_spent, month_spent, total_spent = spent('day', ARGV[12]), spent('month', ARGV[13]), spent('total', '')
for _, budget in ipairs({{'budget_day', tonumber(ARGV[8]), day_spent, tonumber(ARGV[14])},
                         {'budget_month', tonumber(ARGV[9]), month_spent, tonumber(ARGV[15])},
                         {'budget_total', tonumber(ARGV[10]), total_spent, 0}}) do
  local limit, used = budget[2], budget[3]
  if limit > 0 and (used >= limit or (used > 0 and used + cost > limit)) then
    return {budget[1], budget[4], requests, tokens, reset(KEYS[1]), used, limit}
  end
end
if cost > 0 then
  redis.call('HSET', KEYS[5], 'day', ARGV[12] .. ':' .. string.format('%d', day_spent + cost),
             'month', ARGV[13] .. ':' .. string.format('%d', month_spent + cost),
             'total', ':' .. string.format('%d', total_spent + cost))
end
redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], 61000)
redis.call('ZADD', KEYS[2], now, id .. ':' .. ARGV[5])
redis.call('PEXPIRE', KEYS[2], 61000)
redis.call('SET', KEYS[3], today .. ':' .. string.format('%d', day_used + estimate), 'PX', 172800000)
redis.call('ZADD', KEYS[4], now + lease, id)
redis.call('PEXPIRE', KEYS[4], lease)
return {'ok', 0, requests + 1, tokens + estimate, reset(KEYS[1])}
"""

# KEYS: as ADMIT. ARGV: the day and month periods, what was spent in each and in all (micro-units, from the
# usage rows). A budgeted subject's spend starts from what the database says (the first time, or after Redis
# lost it): ADMIT refuses to count against budgets until it has; the first gateway to seed wins.
SEED = WRITES + """
if redis.call('HEXISTS', KEYS[5], 'seeded') == 1 then return 0 end
redis.call('HSET', KEYS[5], 'day', ARGV[1] .. ':' .. ARGV[3], 'month', ARGV[2] .. ':' .. ARGV[4],
           'total', ':' .. ARGV[5], 'seeded', '1')
return 1
"""

# KEYS: as ADMIT. ARGV: request id, reserved tokens, tokens used, 1 to release (forget the request), reserved
# cost, cost (micro-units), the day and month periods of the admission, budgets per day, month and in all.
# Replaces the reservations by what was used and frees the concurrency slot; a spend whose period has
# ended since is left alone. Returns the budgets that reached 80 % or 100 % for the first time in their
# period, as {name, level, spent, budget, ...}.
SETTLE = WRITES + SPENT + """
local reserved = ARGV[1] .. ':' .. ARGV[2]
local score = redis.call('ZSCORE', KEYS[2], reserved)
if score then
  redis.call('ZREM', KEYS[2], reserved)
  if ARGV[4] ~= '1' then redis.call('ZADD', KEYS[2], score, ARGV[1] .. ':' .. ARGV[3]) end
end
if ARGV[4] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local stored = redis.call('GET', KEYS[3])
if stored then
  local day, used = string.match(stored, '^(%d+):(%d+)$')
  local corrected = math.max(0, tonumber(used) - tonumber(ARGV[2]) + tonumber(ARGV[3]))
  redis.call('SET', KEYS[3], day .. ':' .. string.format('%d', corrected), 'KEEPTTL')
end
redis.call('ZREM', KEYS[4], ARGV[1])
local change = tonumber(ARGV[6]) - tonumber(ARGV[5])
local crossed = {}
for _, budget in ipairs({{'day', ARGV[7], tonumber(ARGV[9])}, {'month', ARGV[8], tonumber(ARGV[10])},
                         {'total', '', tonumber(ARGV[11])}}) do
  local field, period, limit = budget[1], budget[2], budget[3]
  local stored = redis.call('HGET', KEYS[5], field)
  if stored and string.match(stored, '^([^:]*):') == period then
    local used = math.max(0, spent(field, period) + change)
    redis.call('HSET', KEYS[5], field, period .. ':' .. string.format('%d', used))
    if limit > 0 then
      local level = 0
      if used >= limit then level = 100 elseif used * 10 >= limit * 8 then level = 80 end
      local alerted = spent('alert:' .. field, period)
      if level > alerted then
        redis.call('HSET', KEYS[5], 'alert:' .. field, period .. ':' .. level)
        for _, value in ipairs({field, level, used, limit}) do table.insert(crossed, value) end
      end
    end
  end
end
return crossed
"""

# KEYS: jobs stream. ARGV: this worker's consumer name, then the entry ids of the jobs it runs.
