"""Lua scripts run atomically in Redis; each touches the keys of one model only (one cluster slot).

Each starts with a shebang declaring whether it writes: Redis then refuses a writing script as a whole
when it is out of memory, instead of running it until its first refused command (with its earlier writes
kept), and lets a read-only one run.
"""

from __future__ import annotations

import enum

WRITES = "#!lua\n"
READS_ONLY = "#!lua flags=no-writes\n"

# Redis's own clock in milliseconds, as `now`.
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The consumer a jobs-stream entry is pending for, or nil when it is not pending (acknowledged, or gone).
OWNER = """
local function owner(stream, entry)
  local pending = redis.call('XPENDING', stream, 'workers', entry, entry, 1)
  if #pending == 0 then return nil end
  return pending[1][2]
end
"""

# A sorted set of leased members lives twice the lease, so it outlives every member it holds.
KEEP_FOR = """
local function keep_for(key, lease)
  redis.call('PEXPIRE', key, lease * 2, 'GT')
  redis.call('PEXPIRE', key, lease * 2, 'NX')
end
"""

# Fair queues, per model: a rotation (sorted set of "priority|user" by -priority * 1e12 + turn, users
# who just started waiting 1e11 earlier, so they go before those being served round-robin), each
# user's waiting jobs (sorted set of "user|turn|job" with equal scores, read by lex range), the job
# bodies (hash), a turn counter and the number waiting. Jobs go straight into the jobs stream while
# nothing waits and the stream holds fewer undelivered jobs than the live workers said they have free
# slots for (at least one: workers that say nothing); otherwise they wait here and workers move them over
# as slots free up, highest priority first and round-robin between users within a priority.
UNDELIVERED = """
local function undelivered(stream)
  local ok, summary = pcall(redis.call, 'XPENDING', stream, 'workers')
  local pending = 0
  if ok then pending = tonumber(summary[1]) end
  return redis.call('XLEN', stream) - pending
end
"""

# A waiting job's place in the order DISPATCH will hand jobs out, if nothing else arrives: every waiting job
# of higher-priority users, then round-robin within its priority (one job per user per round, in rotation
# order), so a job that is its user's k-th waiting one goes after up to k+1 jobs of each user ahead of its
# user in the rotation and up to k of each user behind. Counts may include a withdrawn job DISPATCH has
# not yet skipped.
FAIR_POSITION = """
local function fair_position(rotation, waiting_jobs, mine, member)
  local user = string.match(mine, '|(%d+)$')
  local priority = tonumber(string.match(mine, '^(-?%d+)|'))
  local k = redis.call('ZLEXCOUNT', waiting_jobs, '[' .. user .. '|', '(' .. member)
  local position, ahead = k + 1, true
  for _, other in ipairs(redis.call('ZRANGE', rotation, 0, -1)) do
    if other == mine then
      ahead = false
    else
      local other_priority, other_user = string.match(other, '^(-?%d+)|(%d+)$')
      other_priority = tonumber(other_priority)
      if other_priority >= priority then
        local n = redis.call('ZLEXCOUNT', waiting_jobs, '[' .. other_user .. '|', '[' .. other_user .. '|~')
        if other_priority > priority then position = position + n
        elseif ahead then position = position + math.min(n, k + 1)
        else position = position + math.min(n, k) end
      end
    end
  end
  return position
end
"""

# KEYS: workers, jobs, rotation, waiting jobs, job bodies, turn, waiting count, the user's jobs, the group's jobs,
# waiting since, free slots.
# ARGV: max outstanding jobs, job JSON, job id, user id, priority, the user's share of the queue, lease ms
# (the user's and the group's jobs are held as HOLD holds, see below), the group's share, 1 to queue the job
# even with no live worker (a model that scales to zero: its queue starts one).
# Returns {outcome, member, entry}: outcome 0 when sent to the stream (then also the number of live workers,
# 0 for a job that waits for the first worker of a model that scales to zero), N > 0 when waiting at fair
# position N (then its rotation member "priority|user" and its entry "user|turn|job", which POSITION takes),
# or one of the refusals below.


class Submitted(enum.IntEnum):
    """SUBMIT's refusals, under the same names in its Lua."""

    NO_WORKER = -1  # no live worker serves the model
    FULL = -2  # the model's queue holds its maximum
    SHARE_USED = -3  # the user already holds their share of the queue
    GROUP_SHARE_USED = -4  # their group does


SUBMIT = WRITES + UNDELIVERED + FAIR_POSITION + KEEP_FOR + "".join(
    f"local {refusal.name} = {refusal.value}\n" for refusal in Submitted) + NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
if live == 0 and ARGV[9] ~= '1' then return {NO_WORKER, '', ''} end
local waiting = tonumber(redis.call('GET', KEYS[7]) or '0')
if redis.call('XLEN', KEYS[2]) + waiting >= tonumber(ARGV[1]) then return {FULL, '', ''} end
for i, share in ipairs({ARGV[6], ARGV[8]}) do
  redis.call('ZREMRANGEBYSCORE', KEYS[7 + i], '-inf', now)
  if redis.call('ZCARD', KEYS[7 + i]) >= tonumber(share) then return {({SHARE_USED, GROUP_SHARE_USED})[i], '', ''} end
end
for i = 8, 9 do
  redis.call('ZADD', KEYS[i], now + tonumber(ARGV[7]), ARGV[3])
  keep_for(KEYS[i], tonumber(ARGV[7]))
end
if waiting == 0 then
  local capacity, free = 0, redis.call('HGETALL', KEYS[11])
  for i = 1, #free, 2 do
    if redis.call('ZSCORE', KEYS[1], free[i]) then capacity = capacity + tonumber(free[i + 1]) end
  end
  if undelivered(KEYS[2]) < math.max(1, capacity) then
    redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
    return {0, '', '', live}
  end
end
local turn = redis.call('INCR', KEYS[6])
local entry = ARGV[4] .. '|' .. string.format('%016d', turn) .. '|' .. ARGV[3]
redis.call('HSET', KEYS[5], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[10], now, ARGV[3])
redis.call('ZADD', KEYS[4], 0, entry)
local member = ARGV[5] .. '|' .. ARGV[4]
if not redis.call('ZSCORE', KEYS[3], member) then
  -- a user who was not waiting goes ahead of those already being served in turn (same priority)
  redis.call('ZADD', KEYS[3], -tonumber(ARGV[5]) * 1e12 - 1e11 + turn, member)
end
redis.call('INCR', KEYS[7])
return {fair_position(KEYS[3], KEYS[4], member, entry), member, entry}
"""

# KEYS: rotation, waiting jobs, job bodies. ARGV: the member and entry SUBMIT returned, job id.
# The job's fair position now, or 0 once it has left the fair queue (handed to the workers or withdrawn).
POSITION = READS_ONLY + FAIR_POSITION + """
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then return 0 end
return fair_position(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"""

# KEYS: jobs, rotation, waiting jobs, job bodies, turn, waiting count, waiting since, free slots. ARGV: how
# many jobs the caller is about to read, its worker id, its free slots. Records its free slots (for SUBMIT) and
# moves waiting jobs into the stream until it holds as many undelivered jobs as the caller is about to read.
DISPATCH = WRITES + UNDELIVERED + """
redis.call('HSET', KEYS[8], ARGV[2], ARGV[3])
local want = tonumber(ARGV[1]) - undelivered(KEYS[1])
local moved = 0
while moved < want do
  local head = redis.call('ZPOPMIN', KEYS[2])
  if #head == 0 then break end
  local priority, user = string.match(head[1], '^(-?%d+)|(%d+)$')
  local low, high = '[' .. user .. '|', '[' .. user .. '|~'
  local first = redis.call('ZRANGEBYLEX', KEYS[3], low, high, 'LIMIT', 0, 1)
  if #first > 0 then
    redis.call('ZREM', KEYS[3], first[1])
    local job_id = string.match(first[1], '|([^|]+)$')
    redis.call('ZREM', KEYS[7], job_id)
    local job = redis.call('HGET', KEYS[4], job_id)
    if job then  -- no body: the job was withdrawn (see WITHDRAW)
      redis.call('HDEL', KEYS[4], job_id)
      redis.call('DECR', KEYS[6])
      redis.call('XADD', KEYS[1], '*', 'job', job)
      moved = moved + 1
    end
    if #redis.call('ZRANGEBYLEX', KEYS[3], low, high, 'LIMIT', 0, 1) > 0 then
      redis.call('ZADD', KEYS[2], -tonumber(priority) * 1e12 + redis.call('INCR', KEYS[5]), head[1])
    end
  end
end
return moved
"""

# KEYS: job bodies, waiting count, waiting since (of one model's fair queue). ARGV: job id.
# Takes a cancelled job out of the fair queue if it still waits there: returns 1, and it will never reach a
# worker (DISPATCH skips its leftover entry); 0 when it was already handed to the workers.
WITHDRAW = WRITES + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DECR', KEYS[2])
return 1
"""

# KEYS: workers zset. Returns the number of live workers (heartbeat not yet expired).
LIVE_WORKERS = WRITES + NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: workers zset, heartbeat times, free slots. ARGV: worker id, lease ms. Records a heartbeat valid for the
# lease (and when it was sent, for status views), forgetting the heartbeat times and free slots of workers
# whose lease ran out.
HEARTBEAT = WRITES + NOW + """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #lapsed > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for i = 2, 3 do redis.call('HDEL', KEYS[i], unpack(lapsed)) end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], now)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2]) * 10) end
return 1
"""

# KEYS: the gateways' heartbeats. ARGV: gateway id. Records that it is alive; forgets those silent for a minute.
GATEWAY_SEEN = WRITES + NOW + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
redis.call('PEXPIRE', KEYS[1], 120000)
return 1
"""

# KEYS: inbox stream. ARGV: ttl ms. Creates the (empty) inbox if Redis lost it and renews its TTL.
KEEP_INBOX = WRITES + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local id = redis.call('XADD', KEYS[1], '*', 'init', '1')
  redis.call('XDEL', KEYS[1], id)
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

# Renews the lease of each entry it still owns (idle time reset, delivery count kept) and returns the ids
# of those it no longer owns: another worker took them over (this one stalled) or they ended.
RENEW = WRITES + OWNER + """
local lost = {}
for i = 2, #ARGV do
  if owner(KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# KEYS: jobs stream, started hash. ARGV: entry id, this worker's consumer name, job id.
# The job's first delta is about to be published: mark it started (never to be re-run), if this worker
# still owns it. A worker that lost it while stalled must not mark it again after its new owner ended it.
MARK_STARTED = WRITES + OWNER + """
if owner(KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], 1)
return 1
"""

# KEYS: jobs stream, started hash. ARGV: entry id, this worker's consumer name, job id.
# A job's last event is out: its entry leaves the stream, unless another worker owns it now (this one
# stalled and lost it; the new owner acknowledges it when its own run ends). Returns 1 when acknowledged.
FINISH = WRITES + OWNER + """
local current = owner(KEYS[1], ARGV[1])
if current and current ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[1], 'workers', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[3])
return 1
"""

# What a gateway holds on behalf of a request (a concurrency slot, an in-flight entry, a place in a user's
# share of a queue) is a member of a sorted set scored by the Redis time it expires at: its gateway renews
# it while the request lives, so a gateway that dies releases everything it held within one lease.

# KEYS: one such set. ARGV: lease ms, member. Holds the member for one lease.
HOLD = WRITES + KEEP_FOR + NOW + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
keep_for(KEYS[1], tonumber(ARGV[1]))
return 1
"""

# KEYS: one such set. ARGV: lease ms, members. Extends the lease of the members still held.
RENEW_HELD = WRITES + KEEP_FOR + NOW + """
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[i])
end
if renewed > 0 then keep_for(KEYS[1], tonumber(ARGV[1])) end
return renewed
"""

# KEYS: one such set. The members still held (expired ones are dropped).
HELD = WRITES + NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: the job's cancel flag. ARGV: the cancel channel, job id. Marks the job cancelled (for a worker that
# claims it later) and tells the workers now, in one call: on a Redis Cluster a pipeline may not publish, and
# a script's PUBLISH reaches every node's subscribers.
CANCEL = WRITES + """
redis.call('SET', KEYS[1], 1, 'EX', 600)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""
