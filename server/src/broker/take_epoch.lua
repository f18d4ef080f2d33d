-- How every room script begins: a room Redis has no epoch for (new, or lost with
-- Redis's data) gets the one the node offers, and nothing of an earlier history is kept
-- (`fresh` tells the script to clear what else it keeps of the room, as read positions).
-- KEYS[1..3]: meta, history, present; ARGV[1]: the epoch offered.
--
-- A room last written through a primary that this Redis has since replaced in a
-- failover (a replica promoted by the Redis Cluster or by Sentinel) also takes the
-- epoch offered, keeping its history and offset: replication is asynchronous, so the
-- old primary may have numbered events that never reached this one, which clients
-- have seen, and the next events here would take their offsets. A new epoch makes
-- resuming clients start over (`recovered: false`) instead of one offset naming two
-- events. Told apart by the replication ids in INFO: `primary` in meta is the
-- `master_replid` the room was last written under; a promoted replica starts a new one
-- and keeps the one it followed as `master_replid2`.
--
-- A restarted Redis starts a new `master_replid` too, with replid2 all zeros (as does
-- a primary whose first replica attaches, which loses nothing), and a new `run_id`,
-- which the room's `server` field records. From an RDB snapshot it lost what it
-- numbered since the snapshot, which clients may have seen: a new epoch as well. From
-- an append-only file it keeps the room's epoch: with `appendfsync always` what it
-- loaded is all it ever answered for (with `everysec`, up to the last second may be
-- missing, which Redis cannot tell us).
local fresh = redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1
if fresh then
  redis.call('HDEL', KEYS[1], 'offset', 'bytes')
  redis.call('DEL', KEYS[2], KEYS[3])
end
local replication = redis.call('INFO', 'replication')
local primary = string.match(replication, 'master_replid:(%w+)')
local wrote = redis.call('HGET', KEYS[1], 'primary')
if wrote ~= primary then
  local followed = string.match(replication, 'master_replid2:(%w+)')
  local promoted = followed and not string.match(followed, '^0+$')
  local server = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  local ran = redis.call('HGET', KEYS[1], 'server')
  local from_log = string.match(redis.call('INFO', 'persistence'), 'aof_enabled:1')
  local restarted = ran and ran ~= server and not from_log
  if wrote and (promoted or restarted) then
    redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
  end
  redis.call('HSET', KEYS[1], 'primary', primary, 'server', server)
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
