-- APPEND: numbers a run of events in one room from one node, in order, adds each to
-- the room's history and to its partition's stream, and keeps the room's and the
-- node's presence; returns the last event's id in the partition's stream.
-- KEYS (all in the room's partition, one Redis Cluster slot): meta, history, present,
-- the node's members in the partition, the partition's stream, reads, operations,
-- rules.
-- ARGV: an epoch if the room needs one, room, node, history length, the stream's
-- length, history bytes, the room's expiry in milliseconds; then for each event: the
-- member's key, join/leave/rule/-, the member as present lists it (for a join) or the
-- change to the room's rules (for a rule: `field`, cleared, or `field\nvalue`, set),
-- the event's JSON after its offset. The rules hash never expires: bans outlast the
-- room's quiet weeks.
--
-- The history keeps its last `history length` entries, and of those no more than
-- `history bytes` (each entry counted as its event and what it purged, kept in meta's
-- `bytes`), trimmed exactly: never its newest. Once nobody is in the room, its keys
-- expire `expiry` after its last event; while anyone is, they do not.
--
-- Each history entry: n (node), k (member key), e (the event), c (its id in
-- the partition's stream), and for a delete g (what it purged: see below).
--
-- A delete purges its target's text from Redis, as `chat::v2::apply` deletes: when the
-- target is a message in the history by the delete's own id, that message and every
-- edit of it leave both streams (XDEL; `c` finds them in the partition's stream). What stood
-- there stays in g, without text: each one's JSON up to its type (offset, ts, id,
-- name), one per line, the message first, so that a snapshot can put a tombstone and
-- text-less edits in their places. Scanning the history after the target costs at most
-- --history entries, found by plain substring search, and only for deletes.
--
-- Each operation (edit, delete, react, unreact) is also added to the room's
-- operations set, its offset scored by its target, which a page of the history reads
-- to bring its messages to their latest state; targets older than the history are
-- dropped from it as the history moves on.
if fresh then
  redis.call('DEL', KEYS[6])
  redis.call('DEL', KEYS[7])
end
local room, node = ARGV[2], ARGV[3]
local history, kept = tonumber(ARGV[4]), ARGV[5]
local budget, expiry = tonumber(ARGV[6]), ARGV[7]
local count = (#ARGV - 7) / 4
local offset = redis.call('HINCRBY', KEYS[1], 'offset', count) - count

-- A history entry's field.
local function field(fields, name)
  for f = 1, #fields, 2 do
    if fields[f] == name then
      return fields[f + 1]
    end
  end
end

-- An event's JSON up to its type: nothing it says, only who and when. (Quotes in a
-- name or a text are escaped, so the first `,"type":"` is the event's own.)
local function head(event)
  local at = string.find(event, ',"type":"', 1, true)
  return string.sub(event, 1, at - 1)
end

-- An event's type and the JSON after it.
local function body(event)
  local at = string.find(event, ',"type":"', 1, true)
  return string.sub(event, at + 9)
end

-- Who an event is by.
local function author(event)
  return string.match(event, '"id":"([^"]*)"')
end

-- What a history entry counts against the room's bytes.
local function size(fields)
  return #field(fields, 'e') + #(field(fields, 'g') or '')
end

-- Takes an entry out of the history and out of the partition's stream; returns its head.
local function purge(entry)
  local fields = entry[2]
  redis.call('XDEL', KEYS[2], entry[1])
  redis.call('HINCRBY', KEYS[1], 'bytes', -size(fields))
  local live = field(fields, 'c')
  if live then
    redis.call('XDEL', KEYS[5], live)
  end
  return head(field(fields, 'e'))
end

-- Purges the message at `target` if `by` wrote it (any author's, for a moderator's
-- delete, whose `by` is nil), and its edits; returns what stood there, or nil.
local function delete(target, by)
  local found = redis.call('XRANGE', KEYS[2], '0-' .. target, '0-' .. target)
  if #found == 0 then
    return nil
  end
  local message = field(found[1][2], 'e')
  if (by and author(message) ~= by) or string.sub(body(message), 1, 9) ~= 'message",' then
    return nil
  end
  local heads = {purge(found[1])}
  local edit = ',"type":"edit","target":' .. target .. ','
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '0-' .. (target + 1), '+')) do
    if string.find(field(entry[2], 'e'), edit, 1, true) then
      table.insert(heads, purge(entry))
    end
  end
  return table.concat(heads, '\n')
end

local last
for i = 8, #ARGV, 4 do
  local key, presence = ARGV[i], ARGV[i + 1]
  offset = offset + 1
  if presence == 'join' then
    redis.call('HSET', KEYS[3], node .. ' ' .. key, ARGV[i + 2])
    redis.call('HSET', KEYS[4], room .. ' ' .. key, ARGV[i + 2])
  elseif presence == 'leave' then
    redis.call('HDEL', KEYS[3], node .. ' ' .. key)
    redis.call('HDEL', KEYS[4], room .. ' ' .. key)
  elseif presence == 'rule' then
    local change = ARGV[i + 2]
    local at = string.find(change, '\n', 1, true)
    if at then
      redis.call('HSET', KEYS[8], string.sub(change, 1, at - 1), string.sub(change, at + 1))
    else
      redis.call('HDEL', KEYS[8], change)
    end
  end
  local event = '{"offset":' .. offset .. ',' .. ARGV[i + 3]
  last = redis.call('XADD', KEYS[5], 'MAXLEN', '~', kept, '*',
    'r', room, 'n', node, 'k', key, 'p', epoch, 'e', event)
  if history > 0 then
    local entry = {'n', node, 'k', key, 'e', event, 'c', last}
    local target = string.match(body(event), '^delete","target":(%d+)[,}]')
    if target then
      -- A nonce or text quoting this is escaped: only the event's own field matches.
      local by = author(event)
      if string.find(body(event), ',"moderated":true', 1, true) then
        by = nil
      end
      local purged = delete(tonumber(target), by)
      if purged then
        table.insert(entry, 'g')
        table.insert(entry, purged)
      end
    end
    redis.call('XADD', KEYS[2], '0-' .. offset, unpack(entry))
    redis.call('HINCRBY', KEYS[1], 'bytes', size(entry))
    local operated = string.match(body(event), '^[a-z]+","target":(%d+)[,}]')
    if operated then
      redis.call('ZADD', KEYS[7], operated, offset)
    end
  end
end
if history > 0 then
  -- Oldest first, as far as the bounds need; then one exact trim.
  local length = redis.call('XLEN', KEYS[2])
  local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
  local from, dropped = '-', nil
  while length > 1 and (length > history or bytes > budget) do
    local oldest = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', 1)[1]
    bytes = bytes - size(oldest[2])
    length = length - 1
    dropped = oldest[1]
    from = '(' .. dropped
  end
  if dropped then
    local first = tonumber(string.sub(dropped, 3)) + 1
    redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. first)
    redis.call('HSET', KEYS[1], 'bytes', bytes)
    redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. first)
  end
end
-- A room nobody is in is forgotten `expiry` after its last event.
local room_keys = {KEYS[1], KEYS[2], KEYS[6], KEYS[7]}
if redis.call('EXISTS', KEYS[3]) == 0 then
  for _, key in ipairs(room_keys) do
    redis.call('PEXPIRE', key, expiry)
  end
else
  for _, key in ipairs(room_keys) do
    redis.call('PERSIST', key)
  end
end
return last
