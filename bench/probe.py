#!/usr/bin/env python3
"""Helpers of bench/runtime.sh (standard library only).

  probe.py start PORT LOG -- CMD...   start CMD (own session, output to LOG), print
                                      "<pid> <ms to first 200 from GET /health>"
  probe.py rss PID                    print "<largest process KiB> <total KiB> <processes>"
                                      for PID and its children
  probe.py probe503 PORT SECONDS [N]  while the server is saturated, N clients (default 4)
                                      send POST /chat one after another for SECONDS; print
                                      "<503s> <p50 ms> <p99 ms> <max ms> <200s>" of the 503s
  probe.py openloop PORT SECONDS CONNS RATE
                                      open-loop load: CONNS keep-alive connections send
                                      POST /chat at RATE requests/s in total, each on a fixed
                                      schedule (a rejected client does not retry at once, so the
                                      limiter is saturated but the CPUs are not); print
                                      "<503s> <p50 ms> <p99 ms> <max ms> <200s> <sent/s>"
                                      of the 503s, timed from send to full response
  probe.py logstatus LOG STATUS       from the runtime's JSON log: "<count> <p50 ms> <p99 ms>"
                                      of request_completed.duration_ms for that status
                                      (time inside the server, without client queueing)
"""
import json
import http.client
import os
import socket
import subprocess
import sys
import time


def start(port, log, cmd):
    out = open(log, "ab")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    req = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    while True:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}; see {log}")
        if time.perf_counter() - t0 > 60:
            sys.exit("server did not answer /health within 60 s")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(req)
                head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"):
                    break
        except OSError:
            pass
        time.sleep(0.001)
    ms = (time.perf_counter() - t0) * 1000
    print(proc.pid, f"{ms:.0f}")


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(p))
    return out


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss(pid):
    pids = [pid] + children(pid)
    sizes = [rss_kib(p) for p in pids]
    print(max(sizes), sum(sizes), len(pids))


def probe503(port, seconds, clients=4):
    import threading
    results = []
    threads = [threading.Thread(target=lambda: results.append(probe_client(port, seconds)))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = sorted(x for r in results for x in r[0])
    ok = sum(r[1] for r in results)
    if not lat:
        print(0, "-", "-", "-", ok)
        return
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(len(lat), f"{pick(0.5):.2f}", f"{pick(0.99):.2f}", f"{lat[-1]:.2f}", ok)


def probe_client(port, seconds):
    body = b'{"message": "probe"}'
    lat, ok = [], 0
    end = time.perf_counter() + seconds
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/chat", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            dt = (time.perf_counter() - t0) * 1000
            if r.status == 503:
                lat.append(dt)
            elif r.status == 200:
                ok += 1
            if r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    return lat, ok


def openloop(port, seconds, conns, rate):
    import asyncio

    body = b'{"message": "probe"}'
    req = (b"POST /chat HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    interval = conns / rate
    lat503, counts = [], {"ok": 0, "sent": 0}

    async def client(i):
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        # Spread the connections' schedules evenly over one interval.
        next_at = loop.time() + interval * i / conns
        reader = writer = None
        while True:
            now = loop.time()
            if now >= end:
                break
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at += interval
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                t0 = time.perf_counter()
                writer.write(req)
                counts["sent"] += 1
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length, close = 0, False
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k.lower() == "content-length":
                        length = int(v.strip())
                    elif k.lower() == "connection" and v.strip().lower() == "close":
                        close = True
                await reader.readexactly(length)
                dt = (time.perf_counter() - t0) * 1000
                if status == 503:
                    lat503.append(dt)
                elif status == 200:
                    counts["ok"] += 1
                if close:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    async def main():
        await asyncio.gather(*(client(i) for i in range(conns)))

    asyncio.run(main())
    lat = sorted(lat503)
    sent_rate = counts["sent"] / seconds
    if not lat:
        print(0, "-", "-", "-", counts["ok"], f"{sent_rate:.0f}")
        return
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(len(lat), f"{pick(0.5):.2f}", f"{pick(0.99):.2f}", f"{lat[-1]:.2f}", counts["ok"],
          f"{sent_rate:.0f}")


def logstatus(log, status):
    lat = []
    with open(log, errors="replace") as f:
        for line in f:
            if '"request_completed"' not in line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("status") == status:
                lat.append(float(e["duration_ms"]))
    lat.sort()
    if not lat:
        print(0, "-", "-")
        return
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(len(lat), f"{pick(0.5):.3f}", f"{pick(0.99):.3f}")


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "start":
        sep = sys.argv.index("--")
        start(int(sys.argv[2]), sys.argv[3], sys.argv[sep + 1:])
    elif what == "rss":
        rss(int(sys.argv[2]))
    elif what == "probe503":
        probe503(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 4)
    elif what == "openloop":
        openloop(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    elif what == "logstatus":
        logstatus(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
