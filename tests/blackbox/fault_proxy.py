"""A fault-injecting HTTP proxy on loopback in front of a real peer (moto): it forwards every request as it is, except
that it can answer the next N with AWS's throttling error or a 503, and it records when each request arrived."""
import http.client
import http.server
import socket
import threading
import time
import urllib.parse

from aws_peers import free_port

FAULTS = {
    "throttle": (400, b'{"__type":"ThrottlingException","message":"Rate exceeded"}'),
    "503": (503, b'{"__type":"ServiceUnavailableException","message":"Service is unavailable"}'),
}


class FaultProxy:
    def __init__(self, upstream, delay=0.0):
        """`delay` seconds are added to every forwarded request (a far-away service's round trip)."""
        self.upstream = urllib.parse.urlparse(upstream)
        self.delay = delay
        self.lock = threading.Lock()
        self.fault, self.remaining, self.arrivals = None, 0, []
        self.connections = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # Headers and body go out as separate writes: without this, Nagle's algorithm holds the body until
                # the client's delayed ACK (~40 ms per answer on a kept-alive connection).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with proxy.lock:
                    proxy.connections += 1

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.arrivals.append(time.monotonic())
                    fault = proxy.fault if proxy.remaining > 0 else None
                    proxy.remaining -= 1 if fault else 0
                if fault:
                    status, payload = FAULTS[fault]
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if proxy.delay:
                    time.sleep(proxy.delay)
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                # The signature covers Host: forward it unchanged.
                conn.request("POST", self.path, body, dict(self.headers.items()))
                resp = conn.getresponse()
                payload = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                conn.close()

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, fault, n):
        with self.lock:
            self.fault, self.remaining, self.arrivals = fault, n, []

    def requests_since_fault(self):
        with self.lock:
            return list(self.arrivals)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
