-- How every room script begins: a room Redis has no epoch for (new, or lost with
-- Redis's data) gets the one the node offers, and nothing of an earlier history is kept
-- (`fresh` tells the script to clear what else it keeps of the room, as read positions).
-- KEYS[1..3]: meta, history, present; ARGV[1]: the epoch offered.
local fresh = redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1
if fresh then
  redis.call('HDEL', KEYS[1], 'offset', 'bytes')
  redis.call('DEL', KEYS[2], KEYS[3])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
