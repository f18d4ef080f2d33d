"""Server memory while one client never reads: the slow-consumer bound, measured.

Usage (needs `pip install websockets`):
  chat-server --port 9022 --rate-limit 0 &
  python3 bench/slow_consumer.py 9022 $!

One client joins and never reads; another sends 5000 messages of 16 KiB, waiting for
the echo of each, while the server's RSS is sampled from /proc every 5 messages.
"""
import asyncio, sys, websockets
PORT = int(sys.argv[1]); PID = int(sys.argv[2])
def rss():
    for line in open(f"/proc/{PID}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
async def main():
    slow = await websockets.connect(f"ws://127.0.0.1:{PORT}/ws/1", max_size=None)
    talker = await websockets.connect(f"ws://127.0.0.1:{PORT}/ws/2", max_size=None)
    chunk = "z" * 16384
    peak = 0
    print("rss before", rss(), "KiB")
    left_at = None
    for i in range(5000):
        await talker.send(chunk)
        while True:
            m = await talker.recv()
            if m == "Client #1 has left the chat" and left_at is None: left_at = i
            if m.endswith(chunk): break
        if i % 5 == 0:
            peak = max(peak, rss())
    print(f"sent 5000 x 16 KiB = 78 MiB; slow client dropped after {left_at} messages; peak rss {peak} KiB; after {rss()} KiB")
asyncio.run(main())
