"""The rate limiter's Lua scripts: each touches one limited subject's keys (one cluster slot)."""

from __future__ import annotations

from modelport.protocol.scripts import NOW, WRITES

# KEYS: one subject's request window, token window, day counter, running set (see keys.limit_keys).
# ARGV: requests/min, tokens/min, tokens/day, concurrent (0 = unlimited), token estimate, request id,
# lease ms. Counts are written with '%d' (Lua would write 1e+14 for large numbers, unreadable later).
# Returns {verdict, retry ms, requests in window, tokens in window, window reset ms}; verdict
# 'ok' means the request is counted and its tokens reserved.
ADMIT = WRITES + NOW + """
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
redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], 61000)
redis.call('ZADD', KEYS[2], now, id .. ':' .. ARGV[5])
redis.call('PEXPIRE', KEYS[2], 61000)
redis.call('SET', KEYS[3], today .. ':' .. string.format('%d', day_used + estimate), 'PX', 172800000)
redis.call('ZADD', KEYS[4], now + lease, id)
redis.call('PEXPIRE', KEYS[4], lease)
return {'ok', 0, requests + 1, tokens + estimate, reset(KEYS[1])}
"""

# KEYS: as ADMIT. ARGV: request id, reserved tokens, tokens used, 1 to release (forget the request).
# Replaces the reservation by what was used and frees the concurrency slot.
SETTLE = WRITES + """
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
return 1
"""

# KEYS: jobs stream. ARGV: this worker's consumer name, then the entry ids of the jobs it runs.
