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
index_cas, which takes one of them and nothing else, and dp_append, which
takes dp:mailboxes and dp:stats after the mailbox where they share one
Redis (not a cluster).
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

-- unlock requeues what is in flight and drops the lease (the end of
-- dp_unlock, dp_finish, dp_recover and a proxy's page session). Returns
-- the number requeued.
local function unlock(q, m)
  local n = requeue(q, m)
  -- The mark of a message stored during the push goes too: whatever
  -- pushes next claims from the head (dp_finish read it first).
  redis.call('HDEL', m, 'lock', 'more')
  return n
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

-- headlen is the length of a v2 record's head: its header line and the
-- fields before the invite (sender, Call-ID, Message-ID, content type),
-- which is all a listing of metadata needs (record.go's decodeHead reads
-- it); nil for the older forms, which have no such cut.
local function headlen(rec)
  local h, s, c, i, t = string.match(rec, '^(\2%d+ %d+ [^ \n]* (%d+) (%d+) (%d+) (%d+) %d+\n)')
  if not h then return nil end
  return #h + tonumber(s) + tonumber(c) + tonumber(i) + tonumber(t)
end

local function expired(rec, now)
  local x = expiry(rec)
  return x > 0 and x <= now
end

local function size(q, d)
  return redis.call('LLEN', q) + redis.call('LLEN', d)
end

-- append stores one message at the tail of q: dp_append's work, which
-- dp_store shares. max 0: no maximum; notify, when set, is the expiry ms
-- f gets (its sender waits for a failure notice). Returns status and
-- size as dp_append documents (two values, not a table: dp_store's hot
-- path).
local function append(q, m, d, g, f, id, rec, max, notify)
  local n = 0
  if max > 0 then
    n = size(q, d)
    if n >= max then
      if redis.call('HEXISTS', m, id) == 1 then return 0, n end
      return -1, n
    end
    n = n + 1
  end
  if redis.call('HSETNX', m, id, rec) == 0 then return 0, n end
  redis.call('RPUSH', q, id)
  -- Stored while a push holds the mailbox (on whichever instance): its
  -- dp_finish tells it to claim once more (more).
  if redis.call('HEXISTS', m, 'lock') == 1 then redis.call('HSET', m, 'more', '1') end
  if notify then redis.call('ZADD', f, notify, id) end
  if redis.call('DEL', g) == 1 then return 2, n end
  return 1, n
end

-- indexed indexes and counts a message append stored (status 1 or 2)
-- for the recipient aor, whose earliest expiry is now at most score
-- (ms, a string): in mailboxes (dp:mailboxes) at the lower of its score
-- and this one, or at this one when the sweeper had unindexed the
-- mailbox (2: its compare-and-remove then cannot undo it), and in
-- stats' stored (dp:stats). Nothing for the other statuses.
local function indexed(mailboxes, stats, aor, score, status)
  if status == 2 then
    redis.call('ZADD', mailboxes, score, aor)
  elseif status == 1 then
    redis.call('ZADD', mailboxes, 'LT', score, aor)
  else
    return
  end
  redis.call('HINCRBY', stats, 'stored', 1)
end

-- The functions ---------------------------------------------------------------

-- dp_version returns the library's version.
--   KEYS  none
--   ARGV  none
--   Returns the version string.
redis.register_function{function_name = 'dp_version', flags = {'no-writes'}, callback = function()
  return version
end}

-- dp_append stores one message at the tail of q. The hot path. Given
-- the two global keys too (a standalone or Sentinel Redis: one slot), it
-- also indexes and counts the message it stored (indexed), which the
-- caller otherwise does in the same pipeline (a cluster).
--   KEYS  mailbox; optionally 6 dp:mailboxes, 7 dp:stats
--   ARGV  1 id, 2 record, 3 max mailbox (0: none), 4 (when its sender
--         waits for a failure notice) its expiry ms, which f gets, else ""
--         or absent; with keys 6 and 7: 5 the mailbox's index score (the
--         message's expiry ms), 6 the AOR
--   Returns {status, size}: status 1 stored; 2 stored, and the sweeper had
--   unindexed the mailbox (the caller indexes it again, unless keys 6
--   and 7 were given); 0 the id was already stored (no-op); -1 mailbox
--   full (nothing stored). size is the mailbox's size (q and d) counted
--   with this message, only when ARGV[3] sets a maximum, else 0.
redis.register_function('dp_append', function(keys, args)
  local notify = args[4]
  if notify == '' then notify = nil end
  local status, n = append(keys[1], keys[2], keys[3], keys[4], keys[5], args[1], args[2], tonumber(args[3]), notify)
  if keys[6] then indexed(keys[6], keys[7], args[6], args[5], status) end
  return {status, n}
end)

-- claim takes or extends the lease for a token up to a time (ms), then
-- moves up to want of the next pending ids in flight, dropping expired
-- ones on the way. An expired one whose sender waits for a failure
-- notice (in f) leaves q but keeps its record, for dp_expire to report
-- and drop. A lease another token let lapse is taken over: its ids in
-- flight are requeued first. Returns {-1} when another token holds a live
-- lease, else {1, requeued, expired, id, record, attempts, id, record,
-- attempts, ...}. dp_claim and the proxy's pages (dp_register, dp_page)
-- share it.
local function claim(keys, token, want, upto, now)
  local q, m = keys[1], keys[2]
  local owner, ends = lease(m)
  local requeued = 0
  if owner ~= token then
    if owner and ends > now then return {-1} end
    requeued = requeue(q, m)
  end
  redis.call('HSET', m, 'lock', token .. ' ' .. upto)
  -- What was stored before this claim is pending: this claim, or the
  -- next of the same push, takes it.
  redis.call('HDEL', m, 'more')
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
end

-- dp_claim is claim.
--   KEYS  mailbox
--   ARGV  1 token, 2 most messages (0: only the lease), 3 lease end ms,
--         4 now ms
--   Returns claim's answer.
redis.register_function{function_name = 'dp_claim', flags = {'allow-oom'}, callback = function(keys, args)
  return claim(keys, args[1], tonumber(args[2]), args[3], tonumber(args[4]))
end}

-- ack removes the ids args[from..] that are in flight under a live lease
-- of token (dp_ack, dp_finish); the others (acked before, deleted
-- meanwhile) are skipped. Returns {-1, 0} when the lease is not live
-- (nothing done), else {acked, size}: size is what the mailbox holds
-- afterwards (q and d).
local function ack(keys, token, now, args, from)
  local q, m, d = keys[1], keys[2], keys[3]
  if not live(m, token, now) then return {-1, 0} end
  local n = inflight(m)
  local acked = {}
  for i = from, #args do
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
end

-- dp_ack removes messages the client confirmed: every given id that is in
-- flight; the others (acked before, deleted meanwhile) are skipped.
--   KEYS  mailbox
--   ARGV  1 token, 2 now ms, 3.. ids
--   Returns {-1, 0} when the lease is not live (nothing done), else
--   {acked, size}: size is what the mailbox holds afterwards (q and d).
redis.register_function{function_name = 'dp_ack', flags = {'allow-oom'}, callback = function(keys, args)
  return ack(keys, args[1], tonumber(args[2]), args, 3)
end}

-- dp_fail counts a failed attempt of a message in flight; at max attempts
-- it moves from q to d, and out of f (the caller tells the sender now,
-- not again when it expires).
--   KEYS  mailbox
--   ARGV  1 token, 2 id, 3 reason, 4 max attempts (0: never dead-letter),
--         5 now ms
--   Returns -1 lease not live, 0 id not in flight, 1 counted (still in
--   flight), 2 dead-lettered.
redis.register_function{function_name = 'dp_fail', flags = {'allow-oom'}, callback = function(keys, args)
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
end}

-- dp_release requeues what is in flight; the lease stays.
--   KEYS  mailbox
--   ARGV  1 token, 2 now ms
--   Returns -1 lease not live, else the number requeued.
redis.register_function{function_name = 'dp_release', flags = {'allow-oom'}, callback = function(keys, args)
  if not live(keys[2], args[1], tonumber(args[2])) then return -1 end
  return requeue(keys[1], keys[2])
end}

-- dp_unlock requeues what is in flight and drops the lease, if the token
-- owns it (live or not) or nobody does.
--   KEYS  mailbox
--   ARGV  1 token
--   Returns -1 another token owns the lease (nothing done), else the
--   number requeued.
redis.register_function{function_name = 'dp_unlock', flags = {'allow-oom'}, callback = function(keys, args)
  local owner = lease(keys[2])
  if owner and owner ~= args[1] then return -1 end
  return unlock(keys[1], keys[2])
end}

-- dp_finish ends a push in one call: dp_ack of the ids the client
-- confirmed last, then dp_unlock (what else is in flight goes back to
-- pending, in order, and the lease is dropped).
--   KEYS  mailbox
--   ARGV  1 token, 2 now ms, 3.. ids
--   Returns {-2, 0, 0} when another token owns the lease (nothing
--   done); else {acked, size, more} with acked and size as dp_ack's, the
--   lease dropped. acked is -1 when the lease had lapsed (nothing
--   acked), or when it is nobody's and an id is still stored: the
--   sweeper requeued them. Nobody's lease and none of the ids stored is
--   what a retry finds after its first try went through, its reply
--   lost: {0, size, 0}. more is 1 when a message was stored after the
--   push's last claim (append's mark, whichever instance stored it):
--   the push claims once more, else that message would wait for the
--   user's next registration.
redis.register_function{function_name = 'dp_finish', flags = {'allow-oom'}, callback = function(keys, args)
  local owner = lease(keys[2])
  if owner and owner ~= args[1] then return {-2, 0, 0} end
  local res = {0, 0}
  if #args >= 3 and owner then
    res = ack(keys, args[1], tonumber(args[2]), args, 3)
  elseif #args >= 3 then
    res = {0, size(keys[1], keys[3])}
    for i = 3, #args do
      if redis.call('HEXISTS', keys[2], args[i]) == 1 then res = {-1, 0} break end
    end
  end
  local more = 0
  if owner and redis.call('HDEL', keys[2], 'more') == 1 then more = 1 end
  unlock(keys[1], keys[2])
  res[3] = more
  return res
end}

-- dp_renew extends a live lease.
--   KEYS  mailbox
--   ARGV  1 token, 2 lease end ms, 3 now ms
--   Returns -1 lease not live, 1 renewed.
redis.register_function{function_name = 'dp_renew', flags = {'allow-oom'}, callback = function(keys, args)
  if not live(keys[2], args[1], tonumber(args[3])) then return -1 end
  redis.call('HSET', keys[2], 'lock', args[1] .. ' ' .. args[2])
  return 1
end}

-- dp_recover is the sweeper's look at an entry of the lease index: when
-- the lease is not live, requeue what is in flight and drop the lease.
--   KEYS  mailbox
--   ARGV  1 now ms
--   Returns {1, 0} lease live; {0, requeued} no live lease (nothing in
--   flight now).
redis.register_function{function_name = 'dp_recover', flags = {'allow-oom'}, callback = function(keys, args)
  local owner, ends = lease(keys[2])
  if owner and ends > tonumber(args[1]) then return {1, 0} end
  return {0, unlock(keys[1], keys[2])}
end}

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
redis.register_function{function_name = 'dp_expire', flags = {'allow-oom'}, callback = function(keys, args)
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
end}

-- dp_get reads one message and finds its state.
--   KEYS  mailbox
--   ARGV  1 id
--   Returns {} when unknown, else {record, attempts, state}.
redis.register_function{function_name = 'dp_get', flags = {'no-writes'}, callback = function(keys, args)
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
end}

-- behind is where a page after id starts in key, a list of total ids:
-- behind id, or where id has left, at the first id greater than it (ids
-- are ULIDs, and a list is in arrival order but for the messages a
-- failed attempt or a requeue moved). The first 1,000 ids are scanned; in
-- the rest, which only a max_mailbox above 1,000 makes, it is found by
-- bisection, which trusts that order: a gone id, or one no list holds,
-- costs LPOS's scan in C (about 10 ms for a million ids), an LRANGE of
-- 1,000 and some 20 LINDEX, not a scan in Lua (165 ms for a million).
local function behind(key, id, total)
  local p = redis.call('LPOS', key, id)
  if p then return p + 1 end
  for i, v in ipairs(redis.call('LRANGE', key, 0, 999)) do
    if v > id then return i - 1 end
  end
  local lo, hi = math.min(1000, total), total
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if redis.call('LINDEX', key, mid) > id then hi = mid else lo = mid + 1 end
  end
  return lo
end

-- dp_list reads a page of q (in flight first, then pending) or of d.
-- Without "body" it returns each record's head (headlen), not the
-- message's bytes, which a listing of metadata would only throw away
-- after Redis had copied them into its answer. Either way it reads whole
-- records (Redis reads no part of a hash field), which costs about 1 ms
-- per MiB: the budget bounds that, as dp_expire's 4 MiB does.
--   KEYS  mailbox
--   ARGV  1 "q" or "d", 2 offset, 3 limit (<= 0: all), 4 after: an id to
--         start behind instead of at offset ("": none; when the id has
--         left the list, at the first id greater than it: behind), 5
--         "body" or "", 6 a budget (0: none): the page ends before the
--         message whose size (its record's length less the head; an
--         older record's whole length) would take the sizes of the
--         page's messages past it, but never before its first one
--   Returns {total, start, read, last, id, record, length, attempts,
--   state, id, ...}: the list's length, the position of the page's first
--   id, how many ids it read and the last one ("" none), then for each
--   id read whose record is still there (dp_expire may leave an id
--   behind its record until its next call) the record or its head and
--   the record's length. The next page starts at start + read, behind
--   last: ids are counted read whether or not their record is there, so
--   that a page of gone records still moves on.
redis.register_function{function_name = 'dp_list', flags = {'no-writes'}, callback = function(keys, args)
  local m = keys[2]
  local key, n, state = keys[1], inflight(m), 'pending'
  if args[1] == 'd' then key, n, state = keys[3], 0, 'dead' end
  local total = redis.call('LLEN', key)
  local start, lim = tonumber(args[2]), tonumber(args[3])
  local after, body, budget = args[4] or '', args[5] == 'body', tonumber(args[6]) or 0
  if after ~= '' then start = behind(key, after, total) end
  if lim <= 0 then lim = total end
  local out = {total, start, 0, ''}
  if lim <= 0 or start >= total then return out end
  local read, used = 0, 0
  for i, id in ipairs(redis.call('LRANGE', key, start, start + lim - 1)) do
    local rec = redis.call('HGET', m, id)
    if rec then
      local length, h = #rec, headlen(rec)
      local size = length - (h or 0)
      if budget > 0 and #out > 4 and used + size > budget then break end
      used = used + size
      if h and not body then rec = string.sub(rec, 1, h) end
      local s = state
      if start + i - 1 < n then s = 'inflight' end
      out[#out + 1] = id
      out[#out + 1] = rec
      out[#out + 1] = length
      out[#out + 1] = redis.call('HGET', m, 't:' .. id) or ''
      out[#out + 1] = s
    end
    read = i
    out[4] = id
  end
  out[3] = read
  return out
end}

-- dp_delete removes one message wherever it is.
--   KEYS  mailbox
--   ARGV  1 id
--   Returns 0 unknown, 1 deleted, 2 deleted and the mailbox is now empty.
redis.register_function{function_name = 'dp_delete', flags = {'allow-oom'}, callback = function(keys, args)
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
end}

-- dp_delete_all removes every message of a mailbox (and the failure
-- notices they wait for); the lease stays.
--   KEYS  mailbox
--   ARGV  none
--   Returns the number of messages removed.
redis.register_function{function_name = 'dp_delete_all', flags = {'allow-oom'}, callback = function(keys)
  local q, m, d = keys[1], keys[2], keys[3]
  local n = size(q, d)
  local lock = redis.call('HGET', m, 'lock')
  redis.call('DEL', q, m, d, keys[5])
  if lock then redis.call('HSET', m, 'lock', lock) end
  return n
end}

-- dp_requeue_dead moves the dead letters to the head of the pending ids
-- (behind those in flight), in order, with their attempts reset.
--   KEYS  mailbox
--   ARGV  none
--   Returns the number moved.
redis.register_function{function_name = 'dp_requeue_dead', flags = {'allow-oom'}, callback = function(keys)
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
end}

-- dp_count counts a mailbox's messages.
--   KEYS  mailbox
--   ARGV  none
--   Returns {ids in q, of which in flight, ids in d}.
redis.register_function{function_name = 'dp_count', flags = {'no-writes'}, callback = function(keys)
  return {redis.call('LLEN', keys[1]), inflight(keys[2]), redis.call('LLEN', keys[3])}
end}

-- dp_index_cas changes one member of a global index (dp:mailboxes or
-- dp:leases) only if its score is still the one the sweeper read, so that
-- an append or claim that touched it meanwhile wins.
--   KEYS  1 the index
--   ARGV  1 member, 2 expected score, 3 new score or "" to remove
--   Returns 1 changed, 0 the score differed (nothing done).
redis.register_function{function_name = 'dp_index_cas', flags = {'allow-oom'}, callback = function(keys, args)
  local s = redis.call('ZSCORE', keys[1], args[1])
  if not s or tonumber(s) ~= tonumber(args[2]) then return 0 end
  if args[3] == '' then
    redis.call('ZREM', keys[1], args[1])
  else
    redis.call('ZADD', keys[1], args[3], args[1])
  end
  return 1
end}

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

-- setcontact records the registration JSON rec at c: dp_set_contact's
-- work, which dp_register shares. keep is its binding, or "" when there
-- is nothing to keep; ttl in ms (0: none).
local function setcontact(c, rec, keep, ttl)
  local res = 1
  if keep ~= '' then
    local v = redis.call('GET', c)
    -- Decoded only when it may say pager_only.
    local old = v and string.find(v, '"pager_only":true', 1, true) and decoded(v)
    if old and old.pager_only == true and binding(old) == keep then
      rec, res = pageronly(rec), 2
    end
  end
  if ttl > 0 then
    redis.call('SET', c, rec, 'PX', ttl)
  else
    redis.call('SET', c, rec)
  end
  return res
end

-- deletecontact forgets the registration at c if its contact is the one
-- given ("" matches any): dp_delete_contact's work, which dp_unregister
-- shares. Returns 1 deleted, 0 nothing.
local function deletecontact(c, contact)
  local v = redis.call('GET', c)
  if not v then return 0 end
  if contact ~= '' then
    local ok, reg = pcall(cjson.decode, v)
    if ok and type(reg) == 'table' and reg.contact ~= contact then return 0 end
  end
  redis.call('DEL', c)
  return 1
end

-- num writes an integer-valued number without an exponent.
local function num(n)
  return string.format('%.0f', n)
end

-- lastof reads dp:{aor}:a, the last registration or unregistration a
-- proxy recorded: {at, kind ('r' or 'u'), contact}, or nil.
local function lastof(a)
  local v = redis.call('GET', a)
  if not v then return nil end
  local at, kind, contact = string.match(v, '^(%d+) (%a) (.*)$')
  if not at then return nil end
  return {at = tonumber(at), kind = kind, contact = contact}
end

-- register records the registration JSON rec of contact at c (setcontact)
-- unless the last registration or unregistration of the same contact
-- recorded at a is newer than at (µs), and then records it at a: of two
-- REGISTERs of one contact that reach Redis in either order, the later
-- one wins. at nil: no ordering, a is left as it is (a proxy that sends
-- no time). Returns 0 ignored, else setcontact's answer. dp_register
-- and dp_set_contact share it.
local function register(c, a, contact, at, rec, keep, ttl)
  if at then
    local last = lastof(a)
    if last and last.contact == contact and last.at > at then return 0 end
  end
  local res = setcontact(c, rec, keep, ttl)
  if at then
    if ttl > 0 then
      redis.call('SET', a, num(at) .. ' r ' .. contact, 'PX', ttl)
    else
      redis.call('SET', a, num(at) .. ' r ' .. contact)
    end
  end
  return res
end

-- forget forgets the registration at c (deletecontact) unless a
-- registration recorded at a is newer than at (µs) and of the contact
-- given ("" any), and records the unregistration at a for an hour when
-- it concerned the contact recorded there. at nil: no ordering, a is left
-- as it is. Returns 1 deleted, 0 nothing, -1 ignored (a newer
-- registration). dp_unregister and dp_delete_contact share it.
local function forget(c, a, contact, at)
  local last = at and lastof(a)
  if last and last.kind == 'r' and last.at > at and (contact == '' or last.contact == contact) then
    return -1
  end
  local deleted = deletecontact(c, contact)
  if at and (deleted == 1 or not last or last.contact == contact) then
    redis.call('SET', a, num(at) .. ' u ' .. contact, 'PX', 3600000)
  end
  -- Every instance hears of it: a push to the contact ends on whichever
  -- runs it (the instance told, or reading the event, is only one).
  -- c is dp:{<aor>}:c; at (µs, "" unknown) lets a push to a newer
  -- registration of the contact go on.
  redis.call('PUBLISH', 'dp:cancel', string.sub(c, 5, -4) .. '\n' .. contact .. '\n' .. (at and num(at) or ''))
  return deleted
end

-- orderedat reads the optional time of dp_set_contact and
-- dp_delete_contact: integer microseconds, or "" (or absent, or a call
-- with the single key of before) for none.
local function orderedat(keys, v)
  if not keys[2] or not v or v == '' then return nil end
  local at = tonumber(v)
  if not at or at ~= math.floor(at) or at < 0 then return false end
  return at
end

-- dp_set_contact records a registration, keeping the pager_only the
-- stored one learnt when it is the same binding (a refresh, or the same
-- instance at a new contact).
-- With a time (ARGV 5), it follows dp_register's ordering rule
-- (register): one older than the last registration or unregistration of
-- the same contact is ignored.
--   KEYS  1 dp:{aor}:c, 2 dp:{aor}:a
--   ARGV  1 registration JSON, 2 its binding, or "" when there is nothing
--         to keep (it says pager_only itself), 3 time to live ms (0: none),
--         4 its contact URI, 5 the proxy's time of the registration
--         (integer µs since the epoch), or "" for none
--   Returns 1 written as given, 2 written with pager_only kept, 0 ignored
--   (older); an error for a bad time.
redis.register_function{function_name = 'dp_set_contact', flags = {'allow-oom'}, callback = function(keys, args)
  local at = orderedat(keys, args[5])
  if at == false then return redis.error_reply('ERR dp_set_contact: bad at') end
  return register(keys[1], keys[2], args[4] or '', at, args[1], args[2], tonumber(args[3]))
end}

-- dp_set_pager_only marks the stored registration pager_only if it is
-- still the given binding; its time to live stays.
--   KEYS  1 dp:{aor}:c
--   ARGV  1 binding
--   Returns 1 marked (or it was), 0 nothing stored or another binding.
redis.register_function{function_name = 'dp_set_pager_only', flags = {'allow-oom'}, callback = function(keys, args)
  local v = redis.call('GET', keys[1])
  local reg = decoded(v)
  if not reg or binding(reg) ~= args[1] then return 0 end
  if reg.pager_only == true then return 1 end
  redis.call('SET', keys[1], pageronly(v), 'KEEPTTL')
  return 1
end}

-- dp_delete_contact forgets a registration if its contact is the one
-- given. With a time (ARGV 2), it follows dp_unregister's ordering rule
-- (forget): a registration of that contact newer than it stays.
--   KEYS  1 dp:{aor}:c, 2 dp:{aor}:a
--   ARGV  1 contact URI ("" matches any), 2 the proxy's time of the
--         unregistration (integer µs since the epoch), or "" for none
--   Returns 1 deleted, 0 nothing (none stored, or another contact), -1
--   ignored (a newer registration); an error for a bad time.
redis.register_function{function_name = 'dp_delete_contact', flags = {'allow-oom'}, callback = function(keys, args)
  local at = orderedat(keys, args[2])
  if at == false then return redis.error_reply('ERR dp_delete_contact: bad at') end
  return forget(keys[1], keys[2], args[1], at)
end}

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

-- The proxy's own calls ---------------------------------------------------------

--[[
dp_store, dp_register and dp_unregister are what a proxy calls itself
(Kamailio's ndb_redis, OpenSIPS's cachedb_redis raw queries) instead of an
HTTP hook. They take no keys: they name the recipient's keys from the
canonical AOR the way store/keys.go does, and touch global keys
(dp:limits, dp:mailboxes, dp:stats, dp:seq, dp:events), so they are
registered no-cluster: a proxy-direct deployment is a standalone Redis or
Sentinel. Their policy is the mirror deferpush keeps in dp:limits.
]]

-- LIMITS are the fields of dp:limits the proxy's functions read.
local LIMITS = {'store_enabled', 'max_message_size', 'max_mailbox', 'ttl_ms', 'full_mailbox_reply',
  'store_disabled_reply', 'push_enabled', 'default_push', 'case_sensitive_user', 'delivery', 'pager_below'}

-- limitsOf returns dp:limits as a table, or nil when deferpush never
-- wrote it.
local function limitsOf()
  local vs = redis.call('HMGET', 'dp:limits', unpack(LIMITS))
  if not vs[1] then return nil end
  local t = {}
  for i, k in ipairs(LIMITS) do
    if vs[i] then t[k] = vs[i] end
  end
  return t
end

-- now returns Redis's clock: seconds, microseconds.
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[2])
end

-- unset is "" for what a proxy prints for an unset variable.
local function unset(s)
  if s == nil or s == '<null>' then return '' end
  return s
end

local function unreserved(c)
  return string.find("-_.!~*'()", c, 1, true) ~= nil or string.match(c, '^%w$') ~= nil
end

local function ishex(c)
  return string.match(c, '^%x$') ~= nil
end

-- canonicaluser is plugin's canonUser: the user part checked against RFC
-- 3261 "user", %-escapes of unreserved characters decoded, others kept
-- with upper-case hex; then lower-cased unless sensitive (but for the
-- escapes' hex).
local function canonicaluser(u, sensitive)
  if u == '' then return nil end
  -- Most users: no escape, only allowed characters.
  if not string.find(u, "[^%w%-_%.!~%*'%(%)&=%+%$,;%?/]") then
    if sensitive then return u end
    return string.lower(u)
  end
  local out, i = {}, 1
  while i <= #u do
    local c = string.sub(u, i, i)
    if c == '%' then
      local h = string.sub(u, i + 1, i + 2)
      if #h < 2 or not ishex(string.sub(h, 1, 1)) or not ishex(string.sub(h, 2, 2)) then return nil end
      local v = string.char(tonumber(h, 16))
      if unreserved(v) then
        if not sensitive then v = string.lower(v) end
        out[#out + 1] = v
      else
        out[#out + 1] = '%' .. string.upper(h)
      end
      i = i + 3
    elseif unreserved(c) or string.find('&=+$,;?/', c, 1, true) then
      if not sensitive then c = string.lower(c) end
      out[#out + 1] = c
      i = i + 1
    else
      return nil
    end
  end
  return table.concat(out)
end

-- canonicalhost is plugin's canonHostPort.
local function canonicalhost(hp)
  if string.find(hp, '^[%w%-%.]+$') then return string.lower(hp) end
  local host, port, hasport
  if string.sub(hp, 1, 1) == '[' then
    local e = string.find(hp, ']', 1, true)
    if not e or e == 2 then return nil end
    host = string.sub(hp, 1, e)
    if string.find(string.sub(hp, 2, e - 1), '[^%x:%.]') then return nil end
    local after = string.sub(hp, e + 1)
    if after ~= '' then
      if string.sub(after, 1, 1) ~= ':' then return nil end
      port, hasport = string.sub(after, 2), true
    end
  else
    local c = string.find(hp, ':', 1, true)
    if c then
      host, port, hasport = string.sub(hp, 1, c - 1), string.sub(hp, c + 1), true
    else
      host = hp
    end
    if host == '' or string.find(host, '[^%w%-%.]') then return nil end
  end
  host = string.lower(host)
  if not hasport then return host end
  if not string.match(port, '^[1-9]%d*$') or #port > 5 or tonumber(port) > 65535 then return nil end
  return host .. ':' .. port
end

-- canonical is plugin.AORRules.Parse for the plain SIP AOR a proxy builds
-- (sip:user@host[:port], or sips:): nil for anything else. sensitive is
-- dp:limits' case_sensitive_user.
local function canonical(aor, sensitive)
  if #aor > 2048 then return nil end
  -- Most AORs take the quick paths of canonicaluser and canonicalhost
  -- whole: sip:user@host of plain characters, one '@', no port.
  if not sensitive and #aor <= 512 and
    string.find(aor, "^[sS][iI][pP][sS]?:[%w%-_%.!~%*'%(%)&=%+%$,;%?/]+@[%w%-%.]+$") then
    return string.lower(aor)
  end
  local scheme, rest = string.match(aor, '^(%a+):(.*)$')
  if not scheme then return nil end
  scheme = string.lower(scheme)
  if scheme ~= 'sip' and scheme ~= 'sips' then return nil end
  local userinfo, hostport = string.match(rest, '^(.*)@(.-)$')
  if not userinfo then return nil end
  local user = string.match(userinfo, '^([^:]*)')
  user = canonicaluser(user, sensitive)
  if not user then return nil end
  hostport = string.match(hostport, '^([^;?]*)')
  local hp = canonicalhost(hostport)
  if not hp then return nil end
  local a = scheme .. ':' .. user .. '@' .. hp
  if #a > 512 then return nil end
  return a
end

-- sensitiveOf reads case_sensitive_user from limits.
local function sensitiveOf(lim)
  return lim ~= nil and lim.case_sensitive_user == '1'
end

-- Dates ---------------------------------------------------------------------------

-- civil is the date of the day d days after 1970-01-01.
local function civil(d)
  local z = d + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local mo = mp + 3
  if mp >= 10 then mo = mp - 9 end
  if mo <= 2 then y = y + 1 end
  return y, mo, day
end

local WEEKDAYS = {'Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'}
local MONTHS = {'Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'}

-- rfc1123 is the SIP Date of Unix second sec (RFC 3261 §20.17), as
-- plugin/encap writes it.
local function rfc1123(sec)
  local d = math.floor(sec / 86400)
  local s = sec - d * 86400
  local y, mo, day = civil(d)
  return string.format('%s, %02d %s %04d %02d:%02d:%02d GMT', WEEKDAYS[(d + 4) % 7 + 1], day, MONTHS[mo], y,
    math.floor(s / 3600), math.floor(s / 60) % 60, s % 60)
end

-- rfc3339of is Unix time sec + usec as Go's JSON writes a UTC time (the
-- writer of what rfc3339 reads).
local function rfc3339of(sec, usec)
  local d = math.floor(sec / 86400)
  local s = sec - d * 86400
  local y, mo, day = civil(d)
  local out = string.format('%04d-%02d-%02dT%02d:%02d:%02d', y, mo, day, math.floor(s / 3600), math.floor(s / 60) % 60, s % 60)
  if usec > 0 then
    out = out .. '.' .. string.gsub(string.format('%06d', usec), '0+$', '')
  end
  return out .. 'Z'
end

-- Reading a SIP MESSAGE -----------------------------------------------------------

-- The bounds of plugin/encap.HeadLimits the SIP ingress applies.
local MAXLINE, MAXHEAD, MAXHEADERS = 8192, 65536, 256

-- KEYOF is plugin/encap's sipKey for a header name as written: the
-- canonical name of a header the store reads (long or compact, any case),
-- false for one it does not. It holds the usual spellings, so that most
-- names cost one lookup; sipkey lower-cases the others.
local KEYOF = {
  ['call-id'] = 'Call-ID', ['Call-ID'] = 'Call-ID', ['Call-Id'] = 'Call-ID', i = 'Call-ID', I = 'Call-ID',
  from = 'From', From = 'From', f = 'From', F = 'From',
  to = 'To', To = 'To', t = 'To', T = 'To',
  date = 'Date', Date = 'Date',
  ['p-asserted-identity'] = 'P-Asserted-Identity', ['P-Asserted-Identity'] = 'P-Asserted-Identity',
  subject = 'Subject', Subject = 'Subject', s = 'Subject', S = 'Subject',
  ['content-type'] = 'Content-Type', ['Content-Type'] = 'Content-Type', c = 'Content-Type', C = 'Content-Type',
  ['content-length'] = 'Content-Length', ['Content-Length'] = 'Content-Length', l = 'Content-Length',
  L = 'Content-Length',
  via = 'Via', Via = 'Via', v = 'Via', V = 'Via',
  CSeq = 'CSeq', cseq = 'CSeq',
  Authorization = 'Credentials', authorization = 'Credentials',
  ['Proxy-Authorization'] = 'Credentials', ['proxy-authorization'] = 'Credentials',
  ['Max-Forwards'] = false, Contact = false, ['Record-Route'] = false, Route = false,
  ['User-Agent'] = false, Expires = false, Allow = false, Supported = false, Require = false,
  ['Content-Disposition'] = false, Accept = false, ['Accept-Contact'] = false, ['P-Preferred-Identity'] = false,
  ['X-Deferpush-Secret'] = false,
}
local function sipkey(name)
  local k = KEYOF[name]
  if k == nil then k = KEYOF[string.lower(name)] or false end
  return k
end

local function istoken(s)
  return s ~= '' and not string.find(s, "[^%w%-%.!%%%*_%+`'~]")
end

-- span is s from i to j (where s[j + 1], if any, is not SP or HTAB)
-- without leading and trailing SP and HTAB, in time linear in its length
-- (the pattern '^[ \t]*(.-)[ \t]*$' is quadratic in a run of blanks
-- inside: a Via of 8 KB could hold Redis for a tenth of a second).
local function span(s, i, j)
  i = string.find(s, '[^ \t]', i)
  if not i or i > j then return '' end
  local b = string.byte(s, j)
  while b == 32 or b == 9 do
    j = j - 1
    b = string.byte(s, j)
  end
  return string.sub(s, i, j)
end

-- trim is s without leading and trailing SP and HTAB.
local function trim(s)
  return span(s, 1, #s)
end

-- splitaddress is plugin/encap's splitAddress: the URI of a From or To
-- value, or nil. v is trimmed of SP and HTAB, and holds no other white
-- space (readmessage refuses the other control characters).
local function splitaddress(v)
  local rest, display = v, ''
  if string.byte(v, 1) == 34 then
    local i, e = 2, nil
    while i <= #v do
      local c = string.byte(v, i)
      if c == 92 then
        i = i + 1
      elseif c == 34 then
        e = i
        break
      end
      i = i + 1
    end
    if not e then return nil end
    display, rest = string.sub(v, 1, e), string.sub(v, e + 1)
  end
  local uri
  local lt = string.find(rest, '<', 1, true)
  if lt then
    local gt = string.find(rest, '>', lt, true)
    if not gt then return nil end
    uri = string.sub(rest, lt + 1, gt - 1)
  elseif display == '' then
    uri = string.gsub(string.gsub(string.match(rest, '^([^;]*)'), '^%s+', ''), '%s+$', '')
  else
    uri = ''
  end
  if not string.find(uri, ':', 1, true) or string.find(uri, '[%z\1-\32\127<>]') then return nil end
  return uri
end

-- validvia is plugin/encap's validVia.
local function validvia(v)
  local transport, host = string.match(v, '^[Ss][Ii][Pp]%s*/%s*2%.0%s*/[ \t]*([^ \t]+)[ \t]+(.*)$')
  if not transport or not istoken(transport) then return false end
  host = trim(string.match(host, '^([^;]*)'))
  return host ~= '' and not string.find(host, '[%z\1-\32\127]')
end

-- validvias is plugin/encap's Via check of one header value: each of its
-- comma-separated parts (an empty one too) a valid via-parm.
local function validvias(v)
  if not string.find(v, ',', 1, true) then return validvia(v) end
  local i = 1
  while true do
    local c = string.find(v, ',', i, true)
    if not validvia(trim(string.sub(v, i, (c or 0) - 1))) then return false end
    if not c then return true end
    i = c + 1
  end
end

-- A line of the header section: no control character but HTAB, CRLF.
-- (A run of allowed characters is the cheapest scan Lua's patterns make:
-- one class test a byte.)
local LINE = '^[ -~\t\128-\255]*\r\n'
-- A header name (an RFC 3261 token), optional blanks, the colon.
local NAME = "^([%w%-%.!%%%*_%+`'~]+)[ \t]*:"

-- readmessage is plugin/encap.ReadMessage for a MESSAGE to store, with
-- the SIP ingress's header limits, in the order it checks them (a line,
-- then the header it belongs to, line after line). It returns the
-- Call-ID, the From URI, the Content-Type ("" when none), when the
-- request has no Date the index of raw after which one goes (the end
-- of the Call-ID header), else false, and the first and last index of
-- each Authorization and Proxy-Authorization header (nil when none); or
-- nil and a SIP code (400, 513).
-- It is dp_store's hot path: one pass over the header section, from
-- position to position, one find per line and one per header name, a
-- string made only of the values the store reads.
local function readmessage(raw)
  local hend = string.find(raw, '\r\n\r\n', 1, true)
  if not hend then
    if #raw > MAXHEAD then return nil, 513 end
    return nil, 400
  end
  -- The header section is raw up to hend + 1, its last CRLF.
  if hend + 1 > MAXHEAD then return nil, 513 end
  local byte, find = string.byte, string.find
  -- The request line.
  local _, e = find(raw, LINE, 1)
  if not e then return nil, 400 end
  e = e - 1
  local method, uri, ver = string.match(string.sub(raw, 1, e - 1), '^([^ ]+) ([^ ]+) ([^ ]+)$')
  if not method or not istoken(method) or string.upper(ver) ~= 'SIP/2.0' or find(uri, '[%z\1-\32\127]') then
    return nil, 400
  end
  local callid, from, to, date, subject, ct, cl, cseq
  local n, via, vias, callidend, drops = 0, nil, nil, nil, nil
  local off = e + 2
  while off <= hend do
    -- One header: its first line, then its continuation lines.
    local c1 = byte(raw, off)
    if c1 == 32 or c1 == 9 then return nil, 400 end -- continuation before any header
    _, e = find(raw, LINE, off)
    if not e then return nil, 400 end -- a control character or a bare CR or LF
    e = e - 1
    local _, colon, name = find(raw, NAME, off)
    if not colon or colon > e then return nil, 400 end -- no colon, or a bad name
    local key = sipkey(name)
    if key == 'Call-ID' and callid or key == 'From' and from or key == 'To' and to or key == 'Date' and date or
      key == 'Subject' and subject or key == 'Content-Type' and ct or key == 'Content-Length' and cl or
      key == 'CSeq' and cseq then
      return nil, 400 -- more than one
    end
    if n >= MAXHEADERS then return nil, 513 end
    n = n + 1
    local start, nxt = off, e + 2
    if nxt - start > MAXLINE then return nil, 513 end
    local value
    if key then value = span(raw, colon + 1, e - 1) end
    c1 = byte(raw, nxt)
    while nxt <= hend and (c1 == 32 or c1 == 9) do
      _, e = find(raw, LINE, nxt)
      if not e then return nil, 400 end
      e = e - 1
      if key then
        local more = span(raw, nxt, e - 1)
        if value == '' then
          value = more
        elseif more ~= '' then
          value = value .. ' ' .. more
        end
      end
      nxt = e + 2
      if nxt - start > MAXLINE then return nil, 513 end
      c1 = byte(raw, nxt)
    end
    if key == 'Via' then
      -- Checked after the loop, as ReadMessage does (a later header's
      -- 513 comes first). Most requests have one Via header: no table.
      if not via then
        via = value
      else
        vias = vias or {}
        vias[#vias + 1] = value
      end
    elseif key == 'Call-ID' then
      callid, callidend = value, nxt - 1
    elseif key == 'From' then
      from = value
    elseif key == 'To' then
      to = value
    elseif key == 'Date' then
      date = value
    elseif key == 'Subject' then
      subject = value
    elseif key == 'Content-Type' then
      ct = value
    elseif key == 'Content-Length' then
      cl = value
    elseif key == 'CSeq' then
      cseq = value
    elseif key == 'Credentials' then
      drops = drops or {}
      drops[#drops + 1] = start
      drops[#drops + 1] = nxt - 1
    end
    off = nxt
  end
  local body = #raw - hend - 3
  if cl and (not string.match(cl, '^%d+$') or tonumber(cl) ~= body) then return nil, 400 end
  if not via or not validvias(via) then return nil, 400 end
  if vias then
    for i = 1, #vias do
      if not validvias(vias[i]) then return nil, 400 end
    end
  end
  if not callid or callid == '' or not from or from == '' or not to or to == '' then return nil, 400 end
  from = splitaddress(from)
  if not from or not splitaddress(to) then return nil, 400 end
  if body > 0 and not ct then return nil, 400 end
  if ct and not string.match(ct, "^[%w%-%.!%%%*_%+`'~]+/[%w%-%.!%%%*_%+`'~]+%s*$") and
    not string.match(ct, "^[%w%-%.!%%%*_%+`'~]+/[%w%-%.!%%%*_%+`'~]+%s*;") then
    return nil, 400
  end
  if date and not string.match(date, '^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$') then return nil, 400 end
  if method ~= 'MESSAGE' then return nil, 400 end
  -- The SIP ingress's checkCSeq: one CSeq, its number 0 to 2^31-1 (RFC
  -- 3261 8.1.1.5), its method the request's (a page is numbered from it).
  local seq, cmethod = string.match(cseq or '', '^0*(%d+)[ \t]+([^ \t]+)$')
  if not seq or cmethod ~= method or #seq > 10 or tonumber(seq) > 2147483647 then
    return nil, 400
  end
  return callid, from, ct or '', not date and callidend, drops
end

-- storedform is plugin/encap's storedForm: raw with date inserted after
-- its index dateat (when dateat), less the header lines of drops (pairs
-- of first and last index, in order).
local function storedform(raw, dateat, date, drops)
  local sub = string.sub
  local parts, pos = {}, 1
  for k = 1, #drops, 2 do
    if dateat and dateat < drops[k] then
      parts[#parts + 1] = sub(raw, pos, dateat)
      parts[#parts + 1] = date
      pos, dateat = dateat + 1, nil
    end
    parts[#parts + 1] = sub(raw, pos, drops[k] - 1)
    pos = drops[k + 1] + 1
  end
  if dateat then
    parts[#parts + 1] = sub(raw, pos, dateat)
    parts[#parts + 1] = date
    pos = dateat + 1
  end
  parts[#parts + 1] = sub(raw, pos)
  return table.concat(parts)
end

-- ULIDs -----------------------------------------------------------------------------

-- CROCKFORD are the bytes of Crockford's base 32 digits, by value + 1
-- ('0123456789ABCDEFGHJKMNPQRSTVWXYZ'; nothing but register_function may
-- run at load time).
local CROCKFORD = {48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 65, 66, 67, 68, 69, 70,
  71, 72, 74, 75, 77, 78, 80, 81, 82, 83, 84, 86, 87, 88, 89, 90}

-- five writes n (an integer below 2^25) in five Crockford digits.
local function five(n)
  local e = n % 32
  n = (n - e) / 32
  local d = n % 32
  n = (n - d) / 32
  local c = n % 32
  n = (n - c) / 32
  local b = n % 32
  local a = (n - b) / 32
  return string.char(CROCKFORD[a + 1], CROCKFORD[b + 1], CROCKFORD[c + 1], CROCKFORD[d + 1], CROCKFORD[e + 1])
end

-- newid is a ULID for a message received at ms: its time part is ms, its
-- 80 "random" bits a counter (INCR dp:seq) unique in this Redis, so ids
-- are unique and sort by arrival (within a millisecond, by the counter).
-- The time part is ten digits (ms below 2^50), the counter sixteen: five
-- zeros, then eleven (below 2^53).
local function newid(ms)
  local seq = redis.call('INCR', 'dp:seq')
  local lo = seq % 33554432
  local mid = (seq - lo) / 33554432
  local hi = mid % 33554432
  mid, hi = hi, (mid - hi) / 33554432
  local mslo = ms % 33554432
  return five((ms - mslo) / 33554432) .. five(mslo) .. '00000' .. string.char(CROCKFORD[hi + 1]) .. five(mid) .. five(lo)
end

-- unpct decodes, when the argument after the n fixed ones is "pct", the
-- %XX escapes of those n arguments in place: a proxy whose raw queries
-- split on white space and quotes (OpenSIPS's cachedb_redis) escapes
-- every '%' and every character it cannot pass, and says so. Returns
-- whether it did.
local function unpct(args, n)
  if args[n + 1] ~= 'pct' then return false end
  for i = 1, n do
    if args[i] then
      args[i] = string.gsub(args[i], '%%(%x%x)', function(h) return string.char(tonumber(h, 16)) end)
    end
  end
  return true
end

-- controls reports whether any of args 1 to n holds a control character
-- (HTAB too): a registration's fields end up in the SIP requests sent to
-- the user (the contact in a Request-URI, Path in Route headers), where a
-- CR or LF would start a header of the sender's choosing. The hooks
-- refuse the same (adapters/hookjson).
local function controls(args, n)
  for i = 1, n do
    if args[i] and string.find(args[i], '[%z\1-\31\127]') then return true end
  end
  return false
end

-- event appends one registration event to dp:events (MAXLEN ~: the
-- stream keeps about the last 100,000). A "registered" one also carries
-- the registration's +sip.instance and received, when it has them: with
-- its contact, what deferpush compares with a push's backoff before it
-- reads the registration recorded (with the push's first claim).
local function event(kind, aor, contact, expires, at, instance, received)
  local f = {'kind', kind, 'aor', aor, 'contact', contact, 'expires', num(expires), 'at', num(at)}
  if instance and instance ~= '' then
    f[#f + 1] = 'instance'
    f[#f + 1] = instance
  end
  if received and received ~= '' then
    f[#f + 1] = 'received'
    f[#f + 1] = received
  end
  redis.call('XADD', 'dp:events', 'MAXLEN', '~', 100000, '*', unpack(f))
end

-- dp_store stores a MESSAGE for an offline user, as the message hook
-- does: the policy of dp:limits, the record the Go store writes
-- (record.go: kind sip-message, sender, Call-ID and Content-Type read
-- from the raw headers, a Date added after Call-ID when there is none,
-- the sender's Authorization and Proxy-Authorization left out,
-- received Redis's TIME, expires received + ttl), appended by dp_append's
-- code, indexed and counted. When a push to the recipient runs (its
-- lease is live), a "stored" event tells deferpush, whose push then
-- claims once more, as after the hook's store (a push that had claimed
-- for the last time would otherwise leave it for the next registration).
--   KEYS  none
--   ARGV  1 the recipient's AOR as the proxy built it (sip:user@domain),
--         2 the raw MESSAGE; optionally 3 "pct" (1 and 2 are %-escaped:
--         unpct) and 4 the raw MESSAGE's length as the proxy received it
--         (a decoded raw of another length is refused, 400: the proxy's
--         escaping cut it)
--   Returns {code, reason, id}: {202, 'Accepted', id}, or with id "":
--   400 (an AOR or a request that cannot be stored), 513 too large,
--   dp:limits' full_mailbox_reply (486/480) for a full mailbox, its
--   store_disabled_reply (403/480) when storing is off, 480 when
--   deferpush never wrote dp:limits.
redis.register_function{function_name = 'dp_store', flags = {'no-cluster'}, callback = function(_, args)
  if unpct(args, 2) and #(args[2] or '') ~= tonumber(args[4]) then return {400, 'Bad Request', ''} end
  -- The fields of dp:limits it reads (limitsOf's, without a table).
  local lim = redis.call('HMGET', 'dp:limits', 'store_enabled', 'case_sensitive_user', 'store_disabled_reply',
    'max_message_size', 'ttl_ms', 'max_mailbox', 'full_mailbox_reply')
  if not lim[1] then return {480, 'Temporarily Unavailable', ''} end
  local aor = canonical(args[1] or '', lim[2] == '1')
  if not aor then return {400, 'Bad Request', ''} end
  if lim[1] ~= '1' then
    local code = tonumber(lim[3]) or 480
    if code == 403 then return {403, 'Forbidden', ''} end
    return {code, 'Temporarily Unavailable', ''}
  end
  local raw = args[2] or ''
  local callid, from, ct, dateat, drops = readmessage(raw)
  if not callid then
    if from == 513 then return {513, 'Message Too Large', ''} end
    return {400, 'Bad Request', ''}
  end
  local sec, usec = now()
  -- The size max_message_size bounds: the stored bytes less the Date
  -- deferpush adds (plugin.Message.Counted).
  local date, size, stored = '', #raw, nil
  if dateat then date = 'Date: ' .. rfc1123(sec) .. '\r\n' end
  if drops then
    -- Credentials to leave out: rare, a copy of its own.
    stored = storedform(raw, dateat, date, drops)
    size = #stored - #date
  end
  local maxsize = tonumber(lim[4]) or 0
  if maxsize > 0 and size > maxsize then return {513, 'Message Too Large', ''} end
  local received = sec * 1000 + math.floor(usec / 1000)
  local ttl = tonumber(lim[5]) or 0
  local expires, score = 0, 9007199254740991
  if ttl > 0 then expires, score = received + ttl, received + ttl end
  local id = newid(received)
  local rec = '\2' .. num(received) .. ' ' .. num(expires) .. ' sip-message ' .. #from .. ' ' .. #callid .. ' 0 ' ..
    #ct .. ' 0\n' .. from .. callid .. ct
  if stored then
    rec = rec .. stored
  elseif dateat then
    rec = rec .. string.sub(raw, 1, dateat) .. date .. string.sub(raw, dateat + 1)
  else
    rec = rec .. raw
  end
  local t = 'dp:{' .. aor .. '}:'
  local m = t .. 'm'
  local status = append(t .. 'q', m, t .. 'd', t .. 'g', t .. 'f', id, rec, tonumber(lim[6]) or 0, nil)
  if status == -1 then
    local full = tonumber(lim[7]) or 486
    if full == 480 then return {480, 'Temporarily Unavailable', ''} end
    return {full, 'Busy Here', ''}
  end
  indexed('dp:mailboxes', 'dp:stats', aor, num(score), status)
  if redis.call('EXISTS', 'dp:recent:on') == 1 then redis.call('ZADD', 'dp:recent', num(received), aor) end
  local owner, ends = lease(m)
  if owner and ends > received then event('stored', aor, '', 0, sec * 1000000 + usec) end
  return {202, 'Accepted', id}
end}

-- Registrations from the proxy ------------------------------------------------------

-- jsonstring writes s as Go's encoding/json writes a string (HTML
-- characters escaped too).
local JSONESC = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
  ['<'] = '\\u003c', ['>'] = '\\u003e', ['&'] = '\\u0026'}
local function jsonstring(s)
  if not string.find(s, '[%z\1-\31"\\<>&\226]') then return '"' .. s .. '"' end
  s = string.gsub(s, '[%z\1-\31"\\<>&]', function(c)
    return JSONESC[c] or string.format('\\u%04x', string.byte(c))
  end)
  s = string.gsub(s, '\226\128\168', '\\u2028')
  s = string.gsub(s, '\226\128\169', '\\u2029')
  return '"' .. s .. '"'
end

-- splitpath is adapters/kamailio's splitPath: the URIs of a Path header
-- value, in order.
local function splitpath(v)
  local out = {}
  local depth, quoted, start = 0, false, 1
  for i = 1, #v + 1 do
    local c = string.sub(v, i, i)
    local split = i > #v
    if not split then
      if c == '"' and (i == 1 or string.sub(v, i - 1, i - 1) ~= '\\') then
        quoted = not quoted
      elseif not quoted and c == '<' then
        depth = depth + 1
      elseif not quoted and c == '>' then
        depth = depth - 1
      end
      split = c == ',' and not quoted and depth <= 0
    end
    if split then
      local p = string.gsub(string.gsub(string.sub(v, start, i - 1), '^%s+', ''), '%s+$', '')
      start = i + 1
      if p ~= '' and p ~= '<null>' then
        local lt = string.find(p, '<', 1, true)
        local gt
        for k = #p, 1, -1 do
          if string.sub(p, k, k) == '>' then gt = k; break end
        end
        if lt and gt and gt > lt then p = string.sub(p, lt + 1, gt - 1) end
        out[#out + 1] = p
      end
    end
  end
  return out
end

-- registration is the JSON plugin.Registration marshals to (without
-- pager_only, which setcontact keeps).
local function registration(aor, contact, expsec, expusec, received, instance, ua, path)
  local out = '{"aor":' .. jsonstring(aor) .. ',"contact":' .. jsonstring(contact) ..
    ',"expires":' .. jsonstring(rfc3339of(expsec, expusec))
  if received ~= '' then out = out .. ',"received":' .. jsonstring(received) end
  if instance ~= '' then out = out .. ',"instance":' .. jsonstring(instance) end
  if ua ~= '' then out = out .. ',"user_agent":' .. jsonstring(ua) end
  local p = splitpath(path)
  if #p > 0 then
    local q = {}
    for i, u in ipairs(p) do q[i] = jsonstring(u) end
    out = out .. ',"path":[' .. table.concat(q, ',') .. ']'
  end
  return out .. '}'
end

-- micros reads a proxy's time: integer microseconds since the epoch, or
-- "<seconds>.<microseconds>" where the part after the dot is an integer
-- count of microseconds (Kamailio's $TV(s).$TV(u); zero-padded or not).
local function micros(s)
  s = unset(s)
  local sec, us = string.match(s, '^(%d+)%.(%d+)$')
  if sec then
    if #us > 6 then return nil end
    return tonumber(sec) * 1000000 + tonumber(us)
  end
  if string.match(s, '^%d+$') then return tonumber(s) end
  return nil
end

-- pushallowed is plugin.Policy.Push for the recipient whose settings are
-- at s: the global switch, then the user's mode or the default. It also
-- returns the settings it read (a table, or nil).
local function pushallowed(lim, s)
  if lim.push_enabled == '0' then return false end
  local mode = lim.default_push or 'on'
  local u = decoded(redis.call('GET', s))
  if u and type(u.push) == 'string' and u.push ~= '' then mode = u.push end
  return mode == 'on', u
end

-- unregister is dp_unregister's work, which dp_register shares for an
-- expiry of 0.
local function unregister(aor, contact, at, kind)
  local t = 'dp:{' .. aor .. '}:'
  if forget(t .. 'c', t .. 'a', contact, at) < 0 then
    return 0 -- a newer registration
  end
  local owner, ends = lease(t .. 'm')
  local sec, usec = now()
  if not owner or ends <= sec * 1000 + math.floor(usec / 1000) then return 0 end
  event(kind, aor, contact, 0, at)
  return 1
end

-- Pages sent by the proxy ---------------------------------------------------

-- A proxy that says so (dp_register's "page" flag: Kamailio's Redis-direct
-- mode) sends a pager-mode push itself, the way msilo does: when the
-- registration it reports finds messages that the policy sends by SIP
-- MESSAGE (pagerfor), dp_register takes the lease for the proxy's page
-- session (token "pg:<nonce>", the nonce the proxy's), claims the first
-- message and answers the request to send, built here from the stored
-- one (pageof). The proxy sends it to where the REGISTER came from and
-- reports the final answer with dp_page, which acks a 2xx and answers the
-- next page, one message at a time, in order, until the mailbox is
-- empty. Any other answer, or none (the proxy's timeout), ends the
-- session: what is in flight goes back to pending, uncharged, and a
-- "registered" event hands the push to deferpush, whose rules (attempts,
-- dead letters, backoff, learning the client) apply from there. A proxy
-- that dies mid-session leaves a lease that lapses (the proxy gives its
-- length, longer than it waits for an answer, renewed by each page); the
-- sweeper then requeues and pushes (dp:leases lists the mailbox).

-- pagelease is the lease a proxy asks for (ms): from 1 s to 10 minutes,
-- a minute when it gives none.
local function pagelease(v)
  local n = tonumber(v)
  if not n then return 60000 end
  return math.max(1000, math.min(600000, math.floor(n)))
end

-- PAGEDROP are the headers of a stored MESSAGE a page leaves out
-- (encap.PageOf's pageDropped), by lower-cased long and compact name;
-- the page writes CSeq anew, with the stored number.
local PAGEDROP = {['via'] = true, ['v'] = true, ['route'] = true, ['record-route'] = true,
  ['max-forwards'] = true, ['cseq'] = true, ['content-length'] = true, ['l'] = true,
  ['authorization'] = true, ['proxy-authorization'] = true, ['proxy-require'] = true}

-- pagerfor is plugin.Pager under plugin.Policy.DeliveryFor: whether a
-- push of a mailbox of size pending or in flight goes by SIP MESSAGE,
-- under dp:limits and the user's settings u (nil: none); pageronly is
-- what the registration's binding taught (it refused MSRP).
local function pagerfor(lim, u, size, pageronly)
  local d, below = lim.delivery or 'auto', tonumber(lim.pager_below) or 0
  if u then
    if type(u.delivery) == 'string' and u.delivery ~= '' then d = u.delivery end
    if type(u.pager_below) == 'number' and u.pager_below > 0 then below = u.pager_below end
  end
  if d == 'pager' then return true end
  return d == 'auto' and (pageronly or size > 0 and size <= below)
end

-- pageof returns the MESSAGE a proxy sends for the record rec: the
-- stored request re-sent as encap.PageOf and the Go pager build it
-- (plugin/push/pager.go): the request line to ruri, a Via of the proxy's
-- (proto, hostport, branch), Max-Forwards, the stored header lines in
-- order but those of PAGEDROP, CSeq with the stored number, Content-Length
-- and the stored body. nil when the proxy cannot send it so (a record of
-- another form or kind, a CSeq that is not one number and one method, or
-- a folded one, a body with a NUL): deferpush pushes it then.
local function pageof(rec, ruri, proto, hostport, branch)
  if string.byte(rec, 1) ~= 2 then return nil end
  local nl = string.find(rec, '\n', 1, true)
  if not nl then return nil end
  local kind, a, b, c, d, e = string.match(string.sub(rec, 2, nl - 1), '^%d+ %d+ (%S+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
  if kind ~= 'sip-message' then return nil end
  local start = nl + 1 + tonumber(a) + tonumber(b) + tonumber(c) + tonumber(d) + tonumber(e)
  local hend = string.find(rec, '\r\n\r\n', start, true)
  local pos = string.find(rec, '\r\n', start, true)
  if not hend or not pos then return nil end
  local body = string.sub(rec, hend + 4)
  if string.find(body, '%z') then return nil end
  local out = {'MESSAGE ', ruri, ' SIP/2.0\r\nVia: SIP/2.0/', proto, ' ', hostport, ';branch=', branch,
    ';rport\r\nMax-Forwards: 70\r\n'}
  local cseq, keep, last = nil, false, ''
  pos = pos + 2
  while pos <= hend do
    local eol = string.find(rec, '\r\n', pos, true)
    local line = string.sub(rec, pos, eol + 1)
    local first = string.byte(line, 1)
    if first == 32 or first == 9 then
      if last == 'cseq' then return nil end
      if keep then out[#out + 1] = line end
    else
      -- The name ends at the first colon, blanks before it aside (span:
      -- linear, where a pattern would backtrack over a run of blanks).
      local colon = string.find(line, ':', 1, true)
      if not colon then return nil end
      local value = string.sub(line, colon + 1, -3)
      last = string.lower(span(line, 1, colon - 1))
      keep = not PAGEDROP[last]
      if keep then
        out[#out + 1] = line
      elseif last == 'cseq' then
        local n = string.match(value, '^[ \t]*(%d+)[ \t]+%S+[ \t]*$')
        n = tonumber(n)
        if not n or n > 2147483647 then return nil end
        cseq = n
      end
    end
    pos = eol + 2
  end
  if not cseq then return nil end
  out[#out + 1] = 'CSeq: ' .. num(cseq) .. ' MESSAGE\r\nContent-Length: ' .. #body .. '\r\n\r\n'
  out[#out + 1] = body
  return table.concat(out)
end

-- pagekeys are the mailbox keys of the AOR whose key tag is t
-- ('dp:{<aor>}:').
local function pagekeys(t)
  return {t .. 'q', t .. 'm', t .. 'd', t .. 'g', t .. 'f'}
end

-- pagerelease ends a page session: what is in flight goes back to
-- pending and the lease is dropped, if token holds it.
local function pagerelease(keys, token)
  if lease(keys[2]) == token then unlock(keys[1], keys[2]) end
end

-- pagenext claims the next message for the page session nonce and
-- answers {3, request, id, aor}. Else nil and why: "locked" (another
-- token holds the lease: nothing done), "none" (nothing left to send) or
-- "unsendable" (pageof); the session is released for both.
local function pagenext(aor, keys, nonce, ruri, proto, hostport, ms, len)
  local token = 'pg:' .. nonce
  local c = claim(keys, token, 1, ms + len, ms)
  if c[1] ~= 1 then return nil, 'locked' end
  redis.call('ZADD', 'dp:leases', ms, aor)
  local id = c[4]
  local req = id and pageof(c[5], ruri, proto, hostport, 'z9hG4bKdp' .. nonce .. 'x' .. id)
  if req then return {3, req, id, aor} end
  pagerelease(keys, token)
  if id then return nil, 'unsendable' end
  return nil, 'none'
end

-- pagehandoff hands aor's push to deferpush: a "registered" event of the
-- registration recorded, if it is still there.
local function pagehandoff(aor)
  local t = 'dp:{' .. aor .. '}:'
  local reg = decoded(redis.call('GET', t .. 'c'))
  if not reg or type(reg.contact) ~= 'string' then return end
  local at = lastof(t .. 'a')
  local sec, usec = now()
  local when = sec * 1000000 + usec
  if at and at.contact == reg.contact then when = at.at end
  local instance, received = reg.instance, reg.received
  if type(instance) ~= 'string' then instance = nil end
  if type(received) ~= 'string' then received = nil end
  event('registered', aor, reg.contact, rfc3339(reg.expires), when, instance, received)
end

-- dp_page is the proxy's report of a page's final answer (or of none:
-- code 408, its timeout; or of a page it could not send: 503). A 2xx acks
-- the message and answers the next page, to the same contact, or ends
-- the session when the mailbox has nothing more pending; any other code
-- ends it and hands the push to deferpush.
--   KEYS  none
--   ARGV  1 AOR (as dp_register answered it), 2 nonce, 3 id, 4 status
--         code, 5 the Via's transport, 6 its host:port, 7 the contact,
--         8 the lease (ms, pagelease)
--   Returns {3, request, id, aor}: the next page; 1: done (the mailbox
--   holds nothing more to send); 0: handed off; -1: the session's lease
--   is gone (nothing done: the sweeper or deferpush took the mailbox
--   over, and sends the message again).
redis.register_function{function_name = 'dp_page', flags = {'no-cluster', 'allow-oom'}, callback = function(_, args)
  local aor, nonce, id, code = args[1] or '', args[2] or '', args[3] or '', tonumber(args[4]) or 0
  local keys = pagekeys('dp:{' .. aor .. '}:')
  local token = 'pg:' .. nonce
  local sec, usec = now()
  local ms = sec * 1000 + math.floor(usec / 1000)
  if not live(keys[2], token, ms) then return -1 end
  if code < 200 or code > 299 then
    pagerelease(keys, token)
    pagehandoff(aor)
    return 0
  end
  local r = ack(keys, token, ms, {id}, 1)
  if r[1] > 0 then redis.call('HINCRBY', 'dp:stats', 'pushed', r[1]) end
  local p, why = pagenext(aor, keys, nonce, args[7] or '', args[5] or '', args[6] or '', ms, pagelease(args[8]))
  if p then return p end
  if why == 'unsendable' then
    pagehandoff(aor)
    return 0
  end
  return 1
end}

-- dp_register records a registration the proxy accepted (save()), and
-- appends a "registered" event to dp:events when the recipient has
-- messages and the policy lets deferpush push to them. The registration
-- is the JSON plugin.Registration marshals to (expires: Redis's TIME +
-- the given seconds), kept an hour past its expiry as the Go store keeps
-- it, with the pager_only learnt for the same binding (dp_set_contact's
-- code). One that is older than the last registration or unregistration
-- recorded for the same contact (at, compared in dp:{aor}:a) is ignored:
-- a proxy's workers may run two REGISTERs of one client in either order.
-- An expiry of 0 or less is an unregistration (dp_unregister).
--   KEYS  none
--   ARGV  1 AOR, 2 contact URI, 3 expires (seconds from now), 4 at (the
--         proxy's time: micros above), 5 received, 6 user agent,
--         7 +sip.instance, 8 Path header value (5 to 8 may be "" or
--         "<null>"); optionally 9 "pct" (1 to 8 are %-escaped: unpct),
--         or "page" (the proxy sends pages itself, above), then 10 the
--         page session's nonce (letters and digits), 11 the transport
--         and 12 the host:port of the proxy's Via, 13 the lease (ms,
--         pagelease)
--   Returns 1 when an event was written; 2 when the registration was
--   recorded and the mailbox holds nothing to push (none pending or in
--   flight: a proxy that keeps a cache of who may have messages drops
--   the user from it); {3, request, id, aor} for "page" when the proxy
--   is to send the first page of a session (a registration without
--   Path, a policy that pushes by SIP MESSAGE, no live lease), which it
--   sends to where the REGISTER came from; 0 otherwise (ignored as
--   older, an unregistration that wrote no event, or messages the policy
--   does not push now); an error for a bad AOR, contact, expires or at.
redis.register_function{function_name = 'dp_register', flags = {'no-cluster', 'allow-oom'}, callback = function(_, args)
  local page = args[9] == 'page' and string.match(args[10] or '', '^%w+$')
  unpct(args, 8)
  if controls(args, 13) then return redis.error_reply('ERR dp_register: a control character in an argument') end
  local lim = limitsOf() or {}
  local aor = canonical(unset(args[1]), sensitiveOf(lim))
  if not aor then return redis.error_reply('ERR dp_register: not a plain SIP AOR') end
  local contact = unset(args[2])
  if contact == '' then return redis.error_reply('ERR dp_register: no contact') end
  local exp = tonumber(unset(args[3]))
  if not exp or exp ~= math.floor(exp) or exp > 31536000 then return redis.error_reply('ERR dp_register: bad expires') end
  local at = micros(args[4])
  if not at then return redis.error_reply('ERR dp_register: bad at') end
  if exp <= 0 then return unregister(aor, contact, at, 'unregistered') end
  local t = 'dp:{' .. aor .. '}:'
  local sec, usec = now()
  local instance = unset(args[7])
  local rec = registration(aor, contact, sec + exp, usec, unset(args[5]), instance, unset(args[6]), unset(args[8]))
  local keep = contact
  if instance ~= '' then keep = instance end
  local res = register(t .. 'c', t .. 'a', contact, at, rec, keep, exp * 1000 + 3600000)
  if res == 0 then return 0 end
  local size = redis.call('LLEN', t .. 'q')
  if size == 0 then return 2 end
  local allowed, u = pushallowed(lim, t .. 's')
  if not allowed then return 0 end
  local ms = sec * 1000 + math.floor(usec / 1000)
  if page and unset(args[8]) == '' and pagerfor(lim, u, size, res == 2) then
    -- A live lease of another push: claim refuses ("locked"), and the
    -- event goes as without pages.
    local p = pagenext(aor, pagekeys(t), page, contact, args[11] or '', args[12] or '', ms, pagelease(args[13]))
    if p then return p end
  end
  event('registered', aor, contact, (sec + exp) * 1000 + math.floor(usec / 1000), at, instance, unset(args[5]))
  return 1
end}

-- dp_unregister forgets a registration the proxy removed (an
-- unregistration, or usrloc's expiry of the contact) if it is the one
-- recorded (dp_delete_contact's code) and not newer than at, and appends
-- an event of that kind to dp:events when a push to the recipient may be
-- running (its lease is live), so that deferpush cancels it.
--   KEYS  none
--   ARGV  1 AOR, 2 contact URI ("*" or "": every contact), 3 at (as
--         dp_register's), 4 "unregistered" or "expired"; optionally
--         5 "pct" (1 to 4 are %-escaped: unpct)
--   Returns 1 when an event was written, 0 when not; an error for bad
--   arguments.
redis.register_function{function_name = 'dp_unregister', flags = {'no-cluster', 'allow-oom'}, callback = function(_, args)
  unpct(args, 4)
  if controls(args, 4) then return redis.error_reply('ERR dp_unregister: a control character in an argument') end
  local lim = limitsOf() or {}
  local aor = canonical(unset(args[1]), sensitiveOf(lim))
  if not aor then return redis.error_reply('ERR dp_unregister: not a plain SIP AOR') end
  local contact = unset(args[2])
  if contact == '*' then contact = '' end
  local at = micros(args[3])
  if not at then return redis.error_reply('ERR dp_unregister: bad at') end
  local kind = args[4]
  if kind ~= 'unregistered' and kind ~= 'expired' then
    return redis.error_reply('ERR dp_unregister: kind must be unregistered or expired')
  end
  return unregister(aor, contact, at, kind)
end}

-- RECENT_HOLD is how long dp:recent keeps an AOR after a store (ms),
-- RECENT_SLACK how far before since dp_recent looks (ms: the Go store
-- scores dp:recent by its own clock, dp_store by Redis's), and RECENT_ON
-- how long dp:recent:on, the sign that a proxy polls, lasts after the
-- last poll (ms). Nothing writes dp:recent while no proxy polls it.
local RECENT_HOLD, RECENT_SLACK, RECENT_ON = 60000, 2000, 600000

-- dp_recent feeds a proxy's cache of the users who may have messages
-- (kamailio.cfg's htable "pending"), so that the proxy calls dp_register
-- only for them: with "scan" it pages through dp:mailboxes (the warm-up:
-- every recipient with messages is there), else it returns the AORs
-- stored into since a time, from dp:recent, and drops what dp:recent
-- holds from more than RECENT_HOLD ago. Every call but a scan (re)sets
-- dp:recent:on: while it lasts, every store adds its AOR to dp:recent
-- (dp_store at once; the Go store checks it once a second, so a proxy
-- starts its scan of dp:mailboxes at least two seconds after its first
-- call, and anything the Go store did not add to dp:recent is in the
-- scan). The proxy polls from the time its first call answered.
--   KEYS  none
--   ARGV  1 since: Unix ms of Redis's clock, as an earlier answer gave it
--         (0: the first call of a load); or "scan", then 2 the ZSCAN
--         cursor of dp:mailboxes ("0" first)
--   Returns {next, aor, aor, ...}: next is Redis's clock now (ms), the
--   AORs those stored into since since - RECENT_SLACK; with "scan", next
--   is the cursor of the next page ("0": done), the AORs one page of
--   dp:mailboxes. An error when since is older than RECENT_HOLD allows
--   (what was stored in between may be gone from dp:recent: the proxy
--   loads again).
redis.register_function{function_name = 'dp_recent', flags = {'no-cluster', 'allow-oom'}, callback = function(_, args)
  if args[1] == 'scan' then
    local r = redis.call('ZSCAN', 'dp:mailboxes', args[2] or '0', 'COUNT', 500)
    local out = {r[1]}
    for i = 1, #r[2], 2 do out[#out + 1] = r[2][i] end
    return out
  end
  local since = tonumber(args[1])
  if not since then return redis.error_reply('ERR dp_recent: bad since') end
  local sec, usec = now()
  local ms = sec * 1000 + math.floor(usec / 1000)
  if since > 0 and since < ms - RECENT_HOLD + RECENT_SLACK then
    return redis.error_reply('ERR dp_recent: since is older than dp:recent keeps, load again')
  end
  redis.call('SET', 'dp:recent:on', '1', 'PX', RECENT_ON)
  redis.call('ZREMRANGEBYSCORE', 'dp:recent', '-inf', '(' .. num(ms - RECENT_HOLD))
  local out = redis.call('ZRANGEBYSCORE', 'dp:recent', num(since - RECENT_SLACK), '+inf')
  table.insert(out, 1, num(ms))
  return out
end}
