"""What the /v1 tests' loopback upstream stubs share: a quiet HTTP/1.1 handler that sends GET and POST to one
`_handle()`, and a threaded server on 127.0.0.1 with a base_url and close()."""
import http.server
import ssl
import threading


class StubHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 (kept-alive connections), no access log; a subclass defines `_handle()` for GET and POST."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        # Over TLS, the handshake here, on the connection's own thread and under a timeout (not in accept(), where
        # a peer that says nothing would hold the server's only thread, and close() with it).
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _body(self):
        length = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(length) if length else b""


class LoopbackStub:
    """A ThreadingHTTPServer on an ephemeral loopback port, served from a daemon thread until close(); over TLS when
    given a server-side ssl.SSLContext (base_url is then https://)."""

    def _serve(self, handler, tls=None):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.tls = tls
        if tls:  # each connection's handshake in its handler's setup(); a failed one ends that connection quietly
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
            self.server.handle_error = lambda request, address: None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server.server_address[1]

    @property
    def base_url(self):
        return f"{'https' if getattr(self, 'tls', None) else 'http'}://127.0.0.1:{self.port}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
