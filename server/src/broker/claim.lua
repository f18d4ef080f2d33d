-- Claims a node's members in one partition if the node is not alive there: takes it
-- off the partition's registry and moves its `members` hash aside, for the caller to
-- announce their leaves. One script in the partition's slot, so that nothing comes
-- between the look at the node's `alive` key and the claim: a node that reads the
-- partition again sets that key before it registers or seats anyone there, so its new
-- members are never claimed.
--
-- KEYS[1] the node's `alive` key in the partition, KEYS[2] its `members` hash there,
-- KEYS[3] where the caller claims them, KEYS[4] the partition's registry of nodes.
-- ARGV[1] the node.
-- Reply: 1 if members were claimed, 0 if it had none, -1 if the node is alive.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
redis.call('SREM', KEYS[4], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[3])
return 1
