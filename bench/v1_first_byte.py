#!/usr/bin/env python3
"""Issue 16: a streamed answer's first byte reaches the client within 1 ms of the upstream's, measured.

The upstream stub (a thread of this process, raw sockets) answers each request with an event stream in lockstep: the
head and the first event, then each next event only once the client has read the one before, then [DONE] and the last
chunk. Nothing can be held back on the way without stalling the stream, and the time from the stub's send of an event
to the client's read of it (one clock: this process's monotonic one) is the event's delay on that path:

- direct:          the client → the stub;
- gateway:         the client → dyad-gateway at its defaults (a cached credential: the call runs on the I/O thread
                   that read it) → the stub;
- gateway (pool):  the same with GATEWAY_V1_EVENTED=false: every call on the GATEWAY_V1_THREADS pool (as every https
                   upstream's call is);
- nginx:           the client → nginx (Debian) as v1_proxy_bench.py configures it for streams (proxy_buffering off,
                   the key replaced) → the stub: the floor of a C proxy;
- sketch:          the client → bench/v1_event_loop_sketch.cc → the stub, when it is built (DYAD_SKETCH_BIN).

One client, one kept-alive connection per path, one stream per path per round in a shuffled order (the other work of
this shared machine falls on the paths alike), --rounds rounds after --warm. Per path the p50 / p99 of the first
event's delay (the answer's head with it: the "first byte") and of the second's (mid-stream), and the added delay
against direct at the same percentile, in the same run. Target (issue 16): the first byte within 1 ms of the
upstream's, i.e. added p99 ≤ 1,000 µs.

Usage: python3 bench/v1_first_byte.py [--rounds 20000] [--warm 1000] [--json]
Binaries: DYAD_GATEWAY_BIN and DYAD_SKETCH_BIN as for v1_proxy_bench.py; nginx (scripts/install-deps.sh --test).
"""
import argparse
import json
import pathlib
import random
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_proxy_bench as bench  # noqa: E402  (the gateway's set-up, its tokens and models are shared)

TARGET_ADDED_P99_US = 1000
EVENTS = 2  # the first (with the head) and one mid-stream; each waits for the client to have the one before


def chunk(payload):
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def event(i):
    delta = json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": f"part{i}"}}]})
    return chunk(f"data: {delta}\n\n".encode())


class LockstepStub:
    """A loopback upstream that sends event i+1 only after `ack` is released for event i; `sent` gets each event's
    send time."""

    def __init__(self, wait=10.0):
        self.wait = wait  # for the client's read of the event before (seconds)
        self.ack = threading.Semaphore(0)
        self.sent = []
        self.stalled = 0  # events sent after waiting in vain: an answer held back on the way
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                self._answer(conn)
            except OSError:  # the client went (a test's early close): this connection ends, the stub goes on
                pass

    def _answer(self, conn):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                got = conn.recv(65536)
                if not got:
                    return
                buf += got
            head, buf = buf.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                got = conn.recv(65536)
                if not got:
                    return
                buf += got
            buf = buf[length:]
            if f"Bearer {bench.UPSTREAM_KEY}".encode() not in head:
                conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                continue
            for i in range(EVENTS):
                if i > 0 and not self.ack.acquire(timeout=self.wait):
                    self.stalled += 1
                first = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                self.sent.append(time.monotonic())
                conn.sendall((first if i == 0 else b"") + event(i))
            self.ack.acquire(timeout=self.wait)
            conn.sendall(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    def close(self):
        self.listener.close()


class Client:
    """One kept-alive connection to a path; stream() reads one lockstep stream and returns each event's read time."""

    def __init__(self, port, token, stub, path="/v1/chat/completions"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)  # a stuck path fails, not hangs
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stub = stub
        body = json.dumps({"model": bench.MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]})
        self.request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()

    def _until(self, buf, marker):
        while marker not in buf:
            got = self.sock.recv(65536)
            if not got:
                raise RuntimeError("the connection closed mid-stream")
            buf += got
        return buf

    def stream(self):
        self.sock.sendall(self.request)
        buf, read_at = self._until(b"", b"\r\n\r\n"), []
        if b" 200 " not in buf.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"not a 200: {buf[:200]!r}")
        for i in range(EVENTS):
            buf = self._until(buf, f"part{i}".encode())
            read_at.append(time.monotonic())
            self.stub.ack.release()
        buf = self._until(buf, b"[DONE]")
        self._until(buf, b"0\r\n\r\n")
        return read_at


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(opts):
    stub = LockstepStub()
    work = pathlib.Path(tempfile.mkdtemp(prefix="dyad-first-byte-"))
    gateways = []  # every server started here (bench.Proc)
    try:
        for name, env in (("gateway", {}), ("gateway (pool)", {"GATEWAY_V1_EVENTED": "false"})):
            sub = work / name.replace(" ", "-").replace("(", "").replace(")", "")
            sub.mkdir()
            gw, url = bench.start_gateway(sub, stub.port, extra_env=env)
            gateways.append(gw)
            gw.port = int(url.rsplit(":", 1)[1])
        clients = {"direct": Client(stub.port, bench.UPSTREAM_KEY, stub)}
        for name, gw in zip(("gateway", "gateway (pool)"), gateways):
            clients[name] = Client(gw.port, bench.CLIENT_TOKEN, stub)
        nginx_port = bench.free_port()
        (work / "proxy.conf").write_text(bench.proxy_config(work, nginx_port, stub.port))
        gateways.append(bench.Proc("nginx-proxy", ["nginx", "-p", str(work), "-c", str(work / "proxy.conf")], work,
                                   port=nginx_port))
        clients["nginx"] = Client(nginx_port, bench.CLIENT_TOKEN, stub, bench.STUB_PATH["sse"])
        if bench.SKETCH_BIN.exists():
            sketch_port = bench.free_port()
            gateways.append(bench.Proc("sketch", [str(bench.SKETCH_BIN), str(sketch_port), str(stub.port),
                                                  bench.CLIENT_TOKEN, bench.UPSTREAM_KEY], work, port=sketch_port))
            clients["sketch"] = Client(sketch_port, bench.CLIENT_TOKEN, stub)
        delays = {name: [[] for _ in range(EVENTS)] for name in clients}
        names = list(clients)
        for r in range(opts.warm + opts.rounds):
            random.shuffle(names)
            for name in names:
                before = len(stub.sent)
                read_at = clients[name].stream()
                sent = stub.sent[before:before + EVENTS]
                if r >= opts.warm:
                    for i in range(EVENTS):
                        delays[name][i].append((read_at[i] - sent[i]) * 1e6)
        result = {"rounds": opts.rounds, "stalled": stub.stalled, "paths": {}}
        for name in names:
            d = {}
            for i, what in enumerate(("first", "next")):
                d[what] = {"p50": percentile(delays[name][i], 0.5), "p99": percentile(delays[name][i], 0.99)}
            result["paths"][name] = d
        direct = result["paths"]["direct"]
        for name, d in result["paths"].items():
            for what in ("first", "next"):
                for q in ("p50", "p99"):
                    d[what][f"added_{q}"] = d[what][q] - direct[what][q]
        return result
    finally:
        for gw in gateways:
            gw.stop()
        stub.close()


def table(r):
    out = [f"One client, {r['rounds']} lockstep streams per path (interleaved); delay from the stub's send of an event "
           f"to the client's read of it, µs. Stalled events (held back on the way): {r['stalled']}.", "",
           "| path | first event p50 / p99 | added p50 / p99 | next event p50 / p99 | added p50 / p99 |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for name in ("direct", "gateway", "gateway (pool)", "nginx", "sketch"):
        if name not in r["paths"]:
            continue
        f, n = r["paths"][name]["first"], r["paths"][name]["next"]
        added = lambda x: "—" if name == "direct" else f"+{x['added_p50']:.0f} / +{x['added_p99']:.0f}"
        out.append(f"| {name} | {f['p50']:.0f} / {f['p99']:.0f} | {added(f)} | {n['p50']:.0f} / {n['p99']:.0f} | "
                   f"{added(n)} |")
    worst = max(r["paths"][p]["first"]["added_p99"] for p in ("gateway", "gateway (pool)"))
    out += ["", f"Target: the first byte within {TARGET_ADDED_P99_US} µs of the upstream's (added p99): "
                f"{'met' if worst <= TARGET_ADDED_P99_US and r['stalled'] == 0 else 'NOT met'} "
                f"(worst added p99 {worst:.0f} µs, {worst / TARGET_ADDED_P99_US:.2f}× the target)."]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--warm", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()
    bench.QUIET = True
    result = run(opts)
    print(json.dumps(result) if opts.json else table(result), end="" if not opts.json else "\n")


if __name__ == "__main__":
    main()
