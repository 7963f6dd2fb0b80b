package store

import "github.com/redis/go-redis/v9"

// The Lua scripts. Every script that changes a mailbox takes the same
// seven keys, from mailboxKeys, so one header serves for KEYS (except
// appendScript, see there):
//
//	KEYS[1] pending  KEYS[2] inflight  KEYS[3] dead  KEYS[4] msgs
//	KEYS[5] expiry   KEYS[6] tries     KEYS[7] lock  (KEYS[8] gone: append, expire)
//
// Times are Unix milliseconds from the caller's clock (Config.Now), never
// the server's: miniredis and tests then agree with production. Scripts
// use only commands miniredis also runs (LMOVE, LPOS, LREM, HMGET, ...).
// A lease is "live" when lock.owner == token and lock.until > now.

// prelude is shared by the scripts that need it.
const prelude = `
local pending, inflight, dead, msgs, expiry, tries, lock = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

-- requeue moves every in-flight id back to pending: those that never
-- failed to the head, in order; those that failed an attempt (tries) to
-- the tail, in order, so that a message that keeps failing does not hold
-- back the ones behind it.
local function requeue()
  local n, failed = 0, {}
  while true do
    local id = redis.call('RPOP', inflight)
    if not id then break end
    n = n + 1
    if redis.call('HEXISTS', tries, id) == 1 then
      table.insert(failed, 1, id)
    else
      redis.call('LPUSH', pending, id)
    end
  end
  for _, id in ipairs(failed) do redis.call('RPUSH', pending, id) end
  return n
end

local function live(token, now)
  local v = redis.call('HMGET', lock, 'owner', 'until')
  return v[1] == token and tonumber(v[2]) > now
end

local function drop(id)
  redis.call('HDEL', msgs, id)
  redis.call('ZREM', expiry, id)
  redis.call('HDEL', tries, id)
end

-- acquire takes the lease for token unless another token holds it live.
-- A new owner first requeues what a previous owner left in flight.
-- Returns -1 when held by another, else the number requeued.
local function acquire(token, untilms, now)
  local v = redis.call('HMGET', lock, 'owner', 'until')
  local n = 0
  if v[1] ~= token then
    if v[1] and tonumber(v[2]) > now then return -1 end
    n = requeue()
  end
  redis.call('HSET', lock, 'owner', token, 'until', untilms)
  return n
end
`

// appendScript stores one message. It is the hot path, so it takes only
// the keys it touches and does without the prelude (whose closures every
// call would build again).
//
//	KEYS  1 pending, 2 msgs, 3 expiry, 4 gone, 5 notify (appendKeys)
//	ARGV  1 id, 2 record, 3 expiry ms, 4 max mailbox (0: none), 5 "1" when
//	      the sender asked to hear of a failure (notify gets the id)
//	Returns {status, stored count}: status 1 stored; 2 stored, and the
//	sweeper had unindexed the mailbox (the caller must index it again);
//	0 the id was already stored (no-op); -1 mailbox full (nothing stored).
//	The count is only counted when ARGV[4] sets a maximum, else 0.
var appendScript = redis.NewScript(`
local n, max = 0, tonumber(ARGV[4])
if max > 0 then
  n = redis.call('HLEN', KEYS[2])
  if n >= max then
    if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {0, n} end
    return {-1, n}
  end
  n = n + 1
end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return {0, n} end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1]) end
redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('DEL', KEYS[4]) == 1 then return {2, n} end
return {1, n}
`)

// claimScript takes or extends the lease and moves the oldest pending
// messages to in-flight, dropping expired ones on the way. An expired one
// whose sender waits for a failure notice (in notify) leaves pending but
// is not dropped: the sweeper reports it, then drops it.
//
//	KEYS  1-7 mailbox, 8 notify
//	ARGV  1 token, 2 max messages, 3 lease end ms, 4 now ms
//	Returns {-1} when another token holds a live lease, else
//	{1, requeued, expired, id, record, tries, id, record, tries, ...}.
var claimScript = redis.NewScript(prelude + `
local now = tonumber(ARGV[4])
local requeued = acquire(ARGV[1], ARGV[3], now)
if requeued < 0 then return {-1} end
local out = {1, requeued, 0}
local expired, got, n = 0, 0, tonumber(ARGV[2])
while got < n do
  local id = redis.call('LPOP', pending)
  if not id then break end
  local rec = redis.call('HGET', msgs, id)
  local exp = tonumber(redis.call('ZSCORE', expiry, id))
  if not rec or (exp and exp <= now) then
    if rec and redis.call('ZSCORE', KEYS[8], id) then
      -- left for the sweeper's notice (notices.go)
    else
      if rec then expired = expired + 1 end
      drop(id)
    end
  else
    redis.call('RPUSH', inflight, id)
    out[#out + 1] = id
    out[#out + 1] = rec
    out[#out + 1] = redis.call('HGET', tries, id) or ''
    got = got + 1
  end
end
out[3] = expired
return out
`)

// ackScript removes one in-flight message for good.
//
//	KEYS  1-7 mailbox
//	ARGV  1 token, 2 id, 3 now ms
//	Returns -1 lease not live, 0 id not in flight, 1 acked, 2 acked and the
//	mailbox is now empty.
var ackScript = redis.NewScript(prelude + `
if not live(ARGV[1], tonumber(ARGV[3])) then return -1 end
if redis.call('LREM', inflight, 1, ARGV[2]) == 0 then return 0 end
drop(ARGV[2])
if redis.call('HLEN', msgs) == 0 then return 2 end
return 1
`)

// failScript counts a failed attempt; at max attempts the message moves
// from in-flight to dead (and out of notify: the caller tells the sender
// now, not again when it expires).
//
//	KEYS  1-7 mailbox, 8 notify
//	ARGV  1 token, 2 id, 3 reason, 4 max attempts (0: never dead-letter), 5 now ms
//	Returns -1 lease not live, 0 id not in flight, 1 counted (still in
//	flight), 2 dead-lettered.
var failScript = redis.NewScript(prelude + `
if not live(ARGV[1], tonumber(ARGV[5])) then return -1 end
if not redis.call('LPOS', inflight, ARGV[2]) then return 0 end
local prev = string.match(redis.call('HGET', tries, ARGV[2]) or '', '^%d+')
local a = 1 + (prev and tonumber(prev) or 0)
redis.call('HSET', tries, ARGV[2], a .. ' ' .. ARGV[3])
local max = tonumber(ARGV[4])
if max > 0 and a >= max then
  redis.call('LREM', inflight, 1, ARGV[2])
  redis.call('RPUSH', dead, ARGV[2])
  redis.call('ZREM', KEYS[8], ARGV[2])
  return 2
end
return 1
`)

// releaseScript puts in-flight messages back at the head of pending.
//
//	KEYS  1-7 mailbox
//	ARGV  1 token, 2 now ms
//	Returns -1 lease not live, else the number released.
var releaseScript = redis.NewScript(prelude + `
if not live(ARGV[1], tonumber(ARGV[2])) then return -1 end
return requeue()
`)

// lockScript takes or extends the lease.
//
//	KEYS  1-7 mailbox
//	ARGV  1 token, 2 lease end ms, 3 now ms
//	Returns -1 held live by another token, else the number of in-flight
//	messages of a previous owner requeued.
var lockScript = redis.NewScript(prelude + `
return acquire(ARGV[1], ARGV[2], tonumber(ARGV[3]))
`)

// renewScript extends a live lease.
//
//	KEYS  1-7 mailbox
//	ARGV  1 token, 2 lease end ms, 3 now ms
//	Returns -1 lease not live, 1 renewed.
var renewScript = redis.NewScript(prelude + `
if not live(ARGV[1], tonumber(ARGV[3])) then return -1 end
redis.call('HSET', lock, 'until', ARGV[2])
return 1
`)

// unlockScript requeues in-flight messages and drops the lease, if token
// owns it (live or not) or nobody does.
//
//	KEYS  1-7 mailbox
//	ARGV  1 token
//	Returns -1 another token owns the lease (nothing done), else the number
//	requeued.
var unlockScript = redis.NewScript(prelude + `
local owner = redis.call('HGET', lock, 'owner')
if owner and owner ~= ARGV[1] then return -1 end
local n = requeue()
redis.call('DEL', lock)
return n
`)

// recoverScript is the sweeper's look at one entry of the lease index:
// if the lease is not live, requeue what is in flight and drop the lease.
//
//	KEYS  1-7 mailbox
//	ARGV  1 now ms
//	Returns {1, 0} lease live; {0, requeued} no live lease (in-flight now empty).
var recoverScript = redis.NewScript(prelude + `
local v = redis.call('HMGET', lock, 'owner', 'until')
if v[1] and tonumber(v[2]) > tonumber(ARGV[1]) then return {1, 0} end
local n = requeue()
redis.call('DEL', lock)
return {0, n}
`)

// expireScript is the sweeper's look at one mailbox: drop at most
// ARGV[2] messages that expired (except those in flight under a live
// lease: their push ends first), then report when to look again. The
// batch bounds how long one call holds Redis: the caller calls again
// while more is set.
//
// Expiry follows arrival when the TTL does not change, so the expired ids
// are the heads of the lists and leave them by LPOP; ids that expired out
// of that order (the policy's TTL was shortened) make the call rewrite the
// lists once, without them.
//
//	KEYS  1-7 mailbox, 8 gone
//	ARGV  1 now ms, 2 batch (most messages dropped by this call)
//	Returns {dropped, next, more}: next is the earliest remaining expiry
//	(ms), or -1 when the mailbox is empty (then gone is set for an hour, so
//	that an append racing with the unindexing indexes the mailbox again);
//	more is 1 when the batch was full and expired messages may remain.
var expireScript = redis.NewScript(prelude + `
local now, batch = tonumber(ARGV[1]), tonumber(ARGV[2])
local held, nheld = {}, 0
local v = redis.call('HMGET', lock, 'owner', 'until')
if v[1] and tonumber(v[2]) > now then
  for _, id in ipairs(redis.call('LRANGE', inflight, 0, -1)) do held[id] = true; nheld = nheld + 1 end
end
local ids = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, batch + nheld)
local gone, list = {}, {}
for _, id in ipairs(ids) do
  if #list < batch and not held[id] then
    gone[id] = true
    list[#list + 1] = id
  end
end
local dropped = #list
for i = 1, dropped, 1000 do
  local j = math.min(i + 999, dropped)
  redis.call('HDEL', msgs, unpack(list, i, j))
  redis.call('ZREM', expiry, unpack(list, i, j))
  redis.call('HDEL', tries, unpack(list, i, j))
end
-- The heads of the lists first: LTRIM past the expired ids there.
local left = dropped
for _, key in ipairs({pending, dead, inflight}) do
  if left > 0 then
    local head = redis.call('LRANGE', key, 0, left - 1)
    local n = 0
    while n < #head and gone[head[n + 1]] do
      gone[head[n + 1]] = false
      n = n + 1
    end
    if n > 0 then
      redis.call('LTRIM', key, n, -1)
      left = left - n
    end
  end
end
if left > 0 then
  for _, key in ipairs({pending, dead, inflight}) do
    local keep, changed = {}, false
    for _, id in ipairs(redis.call('LRANGE', key, 0, -1)) do
      if gone[id] then changed = true else keep[#keep + 1] = id end
    end
    if changed then
      redis.call('DEL', key)
      for i = 1, #keep, 1000 do
        redis.call('RPUSH', key, unpack(keep, i, math.min(i + 999, #keep)))
      end
    end
  end
end
local more = 0
if dropped == batch then more = 1 end
if redis.call('HLEN', msgs) == 0 then
  redis.call('SET', KEYS[8], '1', 'PX', 3600000)
  return {dropped, -1, 0}
end
local first = redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')
return {dropped, tonumber(first[2]), more}
`)

// indexCASScript changes one member of a global index (dp:mailboxes or
// dp:leases) only if its score is still the one the sweeper read, so an
// append or claim that touched it meanwhile wins.
//
//	KEYS  1 index
//	ARGV  1 member, 2 expected score, 3 new score or "" to remove
//	Returns 1 changed, 0 score differed (nothing done).
var indexCASScript = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
`)

// listScript reads a page across one or two lists, in order.
//
//	KEYS  1 msgs, 2 tries, 3.. lists in order (inflight, pending) or (dead)
//	ARGV  1 offset, 2 limit (<= 0: all)
//	Returns {total, id, record, tries, list number (1-based), ...}.
var listScript = redis.NewScript(`
local lens, total = {}, 0
for i = 3, #KEYS do
  lens[i] = redis.call('LLEN', KEYS[i])
  total = total + lens[i]
end
local off, lim = tonumber(ARGV[1]), tonumber(ARGV[2])
if lim <= 0 then lim = total end
local out = {total}
for i = 3, #KEYS do
  if lim <= 0 then break end
  if off >= lens[i] then
    off = off - lens[i]
  else
    local ids = redis.call('LRANGE', KEYS[i], off, off + lim - 1)
    off = 0
    for _, id in ipairs(ids) do
      out[#out + 1] = id
      out[#out + 1] = redis.call('HGET', KEYS[1], id) or ''
      out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
      out[#out + 1] = i - 2
      lim = lim - 1
    end
  end
end
return out
`)

// getScript reads one message and finds its state.
//
//	KEYS  1-7 mailbox
//	ARGV  1 id
//	Returns {} when unknown, else {record, tries, state}.
var getScript = redis.NewScript(prelude + `
local rec = redis.call('HGET', msgs, ARGV[1])
if not rec then return {} end
local state = 'pending'
if redis.call('LPOS', inflight, ARGV[1]) then state = 'inflight'
elseif redis.call('LPOS', dead, ARGV[1]) then state = 'dead' end
return {rec, redis.call('HGET', tries, ARGV[1]) or '', state}
`)

// deleteScript removes one message wherever it is.
//
//	KEYS  1-7 mailbox
//	ARGV  1 id
//	Returns 0 unknown, 1 deleted, 2 deleted and the mailbox is now empty.
var deleteScript = redis.NewScript(prelude + `
if redis.call('HEXISTS', msgs, ARGV[1]) == 0 then return 0 end
for _, key in ipairs({pending, inflight, dead}) do redis.call('LREM', key, 0, ARGV[1]) end
drop(ARGV[1])
if redis.call('HLEN', msgs) == 0 then return 2 end
return 1
`)

// deleteAllScript removes every message of a mailbox; the lease stays.
//
//	KEYS  1-7 mailbox
//	Returns the number of messages removed.
var deleteAllScript = redis.NewScript(prelude + `
local n = redis.call('HLEN', msgs)
redis.call('DEL', pending, inflight, dead, msgs, expiry, tries)
return n
`)

// requeueDeadScript moves dead letters to the head of pending, in order,
// with their attempts reset.
//
//	KEYS  1-7 mailbox
//	Returns the number moved.
var requeueDeadScript = redis.NewScript(prelude + `
local n = 0
while true do
  local id = redis.call('LMOVE', dead, pending, 'RIGHT', 'LEFT')
  if not id then break end
  redis.call('HDEL', tries, id)
  n = n + 1
end
return n
`)

// deleteContactScript forgets a registration if its contact is the one
// given.
//
//	KEYS  1 contact
//	ARGV  1 contact URI ("" matches any)
//	Returns 1 deleted, 0 nothing (none stored, or another contact).
var deleteContactScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if ARGV[1] ~= '' and cjson.decode(v).contact ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)

// bindingLua is the Lua of plugin.Registration.Binding for a decoded
// registration: its instance when set, else its contact.
const bindingLua = `
local function binding(reg)
  if type(reg.instance) == 'string' and reg.instance ~= '' then return reg.instance end
  return reg.contact
end
`

// setContactScript records a registration, keeping what the stored one
// learnt (pager_only) when it is the same binding.
//
//	KEYS  1 contact
//	ARGV  1 registration JSON, 2 the same with pager_only set, 3 its
//	      binding, 4 TTL ms (0: none)
//	Returns 1 written as given, 2 written with pager_only kept.
var setContactScript = redis.NewScript(bindingLua + `
local rec, res = ARGV[1], 1
local v = redis.call('GET', KEYS[1])
if v then
  local ok, old = pcall(cjson.decode, v)
  if ok and type(old) == 'table' and old.pager_only == true and binding(old) == ARGV[3] then
    rec, res = ARGV[2], 2
  end
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], rec, 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], rec)
end
return res
`)

// setPagerOnlyScript marks the stored registration pager_only if it is
// still the given binding. The JSON is Go's (an object without
// pager_only when it is false): the member is added before the closing
// brace, so the rest stays byte for byte, and the TTL is kept.
//
//	KEYS  1 contact
//	ARGV  1 binding
//	Returns 1 marked (or already), 0 nothing stored or another binding.
var setPagerOnlyScript = redis.NewScript(bindingLua + `
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, old = pcall(cjson.decode, v)
if not ok or type(old) ~= 'table' or binding(old) ~= ARGV[1] then return 0 end
if old.pager_only == true then return 1 end
redis.call('SET', KEYS[1], string.sub(v, 1, -2) .. ',"pager_only":true}', 'KEEPTTL')
return 1
`)
