"""Issue 16: the /v1 proxy, driven with the official OpenAI Python SDK against loopback upstream stubs that
check the injected key."""
import gzip
import hashlib
import json
import re
import select
import socket
import ssl
import threading
import time

import openai
import pytest
import requests

from conftest import ADMIN_TOKEN, VIEWER_TOKEN, data
from loopback_stub import LoopbackStub, StubHandler
from pki import Ca, name as cert_name, pem_key, write as write_private

CLIENT_TOKEN = "client-token-" + "c" * 20
LIMITED_TOKEN = "limited-token-" + "l" * 20
MODELS_TOKEN = "models-token-" + "m" * 20  # a models list only: gpt-stub, and stubai's unlisted raw-model
STUB_KEY = "sk-stub-" + "k" * 16
OTHER_KEY = "sk-other-" + "o" * 16


class Stub(LoopbackStub):
    """A threaded loopback upstream: answers OpenAI-style, 401 without its key, records every request."""

    def __init__(self, key, mode="ok", tls=None):
        self.key = key
        self.mode = mode
        self.seen = []
        self.redirect_to = None
        self.stream_closed = threading.Event()  # the gateway closed the connection before the answer's end
        self.release = threading.Event()  # a "hang-stream" or "hold" answer ends when this is set
        # "lockstep": each event waits for the client to have the one before (ack); when each was sent, and
        # whether one waited in vain (the client never got the event before it: the answer was held back).
        self.ack = threading.Semaphore(0)
        self.sent_at = []
        self.waited_in_vain = False
        self.extra_headers = []  # sent with every non-streamed answer
        self.auth = ("Authorization", f"Bearer {key}")  # the header and value a call must carry
        stub = self

        class Handler(StubHandler):
            def _send(self, status, body, ctype="application/json", extra=()):
                raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("x-request-id", "upstream-req-1")
                for k, v in list(extra) + stub.extra_headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self):
                raw = self._body()
                stub.seen.append({"path": self.path, "peer": self.client_address,
                                  "headers": {k.lower(): v for k, v in self.headers.items()},
                                  "all_headers": [(k.lower(), v) for k, v in self.headers.items()], "body": raw})
                if stub.mode == "record-only":
                    return self._send(200, {"recorded": True})
                if self.headers.get(stub.auth[0]) != stub.auth[1]:
                    return self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
                if stub.mode == "redirect":
                    return self._send(302, {"moved": True}, extra=[("Location", stub.redirect_to)])
                if stub.mode == "gzip-chunked":  # a transfer coding the gateway never asked for
                    packed = gzip.compress(b'{"object": "chat.completion"}')
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Transfer-Encoding: gzip, chunked\r\n\r\n" +
                                     f"{len(packed):x}\r\n".encode() + packed + b"\r\n0\r\n\r\n")
                    return
                if stub.mode == "slow":
                    time.sleep(3)
                    return self._send(200, {"late": True})
                if stub.mode == "hold":  # no answer until released, unless the gateway closes first
                    while not stub.release.wait(0.02):
                        if select.select([self.connection], [], [], 0)[0] and not self.connection.recv(1, socket.MSG_PEEK):
                            stub.stream_closed.set()
                            return
                    return self._send(200, {"late": True})
                body = json.loads(raw or b"{}")
                model = body.get("model")
                if self.path.endswith("/embeddings"):
                    return self._send(200, {"object": "list", "model": model, "data": [
                        {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1}})
                if body.get("stream"):
                    return self._stream(model, {"long-stream": 400, "trickle": 200, "lockstep": 8}.get(stub.mode, 3))
                return self._send(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"hello from {model}"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})

            def _stream(self, model, n):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for i in range(n):
                        chunk = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
                                 "choices": [{"index": 0, "delta": {"content": f"part{i} "}, "finish_reason": None}]}
                        if stub.mode == "lockstep" and i > 0 and not stub.ack.acquire(timeout=10):
                            stub.waited_in_vain = True
                        stub.sent_at.append(time.monotonic())
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        if stub.mode in ("long-stream", "trickle"):
                            time.sleep(0.05)
                        if stub.mode == "hang-stream":
                            stub.release.wait(30)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    stub.stream_closed.set()

        self._serve(Handler, tls)


def sha(token):
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def stubs():
    made = []

    def make(key, mode="ok", tls=None):
        s = Stub(key, mode, tls)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def v1(make_gateway, tmp_path, stubs):
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({"tokens": [
        {"name": "app", "role": "client", "sha256": sha(CLIENT_TOKEN)},
        {"name": "limited", "role": "client", "sha256": sha(LIMITED_TOKEN), "providers": ["stubai"]},
        {"name": "models", "role": "client", "sha256": sha(MODELS_TOKEN), "models": ["gpt-stub", "stubai/raw-model"]}]}))

    def start(extra_env=None):
        env = {"GATEWAY_CLIENT_API_KEYS_FILE": str(clients), "GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS": "1500"}
        env.update(extra_env or {})
        return make_gateway(env).start()

    return start


def add_provider(gw, slug, base_url, key, models, type_="http-sdk", enabled=True):
    body = {"name": slug, "slug": slug, "type": type_, "enabled": enabled,
            "models": [{"dyadModelId": d, "adapterModelId": a} for d, a in models],
            "adapterConfig": {"baseUrl": base_url}, "credentials": {"api_key": key}}
    return data(gw.call("POST", "/admin/providers", json=body), 201)


def sdk(gw, token=CLIENT_TOKEN):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0, timeout=20)


def test_routing_injection_and_models(v1, stubs):
    gw = v1()
    main, other = stubs(STUB_KEY), stubs(OTHER_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub-2024")])
    add_provider(gw, "other", other.base_url, OTHER_KEY, [("other-model", "other-model")])
    client = sdk(gw)
    reply = client.chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"X-Client-Trace": "t-1"})
    assert reply.choices[0].message.content == "hello from gpt-stub-2024"
    assert len(main.seen) == 1 and other.seen == []
    seen = main.seen[0]
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {STUB_KEY}"
    assert seen["headers"]["x-client-trace"] == "t-1"
    assert json.loads(seen["body"])["model"] == "gpt-stub-2024"
    # The explicit provider prefix, stripped upstream; any model under it.
    reply = client.chat.completions.create(model="other/brand-new", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "hello from brand-new"
    assert json.loads(other.seen[-1]["body"])["model"] == "brand-new"
    emb = client.embeddings.create(model="gpt-stub", input="abc")
    assert emb.data[0].embedding == [0.1, 0.2]
    ids = sorted((m.id, m.owned_by) for m in client.models.list())
    assert ids == [("gpt-stub", "stubai"), ("other-model", "other")]
    # The client's gateway token never reached an upstream.
    for s in (main, other):
        for req in s.seen:
            assert CLIENT_TOKEN not in json.dumps(req["headers"])
    # Unknown and ambiguous models, in OpenAI's shape.
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"
    add_provider(gw, "twin", other.base_url, OTHER_KEY, [("other-model", "other-model")])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="other-model", messages=[{"role": "user", "content": "x"}])
    assert "twin" in e.value.message
    r = requests.post(gw.url + "/v1/chat/completions", data=b'{"model": "gpt-stub", "model": "other-model"}',
                      headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = requests.post(gw.url + "/v1/chat/completions", data=b'{"model": "gpt-stub", ',
                      headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
    assert r.status_code == 400


@pytest.mark.parametrize("evented", [False, True])
def test_upstream_connections_are_kept_alive_and_reused(v1, stubs, evented):
    """Pooled keep-alive connections per upstream: 20 calls one after another reach the upstream over one connection
    on the pool's path; with the I/O threads (two here), over at most one more per I/O thread (each keeps its own),
    never one per call. (This stub closes the connection after an event stream, so the calls are not streamed.)"""
    gw = v1({"GATEWAY_V1_EVENTED": str(evented).lower(), "GATEWAY_THREADS": "2"})
    upstream = stubs(STUB_KEY)
    add_provider(gw, "stubai", upstream.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    for i in range(20):
        r = post_v1(gw, json.dumps({"model": "gpt-stub", "messages": [{"role": "user", "content": str(i)}]}))
        assert r.status_code == 200, r.text
    ports = {call["peer"][1] for call in upstream.seen}
    assert len(upstream.seen) == 20
    assert len(ports) <= (3 if evented else 1), sorted(ports)


def test_client_role_enforcement(v1, stubs):
    gw = v1()
    main = stubs(STUB_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    add_provider(gw, "cli", main.base_url, STUB_KEY, [("cli-model", "cli-model")], type_="spawn-cli")
    with pytest.raises(openai.PermissionDeniedError):
        sdk(gw, ADMIN_TOKEN).chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "wrong-token-000000000").models.list()
    assert gw.call("GET", "/admin/providers", token=CLIENT_TOKEN).status_code == 403
    assert gw.call("POST", "/admin/secrets/clear-cache", token=CLIENT_TOKEN).status_code == 403
    for odd in ("//v1/models", "/v1/models/"):  # "/v1/./models", "/%76%31/models": requests normalises them (unit-tested)
        assert requests.get(gw.url + odd, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 400, odd
    assert requests.get(gw.url + "/V1/models", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 404
    # The token's allow-list.
    add_provider(gw, "other", main.base_url, STUB_KEY, [("other-model", "other-model")])
    limited = sdk(gw, LIMITED_TOKEN)
    assert [m.id for m in limited.models.list()] == ["gpt-stub"]
    # Outside its lists is as unknown (review round 2, item 6): nothing there is named.
    with pytest.raises(openai.NotFoundError):
        limited.chat.completions.create(model="other-model", messages=[{"role": "user", "content": "x"}])
    data(gw.call("POST", "/admin/providers", json={"name": "on-device", "slug": "ondevice", "type": "local",
                                                   "models": [{"dyadModelId": "local-model", "adapterModelId": "m"}]}),
         201)
    for model, type_ in (("cli-model", "spawn-cli"), ("local-model", "local")):
        with pytest.raises(openai.APIStatusError) as e:
            sdk(gw).chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 501 and f"'{type_}'" in e.value.message, e.value.message
    assert main.seen == []


def test_a_custom_auth_header_and_credential_headers_reach_the_upstream_and_client_copies_do_not(v1, stubs):
    """adapterConfig.auth puts the key in another header (x-api-key, as Anthropic's API takes it) and
    credentialHeaders sends stored fields as headers (organization → OpenAI-Organization): each arrives once, with the
    stored value, on the first call (the pool) and on the next ones (the credential cached: the I/O threads), streamed
    and not. The client's own copies of those headers, its gateway token and its hop-by-hop headers never reach the
    upstream; its other headers do."""
    gw = v1()
    upstream = stubs(STUB_KEY)
    upstream.auth = ("x-api-key", STUB_KEY)
    body = {"name": "anthropicish", "slug": "keyed", "type": "http-sdk",
            "models": [{"dyadModelId": "keyed-model", "adapterModelId": "keyed-model"}],
            "adapterConfig": {"baseUrl": upstream.base_url, "auth": {"header": "x-api-key", "template": "{api_key}"},
                              "credentialHeaders": {"organization": "OpenAI-Organization", "project": "OpenAI-Project"}},
            "credentials": {"api_key": STUB_KEY, "organization": "org-stored", "project": "proj-stored"}}
    data(gw.call("POST", "/admin/providers", json=body), 201)
    sent = {"x-api-key": "client-key", "OpenAI-Organization": "org-client", "OpenAI-Project": "proj-client",
            "Connection": "keep-alive, X-Hop", "X-Hop": "named-by-connection", "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0", "TE": "trailers", "Cookie": "session=client",
            "X-Keep": "kept", "OpenAI-Beta": "assistants=v2"}
    messages = [{"role": "user", "content": "hi"}]
    for stream in (False, False, True):
        r = requests.post(gw.url + "/v1/chat/completions", timeout=20,
                          json={"model": "keyed-model", "stream": stream, "messages": messages},
                          headers={"Authorization": f"Bearer {CLIENT_TOKEN}", **sent})
        assert r.status_code == 200, r.text
        assert ("part2" in r.text) if stream else r.json()["choices"][0]["message"]["content"] == "hello from keyed-model"
    assert len(upstream.seen) == 3
    for call in upstream.seen:
        names = [k for k, _ in call["all_headers"]]
        got = dict(call["all_headers"])
        assert names.count("x-api-key") == 1 and got["x-api-key"] == STUB_KEY, call["all_headers"]
        assert names.count("openai-organization") == 1 and got["openai-organization"] == "org-stored"
        assert names.count("openai-project") == 1 and got["openai-project"] == "proj-stored"
        for never in ("authorization", "x-hop", "keep-alive", "proxy-authorization", "te", "cookie"):
            assert never not in names, (never, call["all_headers"])
        assert got.get("connection", "keep-alive").lower() == "keep-alive", got
        assert got["x-keep"] == "kept" and got["openai-beta"] == "assistants=v2"


def test_a_disabled_provider_is_neither_listed_nor_called(v1, stubs):
    """Disabling a provider cuts it off at once on this instance: its models leave GET /v1/models and calls to them,
    by catalog id or by the provider's prefix, are 404 without reaching the upstream; enabled again, they route."""
    gw = v1()
    upstream = stubs(STUB_KEY)
    add_provider(gw, "stubai", upstream.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    off = add_provider(gw, "offco", upstream.base_url, STUB_KEY, [("off-model", "off-model")], enabled=False)
    client = sdk(gw)
    messages = [{"role": "user", "content": "hi"}]

    def refused():
        assert [m.id for m in client.models.list()] == ["gpt-stub"]
        for model in ("off-model", "offco/off-model", "offco/anything"):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model=model, messages=messages)

    refused()
    assert upstream.seen == []
    merge = {"Content-Type": "application/merge-patch+json"}
    data(gw.call("PATCH", f"/admin/providers/{off['id']}", data=json.dumps({"enabled": True}), headers=merge))
    assert sorted(m.id for m in client.models.list()) == ["gpt-stub", "off-model"]
    assert client.chat.completions.create(model="offco/off-model", messages=messages).choices
    assert len(upstream.seen) == 1
    data(gw.call("PATCH", f"/admin/providers/{off['id']}", data=json.dumps({"enabled": False}), headers=merge))
    refused()
    assert len(upstream.seen) == 1
    # A viewer token is no client either.
    with pytest.raises(openai.PermissionDeniedError):
        sdk(gw, VIEWER_TOKEN).chat.completions.create(model="gpt-stub", messages=messages)


def test_legacy_completions_and_the_body_forwarded_byte_for_byte_but_its_model(v1, stubs):
    """POST /v1/completions routes like the others, to the upstream's /completions. The body goes upstream as the
    client wrote it (spacing, key order, escapes, numbers as spelled), except the `model` string, replaced by the
    adapter's id: no re-serialisation, on the first call (the pool: the credential read) and the next (the credential
    cached: the I/O threads, when the catalog read for the first is still fresh)."""
    gw = v1()
    upstream = stubs(STUB_KEY)
    add_provider(gw, "stubai", upstream.base_url, STUB_KEY, [("legacy", "gpt-3.5-turbo-instruct")])
    raw = ('{ "prompt" : "caf\\u00e9 \\"quoted\\" \u00e9",\n\t"model":"legacy" ,"temperature": 1.50, '
           '"n":1e0, "stop": ["\\n"], "logit_bias": {"50256": -100} }').encode()
    for _ in range(2):
        r = requests.post(gw.url + "/v1/completions", data=raw, timeout=20,
                          headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert upstream.seen[-1]["path"] == "/v1/completions"
        assert upstream.seen[-1]["body"] == raw.replace(b'"legacy"', b'"gpt-3.5-turbo-instruct"'), upstream.seen[-1]
    assert sdk(gw).completions.create(model="stubai/legacy", prompt="say hi", max_tokens=3).model == \
        "gpt-3.5-turbo-instruct"
    assert json.loads(upstream.seen[-1]["body"])["model"] == "gpt-3.5-turbo-instruct"


def test_streaming_passes_chunks(v1, stubs):
    gw = v1()
    main = stubs(STUB_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    stream = sdk(gw).chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "x"}],
                                             stream=True)
    parts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert parts == ["part0 ", "part1 ", "part2 "]
    # Many streams in a row on kept-alive connections.
    for _ in range(5):
        stream = sdk(gw).chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "x"}],
                                                 stream=True)
        assert len([c for c in stream]) == 3
    # The SDK stops reading at [DONE]; the gateway counts a stream when its upstream answer ends (here the
    # stub's close after [DONE]), a moment later: the last one may not be counted yet.
    want = 'dyad_v1_requests_total{model="gpt-stub",provider="stubai",status="200"} 6'
    deadline = time.monotonic() + 10
    metrics = requests.get(gw.url + "/metrics").text
    while want not in metrics and time.monotonic() < deadline:
        time.sleep(0.01)
        metrics = requests.get(gw.url + "/metrics").text
    assert want in metrics, [line for line in metrics.splitlines() if line.startswith("dyad_v1_requests_total")]
    assert "dyad_v1_streamed_bytes_total" in metrics


def test_upstream_down_slow_and_redirect(v1, stubs):
    gw = v1()  # a first-byte timeout of 1.5 s: the slow stub answers after 3
    slow = stubs(STUB_KEY, "slow")
    redirect = stubs(STUB_KEY, "redirect")
    target = stubs(STUB_KEY, "record-only")
    redirect.redirect_to = target.base_url + "/chat/completions"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    add_provider(gw, "down", f"http://127.0.0.1:{closed_port}/v1", STUB_KEY, [("down-model", "down-model")])
    add_provider(gw, "slow", slow.base_url, STUB_KEY, [("slow-model", "slow-model")])
    add_provider(gw, "redir", redirect.base_url, STUB_KEY, [("redir-model", "redir-model")])
    client = sdk(gw)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="down-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502 and e.value.body["type"] == "api_error"
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="slow-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 504
    # The first call reads the credential (the pool), the next has it cached (the I/O threads); streamed and not.
    for n, stream in enumerate((False, False, True), start=1):
        r = requests.post(gw.url + "/v1/chat/completions", json={"model": "redir-model", "messages": [],
                                                                 "stream": stream},
                          headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}, allow_redirects=False)
        assert r.status_code == 302
        assert r.headers["Location"] == target.base_url + "/chat/completions"
        assert len(redirect.seen) == n
    assert target.seen == []  # never followed, so the key never went there


def test_an_upstream_that_does_not_accept_hits_the_connect_timeout(v1):
    """GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS: a listener whose accept queue is full drops the gateway's SYNs; the call is
    a 504 naming the connect timeout (not the first-byte one, not a 502), on the pool's path and then, the credential
    cached, on the I/O threads'."""
    # (Linux drops a SYN to a full accept queue; a kernel that answered it would give the first-byte timeout.)
    gw = v1({"GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS": "200", "GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS": "3000"})
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the accept queue, never accepted
            add_provider(gw, "full", f"http://127.0.0.1:{port}/v1", STUB_KEY, [("full-model", "full-model")])
            for _ in range(2):
                r = post_v1(gw, json.dumps({"model": "full-model", "messages": []}))
                assert r.status_code == 504, r.text
                err = r.json()["error"]
                assert err["code"] == "upstream_timeout" and "connect timeout (200 ms)" in err["message"], err


def test_upstream_errors_do_not_show_the_upstreams_address(v1, stubs):
    """B6: a /v1 client's 502 and 504 name the provider and what went wrong, never the upstream's host, port, IP
    or URL (curl's own words name them); the full words, with the request id, are in the gateway's log at warn."""
    gw = v1({"GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS": "400"})
    slow = stubs(STUB_KEY, "slow")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cases = [("down", f"http://127.0.0.1:{closed_port}/v1", 502, "upstream_unavailable", "could not connect"),
             ("downlocal", f"http://localhost:{closed_port}/v1", 502, "upstream_unavailable", "could not connect"),
             ("slow", slow.base_url, 504, "upstream_timeout", "first-byte timeout")]
    for slug, base_url, _, _, _ in cases:
        add_provider(gw, slug, base_url, STUB_KEY, [(slug + "-model", slug + "-model")])
    for slug, base_url, status, code, kind in cases:
        port = base_url.split(":")[2].split("/")[0]
        for stream in (False, True):
            rid = f"b6-{slug}-{stream}"
            r = requests.post(gw.url + "/v1/chat/completions", timeout=20,
                              json={"model": slug + "-model", "stream": stream, "messages": []},
                              headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "X-Request-Id": rid})
            assert r.status_code == status, (slug, r.status_code, r.text)
            err = r.json()["error"]
            assert err["type"] == "api_error" and err["code"] == code, err
            message = err["message"]
            assert f"'{slug}'" in message and kind in message, message
            for shown in (port, "127.0.0.1", "localhost", base_url, "http://", "/v1"):
                assert shown not in r.text, (shown, r.text)
            logged = [line for line in gw.logs().splitlines() if rid in line]
            assert logged and any("warn" in line and port in line for line in logged), logged


@pytest.mark.parametrize("trust", ["private-ca", "another-ca", "system-store", "expired"])
def test_an_https_upstream_is_called_only_over_a_verified_connection(v1, stubs, tmp_path, trust):
    """TLS verification of upstreams is always on, and GATEWAY_UPSTREAM_CA_FILE adds a private CA: an https upstream
    whose certificate that CA issued gets the key (streamed and not); one whose certificate the gateway cannot
    verify (another CA, only the system's store, expired) gets nothing at all, not even the request, and the client
    a 502 that says TLS without the upstream's address."""
    ca, other = Ca("upstream-ca"), Ca("other-ca")
    cert, key = ca.issue(cert_name("127.0.0.1"), expired=trust == "expired")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(write_private(tmp_path / "cert.pem", cert), write_private(tmp_path / "key.pem", pem_key(key)))
    upstream = stubs(STUB_KEY, tls=server)
    env = {"another-ca": {"GATEWAY_UPSTREAM_CA_FILE": write_private(tmp_path / "other.pem", other.pem())},
           "system-store": {}}.get(trust, {"GATEWAY_UPSTREAM_CA_FILE": write_private(tmp_path / "ca.pem", ca.pem())})
    gw = v1(env)
    assert upstream.base_url.startswith("https://127.0.0.1:")
    add_provider(gw, "tlsai", upstream.base_url, STUB_KEY, [("gpt-tls", "gpt-tls")])
    messages = [{"role": "user", "content": "hi"}]
    if trust == "private-ca":
        assert sdk(gw).chat.completions.create(model="gpt-tls", messages=messages).choices[0].message.content == \
            "hello from gpt-tls"
        parts = [c.choices[0].delta.content for c in sdk(gw).chat.completions.create(
            model="gpt-tls", messages=messages, stream=True) if c.choices and c.choices[0].delta.content]
        assert parts == ["part0 ", "part1 ", "part2 "]
        assert [h["headers"]["authorization"] for h in upstream.seen] == [f"Bearer {STUB_KEY}"] * 2
        return
    for stream in (False, True):
        r = requests.post(gw.url + "/v1/chat/completions", timeout=20,
                          json={"model": "gpt-tls", "stream": stream, "messages": messages},
                          headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == "upstream_unavailable" and "'tlsai'" in err["message"], err
        assert "TLS failure" in err["message"], err
        for shown in (str(upstream.port), "127.0.0.1", "https://"):
            assert shown not in r.text, (shown, r.text)
    assert upstream.seen == []
    # The log has the library's words: the certificate was refused (not a reset or a refused connection).
    assert re.search(r"certificate (verify failed|problem|has expired)", gw.logs(), re.I), gw.logs()[-2000:]


def raw_v1_post(gw, token, body, content_length=None):
    """POST /v1/chat/completions over a raw socket (15 s timeout), its Content-Length len(body) unless given."""
    length = len(body) if content_length is None else content_length
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.settimeout(15)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n" + body)
    return s


def read_until(s, marker):
    """What the socket received up to and including `marker` (fails if the peer closes first)."""
    got = b""
    while marker not in got:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    return got


@pytest.mark.parametrize("evented", [False, True])
def test_each_event_reaches_the_client_before_the_upstream_sends_the_next(v1, stubs, evented):
    """Streaming without buffering: the stub sends each event only once the SDK client has yielded the one before
    (waiting up to 10 s), so an answer held back anywhere on the way, for a size, a time or its end, fails here. On
    the pool and on the I/O threads. The time from the stub's write to the client's event is printed; the issue's
    "first byte within 1 ms of the upstream's" is measured against direct in bench/v1_first_byte.py (no timing
    assertions in tests)."""
    gw = v1({"GATEWAY_V1_EVENTED": str(evented).lower()})
    stub = stubs(STUB_KEY, "lockstep")
    add_provider(gw, "stubai", stub.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    if evented:
        assert post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []})).status_code == 200
    stream = sdk(gw).chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "x"}],
                                             stream=True)
    parts, got_at = [], []
    for c in stream:
        got_at.append(time.monotonic())
        parts.append(c.choices[0].delta.content)
        stub.ack.release()
    assert parts == [f"part{i} " for i in range(8)]
    assert not stub.waited_in_vain
    print("stub write to SDK event, ms:", [round((g - w) * 1000, 3) for g, w in zip(got_at, stub.sent_at)])


@pytest.mark.parametrize("evented", [False, True])
def test_client_disconnect_mid_stream_frees_the_upstream(v1, stubs, evented):
    """On the pool and on the I/O threads (the credential cached by a first call)."""
    gw = v1({"GATEWAY_V1_EVENTED": str(evented).lower()})
    main = stubs(STUB_KEY, "long-stream")
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    if evented:
        assert post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []})).status_code == 200
    body = json.dumps({"model": "gpt-stub", "stream": True, "messages": []}).encode()
    with raw_v1_post(gw, CLIENT_TOKEN, body) as s:
        assert b"Transfer-Encoding: chunked" in read_until(s, b"part1")
    # The stub's next writes fail once the gateway has closed its upstream connection (well before the 400
    # chunks, 20 s, would have ended).
    assert main.stream_closed.wait(15)
    # The gateway still serves.
    assert sdk(gw).models.list().data[0].id == "gpt-stub"


@pytest.mark.parametrize("evented", [False, True])
def test_every_call_has_its_access_line_after_its_answer(v1, stubs, evented):
    """Each /v1 call, plain and streamed, writes its access line (on the I/O threads: once its answer has gone to
    the client, not before) and is counted in dyad_http_requests_total, on the pool and on the I/O threads (the calls
    after the first, whose catalog and credential are at hand)."""
    gw = v1({"GATEWAY_V1_EVENTED": str(evented).lower()})
    main = stubs(STUB_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    before = http_2xx(gw)
    for i in range(3):
        for stream in (False, True):
            r = requests.post(gw.url + "/v1/chat/completions", timeout=20,
                              data=json.dumps({"model": "gpt-stub", "stream": stream, "messages": []}),
                              headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json",
                                       "X-Request-Id": f"line-{i}-{int(stream)}"})
            assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in gw.logs().splitlines() if "POST /v1/chat/completions 200" in line]
        if len(lines) >= 6:
            break
        time.sleep(0.01)
    for i in range(3):
        for stream in (0, 1):
            assert sum(f"rid=line-{i}-{stream} " in line for line in lines) == 1, (i, stream, lines)
    # Counted before the access line is written: all six are in; so is the first /metrics read, and nothing else.
    assert http_2xx(gw) - before == 7


def http_2xx(gw):
    """dyad_http_requests_total for 2xx answers."""
    m = re.search(r'^dyad_http_requests_total\{code="2xx"\} (\S+)$', requests.get(gw.url + "/metrics").text, re.M)
    return float(m.group(1)) if m else 0


def v1_count(gw, status):
    """dyad_v1_requests_total of the stub's model for `status`, 0 when absent."""
    want = f'dyad_v1_requests_total{{model="gpt-stub",provider="stubai",status="{status}"}} '
    for line in requests.get(gw.url + "/metrics").text.splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    return 0


def scrape(gw, name, **labels):
    """The value of metric `name` with exactly `labels` on /metrics, 0 when absent."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "") + " "
    for line in requests.get(gw.url + "/metrics").text.splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    return 0.0


def test_v1_metrics_count_each_call_its_upstream_latency_overhead_and_bytes(v1, stubs):
    """The /v1 metrics as scraped: requests by provider, model and status; the upstream latency by provider and the
    gateway's overhead, once per call; the answer body bytes passed on, to the byte (pool and I/O threads, streamed
    and not; an upstream's 401 counted under its status)."""
    gw = v1()
    upstream = stubs(STUB_KEY)
    add_provider(gw, "stubai", upstream.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    add_provider(gw, "badkey", upstream.base_url, "sk-refused-" + "r" * 12, [("bad-model", "bad-model")])
    received = 0
    for stream in (False, False, True, True):
        r = post_v1(gw, json.dumps({"model": "gpt-stub", "stream": stream, "messages": []}))
        assert r.status_code == 200, r.text
        received += len(r.content)
    assert post_v1(gw, json.dumps({"model": "bad-model", "messages": []})).status_code == 401
    def settled():  # the counts of a call may follow its answer by a moment
        return (v1_count(gw, 200) == 4 and scrape(gw, "dyad_v1_overhead_seconds_count") == 5 and
                scrape(gw, "dyad_v1_streamed_bytes_total", provider="stubai") == received)

    deadline = time.monotonic() + 10
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert v1_count(gw, 200) == 4
    assert scrape(gw, "dyad_v1_requests_total", provider="badkey", model="bad-model", status="401") == 1
    assert scrape(gw, "dyad_v1_upstream_seconds_count", provider="stubai") == 4
    assert scrape(gw, "dyad_v1_upstream_seconds_sum", provider="stubai") > 0
    # The refused key was read from the store for that call (not cached): its 401 is not retried.
    assert scrape(gw, "dyad_v1_upstream_seconds_count", provider="badkey") == 1
    assert [c["path"] for c in upstream.seen].count("/v1/chat/completions") == 5
    assert scrape(gw, "dyad_v1_overhead_seconds_count") == 5
    assert scrape(gw, "dyad_v1_streamed_bytes_total", provider="stubai") == received


@pytest.mark.parametrize("stream,pipelined,evented", [(False, False, False), (True, False, False), (False, True, False),
                                                       (False, False, True), (True, False, True), (False, True, True)])
def test_client_disconnect_before_the_answer_frees_the_upstream(v1, stubs, stream, pipelined, evented):
    """A client that hangs up before the upstream's answer began (a long completion, or a stream's first token)
    stops the upstream call at once, not at the first-byte timeout (30 s here): the upstream's connection is closed
    and the call counted as a 499. Also when it sent its next request first (pipelined), and on both paths: a call
    on the pool (GATEWAY_V1_EVENTED=false), and one on the I/O thread (a call after the first, whose catalog and
    credential are at hand)."""
    gw = v1({"GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS": "30000", "GATEWAY_V1_EVENTED": str(evented).lower()})
    held = stubs(STUB_KEY, "hold")
    add_provider(gw, "stubai", held.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    held.release.set()
    assert post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []})).json() == {"late": True}
    held.release.clear()
    held.seen.clear()
    body = json.dumps({"model": "gpt-stub", "stream": stream, "messages": []}).encode()
    s = raw_v1_post(gw, CLIENT_TOKEN, body)
    deadline = time.monotonic() + 10
    while not held.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert held.seen, "the call never reached the upstream"
    if pipelined:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_TOKEN.encode() +
                  b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.2)  # read by the gateway before the close
    s.close()
    assert held.stream_closed.wait(10), "the upstream connection stayed open after the client left"
    gone = 2 if pipelined else 1  # each request the client sent before it left is a 499
    deadline = time.monotonic() + 10
    while v1_count(gw, 499) != gone and time.monotonic() < deadline:
        time.sleep(0.01)
    assert v1_count(gw, 499) == gone
    # A client that stays gets its answer, on the same gateway.
    held.release.set()
    assert post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []})).json() == {"late": True}


def open_stream(gw, token, model="gpt-stub"):
    """A streamed /v1 call over a raw socket, returned once its first chunk arrived (the call is then in progress)."""
    s = raw_v1_post(gw, token, json.dumps({"model": model, "stream": True, "messages": []}).encode())
    got = read_until(s, b"part0")
    assert got.startswith(b"HTTP/1.1 200"), got
    return s


@pytest.mark.parametrize("evented", [False, True])
def test_an_upstream_silent_mid_stream_is_cut_at_the_idle_timeout(v1, stubs, evented):
    """GATEWAY_UPSTREAM_IDLE_TIMEOUT_MS: an upstream that goes silent inside a streamed answer (here after its first
    event, for up to 30 s) does not hold the client and a /v1 slot until the total timeout: the stream is cut at the
    idle timeout, closed without its last chunk so that the client cannot take it for whole, on the pool and on the
    I/O threads (the credential cached by a first call)."""
    gw = v1({"GATEWAY_UPSTREAM_IDLE_TIMEOUT_MS": "1500", "GATEWAY_V1_EVENTED": str(evented).lower()})
    stall = stubs(STUB_KEY, "hang-stream")
    add_provider(gw, "stubai", stall.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    if evented:
        assert post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []})).status_code == 200
    s = open_stream(gw, CLIENT_TOKEN)
    try:
        got = b""
        while chunk := s.recv(65536):  # the socket's 15 s timeout: the stub stays silent for 30 s
            got += chunk
        assert not got.endswith(b"0\r\n\r\n"), got  # no last chunk: the client cannot take it for whole
    finally:
        s.close()
        stall.release.set()
    assert "idle timeout (1500 ms) passed" in gw.logs(), gw.logs()[-2000:]


def post_v1(gw, body, token=CLIENT_TOKEN, **kw):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return requests.post(gw.url + "/v1/chat/completions", data=body, headers=headers, timeout=20, **kw)


def test_concurrent_v1_calls_are_capped_and_admin_keeps_a_thread(v1, stubs):
    """Review item 1: a cap on /v1 calls in all and per client, within the /v1 pool (apart from /admin's)."""
    gw = v1({"GATEWAY_BLOCKING_THREADS": "1", "GATEWAY_V1_THREADS": "3", "GATEWAY_V1_MAX_CONCURRENT": "2",
             "GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT": "1"})
    hang = stubs(STUB_KEY, "hang-stream")
    add_provider(gw, "stubai", hang.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    held = []
    try:
        held.append(open_stream(gw, CLIENT_TOKEN))
        # The same client again: its own cap (1).
        r = post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []}))
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "1"
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and "GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT" in err["message"]
        held.append(open_stream(gw, LIMITED_TOKEN))
        # Two hanging streams: the third /v1 call is refused at once, whoever makes it.
        with pytest.raises(openai.RateLimitError) as e:
            sdk(gw, LIMITED_TOKEN).chat.completions.create(model="gpt-stub", messages=[])
        assert "GATEWAY_V1_MAX_CONCURRENT" in e.value.body["message"]
        # /admin still answers: /v1 runs on its own pool.
        for _ in range(3):
            assert gw.call("GET", "/admin/providers").status_code == 200
        # /v1/models too: no upstream call, but a catalog reload reads the registry (on a /v1 thread).
        with pytest.raises(openai.RateLimitError):
            sdk(gw).models.list()
    finally:
        hang.release.set()
        for s in held:
            s.close()
    # The slots come back once the streams end.
    deadline = time.time() + 10
    while True:
        r = post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []}))
        if r.status_code != 429 or time.time() > deadline:
            break
    assert r.status_code == 200, r.text


def test_v1_cap_above_the_pool_is_refused_at_start(make_gateway):
    gw = make_gateway({"GATEWAY_V1_THREADS": "4", "GATEWAY_V1_MAX_CONCURRENT": "5"})
    with pytest.raises(RuntimeError):
        gw.start()
    assert gw.proc.wait(10) != 0
    assert "GATEWAY_V1_MAX_CONCURRENT: 5 is not below GATEWAY_V1_THREADS (4)" in gw.logs() + gw.stdout


def test_total_upstream_deadline(v1, stubs):
    """Review item 2: a total deadline on an upstream call: 504 before the first byte, the stream cut after."""
    gw = v1({"GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS": "10000", "GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS": "1000"})
    slow = stubs(STUB_KEY, "slow")  # answers after 3 s: inside the first-byte timeout, past the total
    trickle = stubs(STUB_KEY, "trickle")  # a chunk every 50 ms for 10 s: never idle
    add_provider(gw, "slow", slow.base_url, STUB_KEY, [("slow-model", "slow-model")])
    add_provider(gw, "trickle", trickle.base_url, STUB_KEY, [("trickle-model", "trickle-model")])
    with pytest.raises(openai.APIStatusError) as e:
        sdk(gw).chat.completions.create(model="slow-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 504
    # The upstream call is given what is left of the 1000 ms (a first request also reads the catalog and the
    # credential first), so the message names the total timeout with at most that.
    left = re.search(r"the total timeout \((\d+) ms\) passed", e.value.body["message"])
    assert left and 900 <= int(left.group(1)) <= 1000, e.value.body["message"]
    started = time.time()
    r = post_v1(gw, json.dumps({"model": "trickle-model", "stream": True, "messages": []}), stream=True)
    assert r.status_code == 200
    got = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in r.iter_content(None):
            got += piece
    assert b"part0" in got and b"[DONE]" not in got
    assert time.time() - started < 8


def test_hostile_bodies_are_400_never_500(v1, stubs):
    """Review item 3: a UTF-8 BOM and other odd bodies get a 4xx in OpenAI's shape."""
    gw = v1()
    main = stubs(STUB_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    bodies = [b"\xef\xbb\xbf" + json.dumps({"model": "gpt-stub", "messages": []}).encode(), b"", b"   ", b"[]",
              b'"gpt-stub"', b"null", b'{"model": 5}', b'{"model": ["gpt-stub"]}', b'{"model": null}',
              b'{"model": "gpt-stub", "model": "gpt-stub"}', b'{"model": "gpt-stub"', b"\x00",
              b'{"model": "gpt-stub", "x": "\xff"}']
    for body in bodies:
        r = post_v1(gw, body)
        assert r.status_code == 400, (body, r.status_code, r.text)
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["message"], body
    r = post_v1(gw, bodies[0])
    assert "byte order mark" in r.json()["error"]["message"]
    # Nesting: 256 levels go upstream, deeper is refused by name (the body's parser recurses per level).
    nested = lambda levels: ('{"model": "gpt-stub", "messages": [], "x": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}")
    assert post_v1(gw, nested(256)).status_code == 200
    for levels in (257, 500_000):
        r = post_v1(gw, nested(levels))
        assert r.status_code == 400, (levels, r.status_code)
        assert r.json()["error"]["message"] == "the request body is nested deeper than 256 levels"
    main.seen.clear()
    # Over GATEWAY_MAX_BODY_BYTES (1 MiB): refused from its Content-Length, before the body is read, or once a
    # chunked body passes it; in OpenAI's error shape, which the SDK reads.
    with raw_v1_post(gw, CLIENT_TOKEN, b"{", content_length=2 << 20) as s:
        status, body = read_answer(s)
    assert status == 413, body
    assert json.loads(body) == {"error": {"message": "the request body exceeds 1048576 bytes",
                                          "type": "invalid_request_error", "param": None, "code": "payload_too_large"}}
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.settimeout(15)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_TOKEN.encode() +
                  b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n")
        s.sendall(b"10\r\n" + b" " * 16 + b"\r\n")
        status, body = read_answer(s)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large", body
    assert main.seen == []  # none of them went upstream
    # The gateway still serves.
    assert sdk(gw).chat.completions.create(model="gpt-stub", messages=[]).choices[0].message.content


def read_answer(s):
    """One whole answer with a Content-Length from a raw socket: (status, body)."""
    got = read_until(s, b"\r\n\r\n")
    head, _, body = got.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, head
        body += chunk
    assert len(body) == length, head  # nothing past it: no answer to a request not sent
    return int(head.split(b" ", 2)[1]), body


def test_large_bodies_on_one_kept_alive_connection_arrive_whole(v1, stubs):
    """A kept-alive connection's next request is read on the thread that served the last one, in as many reads as
    its body takes while the bytes are there; a body that pauses midway is waited for by the I/O threads. Each body
    reaches the upstream whole and in order, whether sent one by one, pipelined two at a time, or with a pause."""
    gw = v1()
    main = stubs(STUB_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])

    def request(i, size):
        body = json.dumps({"model": "gpt-stub", "messages": [{"role": "user", "content": f"{i}:" + "abcdefg"[i % 7] * size}]})
        return body.encode(), (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                               CLIENT_TOKEN.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
                               str(len(body)).encode() + b"\r\n\r\n")

    sent = []
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.settimeout(15)
        for i, size in enumerate([100, 5_000, 20_000, 70_000, 300_000, 16_000]):  # one by one
            body, head = request(i, size)
            s.sendall(head + body)
            sent.append(body)
            assert read_answer(s)[0] == 200, i
        pair = [request(10 + i, size) for i, size in enumerate([40_000, 90_000])]  # pipelined
        s.sendall(b"".join(head + body for body, head in pair))
        sent += [body for body, _ in pair]
        assert [read_answer(s)[0] for _ in pair] == [200, 200]
        body, head = request(20, 50_000)  # the body's second half 0.3 s after its first
        s.sendall(head + body[:30_000])
        time.sleep(0.3)
        s.sendall(body[30_000:])
        sent.append(body)
        assert read_answer(s)[0] == 200
    assert [x["body"] for x in main.seen] == sent


def test_upstream_answer_headers_are_filtered(v1, stubs):
    """Review item 4: what the upstream's answer head may pass to the client."""
    gw = v1()
    main = stubs(STUB_KEY)
    main.extra_headers = [("Set-Cookie", "__cf_bm=abc; HttpOnly"), ("Access-Control-Allow-Origin", "*"),
                          ("Strict-Transport-Security", "max-age=31536000"), ("Alt-Svc", 'h3=":443"'),
                          ("x-ratelimit-remaining-requests", "99"), ("openai-processing-ms", "7"),
                          ("Keep-Alive", "timeout=5")]
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    r = post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []}))
    assert r.status_code == 200, r.text
    h = {k.lower(): v for k, v in r.headers.items()}
    assert h["x-ratelimit-remaining-requests"] == "99"
    assert h["openai-processing-ms"] == "7"
    assert h["x-upstream-request-id"] == "upstream-req-1"
    assert h["content-type"].startswith("application/json")
    for gone in ("set-cookie", "access-control-allow-origin", "strict-transport-security", "alt-svc", "keep-alive"):
        assert gone not in h, gone


def test_an_upstream_transfer_coding_other_than_chunked_is_a_502(v1, stubs):
    """`Transfer-Encoding: gzip, chunked` from the upstream (no TE was sent): de-chunked and relayed, the client would
    get gzip bytes with nothing saying so (helper-154). A 502 in OpenAI's shape, streamed or not (curl's path through
    an upstream proxy: a unit test)."""
    gw = v1()
    gz = stubs(STUB_KEY, "gzip-chunked")
    add_provider(gw, "gz", gz.base_url, STUB_KEY, [("gz-model", "gz-model")])
    for stream in (False, True):
        r = requests.post(gw.url + "/v1/chat/completions", timeout=20,
                          json={"model": "gz-model", "stream": stream, "messages": []},
                          headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
        assert r.status_code == 502, (stream, r.status_code, r.content[:200])
        assert r.json()["error"]["type"] == "api_error", r.text
        assert b"\x1f\x8b" not in r.content
    assert len(gz.seen) == 2


def get_raw(gw, target, token=CLIENT_TOKEN):
    """A GET with the target sent exactly as written (requests would normalise it)."""
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.settimeout(15)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  "Connection: close\r\n\r\n".encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_retrieve_model(v1, stubs):
    """Review round 2, item 5: GET /v1/models/{model}, OpenAI's retrieve-model shape, allow-lists as for the list."""
    gw = v1()
    main = stubs(STUB_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub"), ("meta/llama", "llama")])
    add_provider(gw, "other", main.base_url, STUB_KEY, [("other-model", "other-model")])
    m = sdk(gw).models.retrieve("gpt-stub")
    assert (m.id, m.object, m.owned_by) == ("gpt-stub", "model", "stubai") and m.created > 0
    r = requests.get(gw.url + "/v1/models/meta/llama", headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
    assert r.status_code == 200 and r.json() == {"id": "meta/llama", "object": "model", "created": m.created,
                                                 "owned_by": "stubai"}
    with pytest.raises(openai.NotFoundError) as e:
        sdk(gw).models.retrieve("nope")
    assert e.value.body["code"] == "model_not_found" and set(e.value.body) == {"message", "type", "param", "code"}
    # The limited token (providers: stubai) cannot see the other provider's model, nor learn its provider.
    assert sdk(gw, LIMITED_TOKEN).models.retrieve("gpt-stub").owned_by == "stubai"
    with pytest.raises(openai.NotFoundError) as e:
        sdk(gw, LIMITED_TOKEN).models.retrieve("other-model")
    assert "'other'" not in e.value.message and "other\"" not in json.dumps(e.value.body)
    # Odd spellings: an escaped '/', dot segments, an empty id: 400 (not canonical); a case change: 404.
    for target in ("/v1/models/meta%2Fllama", "/v1/models/meta%2fllama", "/v1/models/..", "/v1/models/./gpt-stub",
                   "/v1/models/", "/v1/models//gpt-stub", "/v1/models/gpt-stub/"):
        status, body = get_raw(gw, target)
        assert status == 400, (target, status, body)
        # Refused before any route, in OpenAI's shape (test_non_canonical_v1_paths_answer_in_openai_shape).
        assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}, target
    for target in ("/v1/models/GPT-STUB", "/v1/models/gpt-stub%20", "/v1/models/stubai/gpt-stub",
                   "/v1/models/a/b/c"):
        status, body = get_raw(gw, target)
        assert status == 404, (target, status, body)
    # Role enforcement as for the list.
    status, _ = get_raw(gw, "/v1/models/gpt-stub", token=ADMIN_TOKEN)
    assert status == 403
    status, _ = get_raw(gw, "/v1/models/gpt-stub", token="wrong-token-000000000")
    assert status == 401
    assert main.seen == []


def test_scoped_client_errors_name_nothing_outside_its_lists(v1, stubs):
    """Review round 2, item 6: a client restricted to providers learns no other provider or model name."""
    gw = v1()
    main, hidden = stubs(STUB_KEY), stubs(OTHER_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("shared", "shared"), ("gpt-stub", "gpt-stub")])
    add_provider(gw, "secretco", hidden.base_url, OTHER_KEY, [("shared", "shared"), ("hidden-model", "hidden-model")])
    add_provider(gw, "offco", hidden.base_url, OTHER_KEY, [("off-model", "off-model")], enabled=False)
    limited = sdk(gw, LIMITED_TOKEN)
    # Ambiguous for others, not for it: routed to the provider it may use.
    reply = limited.chat.completions.create(model="shared", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "hello from shared"
    assert len(main.seen) == 1 and hidden.seen == []
    for model in ("hidden-model", "secretco/hidden-model", "secretco/", "offco/off-model", "off-model", "secretco/x"):
        r = post_v1(gw, json.dumps({"model": model, "messages": []}), token=LIMITED_TOKEN)
        assert r.status_code == 404, (model, r.text)
        message = r.json()["error"]["message"]
        assert message == f"model '{model}' is not offered by any enabled provider", message
    # An unscoped client still hears of the ambiguity, with both names.
    r = post_v1(gw, json.dumps({"model": "shared", "messages": []}))
    assert r.status_code == 400 and "secretco" in r.json()["error"]["message"]
    assert hidden.seen == []


def test_a_models_list_does_not_reach_another_providers_credentials_by_prefix(v1, stubs):
    """Review 38, B3: a token listing only the model gpt-stub sent `secretco/gpt-stub`, and the gateway called
    secretco's upstream with secretco's key. A model the provider does not list passes only as the list names it,
    prefix included."""
    gw = v1()
    main, hidden = stubs(STUB_KEY), stubs(OTHER_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    add_provider(gw, "secretco", hidden.base_url, OTHER_KEY, [("hidden-model", "hidden-model")])
    scoped = sdk(gw, MODELS_TOKEN)
    for model in ("gpt-stub", "stubai/gpt-stub", "stubai/raw-model"):
        reply = scoped.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content.startswith("hello from "), (model, reply)
    assert len(main.seen) == 3
    for model in ("secretco/gpt-stub", "secretco/raw-model", "stubai/other-model", "hidden-model", "raw-model"):
        r = post_v1(gw, json.dumps({"model": model, "messages": []}), token=MODELS_TOKEN)
        assert r.status_code == 404, (model, r.text)
        assert r.json()["error"]["message"] == f"model '{model}' is not offered by any enabled provider"
    assert hidden.seen == [] and len(main.seen) == 3
    # The unscoped client still reaches an unlisted model through a prefix.
    assert sdk(gw).chat.completions.create(model="secretco/gpt-stub", messages=[]).choices
    assert len(hidden.seen) == 1


def test_a_catalog_id_that_reads_like_a_prefix_goes_to_the_provider_that_lists_it(v1, stubs):
    """Review 38b: an aggregator's id `stubai/raw-model` beside a provider `stubai` was taken as the prefix form, so
    a token whose models list names that id reached stubai's credentials instead. The catalog id wins, for every
    client; the prefix form is for names no catalog entry offers."""
    gw = v1()
    main, agg = stubs(STUB_KEY), stubs(OTHER_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    add_provider(gw, "agg", agg.base_url, OTHER_KEY, [("stubai/raw-model", "raw-model")])
    for token in (MODELS_TOKEN, CLIENT_TOKEN):
        reply = sdk(gw, token).chat.completions.create(model="stubai/raw-model", messages=[])
        assert reply.choices[0].message.content == "hello from raw-model", token
    assert main.seen == [] and len(agg.seen) == 2
    assert sdk(gw).chat.completions.create(model="stubai/other", messages=[]).choices  # not an id: the prefix form
    assert len(main.seen) == 1


def test_every_listed_model_keeps_a_name_that_reaches_its_provider(v1, stubs):
    """Review 38c: with the catalog id winning outright, an aggregator listing `stubai/gpt-stub` took every call
    named so, and stubai's own gpt-stub had no name left (the ambiguity's advice, `<slug>/gpt-stub`, led to the
    aggregator). The prefix form names a provider that lists the rest; a scoped list naming the whole string then
    passes neither: it is the other provider's id."""
    gw = v1()
    main, agg = stubs(STUB_KEY), stubs(OTHER_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub"), ("raw-model", "raw-model")])
    add_provider(gw, "agg", agg.base_url, OTHER_KEY, [("gpt-stub", "gpt-stub"), ("stubai/gpt-stub", "agg-gpt"),
                                                       ("stubai/raw-model", "agg-raw")])
    client = sdk(gw)
    r = post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []}))
    assert r.status_code == 400 and "stubai, agg" in r.json()["error"]["message"], r.text
    for model, stub, upstream in (("stubai/gpt-stub", main, "gpt-stub"), ("agg/gpt-stub", agg, "gpt-stub"),
                                  ("agg/stubai/gpt-stub", agg, "agg-gpt")):
        before = len(stub.seen)
        reply = client.chat.completions.create(model=model, messages=[])
        assert reply.choices[0].message.content == f"hello from {upstream}", model
        assert len(stub.seen) == before + 1, model
    # MODELS_TOKEN lists `stubai/raw-model`: here the name of stubai's listed raw-model, and agg's id. Neither
    # passes: the list does not name stubai's model by its id, and the name does not reach agg's.
    calls = len(main.seen), len(agg.seen)
    r = post_v1(gw, json.dumps({"model": "stubai/raw-model", "messages": []}), token=MODELS_TOKEN)
    assert r.status_code == 404, r.text
    assert (len(main.seen), len(agg.seen)) == calls


def test_upstream_calls_ignore_proxy_variables(v1, stubs):
    """Review round 2, item 3: a proxy in the environment would hide the upstream's address from the metadata
    check: upstream calls do not use it."""
    trap = stubs(STUB_KEY, "record-only")  # a loopback "proxy" that records whatever reaches it
    proxy_url = f"http://127.0.0.1:{trap.server.server_address[1]}"
    env = {name: proxy_url for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                        "all_proxy")}
    gw = v1(env)
    main = stubs(STUB_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    reply = sdk(gw).chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hello from gpt-stub"
    assert len(main.seen) == 1 and trap.seen == []


def test_upstream_proxy_setting_is_validated(make_gateway):
    for bad in ("proxy.example:3128", "ftp://proxy.example", "http://u:hunter2@p.example/path"):
        gw = make_gateway({"GATEWAY_UPSTREAM_PROXY": bad}, name="d" + str(abs(hash(bad))))
        with pytest.raises(RuntimeError):
            gw.start()
        assert gw.proc.wait(10) != 0
        out = gw.logs() + gw.stdout
        assert "GATEWAY_UPSTREAM_PROXY" in out and "hunter2" not in out, out


def raw_request(gw, method, target, token=CLIENT_TOKEN, body=b""):
    """A request with the target sent exactly as written; (status, parsed JSON body)."""
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        s.settimeout(15)
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                  .encode() + body)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(payload)


def test_non_canonical_v1_paths_answer_in_openai_shape(v1, stubs):
    """A non-canonical spelling of a /v1 path is still refused (400, never routed, the stub never called), in
    OpenAI's error shape so that an OpenAI SDK reads it; other non-canonical targets keep the service's envelope."""
    gw = v1()
    main = stubs(STUB_KEY)
    add_provider(gw, "stubai", main.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    chat = json.dumps({"model": "gpt-stub", "messages": [{"role": "user", "content": "hi"}]}).encode()
    for target in ("//v1/chat/completions", "/v1//chat/completions", "/v1/./chat/completions",
                   "/./v1/chat/completions", "/v1/chat/completions/", "/v1/../v1/chat/completions"):
        for token in (CLIENT_TOKEN, ADMIN_TOKEN, "wrong-token-000000000"):
            status, body = raw_request(gw, "POST", target, token, chat)
            assert status == 400, (target, status, body)
            assert set(body) == {"error"}, (target, body)
            assert set(body["error"]) == {"message", "type", "param", "code"}, (target, body)
            assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "bad_request"
            assert "canonical" in body["error"]["message"]
    status, body = raw_request(gw, "GET", "//v1/models")
    assert status == 400 and body["error"]["code"] == "bad_request"
    # The SDK, pointed at a base URL with a trailing '//', sends /v1//chat/completions and reads the error.
    client = openai.OpenAI(base_url=gw.url + "/v1//", api_key=CLIENT_TOKEN, max_retries=0, timeout=20)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "bad_request" and "canonical" in e.value.body["message"]
    # Not aimed at /v1: the service's envelope.
    for target in ("//admin/providers", "/%76%31/models", "/v1%2fmodels"):
        status, body = raw_request(gw, "GET", target, ADMIN_TOKEN)
        assert status == 400 and body["status"] == "error" and body["error"]["code"] == "BAD_REQUEST", (target, body)
    assert main.seen == []
    # The canonical path still works.
    assert sdk(gw).chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "hi"}]).choices

