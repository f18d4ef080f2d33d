#!/usr/bin/env bash
# Runs the test suite several times in a row while a chat-bench saturation run keeps
# the machine busy, and prints one line per run: the suite must not flake under load.
#
#   bash bench/suite-under-load.sh [RUNS] [-- extra arguments for cargo test]
#
# RUNS defaults to 5. The load is the saturated fan-out scenario of bench/README.md
# (500 clients, 10 senders, a window of 64), repeated against its own release
# chat-server on a free port until the last run ends. Extra arguments go to
# `cargo test --workspace`, e.g. `-- --include-ignored --skip soak_`.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
[ "${1:-}" = "--" ] && shift

cargo build --release -p chat-server -p chat-bench --quiet || exit 1
cargo test --workspace --no-run --quiet 2> /dev/null || { echo "the tests do not build"; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./target/release/chat-server --port "$port" --rate-limit 0 --max-connections-per-ip 0 \
  --handshake-rate-per-ip 0 > target/suite-under-load-server.log 2>&1 &
server=$!
(
  while kill -0 "$server" 2> /dev/null; do
    ./target/release/chat-bench --url "ws://127.0.0.1:$port" --server-pid "$server" \
      fanout --clients 500 --senders 10 --messages 300 --window 64 > /dev/null 2>&1 || sleep 1
  done
) &
load=$!
trap 'kill $server 2> /dev/null; kill $load 2> /dev/null' EXIT

passed=0
for run in $(seq "$runs"); do
  started=$(date +%s)
  if cargo test --workspace "$@" > "target/suite-under-load-$run.log" 2>&1; then
    passed=$((passed + 1))
    verdict=passed
  else
    verdict="FAILED (target/suite-under-load-$run.log)"
  fi
  tests=$(grep -o '^test result: [a-z]*\. [0-9]* passed; [0-9]* failed' "target/suite-under-load-$run.log" |
    awk '{p += $4; f += $6} END {print p " passed, " f " failed"}')
  echo "run $run: $verdict in $(($(date +%s) - started)) s, $tests; load average $(cut -d' ' -f1 /proc/loadavg)"
done
echo "$passed of $runs runs passed"
[ "$passed" = "$runs" ]
