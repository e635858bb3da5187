"""Issue 16 performance: /v1 calls run on their own pool (GATEWAY_V1_THREADS), apart from /admin's blocking pool, so
/v1 load never takes /admin's threads and 16 concurrent streams get no 429 at the defaults."""
import json
import time

from test_v1_proxy import CLIENT_TOKEN, STUB_KEY, add_provider, open_stream, post_v1, stubs, v1  # noqa: F401 (fixtures)


def test_sixteen_concurrent_streams_at_the_defaults_get_no_429(v1, stubs):
    gw = v1()
    hang = stubs(STUB_KEY, "hang-stream")
    add_provider(gw, "stubai", hang.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    held = []
    try:
        for _ in range(16):
            held.append(open_stream(gw, CLIENT_TOKEN))  # asserts a 200 and the first chunk
        # Sixteen streams in progress: more /v1 calls and /admin still answer.
        for _ in range(4):
            r = post_v1(gw, json.dumps({"model": "gpt-stub", "messages": []}))
            assert r.status_code == 200, r.text
        assert gw.call("GET", "/admin/providers").status_code == 200
    finally:
        hang.release.set()
        for s in held:
            s.close()


def test_admin_answers_while_every_v1_thread_holds_a_stream(v1, stubs):
    """Hanging streams up to the cap hold all but one /v1 thread, and /admin, on a one-thread blocking pool, still
    answers (reads and writes)."""
    gw = v1({"GATEWAY_V1_THREADS": "5", "GATEWAY_V1_MAX_CONCURRENT": "4", "GATEWAY_BLOCKING_THREADS": "1"})
    hang = stubs(STUB_KEY, "hang-stream")
    add_provider(gw, "stubai", hang.base_url, STUB_KEY, [("gpt-stub", "gpt-stub")])
    held = []
    try:
        for _ in range(4):
            held.append(open_stream(gw, CLIENT_TOKEN))
        for _ in range(3):
            assert gw.call("GET", "/admin/providers").status_code == 200
        other = stubs(STUB_KEY)
        add_provider(gw, "second", other.base_url, STUB_KEY, [("gpt-two", "gpt-two")])  # a write: 201
        assert gw.call("GET", "/healthz").status_code == 200
    finally:
        hang.release.set()
        for s in held:
            s.close()
    # The streams ended: /v1 answers again, once the gateway has seen its clients go (their handlers return
    # when a write fails or the released upstream ends; on a loaded machine that can trail the closes).
    deadline = time.monotonic() + 10
    while True:
        r = post_v1(gw, json.dumps({"model": "gpt-two", "messages": []}))
        if r.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 200, r.text


def test_v1_threads_is_validated_at_start(make_gateway):
    for bad in ("0", "1025", "many", "-4"):
        gw = make_gateway({"GATEWAY_V1_THREADS": bad})
        try:
            gw.start()
        except RuntimeError:
            pass
        else:
            raise AssertionError(f"GATEWAY_V1_THREADS={bad!r} was accepted")
        assert gw.proc.wait(10) != 0
        assert "GATEWAY_V1_THREADS" in gw.logs() + gw.stdout
