"""What abusive clients cost the server: memory under ping floods, and another
client's latency under floods of continuation frames. Python's standard library only.

Usage:
  chat-server --port 9023 &                  # the defaults, or any flags to compare
  python3 bench/abuse.py ping-flood 9023 $!
  python3 bench/abuse.py continuation-flood 9023 $!

ping-flood: 8 connections send empty pings as fast as the server takes them for
20 s and never read (their receive buffers are 4 KiB); the server's RSS is sampled
every 0.25 s. continuation-flood: a probe client sends a message every 100 ms (within
the default rate limit) and times its echo, first for 15 s alone, then for 15 s while
4 connections each open a message and send empty continuation frames as fast as the
server takes them. Prints one JSON line per scenario.
"""
import json, os, socket, statistics, struct, sys, threading, time

PORT, PID = int(sys.argv[2]), int(sys.argv[3])
SCENARIO = sys.argv[1]


def rss_kib():
    for line in open(f"/proc/{PID}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])


def cpu_seconds():
    fields = open(f"/proc/{PID}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frame(opcode, payload=b"", fin=True):
    """A masked client frame (the mask is zero, which is valid and leaves the bytes)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload


def member(client_id, receive_buffer=None):
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect(("127.0.0.1", PORT))
    sock.sendall(
        f"GET /ws/{client_id} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def flood(sock, chunk, until):
    """Sends `chunk` over and over until `until`, however slowly the server reads."""
    sock.settimeout(0.5)
    while time.time() < until:
        try:
            sock.sendall(chunk)
        except socket.timeout:
            continue
        except OSError:
            return


def ping_flood():
    socks = [member(100 + n, receive_buffer=4096) for n in range(8)]
    chunk = frame(0x9) * 10000
    start_rss = rss_kib()
    until = time.time() + 20
    threads = [threading.Thread(target=flood, args=(s, chunk, until)) for s in socks]
    for t in threads:
        t.start()
    peak = start_rss
    while time.time() < until:
        peak = max(peak, rss_kib())
        time.sleep(0.25)
    for t in threads:
        t.join()
    print(json.dumps({"scenario": "ping-flood", "connections": 8, "seconds": 20,
                      "rss_before_kib": start_rss, "rss_peak_kib": peak,
                      "rss_after_kib": rss_kib()}))


class Probe:
    """Sends a message every 100 ms and times each echo."""

    def __init__(self):
        self.sock = member(1)
        self.buffer = b""
        self.read_frame()  # its own join

    def read_frame(self):
        while True:
            if len(self.buffer) >= 2:
                n, at = self.buffer[1] & 0x7F, 2
                if n == 126:
                    n, at = struct.unpack(">H", self.buffer[2:4])[0], 4
                elif n == 127:
                    n, at = struct.unpack(">Q", self.buffer[2:10])[0], 10
                if len(self.buffer) >= at + n:
                    opcode, payload = self.buffer[0] & 0xF, self.buffer[at:at + n]
                    self.buffer = self.buffer[at + n:]
                    if opcode == 0x9:
                        self.sock.sendall(frame(0xA, payload))
                        continue
                    return payload
            self.buffer += self.sock.recv(65536)

    def run(self, seconds):
        latencies = []
        until = time.time() + seconds
        n = 0
        while time.time() < until:
            text = f"probe {n}".encode()
            sent = time.perf_counter()
            self.sock.sendall(frame(0x1, text))
            while not self.read_frame().endswith(text):
                pass
            latencies.append((time.perf_counter() - sent) * 1000)
            n += 1
            time.sleep(0.1)
        latencies.sort()
        return {"messages": len(latencies),
                "p50_ms": round(statistics.median(latencies), 3),
                "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3)}


def continuation_flood():
    probe = Probe()
    cpu = cpu_seconds()
    idle = probe.run(15)
    idle["server_cpu_s"] = round(cpu_seconds() - cpu, 2)
    floods = [member(200 + n) for n in range(4)]
    for sock in floods:
        sock.sendall(frame(0x1, b"x", fin=False))
    chunk = frame(0x0, fin=False) * 10000
    until = time.time() + 15
    threads = [threading.Thread(target=flood, args=(s, chunk, until)) for s in floods]
    for t in threads:
        t.start()
    cpu = cpu_seconds()
    flooded = probe.run(15)
    flooded["server_cpu_s"] = round(cpu_seconds() - cpu, 2)
    for t in threads:
        t.join()
    print(json.dumps({"scenario": "continuation-flood", "flooders": 4,
                      "idle": idle, "flooded": flooded}))


{"ping-flood": ping_flood, "continuation-flood": continuation_flood}[SCENARIO]()
