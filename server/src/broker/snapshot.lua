-- SNAPSHOT: a room as Redis has it: {epoch, offset, the last events (newest first),
-- who is in it (HGETALL of present), each id's read position (HGETALL of reads)}.
-- KEYS: meta, history, present, reads. ARGV: an epoch if the room needs one, how many
-- events.
if fresh then
  redis.call('DEL', KEYS[4])
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local events = {}
if tonumber(ARGV[2]) > 0 then
  events = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
end
return {epoch, offset, events, redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
