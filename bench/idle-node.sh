#!/usr/bin/env bash
# What a node with nobody in a busy room spends, against the node that serves it
# (issue 33), with rooms spread over partitions and with one stream for all (the design
# before: every node read every event).
#
#   [MESSAGES=M] bash bench/idle-node.sh [ROUNDS] [PARTITIONS...]
#
# ROUNDS defaults to 2, PARTITIONS to `16 1`, taking turns; MESSAGES (per sender) to
# 300. Each run: a fresh Redis
# and two release nodes on free ports; node B holds one member in room `quiet`
# (partition 7 of 16), node A serves the saturated fan-out of bench/README.md (500
# clients, 10 senders × MESSAGES, window 64) in room `main` (partition 8 of 16). Prints one
# line per run: deliveries/s, A's, B's and Redis's CPU seconds during the fan-out (from
# /proc/PID/stat), B's share of A's, and the entries B read from Redis
# (`chat_broker_read_total`): what one more node, whose members are elsewhere, costs.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
shift || true
designs=${*:-16 1}

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
read_total() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '$1 == "chat_broker_read_total" {print $2}'
}
started=()
trap 'kill "${started[@]}" 2> /dev/null || true' EXIT

for round in $(seq "$rounds"); do
  for partitions in $designs; do
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
      > /dev/null &
    redis=$!
    until redis-cli -p "$redis_port" ping > /dev/null 2>&1; do sleep 0.05; done
    node() {
      ./target/release/chat-server --port "$1" --redis-url "redis://127.0.0.1:$redis_port" \
        --redis-partitions "$partitions" --rate-limit 0 --max-connections-per-ip 0 \
        --handshake-rate-per-ip 0 > /dev/null 2>&1 &
    }
    port_a=$(free_port)
    node "$port_a"
    a=$!
    port_b=$(free_port)
    node "$port_b"
    b=$!
    started=("$redis" "$a" "$b")
    healthy "$port_a"
    healthy "$port_b"
    ./target/release/chat-bench --url "ws://127.0.0.1:$port_b" --room quiet \
      idle --clients 1 --hold 3600 > /dev/null 2>&1 &
    quiet=$!
    started+=("$quiet")
    sleep 2
    a_before=$(ticks "$a")
    b_before=$(ticks "$b")
    redis_before=$(ticks "$redis")
    b_read_before=$(read_total "$port_b")
    summary=$(./target/release/chat-bench --url "ws://127.0.0.1:$port_a" fanout \
      --clients 500 --senders 10 --messages "${MESSAGES:-300}" --window 64 2> /dev/null)
    a_cpu=$(( $(ticks "$a") - a_before ))
    b_cpu=$(( $(ticks "$b") - b_before ))
    redis_cpu=$(( $(ticks "$redis") - redis_before ))
    b_read=$(( $(read_total "$port_b") - b_read_before ))
    rate=$(python3 -c 'import json, sys; s = json.loads(sys.argv[1]); r = s["deliveries_per_second"] / 1e6; lost = s["lost_deliveries"]; print(f"{r:.2f} M deliveries/s, lost {lost}")' "$summary")
    tck=$(getconf CLK_TCK)
    python3 -c 'import sys; p, r, a, b, d, t, n, k = sys.argv[1:]; a, b, d, t = int(a), int(b), int(d), int(t); print(f"round {k}, {p} partitions: {r}; node A {a / t:.2f} CPU-s, node B {b / t:.2f} CPU-s ({100 * b / max(a, 1):.1f} % of A), Redis {d / t:.2f} CPU-s; B read {n} entries")' \
      "$partitions" "$rate" "$a_cpu" "$b_cpu" "$redis_cpu" "$tck" "$b_read" "$round"
    kill "$quiet" "$a" "$b" "$redis" 2> /dev/null || true
    wait "$quiet" "$a" "$b" "$redis" 2> /dev/null || true
  done
done
