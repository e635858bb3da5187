"""Security review of the TLS listener (issue 13): client-certificate identities across a SIGHUP reload, empty
variables, certificates a client CA issued that must still be refused, renegotiation."""
import http.client
import json
import signal
import socket
import ssl
import subprocess

import pytest

from conftest import ADMIN_TOKEN, BINARY
from test_tls import Ca, _name, _pem_key, client_context, pki, tls_env, wait_for_log, write  # noqa: F401


def start_or_refusal(env, tmp_path, admin_key=True):
    """(started, stderr): whether `serve` got as far as listening (then stopped), or its refusal."""
    full = {"PATH": "/usr/bin:/bin", "GATEWAY_PORT": "0", "GATEWAY_DATA_DIR": str(tmp_path / "cfg"),
            "ENCRYPTION_KEY": "ab" * 32}
    if admin_key:
        full["GATEWAY_ADMIN_API_KEY"] = ADMIN_TOKEN
    full.update(env)
    p = subprocess.Popen([BINARY, "serve"], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    started = p.stdout.readline().startswith("listening on")  # "" at exit: refused
    if started:
        p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    return started, p.returncode, err


@pytest.fixture
def client_ca(pki):
    ca = Ca("client-ca")
    cert, key = ca.issue(_name("ci-runner"), server=False)
    files = {"ca": ca, "ca_file": write(pki["dir"] / "client-ca.pem", ca.pem()),
             "ci": (write(pki["dir"] / "ci.pem", cert), write(pki["dir"] / "ci-key.pem", _pem_key(key)))}
    return files


def _mtls_gateway(make_gateway, pki, client_ca, tmp_path):
    tokens = tmp_path / "cert-tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"name": "ci", "role": "viewer", "clientCertSubject": "CN=ci-runner,O=dyad-test"}]}))
    return make_gateway(tls_env(pki, GATEWAY_TLS_CLIENT_CA_FILE=client_ca["ca_file"],
                                GATEWAY_ADMIN_TOKENS_FILE=str(tokens))).start()


def _admin_get(conn):
    conn.request("GET", "/admin/providers")
    r = conn.getresponse()
    r.read()
    return r.status


def test_client_ca_replaced_on_sighup_stops_the_old_identity_on_open_connections(make_gateway, pki, client_ca,
                                                                                 tmp_path):
    # The operator revokes every certificate of the old client CA by replacing the CA file and sending SIGHUP.
    # A client that holds a keep-alive connection made before the reload must not keep its identity: otherwise
    # it keeps admin/viewer access for as long as it sends a request within each idle timeout (no upper bound).
    gw = _mtls_gateway(make_gateway, pki, client_ca, tmp_path)
    ctx = client_context(pki, *client_ca["ci"])
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=ctx, timeout=30)
    assert _admin_get(conn) == 200
    write(pki["dir"] / "client-ca.pem", Ca("new-client-ca").pem())
    gw.proc.send_signal(signal.SIGHUP)
    wait_for_log(gw, "TLS certificate and key reloaded")
    # New connections with the revoked certificate are refused (this part holds today).
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(1)  # TLS 1.3: the refusal of the client certificate arrives after the client's Finished
    # The connection made before the reload: no longer an identity (401), or closed.
    try:
        status = _admin_get(conn)
    except (OSError, http.client.HTTPException):
        status = None
    assert status in (None, 401), f"revoked client certificate still authenticated on an open connection: {status}"
    conn.close()


def test_session_resumed_after_sighup_does_not_carry_the_old_ca(make_gateway, pki, client_ca, tmp_path):
    gw = _mtls_gateway(make_gateway, pki, client_ca, tmp_path)
    ctx = client_context(pki, *client_ca["ci"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # session IDs and tickets without post-handshake messages
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            session = s.session
    # Before the reload the session resumes (so the check below is meaningful).
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as s:
            assert s.session_reused
            session = s.session
    write(pki["dir"] / "client-ca.pem", Ca("new-client-ca").pem())
    gw.proc.send_signal(signal.SIGHUP)
    wait_for_log(gw, "TLS certificate and key reloaded")
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as s:
                s.sendall(b"GET /admin/providers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                s.recv(4096)


def test_empty_client_ca_variable_is_refused_not_mtls_silently_off(pki, tmp_path):
    # GATEWAY_TLS_CLIENT_CA_FILE= (a template that did not expand) must not quietly turn client certificates off,
    # as GATEWAY_HOST= and GATEWAY_DATA_DIR= are refused rather than defaulted.
    started, rc, err = start_or_refusal(tls_env(pki, GATEWAY_TLS_CLIENT_CA_FILE=""), tmp_path)
    assert not started, "started with GATEWAY_TLS_CLIENT_CA_FILE empty: TLS without client certificates"
    assert rc == 2 and "GATEWAY_TLS_CLIENT_CA_FILE" in err, err[-2000:]


@pytest.mark.parametrize("empty", ["GATEWAY_TLS_CERT_FILE", "GATEWAY_TLS_KEY_FILE"])
def test_empty_cert_or_key_variable_is_refused(pki, tmp_path, empty):
    env = tls_env(pki)
    env[empty] = ""
    started, rc, err = start_or_refusal(env, tmp_path)
    assert not started and rc == 2 and empty in err, err[-2000:]


def test_only_certificate_identities_without_client_ca_refuse_the_start(pki, tmp_path):
    # The tokens file names only certificate subjects and no client CA asks for certificates: nobody can log in,
    # which a tokens file of nothing usable already refuses (NobodyCouldLogIn), not a warning.
    tokens = tmp_path / "only-subjects.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "ci", "role": "admin", "clientCertSubject": "CN=ci"}]}))
    started, rc, err = start_or_refusal(tls_env(pki, GATEWAY_ADMIN_TOKENS_FILE=str(tokens)), tmp_path,
                                        admin_key=False)
    assert not started, "started although nobody can log in"
    assert rc == 2 and "GATEWAY_TLS_CLIENT_CA_FILE" in err, err[-2000:]


def _handshake_and_get(gw, ctx):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(4096)


def test_expired_and_server_only_client_certificates_are_refused(make_gateway, pki, client_ca, tmp_path):
    gw = _mtls_gateway(make_gateway, pki, client_ca, tmp_path)
    assert _handshake_and_get(gw, client_context(pki, *client_ca["ci"])).startswith(b"HTTP/1.1 200")
    expired, key = client_ca["ca"].issue(_name("ci-runner"), server=False, expired=True)
    server_only, key2 = client_ca["ca"].issue(_name("ci-runner"), server=True)  # EKU serverAuth only
    for label, cert, k in (("expired", expired, key), ("server-only", server_only, key2)):
        files = (write(pki["dir"] / f"{label}.pem", cert), write(pki["dir"] / f"{label}-key.pem", _pem_key(k)))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake_and_get(gw, client_context(pki, *files))
