#!/usr/bin/env python3
"""Hostile HTTP clients against one running node (started by hostile_http.sh).

  chunked   POST /embed with Transfer-Encoding: chunked, BODY_MB MiB of 16 KiB
            chunks sent as fast as the node takes them (once alone, then
            PARALLEL at once): status, bytes sent, bytes the node read
            before refusing (its event=http_refused log line), node RSS.
  slowloris SLOW_CONNS connections each sending one header line every 3 s
            (reconnecting when the node cuts them), for SECONDS, while
            GET /health/live is probed every 50 ms: its latency and status,
            node RSS.

Prints one JSON object per scenario on stdout.
"""
import argparse
import json
import re
import select
import socket
import threading
import time


def rss_kib(pid):
    """(VmRSS, VmHWM) of `pid` in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


class RssSampler(threading.Thread):
    """Samples the node's VmRSS every 20 ms until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_kib(pid)[0]
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid)[0])

    def stop(self):
        self.halt.set()
        self.join()
        self.peak = max(self.peak, rss_kib(self.pid)[0])
        return self.peak


def refusals(log_path):
    """bytes_read of every event=http_refused reason=too_large line so far."""
    with open(log_path, errors="replace") as f:
        text = f.read()
    return [int(m.group(1)) for m in
            re.finditer(r"event=http_refused reason=too_large bytes_read=(\d+)", text)]


def read_status(sock, timeout):
    """Status code of the response on `sock` (0 if none), reading until the
    end of its headers or of the stream."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = sock.recv(4096)
            if not part:
                break
            data += part
    except OSError:
        pass
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else 0


def chunked_upload(port, total, result):
    """Sends up to `total` bytes of chunked body; stores status and sent bytes."""
    piece = b"4000\r\n" + b"a" * 16384 + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    sock.setblocking(False)
    sent = 0
    offset = 0
    started = time.monotonic()
    while sent < total:
        readable, writable, _ = select.select([sock], [sock], [], 30)
        if readable or not writable:
            break  # the node answered (or closed), or stalled for 30 s
        try:
            n = sock.send(piece[offset:])
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            break  # reset: the answer may still be readable
        sent += n
        offset = (offset + n) % len(piece)
    result["status"] = read_status(sock, 10)
    result["sent_bytes"] = sent
    result["seconds"] = round(time.monotonic() - started, 3)
    sock.close()


def chunked(args, parallel):
    before = refusals(args.log)
    rss_start = rss_kib(args.pid)[0]
    sampler = RssSampler(args.pid)
    sampler.start()
    results = [{} for _ in range(parallel)]
    threads = [threading.Thread(target=chunked_upload,
                                args=(args.port, args.body_mb << 20, results[i]))
               for i in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = sampler.stop()
    # The log line is written right after the refusal; give it a moment.
    deadline = time.monotonic() + 5
    read = refusals(args.log)[len(before):]
    while len(read) < parallel and time.monotonic() < deadline:
        time.sleep(0.05)
        read = refusals(args.log)[len(before):]
    return {
        "scenario": "chunked", "parallel": parallel, "body_mib": args.body_mb,
        "max_body_bytes": args.max_body,
        "statuses": [r.get("status", 0) for r in results],
        "client_sent_bytes": [r.get("sent_bytes", 0) for r in results],
        "seconds": [r.get("seconds", 0) for r in results],
        "node_read_bytes": read,
        "bound_bytes": args.max_body + 64 * 1024,
        "rss_kib": {"start": rss_start, "peak": peak, "end": rss_kib(args.pid)[0]},
    }


def probe_live(port):
    """(status, latency ms) of GET /health/live on a fresh connection."""
    started = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Connection: close\r\n\r\n")
        status = read_status(sock, 2)
        sock.close()
    except OSError:
        status = 0
    return status, (time.monotonic() - started) * 1000


def slowloris(args):
    rss_start = rss_kib(args.pid)[0]
    sampler = RssSampler(args.pid)
    sampler.start()
    stop = threading.Event()
    latencies = []
    statuses = {}

    def prober():
        while not stop.is_set():
            status, ms = probe_live(args.port)
            latencies.append(ms)
            statuses[status] = statuses.get(status, 0) + 1
            stop.wait(0.05)

    def open_slow():
        s = socket.create_connection(("127.0.0.1", args.port))
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        return s

    conns = [open_slow() for _ in range(args.conns)]
    probe = threading.Thread(target=prober, daemon=True)
    probe.start()
    cut = 0
    line = 0
    end = time.monotonic() + args.seconds
    next_line = time.monotonic() + 3
    while time.monotonic() < end:
        readable, _, _ = select.select(conns, [], [], max(0, min(next_line, end) - time.monotonic()))
        for s in readable:  # answered (408) or closed by the node: reconnect
            try:
                s.recv(65536)
            except OSError:
                pass
            s.close()
            conns[conns.index(s)] = open_slow()
            cut += 1
        if time.monotonic() >= next_line:
            for s in conns:
                try:
                    s.sendall(b"X-Slow-%d: a\r\n" % line)
                except OSError:
                    pass
            line += 1
            next_line += 3
    stop.set()
    probe.join()
    for s in conns:
        s.close()
    peak = sampler.stop()
    lat = sorted(latencies)
    return {
        "scenario": "slowloris", "connections": args.conns, "seconds": args.seconds,
        "slow_connections_cut_and_reopened": cut,
        "live_probes": len(lat), "live_statuses": statuses,
        "live_latency_ms": {"max": round(lat[-1], 2) if lat else None,
                            "p50": round(lat[len(lat) // 2], 2) if lat else None,
                            "p99": round(lat[int(len(lat) * 0.99)], 2) if lat else None},
        "rss_kib": {"start": rss_start, "peak": peak, "end": rss_kib(args.pid)[0]},
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--max-body", type=int, required=True)
    p.add_argument("--body-mb", type=int, default=300)
    p.add_argument("--parallel", type=int, default=3)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20)
    args = p.parse_args()
    print(json.dumps(chunked(args, 1)), flush=True)
    if args.parallel > 1:
        print(json.dumps(chunked(args, args.parallel)), flush=True)
    print(json.dumps(slowloris(args)), flush=True)


if __name__ == "__main__":
    main()
