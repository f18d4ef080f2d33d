-- APPEND: numbers a run of events in one room from one node, in order, adds each to
-- the room's history and to chat:events, and keeps the room's and the node's presence;
-- returns the last event's id in chat:events.
-- KEYS: meta, history, present, the node's members, chat:events.
-- ARGV: an epoch if the room needs one, room, node, history length, chat:events
-- length; then for each event: the member's key, join/leave/-, the member as present
-- lists it (for a join), the event's JSON after its offset.
local room, node = ARGV[2], ARGV[3]
local history, kept = tonumber(ARGV[4]), ARGV[5]
local count = (#ARGV - 5) / 4
local offset = redis.call('HINCRBY', KEYS[1], 'offset', count) - count
local last
for i = 6, #ARGV, 4 do
  local key, presence = ARGV[i], ARGV[i + 1]
  offset = offset + 1
  if presence == 'join' then
    redis.call('HSET', KEYS[3], node .. ' ' .. key, ARGV[i + 2])
    redis.call('HSET', KEYS[4], room .. ' ' .. key, ARGV[i + 2])
  elseif presence == 'leave' then
    redis.call('HDEL', KEYS[3], node .. ' ' .. key)
    redis.call('HDEL', KEYS[4], room .. ' ' .. key)
  end
  local event = '{"offset":' .. offset .. ',' .. ARGV[i + 3]
  if history > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', history, '0-' .. offset, 'n', node, 'k', key, 'e', event)
  end
  last = redis.call('XADD', KEYS[5], 'MAXLEN', '~', kept, '*',
    'r', room, 'n', node, 'k', key, 'p', epoch, 'e', event)
end
return last
