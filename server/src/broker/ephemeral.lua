-- EPHEMERAL: a run of frames outside the log (typing, read positions) in one room from
-- one node, in order, added to the room's partition stream without an offset (field x instead of e),
-- where every node reads them in order with the room's events; a read position is
-- also kept in the room's reads hash, only ever moving forward, and is not told when
-- it did not move (another connection of the same id got further first). Returns the
-- last id added to the partition's stream, or '' if none.
-- KEYS: meta, reads, the partition's stream.
-- ARGV: room, node, the partition's stream length; then for each frame: the id whose read
-- position it is ('' for typing), that position, the frame's JSON.
local room, node, kept = ARGV[1], ARGV[2], ARGV[3]
-- A room Redis has no epoch for has no offsets yet for a position to be in.
local live = redis.call('HEXISTS', KEYS[1], 'epoch') == 1
local last = ''
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  local tell = true
  if id ~= '' then
    local offset = tonumber(ARGV[i + 1])
    tell = live and offset > tonumber(redis.call('HGET', KEYS[2], id) or '0')
    if tell then
      redis.call('HSET', KEYS[2], id, offset)
    end
  end
  if tell then
    last = redis.call('XADD', KEYS[3], 'MAXLEN', '~', kept, '*',
      'r', room, 'n', node, 'x', ARGV[i + 2])
  end
end
return last
