#!/usr/bin/env python3
"""Long-lived streams for flowpath's reload-under-traffic test.

usage: e2e-stream-client.py SECONDS [--new URL] URL...

Opens one connection per URL (http://IP:PORT, GET /stream of
e2e-http-server.py), reads for SECONDS, checking every byte against the
server's pattern (byte k is 33 + k % 89), and prints "streaming N" once
every stream has its first bytes. With --new URL, it also opens a short
connection (GET /) to URL every 50 ms and counts how many answered.
At the end it prints one JSON line:
{"streams": [{"url", "bytes", "max_gap_ms", "error"}], "new_attempted",
 "new_ok", "new_errors": [...]}
A stream's error is null unless it broke: reset, closed early, corrupt
data, or silent for more than 5 s (TCP's retransmission backoff, 0.2 + 0.4 +
0.8 + 1.6 s, rides out four lost segments in a row in 3 s; a stream silent
for longer is dead to its user; max_gap_ms reports the longest silence).
"""
import json
import socket
import sys
import threading
import time
import urllib.request

PERIOD = 89
PAT = bytes(33 + k % PERIOD for k in range(PERIOD * 2))

args = sys.argv[1:]
secs = float(args.pop(0))
new_url = None
if args and args[0] == "--new":
    args.pop(0)
    new_url = args.pop(0)
urls = args
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline = None
started = threading.Barrier(len(urls) + 1)
results = [None] * len(urls)


def hostport(url):
    hp = url.split("//", 1)[1].split("/", 1)[0]
    h, _, p = hp.partition(":")
    return h, int(p or 80)


def stream(i, url):
    r = {"url": url, "bytes": 0, "max_gap_ms": 0, "error": None}
    results[i] = r
    first = True
    try:
        s = socket.create_connection(hostport(url), timeout=4)
        s.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
        s.settimeout(0.5)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise OSError("closed before the headers")
            buf += d
        data = buf.split(b"\r\n\r\n", 1)[1]
        off = 0
        last = time.monotonic()
        while True:
            if data:
                o = off % PERIOD
                n = len(data)
                want = (PAT[o:o + PERIOD] * (n // PERIOD + 1))[:n]
                if data != want:
                    raise OSError(f"corrupt data at offset {off}")
                off += n
                r["bytes"] = off
                now = time.monotonic()
                r["max_gap_ms"] = max(r["max_gap_ms"], int((now - last) * 1000))
                last = now
                if first:
                    first = False
                    started.wait()
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                data = s.recv(65536)
            except socket.timeout:
                data = b""
                if time.monotonic() - last > 5:
                    raise OSError("silent for more than 5 s")
                continue
            if not data:
                raise OSError("closed by the other end")
        s.close()
    except Exception as e:  # noqa: BLE001 - every failure is a broken stream
        r["error"] = str(e)
        if first:
            started.abort()


threads = [threading.Thread(target=stream, args=(i, u), daemon=True) for i, u in enumerate(urls)]
for t in threads:
    t.start()
try:
    started.wait(timeout=10)
    print(f"streaming {len(urls)}", flush=True)
except threading.BrokenBarrierError:
    print("not streaming", flush=True)
deadline = time.monotonic() + secs
attempted = ok = 0
errors = []
while time.monotonic() < deadline:
    if new_url:
        attempted += 1
        try:
            with NO_PROXY.open(new_url, timeout=5) as resp:
                if resp.read().startswith(b"hello from "):
                    ok += 1
                else:
                    errors.append("unexpected answer")
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))
    time.sleep(0.05)
for t in threads:
    t.join(timeout=5)
print(json.dumps({"streams": results, "new_attempted": attempted, "new_ok": ok,
                  "new_errors": errors[:5]}), flush=True)
