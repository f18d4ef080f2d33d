-- SNAPSHOT: a room as Redis has it: {epoch, offset, the last events (newest first),
-- who is in it (HGETALL of present), each id's read position (HGETALL of reads), the
-- id of the newest entry of the room's partition stream ('0-0' if none)}.
-- KEYS: meta, history, present, reads, the partition's stream. ARGV: an epoch if the
-- room needs one, how many events, how many bytes of them.
--
-- The stream's newest id is taken in the same script as the rest, so that a node that
-- starts reading the partition after it reads exactly what came after the snapshot.
--
-- The events are the newest `how many`, and of those only as many as reach `bytes`
-- (counting each entry's values, the one that passes it included): a node keeps no
-- more than that in memory, and reading a long history in one reply can take longer
-- than a node waits for Redis. Older events are read a page at a time.
if fresh then
  redis.call('DEL', KEYS[4])
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local wanted, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local events, bytes, from = {}, 0, '+'
while #events < wanted and bytes < budget do
  local chunk = redis.call('XREVRANGE', KEYS[2], from, '-', 'COUNT', math.min(256, wanted - #events))
  if #chunk == 0 then
    break
  end
  for _, entry in ipairs(chunk) do
    table.insert(events, entry)
    for i = 2, #entry[2], 2 do
      bytes = bytes + #entry[2][i]
    end
    if bytes >= budget then
      break
    end
  end
  from = '(' .. chunk[#chunk][1]
end
local newest = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)[1]
local read_from = '0-0'
if newest then
  read_from = newest[1]
end
return {epoch, offset, events, redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
  read_from}
