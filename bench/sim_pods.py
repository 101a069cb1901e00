#!/usr/bin/env python3
"""Simulated agent pods for bench/metrics-api.sh: one process serving the runtime's
`GET /metrics` JSON (`in_flight`, `capacity`) on PORTS consecutive ports of HOST.

Every second each pod's in-flight count takes a random step of -2..+2 within 0..CAPACITY; a
fifth of the pods stay idle. The total number of changes between idle and busy, or of a quarter
or more (what would be worth a deletion-cost write without a per-minute budget), is printed to
the file given with --changes every second.
"""
import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--first-port", type=int, required=True)
    p.add_argument("--pods", type=int, default=100)
    p.add_argument("--capacity", type=int, default=8)
    p.add_argument("--changes", required=True, help="file receiving the running change count")
    a = p.parse_args()

    rng = random.Random(42)
    in_flight = [0] * a.pods
    idle = set(range(0, a.pods, 5))
    scrapes = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            index = self.server.server_address[1] - a.first_port
            with lock:
                scrapes[0] += 1
                body = json.dumps({"in_flight": in_flight[index], "capacity": a.capacity}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    for i in range(a.pods):
        server = ThreadingHTTPServer((a.host, a.first_port + i), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    changes = 0
    last_written = [0] * a.pods
    while True:
        time.sleep(1)
        with lock:
            for i in range(a.pods):
                if i in idle:
                    continue
                in_flight[i] = max(0, min(a.capacity, in_flight[i] + rng.randint(-2, 2)))
                old, new = last_written[i], in_flight[i]
                if (old == 0) != (new == 0) or abs(new - old) * 4 >= max(old, new, 1):
                    changes += 1
                    last_written[i] = new
            with open(a.changes, "w") as f:
                f.write(f"{changes} {scrapes[0]}\n")


if __name__ == "__main__":
    main()
