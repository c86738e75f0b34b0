"""The queue's state transitions, one Lua script each, so every transition is atomic in Redis.

Invariants the scripts keep (see docs/decisions/jobs-queue.md):
- A job hash holds ``stream`` and ``msg``: the one live stream message for the job. Every
  terminal transition (``finish``) XACKs *and* XDELs that message in the same script, so
  ``XLEN`` of the priority streams is exactly the number of unfinished jobs (queued +
  running) and no deleted message lingers in a pending list.
- A terminal state (succeeded, failed, cancelled) is never left. ``commit`` refuses once a
  job is terminal, so the first result written wins and a retried job never yields two.
- A worker only changes a running job it holds the ``lease`` of (a random token set by
  ``start``); a worker whose message was reclaimed by another finds its lease gone and stops.
- A stale worker never XACKs a message another worker may now hold, unless the job is
  terminal (then the message is dead anyway).
Keys outside KEYS (the job's stream) are touched, so this needs standalone Redis (or
Sentinel), not Redis Cluster.
"""

from __future__ import annotations

# Shared helpers, prepended to every script that needs them.
PRELUDE = """
local function terminal(st)
  return st == 'succeeded' or st == 'failed' or st == 'cancelled'
end
local function ack_msg(stream, group, msg)
  if stream and msg and msg ~= '' then
    redis.call('XACK', stream, group, msg)
    redis.call('XDEL', stream, msg)
  end
end
local function ack_current(job, group)
  local v = redis.call('HMGET', job, 'stream', 'msg')
  ack_msg(v[1], group, v[2])
end
local function emit(events, maxlen, ttl, fields)
  redis.call('XADD', events, 'MAXLEN', maxlen, '*', unpack(fields))
  redis.call('EXPIRE', events, ttl)
end
local function finish(job, events, group, state, now, err, ttl, maxlen)
  redis.call('HSET', job, 'state', state, 'finished_at', now, 'lease', '')
  if err ~= '' then redis.call('HSET', job, 'error', err) end
  ack_current(job, group)
  redis.call('EXPIRE', job, ttl)
  emit(events, maxlen, ttl, {'kind', 'end', 'state', state})
end
local function dead_letter(dead, id, err, detail, attempts, now)
  redis.call('LPUSH', dead, cjson.encode({id = id, error = err, detail = detail,
    attempts = tonumber(attempts), at = tonumber(now)}))
  redis.call('LTRIM', dead, 0, 9999)
end
"""

# KEYS: job, stream, q_high, q_normal, idem
# ARGV: id, request, request_hash, priority, now, max_depth, idem_ttl, record_ttl,
#       idem_key ('' = none), job_key_prefix
SUBMIT = """
local id, h = ARGV[1], ARGV[3]
if ARGV[9] ~= '' then
  local v = redis.call('GET', KEYS[5])
  if v then
    local sep = string.find(v, '|', 1, true)
    local other = string.sub(v, 1, sep - 1)
    if redis.call('EXISTS', ARGV[10] .. other) == 1 then
      if string.sub(v, sep + 1) ~= h then return {'conflict', other} end
      return {'exists', other}
    end
  end
end
-- A client-side retry of this very script (same generated id) must not enqueue twice.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', id} end
local depth = redis.call('XLEN', KEYS[3]) + redis.call('XLEN', KEYS[4])
if depth >= tonumber(ARGV[6]) then return {'full', tostring(depth)} end
local msg = redis.call('XADD', KEYS[2], '*', 'job', id)
redis.call('HSET', KEYS[1], 'id', id, 'state', 'queued', 'priority', ARGV[4], 'attempts', 0,
  'created_at', ARGV[5], 'request', ARGV[2], 'stream', KEYS[2], 'msg', msg, 'commits', 0,
  'idem', ARGV[9])
redis.call('EXPIRE', KEYS[1], ARGV[8])
if ARGV[9] ~= '' then redis.call('SET', KEYS[5], id .. '|' .. h, 'EX', ARGV[7]) end
return {'created', id}
"""

# KEYS: job, events, dead, stream (of the delivered message)
# ARGV: msg, group, consumer, lease, now, max_attempts, record_ttl, maxlen, id
START = (
    PRELUDE
    + """
local msg, group = ARGV[1], ARGV[2]
local st = redis.call('HGET', KEYS[1], 'state')
if not st then ack_msg(KEYS[4], group, msg); return {'skip', 'gone'} end
if terminal(st) then ack_msg(KEYS[4], group, msg); return {'skip', st} end
local cur = redis.call('HMGET', KEYS[1], 'lease', 'msg', 'request', 'attempts')
if st == 'running' and cur[1] == ARGV[4] and cur[2] == msg then
  -- A retry of this very call (its reply was lost to a Redis outage): the same attempt.
  return {'run', cur[3], cur[4]}
end
if redis.call('HGET', KEYS[1], 'msg') ~= msg then
  -- A message of an earlier attempt (the job was re-queued under a new message).
  ack_msg(KEYS[4], group, msg); return {'skip', 'superseded'}
end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  finish(KEYS[1], KEYS[2], group, 'cancelled', ARGV[5], '', ARGV[7], ARGV[8])
  return {'skip', 'cancelled'}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[6]) then
  -- Every earlier attempt died with its worker (or kept failing): a poison job.
  attempts = attempts - 1
  redis.call('HSET', KEYS[1], 'attempts', attempts)
  local last = redis.call('HGET', KEYS[1], 'last_error') or ''
  local err = 'gave up after ' .. attempts .. ' attempts'
  if last ~= '' then err = err .. ': ' .. last else err = err .. ' (its workers died)' end
  finish(KEYS[1], KEYS[2], group, 'failed', ARGV[5], err, ARGV[7], ARGV[8])
  dead_letter(KEYS[3], ARGV[9], err, 'worker lost', attempts, ARGV[5])
  return {'skip', 'dead'}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'lease', ARGV[4], 'worker', ARGV[3])
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[5])
emit(KEYS[2], ARGV[8], ARGV[7], {'kind', 'state', 'state', 'running', 'attempts', attempts})
return {'run', redis.call('HGET', KEYS[1], 'request'), tostring(attempts)}
"""
)

# KEYS: job, events
# ARGV: lease, step, total, stage, event_bytes, maxlen, record_ttl
# Returns 1 keep going, 2 cancel requested, 0 lease lost (someone else owns the job now).
PROGRESS = (
    PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], 'state', 'lease', 'cancel')
if v[1] ~= 'running' or v[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'total', ARGV[3], 'stage', ARGV[4])
emit(KEYS[2], ARGV[6], ARGV[7], {'kind', 'progress', 'state', 'running', 'step', ARGV[2],
  'total', ARGV[3], 'stage', ARGV[4], 'ev', ARGV[5]})
if v[3] == '1' then return 2 end
return 1
"""
)

# KEYS: job, events, result, stats, stream (of the caller's message)
# ARGV: msg, group, result_bytes, now, result_ttl, record_ttl, maxlen, service_s
# First writer wins: no lease check (any execution's result is a valid result), but a
# terminal job refuses every later commit.
COMMIT = (
    PRELUDE
    + """
local msg, group, now = ARGV[1], ARGV[2], ARGV[4]
local v = redis.call('HMGET', KEYS[1], 'state', 'cancel', 'total')
if not v[1] then ack_msg(KEYS[5], group, msg); return {'gone'} end
if terminal(v[1]) then ack_msg(KEYS[5], group, msg); return {'already', v[1]} end
if v[2] == '1' then
  -- DELETE arrived before the result: cancellation wins, the result is dropped.
  finish(KEYS[1], KEYS[2], group, 'cancelled', now, '', ARGV[6], ARGV[7])
  ack_msg(KEYS[5], group, msg)
  return {'cancelled'}
end
local fresh = redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[5])
local expires = tonumber(now) + tonumber(ARGV[5])
if fresh then
  redis.call('HSET', KEYS[1], 'result_expires_at', expires)
  redis.call('HINCRBY', KEYS[1], 'commits', 1)
end
if v[3] then redis.call('HSET', KEYS[1], 'step', v[3]) end
finish(KEYS[1], KEYS[2], group, 'succeeded', now, '', ARGV[6], ARGV[7])
ack_msg(KEYS[5], group, msg)
local old = tonumber(redis.call('HGET', KEYS[4], 'service_s') or '')
local x = tonumber(ARGV[8])
if old then x = 0.8 * old + 0.2 * x end
redis.call('HSET', KEYS[4], 'service_s', x)
if fresh then return {'committed'} end
return {'already', 'result'}
"""
)

# KEYS: job, events, dead, stream (of the caller's message)
# ARGV: msg, group, lease, error, now, max_attempts, retryable, record_ttl, maxlen, id, detail
FAIL = (
    PRELUDE
    + """
local msg, group, err, now = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local v = redis.call('HMGET', KEYS[1], 'state', 'lease', 'cancel', 'attempts', 'stream')
if not v[1] then ack_msg(KEYS[4], group, msg); return {'gone'} end
if terminal(v[1]) then ack_msg(KEYS[4], group, msg); return {'already', v[1]} end
if v[2] ~= ARGV[3] then return {'stale'} end
if v[3] == '1' then
  finish(KEYS[1], KEYS[2], group, 'cancelled', now, '', ARGV[8], ARGV[9])
  return {'cancelled'}
end
local attempts = tonumber(v[4])
redis.call('HSET', KEYS[1], 'last_error', err)
if ARGV[7] == '1' and attempts < tonumber(ARGV[6]) then
  ack_current(KEYS[1], group)
  local new = redis.call('XADD', v[5], '*', 'job', ARGV[10])
  redis.call('HSET', KEYS[1], 'state', 'queued', 'lease', '', 'msg', new)
  emit(KEYS[2], ARGV[9], ARGV[8], {'kind', 'state', 'state', 'queued', 'attempts', attempts,
    'error', err})
  return {'retry'}
end
finish(KEYS[1], KEYS[2], group, 'failed', now, err, ARGV[8], ARGV[9])
dead_letter(KEYS[3], ARGV[10], err, ARGV[11], attempts, now)
return {'dead'}
"""
)

# KEYS: job, events ; ARGV: group, now, record_ttl, maxlen
# The worker saw the cancel flag (or the executor raised Cancelled after it).
CANCELLED = (
    PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], 'state', 'cancel')
if not v[1] then return {'gone'} end
if terminal(v[1]) then return {v[1]} end
if v[2] ~= '1' then return {'not_requested'} end
finish(KEYS[1], KEYS[2], ARGV[1], 'cancelled', ARGV[2], '', ARGV[3], ARGV[4])
return {'cancelled'}
"""
)

# KEYS: job, events ; ARGV: group, now, record_ttl, maxlen
CANCEL = (
    PRELUDE
    + """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'notfound'} end
if terminal(st) then return {st} end
if st == 'queued' then
  -- XDEL of the message means no worker ever runs it; a worker that already read it finds
  -- the job terminal in START.
  finish(KEYS[1], KEYS[2], ARGV[1], 'cancelled', ARGV[2], '', ARGV[3], ARGV[4])
  return {'cancelled'}
end
redis.call('HSET', KEYS[1], 'cancel', '1')
emit(KEYS[2], ARGV[4], ARGV[3], {'kind', 'state', 'state', st, 'cancel', '1'})
return {'cancelling'}
"""
)

# KEYS: job, events ; ARGV: lease, group, record_ttl, maxlen, id
# Graceful handover on shutdown: back to the queue without counting the attempt.
RELEASE = (
    PRELUDE
    + """
local v = redis.call('HMGET', KEYS[1], 'state', 'lease', 'attempts', 'stream')
if v[1] ~= 'running' or v[2] ~= ARGV[1] then return 0 end
ack_current(KEYS[1], ARGV[2])
local new = redis.call('XADD', v[4], '*', 'job', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'queued', 'lease', '', 'msg', new,
  'attempts', math.max(0, tonumber(v[3]) - 1))
emit(KEYS[2], ARGV[4], ARGV[3], {'kind', 'state', 'state', 'queued'})
return 1
"""
)

# KEYS: workers (zset), slots (hash)
# ARGV: group, consumer, now, slots, then (stream, msg) pairs this consumer holds.
# XCLAIM to ourselves resets the message's idle time: the visibility timeout never expires
# while we are alive. Returns, per pair, the consumer that holds the message now (ours: renewed)
# or '' when it is no longer pending (the job ended or was re-queued under a new message).
HEARTBEAT = """
local out = {}
for i = 5, #ARGV, 2 do
  local p = redis.call('XPENDING', ARGV[i], ARGV[1], ARGV[i + 1], ARGV[i + 1], 1)
  if #p == 1 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', ARGV[i], ARGV[1], ARGV[2], 0, ARGV[i + 1], 'JUSTID')
    end
    out[#out + 1] = p[1][2]
  else
    out[#out + 1] = ''
  end
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return out
"""

# KEYS: stream ; ARGV: group, consumer, min_idle_ms, cursor, count
# Returns {next_cursor, id1, job1, id2, job2, ...}. Parsed here because XAUTOCLAIM's reply
# differs between Redis 6.2 (deleted entries omitted) and 7 (a third element of deleted ids).
# Idle time only counts while this server runs: a message's idle time is measured from its
# last delivery or heartbeat by the wall clock, so after a restart (the AOF keeps delivery
# times) it includes the outage, during which no owner could heartbeat. Until the server has
# been up for the visibility timeout (uptime in whole seconds, so rounded up), every owner
# that is alive has had time to renew its messages, and nothing is reclaimed.
RECLAIM = """
local info = redis.call('INFO', 'server')
local up = tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0
if up * 1000 < tonumber(ARGV[3]) then return {'0-0'} end
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {r[1]}
for _, e in ipairs(r[2]) do
  if type(e) == 'table' and type(e[2]) == 'table' then
    local job = nil
    for i = 1, #e[2], 2 do
      if e[2][i] == 'job' then job = e[2][i + 1] end
    end
    if job then
      out[#out + 1] = e[1]
      out[#out + 1] = job
    else
      redis.call('XACK', KEYS[1], ARGV[1], e[1])
    end
  end
end
return out
"""

# KEYS: workers, slots ; ARGV: group, consumer, streams...
DEREGISTER = """
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
for i = 3, #ARGV do
  local ok, p = pcall(redis.call, 'XPENDING', ARGV[i], ARGV[1], '-', '+', 1, ARGV[2])
  if ok and #p == 0 then redis.call('XGROUP', 'DELCONSUMER', ARGV[i], ARGV[1], ARGV[2]) end
end
return 1
"""
