#!/usr/bin/env python3
"""Our chat-server beside other servers of the same /ws/<id> protocol, in one run.

For each scenario and round, every server is started fresh on a free port, driven by
chat-bench with its pid (so its CPU time is read from /proc), and stopped; the servers
take turns within a round, so a noisy moment of the machine does not land on one of
them only. Prints a table of medians and each server's ratio to ours, and writes every
report to bench/compare-results.json.

    cargo build --release
    npm install --prefix bench/compare        # optional: adds uWebSockets.js
    python3 bench/compare.py [--rounds 3] [--scenarios aligned,spread,light,saturated]
                             [--baseline OLD-chat-server] [--only uWebSockets.js,baseline]

The servers: ours (rate and per-address limits off, as for every benchmark), the
canonical tokio-tungstenite broadcast server (bench/compare/tungstenite_chat.rs), and
uWebSockets.js (bench/compare/uws-server.js) when Node.js and its package are there.
"""

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
UWS = ROOT / "bench" / "compare" / "uws-server.js"

SCENARIOS = {
    # Ten senders firing at the same instants: bursts of ten messages to 500 clients.
    "aligned": ["--clients", "500", "--senders", "10", "--messages", "200", "--rate", "20", "--aligned"],
    # The same offered load, the senders' phases spread over the period.
    "spread": ["--clients", "500", "--senders", "10", "--messages", "200", "--rate", "20"],
    "light": ["--clients", "200", "--senders", "5", "--messages", "100", "--rate", "10"],
    "saturated": ["--clients", "500", "--senders", "10", "--messages", "300", "--window", "64"],
}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ours(binary):
    return lambda port: [
        str(binary), "--port", str(port),
        "--rate-limit", "0", "--max-connections-per-ip", "0", "--handshake-rate-per-ip", "0",
    ]


def servers(baseline):
    found = {
        "chat-server": ours(RELEASE / "chat-server"),
        "tokio-tungstenite": lambda port: [str(RELEASE / "tungstenite-chat"), str(port)],
    }
    node = shutil.which("node")
    if node and (UWS.parent / "node_modules" / "uwebsockets").is_dir():
        found["uWebSockets.js"] = lambda port: [node, str(UWS), str(port)]
    else:
        print("uWebSockets.js left out: run `npm install --prefix bench/compare`", file=sys.stderr)
    if baseline:
        found["baseline"] = ours(Path(baseline).resolve())
    return found


def wait_listening(port, server):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def run_once(command, scenario):
    port = free_port()
    server = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        bench = subprocess.run(
            [str(RELEASE / "chat-bench"), "--url", f"ws://127.0.0.1:{port}",
             "--server-pid", str(server.pid), "fanout", *SCENARIOS[scenario]],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False,
        )
        if not bench.stdout:
            sys.exit(f"chat-bench failed ({bench.returncode}) on {command(port)[0]}")
        return json.loads(bench.stdout)
    finally:
        server.terminate()
        server.wait()


def summary(reports):
    def median(pick):
        return statistics.median(pick(report) for report in reports)

    return {
        "p50_ms": median(lambda r: r["latency"]["p50_us"]) / 1000,
        "p99_ms": median(lambda r: r["latency"]["p99_us"]) / 1000,
        "cpu_us": median(lambda r: r["server_cpu_us_per_delivery"]),
        "per_second": median(lambda r: r["deliveries_per_second"]),
        "lost": sum(r["lost_deliveries"] for r in reports),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--baseline", help="another chat-server binary (an older build) to add")
    parser.add_argument("--only", help="these servers only, comma-separated (chat-server always)")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")
    for name in scenarios:
        if name not in SCENARIOS:
            sys.exit(f"unknown scenario {name}; known: {', '.join(SCENARIOS)}")
    for binary in ("chat-server", "tungstenite-chat", "chat-bench"):
        if not (RELEASE / binary).exists():
            sys.exit(f"no {RELEASE / binary}: run `cargo build --release` first")

    contenders = servers(args.baseline)
    if args.only:
        wanted = {"chat-server", *args.only.split(",")}
        contenders = {name: command for name, command in contenders.items() if name in wanted}
    reports = {scenario: {name: [] for name in contenders} for scenario in scenarios}
    for scenario in scenarios:
        for round_number in range(args.rounds):
            for name, command in contenders.items():
                report = run_once(command, scenario)
                reports[scenario][name].append(report)
                latency = report["latency"]
                print(
                    f"{scenario} round {round_number + 1} {name}: p50 {latency['p50_us']} µs, "
                    f"p99 {latency['p99_us']} µs, {report['server_cpu_us_per_delivery']:.3f} µs "
                    f"CPU/delivery, {report['lost_deliveries']} lost",
                    file=sys.stderr,
                )

    (ROOT / "bench" / "compare-results.json").write_text(json.dumps(reports, indent=1))
    print(f"medians of {args.rounds} rounds; ratio = this server's figure / chat-server's")
    print(f"{'scenario':<10} {'server':<18} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/del':>11} "
          f"{'deliveries/s':>13} {'lost':>5}  ratios p50 / p99 / CPU")
    for scenario in scenarios:
        ours = summary(reports[scenario]["chat-server"])
        for name in contenders:
            figures = summary(reports[scenario][name])
            ratios = " / ".join(
                f"{figures[key] / ours[key]:.2f}" if ours[key] else "-"
                for key in ("p50_ms", "p99_ms", "cpu_us")
            )
            print(f"{scenario:<10} {name:<18} {figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f} "
                  f"{figures['cpu_us']:>11.3f} {figures['per_second']:>13,.0f} {figures['lost']:>5}  "
                  f"{ratios}")


if __name__ == "__main__":
    main()
