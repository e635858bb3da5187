"""Issue 9 item 6 (server half): handlers that wait on a backend do not hold the I/O threads."""
import concurrent.futures
import time
import uuid

import pytest
import requests

from aws_peers import Moto
from conftest import ADMIN_TOKEN, create_provider, data

IO_THREADS = 2


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto-blocking"))
    yield m
    m.stop()


def test_healthz_answers_while_backend_calls_hang(make_gateway, moto):
    alias = f"dyad-key-{uuid.uuid4().hex[:8]}"
    moto.make_key(alias)
    gw = make_gateway(moto.gateway_env(ENCRYPTION_KEY_ID=alias, SECRETS_PREFIX=f"dyad-{uuid.uuid4().hex[:8]}",
                                       GATEWAY_THREADS=str(IO_THREADS), AWS_REQUEST_TIMEOUT_MS="20000",
                                       AWS_MAX_ATTEMPTS="1", GATEWAY_LOG_LEVEL="info")).start()
    witness = create_provider(gw, "witness", {"api_key": "sk-witness"})
    moto.pause()  # SIGSTOP: every call to Secrets Manager or KMS now hangs
    pool = concurrent.futures.ThreadPoolExecutor(IO_THREADS + 2)
    try:
        slow = [pool.submit(requests.post, gw.url + "/admin/secrets/test-connection",
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
                for _ in range(IO_THREADS + 1)]
        time.sleep(1)  # the slow requests are in their handlers, waiting on the stopped peer
        assert not any(f.done() for f in slow)
        for path in ("/healthz", "/metrics", "/healthz"):
            started = time.monotonic()
            r = requests.get(gw.url + path, timeout=10)
            elapsed = time.monotonic() - started
            assert r.status_code == 200 and elapsed < 1.0, f"{path} took {elapsed:.2f}s"
        started = time.monotonic()
        r = requests.get(gw.url + f"/admin/providers/{witness['id']}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                         timeout=10)
        assert r.status_code == 200 and time.monotonic() - started < 1.0  # a registry read stays inline
    finally:
        moto.resume()
        for f in concurrent.futures.as_completed(slow, timeout=90):
            f.result()
        pool.shutdown()
    v = data(gw.call("POST", f"/admin/secrets/providers/{witness['id']}/credentials/validate"))
    assert v["valid"] is True
