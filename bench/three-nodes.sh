#!/usr/bin/env bash
# Three nodes on a Redis Cluster of three primaries, each serving a room of its own
# (issue 33): what the three fan-outs deliver at once against one alone, what each node
# reads from Redis against what was published in its room and in all rooms, with rooms
# spread over partitions and with one stream for all (the design before: every node read
# every room); and what a fourth node, serving a fourth room, costs the three.
#
#   [MESSAGES=M] bash bench/three-nodes.sh [ROUNDS] [PARTITIONS...]
#
# ROUNDS defaults to 2, PARTITIONS to `16 1`, taking turns; MESSAGES (per sender) to
# 3000. Each run: a fresh Redis Cluster of three primaries (no replicas) on free ports,
# and three release nodes on it (`redis+cluster://`), node A serving room `alpha`, B
# `gamma`, C `delta`: partitions 11, 10 and 1 of 16, whose slots are on the first, second
# and third primary (the script prints where each landed). Every fan-out is the one of
# bench/README.md (500 clients, 10 senders × MESSAGES, window 64), one chat-bench each.
#   alone:  A's fan-out alone (B and C up, with nobody in their rooms).
#   three:  the three fan-outs at once, one per node, each node holding one more idle
#           member in its room from here on (as a node in service would: it reads its
#           partitions from before the fan-outs start until after they end).
#   four:   (16 partitions only) a fourth node D, serving room `north` (partition 4),
#           joins (one idle member, then 50 clients and 1 sender at 200 messages/s
#           for about as long as `three` took) while the three fan-outs run again.
# Prints, per phase: deliveries/s (each fan-out's own, their sum, and all deliveries
# over the wall-clock time of the phase, connecting included), lost deliveries, the
# primaries' CPU seconds and bytes sent (`total_net_output_bytes`; Redis 7.0's
# CLIENT LIST has no per-client byte count), the fan-outs' chat-bench CPU seconds (the
# talker's not included); per node: the entries it read from Redis
# (`chat_broker_read_total`) against the events published in its own room and in all
# rooms (`chat_broker_published_total`: each room's members are on one node), the most
# partitions it read at once (`chat_broker_partitions`), and its CPU seconds (from
# /proc/PID/stat) and µs per delivery; a node holding a member that did not read exactly
# every event of its room's partition gets the difference printed. Warnings and errors in
# the nodes' logs are counted at the end of each run. With one partition every room is
# in `{p0}`, one slot: one primary serves them all.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
shift || true
designs=${*:-16 1}
messages=${MESSAGES:-3000}

cargo build --release -p chat-server -p chat-bench --quiet
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
healthy() {
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$1/healthz" > /dev/null && return 0
    sleep 0.1
  done
  echo "the node on $1 is not healthy" >&2
  return 1
}
metric() {
  curl -s "http://127.0.0.1:$1/metrics" | awk -v name="$2" '$1 == name {print $2}'
}
net_out() {
  redis-cli -p "$1" info stats | tr -d '\r' | awk -F: '$1 == "total_net_output_bytes" {print $2}'
}
now() { date +%s.%N; }
scratch=$(mktemp -d)
started=()
trap 'kill "${started[@]}" 2> /dev/null || true; rm -rf "$scratch"' EXIT

rooms=(alpha gamma delta)
names=(A B C D)
fourth_room=north

start_cluster() {
  cluster_ports=()
  cluster_pids=()
  mkdir -p "$scratch/redis"
  rm -f "$scratch"/redis/*
  for _ in 1 2 3; do
    local port bus
    port=$(free_port)
    bus=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-port "$bus" --cluster-config-file "nodes-$port.conf" \
      --save '' --appendonly no --dir "$scratch/redis" > /dev/null &
    cluster_pids+=($!)
    cluster_ports+=("$port")
  done
  started+=("${cluster_pids[@]}")
  for port in "${cluster_ports[@]}"; do
    until redis-cli -p "$port" ping > /dev/null 2>&1; do sleep 0.05; done
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") \
    --cluster-replicas 0 --cluster-yes > /dev/null
  for port in "${cluster_ports[@]}"; do
    until redis-cli -p "$port" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
  done
}

# Which primary serves `room`'s keys with `partitions` partitions: its partition (FNV-1a
# of the name, as server/src/broker/keys.rs), the slot of its `{pN}` tag, and the
# primary's port.
placement() {
  local room=$1 partitions=$2 partition slot
  partition=$(python3 -c '
import sys
h = 0xcbf29ce484222325
for b in sys.argv[1].encode():
    h = ((h ^ b) * 0x100000001b3) % 2**64
print(h % int(sys.argv[2]))' "$room" "$partitions")
  slot=$(redis-cli -p "${cluster_ports[0]}" cluster keyslot "chat:{p$partition}:events")
  local primary
  primary=$(redis-cli -p "${cluster_ports[0]}" cluster nodes | awk -v slot="$slot" '
    $3 ~ /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1];
      if (slot >= r[1] && slot <= r[2]) { split($2, a, "[:@]"); print a[2] } } }')
  echo "p$partition slot $slot primary :$primary"
}

# One idle member in each listed node's room, held until the run ends.
hold() {
  for i in "$@"; do
    ./target/release/chat-bench --url "ws://127.0.0.1:${node_ports[$i]}" \
      --room "${node_rooms[$i]}" idle --clients 1 --hold 3600 > /dev/null 2>&1 &
    holders+=($!)
    started+=($!)
  done
  sleep 2
}

start_node() {
  local port=$1 partitions=$2 log=$3
  RUST_LOG=warn ./target/release/chat-server --port "$port" \
    --redis-url "redis+cluster://127.0.0.1:${cluster_ports[0]}" \
    --redis-partitions "$partitions" --rate-limit 0 --max-connections-per-ip 0 \
    --handshake-rate-per-ip 0 > "$log" 2>&1 &
  echo $!
}

# Samples every node's `chat_broker_partitions` until killed, one `port value` a line.
sample_partitions() {
  while :; do
    for port in "$@"; do echo "$port $(metric "$port" chat_broker_partitions)"; done
    sleep 0.2
  done
}

# One phase: the fan-outs on the nodes listed in `busy` (indices into node_ports) at
# once, with an optional talker on node D; prints its figures.
phase() {
  local label=$1
  shift
  local busy=("$@")
  local all=("${!node_ports[@]}")
  local -A cpu_before read_before published_before
  for i in "${all[@]}"; do
    cpu_before[$i]=$(ticks "${node_pids[$i]}")
    read_before[$i]=$(metric "${node_ports[$i]}" chat_broker_read_total)
    published_before[$i]=$(metric "${node_ports[$i]}" chat_broker_published_total)
  done
  local redis_cpu_before=0 redis_out_before=0 primary_cpu_before=()
  for i in 0 1 2; do
    primary_cpu_before+=("$(ticks "${cluster_pids[$i]}")")
    redis_cpu_before=$((redis_cpu_before + $(ticks "${cluster_pids[$i]}")))
    redis_out_before=$((redis_out_before + $(net_out "${cluster_ports[$i]}")))
  done
  sample_partitions "${node_ports[@]}" > "$scratch/partitions" &
  local sampler=$!
  local started_at loads=()
  started_at=$(now)
  for i in "${busy[@]}"; do
    # In a subshell whose `times` is then the load generator's CPU time.
    (
      ./target/release/chat-bench --url "ws://127.0.0.1:${node_ports[$i]}" \
        --room "${node_rooms[$i]}" fanout --clients 500 --senders 10 \
        --messages "$messages" --window 64 > "$scratch/fanout-$i.json" 2> /dev/null || true
      times > "$scratch/bench-cpu-$i"
    ) &
    loads+=($!)
  done
  local talker=
  if [[ -n ${talker_seconds:-} ]]; then
    ./target/release/chat-bench --url "ws://127.0.0.1:${node_ports[3]}" \
      --room "$fourth_room" fanout --clients 50 --senders 1 --rate 200 \
      --messages "$((talker_seconds * 200))" > "$scratch/talker.json" 2> /dev/null &
    talker=$!
  fi
  # A fan-out that loses deliveries exits 1; its report says how many.
  wait "${loads[@]}"
  local wall
  wall=$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$started_at" "$(now)")
  if [[ -n $talker ]]; then wait "$talker" || true; fi
  # The leaves, published as the clients close, read back by every node reading them.
  sleep 1.5
  kill "$sampler"
  wait "$sampler" 2> /dev/null || true
  local records=()
  for i in "${all[@]}"; do
    local max_partitions
    max_partitions=$(awk -v port="${node_ports[$i]}" '$1 == port && $2 > m {m = $2} END {print m + 0}' "$scratch/partitions")
    records+=("${names[$i]} ${node_rooms[$i]} $(placement "${node_rooms[$i]}" "$partitions" | tr ' ' _) $(($(ticks "${node_pids[$i]}") - cpu_before[$i])) $(($(metric "${node_ports[$i]}" chat_broker_read_total) - read_before[$i])) $(($(metric "${node_ports[$i]}" chat_broker_published_total) - published_before[$i])) $max_partitions")
  done
  local redis_cpu=0 redis_out=0 primaries_cpu=()
  for i in 0 1 2; do
    primaries_cpu+=("$(($(ticks "${cluster_pids[$i]}") - primary_cpu_before[i]))")
    redis_cpu=$((redis_cpu + $(ticks "${cluster_pids[$i]}")))
    redis_out=$((redis_out + $(net_out "${cluster_ports[$i]}")))
  done
  python3 - "$label" "$round" "$partitions" "$wall" "$((redis_cpu - redis_cpu_before))" \
    "$((redis_out - redis_out_before))" "$(getconf CLK_TCK)" "${busy[*]}" "$scratch" \
    "${primaries_cpu[*]}" "${#holders[@]}" \
    "${records[@]}" << 'EOF'
import json, os, sys
label, round_, partitions, wall, redis_cpu, redis_out, tck, busy, scratch, primaries, held = sys.argv[1:12]
records = [r.split() for r in sys.argv[12:]]
tck, wall = int(tck), float(wall)
busy = [int(i) for i in busy.split()]
reports = {i: json.load(open(f"{scratch}/fanout-{i}.json")) for i in busy}
talker = json.load(open(f"{scratch}/talker.json")) if os.path.exists(f"{scratch}/talker.json") else None
delivered = sum(r["received_deliveries"] for r in reports.values())
lost = sum(r["lost_deliveries"] for r in reports.values())
rates = [reports[i]["deliveries_per_second"] / 1e6 for i in busy]
each = ", ".join(f"{records[i][0]} {rates[n]:.2f}" for n, i in enumerate(busy))
def bench_cpu(i):
    # `times`: the subshell's own user and system time, then its children's (chat-bench).
    children = open(f"{scratch}/bench-cpu-{i}").read().split("\n")[1].split()
    return sum(int(t.split("m")[0]) * 60 + float(t.split("m")[1].rstrip("s")) for t in children)
generators = sum(bench_cpu(i) for i in busy)
print(f"round {round_}, {partitions} partitions, {label}: {sum(rates):.2f} M deliveries/s summed "
      f"({each}); {delivered / 1e6:.1f} M in {wall:.1f} s wall (connecting included) = "
      f"{delivered / wall / 1e6:.2f} M/s; "
      f"lost {lost}; Redis {int(redis_cpu) / tck:.2f} CPU-s "
      f"({' + '.join(f'{int(t) / tck:.2f}' for t in primaries.split())} by primary), "
      f"sent {int(redis_out) / 1e6:.0f} MB; the fan-outs' chat-bench {generators:.2f} CPU-s")
if talker:
    print(f"  talker on D: {talker['received_deliveries']} deliveries, lost {talker['lost_deliveries']}")
all_published = sum(int(r[5]) for r in records)
partition_of = {r[0]: r[2].split("_")[0] for r in records}
for n, (name, room, place, cpu, read, published, most) in enumerate(records):
    cpu = int(cpu) / tck
    mine = reports[n]["received_deliveries"] if n in reports else 0
    per = f", {cpu * 1e6 / mine:.3f} µs/delivery" if mine else ""
    # What a node holding a member in its room must read: every event of the rooms in
    # its room's partition (each room's events are published by its own node).
    due = sum(int(r[5]) for r in records if partition_of[r[0]] == partition_of[name])
    check = "" if int(read) == due or (n >= int(held) and n not in reports) else f" (its partition had {due}: {int(read) - due:+d})"
    print(f"  node {name} ({room}, {place.replace('_', ' ')}): read {read} entries{check}; "
          f"published in its room {published}, in all rooms {all_published}; "
          f"read at most {most} partitions; {cpu:.2f} CPU-s{per}")
EOF
  rm -f "$scratch"/fanout-*.json "$scratch"/bench-cpu-* "$scratch/talker.json"
}

for round in $(seq "$rounds"); do
  for partitions in $designs; do
    start_cluster
    node_ports=()
    node_pids=()
    node_rooms=("${rooms[@]}")
    holders=()
    for i in 0 1 2; do
      node_ports+=("$(free_port)")
      node_pids+=("$(start_node "${node_ports[$i]}" "$partitions" "$scratch/node-$i.log")")
    done
    started+=("${node_pids[@]}")
    for port in "${node_ports[@]}"; do healthy "$port"; done
    talker_seconds=
    phase alone 0
    # From here on every node holds a member in its room, as a node in service would:
    # it reads its partitions from before the fan-outs start until after they end.
    hold 0 1 2
    three_started=$(now)
    phase three 0 1 2
    three_seconds=$(python3 -c 'import sys; print(max(1, round(float(sys.argv[2]) - float(sys.argv[1]) - 1.5)))' "$three_started" "$(now)")
    if [[ $partitions -gt 1 ]]; then
      node_ports+=("$(free_port)")
      node_pids+=("$(start_node "${node_ports[3]}" "$partitions" "$scratch/node-3.log")")
      node_rooms+=("$fourth_room")
      started+=("${node_pids[3]}")
      healthy "${node_ports[3]}"
      hold 3
      talker_seconds=$three_seconds
      phase "four (D joins, talker ${three_seconds} s)" 0 1 2
      talker_seconds=
    fi
    for i in "${!node_pids[@]}"; do
      problems=$(grep -ciE 'warn|error' "$scratch/node-$i.log" || true)
      if [[ $problems -gt 0 ]]; then
        echo "  node ${names[$i]}'s log: $problems warnings or errors, first:"
        grep -iE 'warn|error' "$scratch/node-$i.log" | head -3 | sed 's/^/    /'
      fi
    done
    kill "${holders[@]}" "${node_pids[@]}" 2> /dev/null || true
    # The nodes were started in command substitutions, so they are not this shell's
    # children to wait for; Redis stays up while they shut down (they announce their
    # members' leaves there), and the next run starts once they are gone.
    for pid in "${node_pids[@]}"; do
      for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    done
    kill "${cluster_pids[@]}" 2> /dev/null || true
    wait "${holders[@]}" "${cluster_pids[@]}" 2> /dev/null || true
  done
done
