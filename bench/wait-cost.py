#!/usr/bin/env python3
"""What `WAIT 1` after each append would cost (issue 33): a primary and its replica from
Debian's redis-server on free ports, and the append's shape, a pipeline of stream
entries the size of a chat event, sent with and without a `WAIT 1 1000` at its end.

    python3 bench/wait-cost.py [PIPELINES] [BATCH...]

PIPELINES defaults to 4000 per run, BATCH to `1 64` (events per pipeline: one lone
message, and a node's pipeline under load). Prints, per batch size, for each mode: events
per second through one connection, and the p50 and p99 of a pipeline's round trip.
Both Redis processes run on this machine, so the replica is a loopback hop away: a
replica on another host adds its network round trip to every WAIT.

Plain RESP over a socket: nothing to install but redis-server.
"""

import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(*args):
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Connection:
    def __init__(self, port):
        self.socket = socket.create_connection(("127.0.0.1", port))
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.socket.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                self.buffer += self.socket.recv(65536)
            data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
            return data.decode()
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def pipeline(self, commands):
        self.socket.sendall(b"".join(commands))
        return [self.reply() for _ in commands]


def start(port, *flags):
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", *flags],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            Connection(port).pipeline([command("PING")])
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not start")


def main():
    pipelines = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    batches = [int(arg) for arg in sys.argv[2:]] or [1, 64]
    primary_port, replica_port = free_port(), free_port()
    primary = start(primary_port)
    replica = start(replica_port, "--replicaof", "127.0.0.1", str(primary_port))
    try:
        redis = Connection(primary_port)
        for _ in range(100):
            if redis.pipeline([command("WAIT", 1, 100)])[0] == "1":
                break
        else:
            raise RuntimeError("the replica did not connect")
        # About what one chat event weighs in a partition's stream.
        event = b'{"offset":0,"ts":1764900000000,"id":"42","type":"message","text":"' + b"x" * 120 + b'"}'
        for batch in batches:
            for mode in ("no WAIT", "WAIT 1"):
                appends = [
                    command("XADD", "bench:events", "MAXLEN", "~", 10000, "*", "e", event)
                    for _ in range(batch)
                ]
                if mode == "WAIT 1":
                    appends.append(command("WAIT", 1, 1000))
                took = []
                began = time.perf_counter()
                for _ in range(pipelines):
                    start_at = time.perf_counter()
                    replies = redis.pipeline(appends)
                    took.append(time.perf_counter() - start_at)
                    if mode == "WAIT 1" and replies[-1] != "1":
                        raise RuntimeError(f"WAIT answered {replies[-1]}: the replica lags")
                elapsed = time.perf_counter() - began
                took.sort()
                p50 = statistics.median(took) * 1e6
                p99 = took[int(len(took) * 0.99)] * 1e6
                rate = pipelines * batch / elapsed
                print(
                    f"batch {batch:3}, {mode:7}: {rate:9.0f} events/s, "
                    f"pipeline p50 {p50:7.0f} µs, p99 {p99:7.0f} µs"
                )
    finally:
        replica.terminate()
        primary.terminate()
        replica.wait()
        primary.wait()


if __name__ == "__main__":
    main()
