#!lua name=deferpush
--[[
deferpush's function library: every change to Redis that takes more than
one command is one function here, which Redis runs atomically.

deferpush loads it with FUNCTION LOAD REPLACE and calls it with FCALL;
where FUNCTION does not exist (Redis < 7, miniredis) it runs this same
source through EVALSHA behind a prelude whose redis.register_function
records the callbacks, ARGV[1] naming the function (store/library.go).
So everything here is local, and nothing runs at load time but
register_function.

Keys come from store/keys.go. Every mailbox function takes the five keys
of one recipient, in this order, all in its hash tag's slot:

  KEYS[1] q  dp:{aor}:q  LIST    ids pending or in flight, in delivery order
  KEYS[2] m  dp:{aor}:m  HASH    <id> -> record; t:<id> -> "<attempts> <last
                                 error>"; lock -> "<token> <until ms>";
                                 n -> ids in flight (absent: 0)
  KEYS[3] d  dp:{aor}:d  LIST    dead-lettered ids, in order
  KEYS[4] g  dp:{aor}:g  STRING  "gone": the sweeper unindexed the mailbox
  KEYS[5] f  dp:{aor}:f  ZSET    id -> expiry ms of the messages whose
                                 sender waits for a failure notice (exists
                                 only when some do)

In flight = the first n ids of q. A lease is live for a token when lock
holds that token and an until after now. Times are Unix milliseconds from
the caller's clock, never the server's. Records are immutable; their
expiry is read from them (expiry below), for each of the three forms
deferpush has written (record.go). Global keys (dp:mailboxes, dp:leases,
dp:stats) are the Go side's, in the same pipeline as the call, except in
index_cas, which takes one of them and nothing else.
]]

-- version is a hash of this file, written in when deferpush loads it.
local version = '{{version}}'

-- The mark that stands for an id being cut out of a list (ids are ULIDs).
local MARK = '\0'

-- Lists ------------------------------------------------------------------

-- pushhead puts ids at the head of key, in their order.
local function pushhead(key, ids)
  local rev = {}
  for i = #ids, 1, -1 do rev[#rev + 1] = ids[i] end
  for i = 1, #rev, 1000 do
    redis.call('LPUSH', key, unpack(rev, i, math.min(i + 999, #rev)))
  end
end

-- pushtail puts ids at the tail of key, in their order.
local function pushtail(key, ids)
  for i = 1, #ids, 1000 do
    redis.call('RPUSH', key, unpack(ids, i, math.min(i + 999, #ids)))
  end
end

-- cut removes the elements at positions (0-based, ascending) from key:
-- a run from the head by LTRIM, else each is marked and the marks are
-- removed from the head on, which costs up to the last position only.
local function cut(key, positions)
  local k = #positions
  if k == 0 then return end
  if positions[1] == 0 and positions[k] == k - 1 then
    redis.call('LTRIM', key, k, -1)
    return
  end
  for _, p in ipairs(positions) do redis.call('LSET', key, p, MARK) end
  redis.call('LREM', key, k, MARK)
end

-- zremall removes ids from the sorted set key, if it exists.
local function zremall(key, ids)
  if #ids == 0 or redis.call('EXISTS', key) == 0 then return end
  for i = 1, #ids, 1000 do
    redis.call('ZREM', key, unpack(ids, i, math.min(i + 999, #ids)))
  end
end

-- forget removes ids' records and attempts from m.
local function forget(m, ids)
  local f = {}
  for _, id in ipairs(ids) do
    f[#f + 1] = id
    f[#f + 1] = 't:' .. id
  end
  for i = 1, #f, 1000 do
    redis.call('HDEL', m, unpack(f, i, math.min(i + 999, #f)))
  end
end

-- In flight and the lease -------------------------------------------------

local function inflight(m)
  return tonumber(redis.call('HGET', m, 'n')) or 0
end

local function setinflight(m, n)
  if n > 0 then
    redis.call('HSET', m, 'n', n)
  else
    redis.call('HDEL', m, 'n')
  end
end

-- lease returns the lease's token (nil when none) and end.
local function lease(m)
  local v = redis.call('HGET', m, 'lock')
  if not v then return nil, 0 end
  local token, ends = string.match(v, '^(.*) (%d+)$')
  return token, tonumber(ends) or 0
end

local function live(m, token, now)
  local owner, ends = lease(m)
  return owner == token and ends > now
end

-- requeue puts the ids in flight back among the pending: those that never
-- failed stay at the head, in order; those that failed an attempt (a t:
-- field) go to the tail, in order, so that one message that keeps failing
-- does not hold back the others. Returns how many were in flight.
local function requeue(q, m)
  local n = inflight(m)
  if n == 0 then return 0 end
  local ids = redis.call('LRANGE', q, 0, n - 1)
  local fresh, failed = {}, {}
  for _, id in ipairs(ids) do
    if redis.call('HEXISTS', m, 't:' .. id) == 1 then
      failed[#failed + 1] = id
    else
      fresh[#fresh + 1] = id
    end
  end
  if #failed > 0 then
    redis.call('LTRIM', q, #ids, -1)
    pushhead(q, fresh)
    pushtail(q, failed)
  end
  redis.call('HDEL', m, 'n')
  return #ids
end

-- Records -------------------------------------------------------------------

-- uvarint reads an unsigned varint of s at i; returns it and the index
-- after it, or nil.
local function uvarint(s, i)
  local v, mul = 0, 1
  while true do
    local b = string.byte(s, i)
    if not b then return nil end
    i = i + 1
    v = v + (b % 128) * mul
    if b < 128 then return v, i end
    mul = mul * 128
  end
end

-- goexpiry reads a time.Time.MarshalBinary value as Unix ms (0: zero time).
local function gotime(t)
  if #t < 15 then return 0 end
  local sec, ns = 0, 0
  for k = 2, 9 do sec = sec * 256 + string.byte(t, k) end
  for k = 10, 13 do ns = ns * 256 + string.byte(t, k) end
  if sec == 0 and ns == 0 then return 0 end
  return (sec - 62135596800) * 1000 + math.floor(ns / 1000000)
end

-- days is the number of days from 1970-01-01 to the civil date y-mo-d.
local function days(y, mo, d)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- rfc3339 reads a JSON time (RFC 3339) as Unix ms (0: zero time).
local function rfc3339(s)
  if type(s) ~= 'string' then return 0 end
  local y, mo, d, h, mi, sec, frac, zone =
    string.match(s, '^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)(%.?%d*)(.*)$')
  if not y or tonumber(y) <= 1 then return 0 end
  local t = ((days(tonumber(y), tonumber(mo), tonumber(d)) * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60 + tonumber(sec)
  local sign, zh, zm = string.match(zone, '^([+-])(%d+):(%d+)$')
  if sign then
    local off = (tonumber(zh) * 60 + tonumber(zm)) * 60
    if sign == '+' then t = t - off else t = t + off end
  end
  local ms = 0
  if frac ~= '' then ms = tonumber(string.sub(frac .. '000', 2, 4)) end
  return t * 1000 + ms
end

-- expiry returns when the record expires (Unix ms), 0 for never. A v2
-- record says it in its header; v1 records and JSON ones (written by
-- earlier releases, and still read) are decoded as far as needed.
local function expiry(rec)
  local b = string.byte(rec, 1)
  if b == 2 then
    return tonumber(string.match(rec, '^\2%d+ (%d+) ')) or 0
  elseif b == 1 then
    local n, i = uvarint(rec, 2) -- sender
    if not n then return 0 end
    n, i = uvarint(rec, i + n) -- received
    if not n then return 0 end
    n, i = uvarint(rec, i + n) -- expires
    if not n then return 0 end
    return gotime(string.sub(rec, i, i + n - 1))
  elseif b == 123 then
    local ok, v = pcall(cjson.decode, rec)
    if ok and type(v) == 'table' then return rfc3339(v.x) end
  end
  return 0
end

local function expired(rec, now)
  local x = expiry(rec)
  return x > 0 and x <= now
end

local function size(q, d)
  return redis.call('LLEN', q) + redis.call('LLEN', d)
end

-- The functions ---------------------------------------------------------------

-- dp_version returns the library's version.
--   KEYS  none
--   ARGV  none
--   Returns the version string.
redis.register_function('dp_version', function()
  return version
end)

-- dp_append stores one message at the tail of q. The hot path.
--   KEYS  mailbox
--   ARGV  1 id, 2 record, 3 max mailbox (0: none), 4 (only when its sender
--         waits for a failure notice) its expiry ms, which f gets
--   Returns {status, size}: status 1 stored; 2 stored, and the sweeper had
--   unindexed the mailbox (the caller indexes it again); 0 the id was
--   already stored (no-op); -1 mailbox full (nothing stored). size is the
--   mailbox's size (q and d) counted with this message, only when ARGV[3]
--   sets a maximum, else 0.
redis.register_function('dp_append', function(keys, args)
  local q, m, d, g = keys[1], keys[2], keys[3], keys[4]
  local n, max = 0, tonumber(args[3])
  if max > 0 then
    n = size(q, d)
    if n >= max then
      if redis.call('HEXISTS', m, args[1]) == 1 then return {0, n} end
      return {-1, n}
    end
    n = n + 1
  end
  if redis.call('HSETNX', m, args[1], args[2]) == 0 then return {0, n} end
  redis.call('RPUSH', q, args[1])
  if args[4] then redis.call('ZADD', keys[5], args[4], args[1]) end
  if redis.call('DEL', g) == 1 then return {2, n} end
  return {1, n}
end)

-- dp_claim takes or extends the lease for a token, then moves up to
-- ARGV[2] of the next pending ids in flight, dropping expired ones on the
-- way. An expired one whose sender waits for a failure notice (in f)
-- leaves q but keeps its record, for dp_expire to report and drop. A
-- lease another token let lapse is taken over: its ids in flight are
-- requeued first.
--   KEYS  mailbox
--   ARGV  1 token, 2 most messages (0: only the lease), 3 lease end ms,
--         4 now ms
--   Returns {-1} when another token holds a live lease, else
--   {1, requeued, expired, id, record, attempts, id, record, attempts, ...}.
redis.register_function('dp_claim', function(keys, args)
  local q, m = keys[1], keys[2]
  local token, want, now = args[1], tonumber(args[2]), tonumber(args[4])
  local owner, ends = lease(m)
  local requeued = 0
  if owner ~= token then
    if owner and ends > now then return {-1} end
    requeued = requeue(q, m)
  end
  redis.call('HSET', m, 'lock', token .. ' ' .. args[3])
  local out = {1, requeued, 0}
  if want <= 0 then return out end
  local n = inflight(m)
  local pos, got, dropped, cuts, gone = n, 0, 0, {}, {}
  while got < want do
    local ids = redis.call('LRANGE', q, pos, pos + want - got - 1)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local rec = redis.call('HGET', m, id)
      if not rec or expired(rec, now) then
        cuts[#cuts + 1] = pos
        if not rec or not redis.call('ZSCORE', keys[5], id) then
          if rec then dropped = dropped + 1 end
          gone[#gone + 1] = id
        end
      else
        out[#out + 1] = id
        out[#out + 1] = rec
        out[#out + 1] = redis.call('HGET', m, 't:' .. id) or ''
        got = got + 1
      end
      pos = pos + 1
    end
  end
  cut(q, cuts)
  forget(m, gone)
  setinflight(m, n + got)
  out[3] = dropped
  return out
end)

-- dp_ack removes messages the client confirmed: every given id that is in
-- flight; the others (acked before, deleted meanwhile) are skipped.
--   KEYS  mailbox
--   ARGV  1 token, 2 now ms, 3.. ids
--   Returns {-1, 0} when the lease is not live (nothing done), else
--   {acked, size}: size is what the mailbox holds afterwards (q and d).
redis.register_function('dp_ack', function(keys, args)
  local q, m, d = keys[1], keys[2], keys[3]
  if not live(m, args[1], tonumber(args[2])) then return {-1, 0} end
  local n = inflight(m)
  local acked = {}
  for i = 3, #args do
    local id = args[i]
    if n > 0 and redis.call('LPOS', q, id, 'MAXLEN', n) then
      redis.call('LREM', q, 1, id)
      n = n - 1
      acked[#acked + 1] = id
    end
  end
  if #acked > 0 then
    forget(m, acked)
    zremall(keys[5], acked)
    setinflight(m, n)
  end
  return {#acked, size(q, d)}
end)

-- dp_fail counts a failed attempt of a message in flight; at max attempts
-- it moves from q to d, and out of f (the caller tells the sender now,
-- not again when it expires).
--   KEYS  mailbox
--   ARGV  1 token, 2 id, 3 reason, 4 max attempts (0: never dead-letter),
--         5 now ms
--   Returns -1 lease not live, 0 id not in flight, 1 counted (still in
--   flight), 2 dead-lettered.
redis.register_function('dp_fail', function(keys, args)
  local q, m, d = keys[1], keys[2], keys[3]
  local id = args[2]
  if not live(m, args[1], tonumber(args[5])) then return -1 end
  local n = inflight(m)
  if n == 0 or not redis.call('LPOS', q, id, 'MAXLEN', n) then return 0 end
  local prev = string.match(redis.call('HGET', m, 't:' .. id) or '', '^%d+')
  local attempts = 1 + (tonumber(prev) or 0)
  redis.call('HSET', m, 't:' .. id, attempts .. ' ' .. args[3])
  local max = tonumber(args[4])
  if max > 0 and attempts >= max then
    redis.call('LREM', q, 1, id)
    setinflight(m, n - 1)
    redis.call('RPUSH', d, id)
    redis.call('ZREM', keys[5], id)
    return 2
  end
  return 1
end)

-- dp_release requeues what is in flight; the lease stays.
--   KEYS  mailbox
--   ARGV  1 token, 2 now ms
--   Returns -1 lease not live, else the number requeued.
redis.register_function('dp_release', function(keys, args)
  if not live(keys[2], args[1], tonumber(args[2])) then return -1 end
  return requeue(keys[1], keys[2])
end)

-- dp_unlock requeues what is in flight and drops the lease, if the token
-- owns it (live or not) or nobody does.
--   KEYS  mailbox
--   ARGV  1 token
--   Returns -1 another token owns the lease (nothing done), else the
--   number requeued.
redis.register_function('dp_unlock', function(keys, args)
  local owner = lease(keys[2])
  if owner and owner ~= args[1] then return -1 end
  local n = requeue(keys[1], keys[2])
  redis.call('HDEL', keys[2], 'lock')
  return n
end)

-- dp_renew extends a live lease.
--   KEYS  mailbox
--   ARGV  1 token, 2 lease end ms, 3 now ms
--   Returns -1 lease not live, 1 renewed.
redis.register_function('dp_renew', function(keys, args)
  if not live(keys[2], args[1], tonumber(args[3])) then return -1 end
  redis.call('HSET', keys[2], 'lock', args[1] .. ' ' .. args[2])
  return 1
end)

-- dp_recover is the sweeper's look at an entry of the lease index: when
-- the lease is not live, requeue what is in flight and drop the lease.
--   KEYS  mailbox
--   ARGV  1 now ms
--   Returns {1, 0} lease live; {0, requeued} no live lease (nothing in
--   flight now).
redis.register_function('dp_recover', function(keys, args)
  local owner, ends = lease(keys[2])
  if owner and ends > tonumber(args[1]) then return {1, 0} end
  local n = requeue(keys[1], keys[2])
  redis.call('HDEL', keys[2], 'lock')
  return {0, n}
end)

-- dp_expire is the sweeper's look at one mailbox, a bounded part of it a
-- call: from a cursor over q then d, it reads at most ARGV[2] ids (and
-- about 4 MB of records), drops those expired and reports the earliest
-- expiry of those kept. Ids in flight under a live lease are kept (their
-- push ends first); in flight under a lapsed one, they may go. The caller
-- calls again from the returned cursor until it is -1; an id may be missed
-- when the mailbox changes between calls, and is then dropped at a later
-- sweep (a claim never hands out an expired message).
-- Every call first takes the expired entries of f (a message whose sender
-- waits for a failure notice, in q, d or, left there by a claim, in no
-- list) but those in flight under a live lease: it drops their records
-- and returns them, for the caller to report once; their ids leave q
-- and d as the cursor reaches them. When that fills the call's batch, it
-- returns the cursor it was given, and the caller calls again.
--   KEYS  mailbox
--   ARGV  1 now ms, 2 batch, 3 cursor (0 to begin)
--   Returns {dropped, cursor, next, empty, id, record, id, record, ...}:
--   cursor -1 when the mailbox was read to its end; next the earliest
--   expiry (ms) of the ids read and kept, -1 if none; empty 1 when the
--   mailbox holds nothing any more (then g is set for an hour, so that an
--   append racing with the unindexing indexes the mailbox again); then
--   the messages taken out of f, whose senders are to be told.
redis.register_function('dp_expire', function(keys, args)
  local q, m, d, g, f = keys[1], keys[2], keys[3], keys[4], keys[5]
  local now, budget, cur = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  local n = inflight(m)
  local held = 0
  local owner, ends = lease(m)
  if owner and ends > now then held = n end
  local dropped, next, bytes = 0, -1, 0
  local out = {0, cur, -1, 0}
  -- Failure notices first, before the ids they name can be cut.
  if redis.call('EXISTS', f) == 1 then
    local due = redis.call('ZRANGEBYSCORE', f, '-inf', now, 'LIMIT', 0, budget + held)
    local keep = {}
    if #due > 0 and held > 0 then
      for _, id in ipairs(redis.call('LRANGE', q, 0, held - 1)) do keep[id] = true end
    end
    local taken = {}
    for _, id in ipairs(due) do
      if #taken >= budget or bytes > 4194304 then break end
      if not keep[id] then
        taken[#taken + 1] = id
        local rec = redis.call('HGET', m, id)
        if rec then
          bytes = bytes + #rec
          dropped = dropped + 1
          out[#out + 1] = id
          out[#out + 1] = rec
        end
      end
    end
    zremall(f, taken)
    forget(m, taken)
    budget = budget - #taken
    if budget <= 0 or bytes > 4194304 then
      out[1] = dropped
      return out
    end
  end
  -- visit reads up to count ids of key from position from; returns how
  -- many it read, how many it cut and how many of those were before
  -- position below.
  local function visit(key, from, count, keep, below)
    local ids = redis.call('LRANGE', key, from, from + count - 1)
    if #ids == 0 then return 0, 0, 0 end
    local recs = redis.call('HMGET', m, unpack(ids))
    local cuts, gone, under, read = {}, {}, 0, 0
    for i, id in ipairs(ids) do
      if bytes > 4194304 then break end
      read = i
      local p = from + i - 1
      local rec = recs[i]
      local x = 0
      if rec then
        bytes = bytes + #rec
        x = expiry(rec)
      end
      if rec and (x == 0 or x > now or p < keep) then
        if x > 0 and (next < 0 or x < next) then next = x end
      else
        if rec then dropped = dropped + 1 end
        cuts[#cuts + 1] = p
        gone[#gone + 1] = id
        if p < below then under = under + 1 end
      end
    end
    cut(key, cuts)
    forget(m, gone)
    return read, #cuts, under
  end
  local qlen = redis.call('LLEN', q)
  if cur < qlen then
    local read, removed, under = visit(q, cur, math.min(budget, qlen - cur), held, n)
    if under > 0 then setinflight(m, n - under) end
    cur = cur + read - removed
    budget = budget - read
    qlen = qlen - removed
    if bytes > 4194304 then budget = 0 end
  end
  local dlen = redis.call('LLEN', d)
  if budget > 0 and cur - qlen < dlen then
    local read, removed = visit(d, cur - qlen, math.min(budget, dlen - (cur - qlen)), 0, 0)
    cur = cur + read - removed
    dlen = dlen - removed
  end
  if cur >= qlen + dlen then cur = -1 end
  out[1], out[2], out[3] = dropped, cur, next
  if qlen + dlen == 0 then
    -- Failure notices not due yet of messages in no list (a claim left
    -- them) keep the mailbox indexed until they are.
    local first = redis.call('ZRANGE', f, 0, 0, 'WITHSCORES')
    if #first > 0 then
      local x = tonumber(first[2])
      if next < 0 or x < next then out[3] = x end
      return out
    end
    redis.call('SET', g, '1', 'PX', 3600000)
    out[4] = 1
  end
  return out
end)

-- dp_get reads one message and finds its state.
--   KEYS  mailbox
--   ARGV  1 id
--   Returns {} when unknown, else {record, attempts, state}.
redis.register_function('dp_get', function(keys, args)
  local q, m, d = keys[1], keys[2], keys[3]
  local rec = redis.call('HGET', m, args[1])
  if not rec then return {} end
  local state = 'pending'
  local p = redis.call('LPOS', q, args[1])
  if p then
    if p < inflight(m) then state = 'inflight' end
  elseif redis.call('LPOS', d, args[1]) then
    state = 'dead'
  end
  return {rec, redis.call('HGET', m, 't:' .. args[1]) or '', state}
end)

-- dp_list reads a page of q (in flight first, then pending) or of d.
--   KEYS  mailbox
--   ARGV  1 "q" or "d", 2 offset, 3 limit (<= 0: all)
--   Returns {total, id, record, attempts, state, id, ...}.
redis.register_function('dp_list', function(keys, args)
  local m = keys[2]
  local key, n, state = keys[1], inflight(m), 'pending'
  if args[1] == 'd' then key, n, state = keys[3], 0, 'dead' end
  local total = redis.call('LLEN', key)
  local off, lim = tonumber(args[2]), tonumber(args[3])
  if lim <= 0 then lim = total end
  local out = {total}
  if lim <= 0 or off >= total then return out end
  for i, id in ipairs(redis.call('LRANGE', key, off, off + lim - 1)) do
    local rec = redis.call('HGET', m, id)
    if rec then
      local s = state
      if off + i - 1 < n then s = 'inflight' end
      out[#out + 1] = id
      out[#out + 1] = rec
      out[#out + 1] = redis.call('HGET', m, 't:' .. id) or ''
      out[#out + 1] = s
    end
  end
  return out
end)

-- dp_delete removes one message wherever it is.
--   KEYS  mailbox
--   ARGV  1 id
--   Returns 0 unknown, 1 deleted, 2 deleted and the mailbox is now empty.
redis.register_function('dp_delete', function(keys, args)
  local q, m, d = keys[1], keys[2], keys[3]
  local id = args[1]
  if redis.call('HEXISTS', m, id) == 0 then return 0 end
  local p = redis.call('LPOS', q, id)
  if p then
    local n = inflight(m)
    redis.call('LREM', q, 1, id)
    if p < n then setinflight(m, n - 1) end
  else
    redis.call('LREM', d, 1, id)
  end
  forget(m, {id})
  redis.call('ZREM', keys[5], id)
  if size(q, d) == 0 then return 2 end
  return 1
end)

-- dp_delete_all removes every message of a mailbox (and the failure
-- notices they wait for); the lease stays.
--   KEYS  mailbox
--   ARGV  none
--   Returns the number of messages removed.
redis.register_function('dp_delete_all', function(keys)
  local q, m, d = keys[1], keys[2], keys[3]
  local n = size(q, d)
  local lock = redis.call('HGET', m, 'lock')
  redis.call('DEL', q, m, d, keys[5])
  if lock then redis.call('HSET', m, 'lock', lock) end
  return n
end)

-- dp_requeue_dead moves the dead letters to the head of the pending ids
-- (behind those in flight), in order, with their attempts reset.
--   KEYS  mailbox
--   ARGV  none
--   Returns the number moved.
redis.register_function('dp_requeue_dead', function(keys)
  local q, m, d = keys[1], keys[2], keys[3]
  local ids = redis.call('LRANGE', d, 0, -1)
  if #ids == 0 then return 0 end
  local n = inflight(m)
  local head = {}
  if n > 0 then
    head = redis.call('LRANGE', q, 0, n - 1)
    redis.call('LTRIM', q, n, -1)
  end
  pushhead(q, ids)
  pushhead(q, head)
  redis.call('DEL', d)
  local f = {}
  for _, id in ipairs(ids) do f[#f + 1] = 't:' .. id end
  for i = 1, #f, 1000 do
    redis.call('HDEL', m, unpack(f, i, math.min(i + 999, #f)))
  end
  return #ids
end)

-- dp_count counts a mailbox's messages.
--   KEYS  mailbox
--   ARGV  none
--   Returns {ids in q, of which in flight, ids in d}.
redis.register_function('dp_count', function(keys)
  return {redis.call('LLEN', keys[1]), inflight(keys[2]), redis.call('LLEN', keys[3])}
end)

-- dp_index_cas changes one member of a global index (dp:mailboxes or
-- dp:leases) only if its score is still the one the sweeper read, so that
-- an append or claim that touched it meanwhile wins.
--   KEYS  1 the index
--   ARGV  1 member, 2 expected score, 3 new score or "" to remove
--   Returns 1 changed, 0 the score differed (nothing done).
redis.register_function('dp_index_cas', function(keys, args)
  local s = redis.call('ZSCORE', keys[1], args[1])
  if not s or tonumber(s) ~= tonumber(args[2]) then return 0 end
  if args[3] == '' then
    redis.call('ZREM', keys[1], args[1])
  else
    redis.call('ZADD', keys[1], args[3], args[1])
  end
  return 1
end)

-- Registrations ---------------------------------------------------------------

-- A registration is Go's JSON of plugin.Registration: an object whose
-- pager_only member is left out when false.

-- decoded returns the registration JSON v as a table, or nil.
local function decoded(v)
  if not v then return nil end
  local ok, reg = pcall(cjson.decode, v)
  if ok and type(reg) == 'table' then return reg end
  return nil
end

-- binding is plugin.Registration.Binding: the instance when set, else the
-- contact.
local function binding(reg)
  if type(reg.instance) == 'string' and reg.instance ~= '' then return reg.instance end
  return reg.contact
end

-- pageronly is the registration JSON v (without pager_only) with
-- pager_only set: the member goes before the closing brace, so the rest
-- stays byte for byte.
local function pageronly(v)
  return string.sub(v, 1, -2) .. ',"pager_only":true}'
end

-- dp_set_contact records a registration, keeping the pager_only the
-- stored one learnt when it is the same binding (a refresh, or the same
-- instance at a new contact).
--   KEYS  1 dp:{aor}:c
--   ARGV  1 registration JSON, 2 its binding, or "" when there is nothing
--         to keep (it says pager_only itself), 3 time to live ms (0: none)
--   Returns 1 written as given, 2 written with pager_only kept.
redis.register_function('dp_set_contact', function(keys, args)
  local rec, res = args[1], 1
  if args[2] ~= '' then
    local old = decoded(redis.call('GET', keys[1]))
    if old and old.pager_only == true and binding(old) == args[2] then
      rec, res = pageronly(rec), 2
    end
  end
  if tonumber(args[3]) > 0 then
    redis.call('SET', keys[1], rec, 'PX', args[3])
  else
    redis.call('SET', keys[1], rec)
  end
  return res
end)

-- dp_set_pager_only marks the stored registration pager_only if it is
-- still the given binding; its time to live stays.
--   KEYS  1 dp:{aor}:c
--   ARGV  1 binding
--   Returns 1 marked (or it was), 0 nothing stored or another binding.
redis.register_function('dp_set_pager_only', function(keys, args)
  local v = redis.call('GET', keys[1])
  local reg = decoded(v)
  if not reg or binding(reg) ~= args[1] then return 0 end
  if reg.pager_only == true then return 1 end
  redis.call('SET', keys[1], pageronly(v), 'KEEPTTL')
  return 1
end)

-- dp_delete_contact forgets a registration if its contact is the one
-- given.
--   KEYS  1 dp:{aor}:c
--   ARGV  1 contact URI ("" matches any)
--   Returns 1 deleted, 0 nothing (none stored, or another contact).
redis.register_function('dp_delete_contact', function(keys, args)
  local v = redis.call('GET', keys[1])
  if not v then return 0 end
  if args[1] ~= '' then
    local ok, reg = pcall(cjson.decode, v)
    if ok and type(reg) == 'table' and reg.contact ~= args[1] then return 0 end
  end
  redis.call('DEL', keys[1])
  return 1
end)

-- dp_migrate1 converts one recipient's keys from the first layout
-- (before store v2) to this one. Records are kept as they are (v1 and
-- JSON records are still read); ids in flight go back among the pending
-- as a requeue puts them (those with a failed attempt behind the others),
-- attempts are kept, the lease is dropped, settings and the registration
-- move with their time to live, and so do the failure notices messages
-- wait for (notify, with the messages a claim left there for the sweep).
-- Keys of this layout that exist already (written since the upgrade) are
-- merged: what was stored before comes first; a registration written
-- since keeps the pager_only the earlier one had learnt for the same
-- binding, as dp_set_contact would have. Running it again finds nothing
-- to do.
--   KEYS  1 pending, 2 inflight, 3 dead, 4 msgs, 5 expiry, 6 tries,
--         7 lock, 8 gone, 9 settings, 10 contact, 11 notify (the first
--         layout's); 12 q, 13 m, 14 d, 15 g, 16 s, 17 c, 18 f
--   ARGV  none
--   Returns {messages moved, keys of the first layout removed}.
redis.register_function('dp_migrate1', function(keys)
  local opending, oinflight, odead, omsgs = keys[1], keys[2], keys[3], keys[4]
  local oexpiry, otries, olock, ogone = keys[5], keys[6], keys[7], keys[8]
  local osettings, ocontact, onotify = keys[9], keys[10], keys[11]
  local q, m, d, g, s, c, f = keys[12], keys[13], keys[14], keys[15], keys[16], keys[17], keys[18]
  local removed = redis.call('EXISTS', opending, oinflight, odead, omsgs, oexpiry, otries, olock, ogone, osettings, ocontact, onotify)
  if removed == 0 then return {0, 0} end
  -- records
  if redis.call('EXISTS', omsgs) == 1 then
    if redis.call('EXISTS', m) == 0 then
      redis.call('RENAME', omsgs, m)
    else
      local kv = redis.call('HGETALL', omsgs)
      for i = 1, #kv, 1000 do
        redis.call('HSET', m, unpack(kv, i, math.min(i + 999, #kv)))
      end
      redis.call('DEL', omsgs)
    end
  end
  -- attempts
  local tries = redis.call('HGETALL', otries)
  for i = 1, #tries, 2 do
    if redis.call('HEXISTS', m, tries[i]) == 1 then
      redis.call('HSET', m, 't:' .. tries[i], tries[i + 1])
    end
  end
  -- in flight back among the pending, as requeue does
  local fresh, failed = {}, {}
  for _, id in ipairs(redis.call('LRANGE', oinflight, 0, -1)) do
    if redis.call('HEXISTS', m, 't:' .. id) == 1 then
      failed[#failed + 1] = id
    else
      fresh[#fresh + 1] = id
    end
  end
  local moved = #fresh + #failed + redis.call('LLEN', opending) + redis.call('LLEN', odead)
  if redis.call('EXISTS', q) == 0 then
    if redis.call('EXISTS', opending) == 1 then redis.call('RENAME', opending, q) end
    pushhead(q, fresh)
  else
    local n = inflight(m)
    local head = {}
    if n > 0 then
      head = redis.call('LRANGE', q, 0, n - 1)
      redis.call('LTRIM', q, n, -1)
    end
    pushhead(q, redis.call('LRANGE', opending, 0, -1))
    pushhead(q, fresh)
    pushhead(q, head)
  end
  pushtail(q, failed)
  -- dead letters
  if redis.call('EXISTS', d) == 0 then
    if redis.call('EXISTS', odead) == 1 then redis.call('RENAME', odead, d) end
  else
    pushhead(d, redis.call('LRANGE', odead, 0, -1))
  end
  -- the gone mark, settings, the registration
  if redis.call('EXISTS', ogone) == 1 and size(q, d) == 0 and redis.call('EXISTS', g) == 0 then
    redis.call('RENAME', ogone, g)
  end
  if redis.call('EXISTS', osettings) == 1 and redis.call('EXISTS', s) == 0 then
    redis.call('RENAME', osettings, s)
  end
  if redis.call('EXISTS', ocontact) == 1 then
    if redis.call('EXISTS', c) == 0 then
      redis.call('RENAME', ocontact, c)
    else
      local old = decoded(redis.call('GET', ocontact))
      if old and old.pager_only == true then
        local v = redis.call('GET', c)
        local new = decoded(v)
        if new and new.pager_only ~= true and binding(new) == binding(old) then
          redis.call('SET', c, pageronly(v), 'KEEPTTL')
        end
      end
    end
  end
  -- failure notices
  if redis.call('EXISTS', onotify) == 1 then
    if redis.call('EXISTS', f) == 0 then
      redis.call('RENAME', onotify, f)
    else
      local zs = redis.call('ZRANGE', onotify, 0, -1, 'WITHSCORES')
      local args = {}
      for i = 1, #zs, 2 do
        args[#args + 1] = zs[i + 1]
        args[#args + 1] = zs[i]
      end
      for i = 1, #args, 1000 do
        redis.call('ZADD', f, unpack(args, i, math.min(i + 999, #args)))
      end
    end
  end
  redis.call('DEL', opending, oinflight, odead, omsgs, oexpiry, otries, olock, ogone, osettings, ocontact, onotify)
  return {moved, removed}
end)
