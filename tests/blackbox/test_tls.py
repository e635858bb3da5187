"""Issue 13, TLS listener: HTTPS with GATEWAY_TLS_CERT_FILE/KEY_FILE, reload on SIGHUP, client certificates
mapped to identities of the tokens file, and no plain-text listener off loopback.

Certificates are made with `cryptography` (pki.py); clients are curl, Python's ssl/http.client and requests."""
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import ADMIN_TOKEN, BINARY, provider_body
from pki import Ca, name, pem_key, write


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    ca = Ca("server-ca")
    cert, key = ca.issue(name("127.0.0.1"), serial=1001)
    return {"dir": d, "ca": ca, "ca_file": write(d / "ca.pem", ca.pem()),
            "cert_file": write(d / "cert.pem", cert), "key_file": write(d / "key.pem", pem_key(key))}


def tls_env(pki, **extra):
    env = {"GATEWAY_TLS_CERT_FILE": pki["cert_file"], "GATEWAY_TLS_KEY_FILE": pki["key_file"]}
    env.update(extra)
    return env


def https(gw, path="/healthz"):
    return f"https://127.0.0.1:{gw.port}{path}"


def client_context(pki, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=pki["ca_file"])
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def served_serial(gw, ctx):
    """The serial number of the certificate a new connection is served, and that connection (kept alive)."""
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=ctx, timeout=30)
    conn.request("GET", "/healthz")
    r = conn.getresponse()
    assert r.status == 200
    r.read()
    der = conn.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number, conn


def wait_for_log(gw, text, count=1):
    deadline = time.time() + 20
    while time.time() < deadline:
        if gw.logs().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged {count} time(s): {gw.logs()[-2000:]}")


def run(env, tmp_path):
    full = {"PATH": "/usr/bin:/bin", "GATEWAY_PORT": "0", "GATEWAY_DATA_DIR": str(tmp_path / "cfg"),
            "ENCRYPTION_KEY": "ab" * 32, "GATEWAY_ADMIN_API_KEY": ADMIN_TOKEN}
    full.update(env)
    return subprocess.run([BINARY, "serve"], env=full, capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


# --- serving HTTPS -------------------------------------------------------------------------------------------------

def test_curl_and_python_ssl_succeed_with_the_right_ca(make_gateway, pki):
    gw = make_gateway(tls_env(pki)).start()
    out = subprocess.run(["curl", "-sS", "--cacert", pki["ca_file"], https(gw)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "success"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
        with client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
    # Without the CA the server is not trusted; plain HTTP on the port gets no answer.
    out = subprocess.run(["curl", "-sS", https(gw)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 60, out.stderr
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{gw.port}/healthz", timeout=30)
    assert "listening on https://127.0.0.1" in gw.logs()


def test_bearer_token_over_tls(make_gateway, pki):
    gw = make_gateway(tls_env(pki)).start()
    r = requests.get(https(gw, "/admin/providers"), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                     verify=pki["ca_file"], timeout=30)
    assert r.status_code == 200, r.text
    r = requests.post(https(gw, "/admin/providers"), json=provider_body(slug="tls-one"),
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, verify=pki["ca_file"], timeout=30)
    assert r.status_code == 201, r.text
    r = requests.get(https(gw, "/admin/providers"), headers={"Authorization": "Bearer wrong-token-0123456789"},
                     verify=pki["ca_file"], timeout=30)
    assert r.status_code == 401


def test_expired_server_certificate_is_refused_by_clients(make_gateway, pki):
    cert, key = pki["ca"].issue(name("127.0.0.1"), expired=True)
    write(pki["dir"] / "cert.pem", cert)
    write(pki["dir"] / "key.pem", pem_key(key))
    gw = make_gateway(tls_env(pki)).start()
    assert "has expired" in gw.logs()  # said at start, still served: the clients refuse it
    out = subprocess.run(["curl", "-sS", "--cacert", pki["ca_file"], https(gw)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 60 and "expired" in out.stderr, out.stderr
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
            client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1")


def _handshake(gw, ctx):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.version(), s.cipher()[0]


def test_only_tls12_and_up_with_aead_suites(make_gateway, pki):
    gw = make_gateway(tls_env(pki)).start()
    old = client_context(pki)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    # The server's alert, not the client declining to try.
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _handshake(gw, old)
    tls12 = client_context(pki)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = _handshake(gw, tls12)
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)
    cbc = client_context(pki)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        _handshake(gw, cbc)
    assert _handshake(gw, client_context(pki))[0] == "TLSv1.3"


def test_silent_client_does_not_hold_a_slot(make_gateway, pki):
    # One connection allowed; a client that connects and never says hello is dropped after the header timeout,
    # then a real client gets in.
    gw = make_gateway(tls_env(pki, GATEWAY_MAX_CONNECTIONS="1", GATEWAY_HEADER_TIMEOUT_SECONDS="1")).start()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as silent:
        assert silent.recv(1) == b""  # closed by the server, not by our 30 s timeout
    # The slot is free once the server has forgotten the session (just after it closed it).
    deadline = time.time() + 20
    while True:
        try:
            assert requests.get(https(gw), verify=pki["ca_file"], timeout=30).status_code == 200
            break
        except requests.exceptions.ConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def test_connection_cap_applies_to_tls(make_gateway, pki):
    gw = make_gateway(tls_env(pki, GATEWAY_MAX_CONNECTIONS="1")).start()
    _, held = served_serial(gw, client_context(pki))  # kept alive: the one slot
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _handshake(gw, client_context(pki))
    held.request("GET", "/healthz")
    assert held.getresponse().status == 200
    held.close()


def test_sigterm_closes_idle_tls_connections(make_gateway, pki):
    gw = make_gateway(tls_env(pki)).start()
    silent = socket.create_connection(("127.0.0.1", gw.port), timeout=30)  # mid-handshake
    # Accepted in order: once this one has been served, the silent one is a session too (not a backlog entry
    # that closing the listener would reset).
    _, idle = served_serial(gw, client_context(pki))  # kept alive, idle
    assert gw.stop(timeout=30) == 0
    assert "grace period" not in gw.logs()  # every connection closed at once, none waited out
    assert silent.recv(1) == b""
    silent.close()
    idle.close()


# --- reload on SIGHUP ----------------------------------------------------------------------------------------------

def test_sighup_reloads_for_new_connections_and_keeps_old_ones(make_gateway, pki):
    gw = make_gateway(tls_env(pki)).start()
    ctx = client_context(pki)
    serial, old = served_serial(gw, ctx)
    assert serial == 1001
    cert, key = pki["ca"].issue(name("127.0.0.1"), serial=2002)
    write(pki["dir"] / "key.pem", pem_key(key))
    write(pki["dir"] / "cert.pem", cert)
    gw.proc.send_signal(signal.SIGHUP)
    wait_for_log(gw, "TLS certificate and key reloaded")
    serial, new = served_serial(gw, ctx)
    assert serial == 2002
    # The connection made before the reload still works, on its own certificate.
    old.request("GET", "/healthz")
    r = old.getresponse()
    assert r.status == 200
    r.read()
    assert x509.load_der_x509_certificate(old.sock.getpeercert(binary_form=True)).serial_number == 1001
    # A bad file: the reload fails, naming it, and the last good certificate stays.
    write(pki["dir"] / "cert.pem", b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    gw.proc.send_signal(signal.SIGHUP)
    wait_for_log(gw, "TLS reload failed")
    assert f"GATEWAY_TLS_CERT_FILE: '{pki['cert_file']}'" in gw.logs()
    assert served_serial(gw, ctx)[0] == 2002
    # A key that does not match the certificate: refused as well.
    write(pki["dir"] / "cert.pem", cert)
    write(pki["dir"] / "key.pem", pem_key(ec.generate_private_key(ec.SECP256R1())))
    gw.proc.send_signal(signal.SIGHUP)
    wait_for_log(gw, "TLS reload failed", count=2)
    assert "does not match the certificate" in gw.logs()
    assert served_serial(gw, ctx)[0] == 2002
    assert gw.proc.poll() is None
    old.close()
    new.close()


# --- client certificates -------------------------------------------------------------------------------------------

@pytest.fixture
def mtls(make_gateway, pki, tmp_path):
    client_ca = Ca("client-ca")
    files = {"ca": client_ca, "client_ca": write(pki["dir"] / "client-ca.pem", client_ca.pem())}
    for label, subject, issuer in [("ci", name("ci-runner"), client_ca), ("stranger", name("stranger"), client_ca),
                                   ("forged", name("ci-runner"), Ca("other-ca")),
                                   ("tricky", name("ci-runner,O=dyad-test"), client_ca)]:
        cert, key = issuer.issue(subject, server=False)
        files[label] = (write(pki["dir"] / f"{label}.pem", cert), write(pki["dir"] / f"{label}-key.pem", pem_key(key)))
    tokens = tmp_path / "mtls-tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"name": "ci", "role": "viewer", "clientCertSubject": "CN=ci-runner,O=dyad-test"},
        {"name": "ops", "role": "admin", "sha256": hashlib.sha256(b"ops-token-0123456789").hexdigest()}]}))
    gw = make_gateway(tls_env(pki, GATEWAY_TLS_CLIENT_CA_FILE=files["client_ca"],
                              GATEWAY_ADMIN_TOKENS_FILE=str(tokens))).start()
    return gw, files


def _get(gw, pki, cert, path="/admin/providers", method="GET", token=None, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, https(gw, path), cert=cert, verify=pki["ca_file"], headers=headers, timeout=30,
                            **kw)


def test_client_certificate_maps_to_a_viewer(mtls, pki):
    gw, files = mtls
    assert _get(gw, pki, files["ci"]).status_code == 200
    r = _get(gw, pki, files["ci"], method="POST", json=provider_body(slug="by-cert"))
    assert r.status_code == 403 and "identity 'ci' has the viewer role" in r.text
    # A certificate the CA issued to someone the tokens file does not name: no role.
    r = _get(gw, pki, files["stranger"])
    assert r.status_code == 401 and "client certificate names no identity" in r.text
    # A value with an escaped comma is not the two RDNs it looks like.
    assert _get(gw, pki, files["tricky"]).status_code == 401
    # A bearer token decides when present: a valid one is its own identity, an invalid one is refused.
    r = _get(gw, pki, files["stranger"], method="POST", json=provider_body(slug="by-token"), token="ops-token-0123456789")
    assert r.status_code == 201, r.text
    assert _get(gw, pki, files["ci"], token="wrong-token-0123456789").status_code == 401
    audit = [json.loads(line) for line in (gw.data_dir / "audit.log").read_text().splitlines()]
    assert any(e["actor"] == "ci" and e["action"] == "auth.forbidden" for e in audit)  # the certificate's identity
    assert any(e["actor"] == "ops" and e["action"] == "provider.create" for e in audit)


def test_a_post_identified_by_certificate_alone_must_declare_json(mtls, pki):
    """Review 38, B7: a browser holding the certificate could be made to send a cross-site form (no preflight)."""
    gw, files = mtls
    for body, content_type in (("slug=x", "application/x-www-form-urlencoded"), ('{"name":"x"}', "text/plain")):
        r = requests.post(https(gw, "/admin/providers"), data=body, cert=files["ci"], verify=pki["ca_file"],
                          headers={"Content-Type": content_type}, timeout=30)
        assert r.status_code == 415 and r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE", r.text
    # Declared JSON, the certificate's viewer role decides; a bearer token is not held to the media type.
    assert _get(gw, pki, files["ci"], method="POST", json=provider_body(slug="by-cert")).status_code == 403
    r = requests.post(https(gw, "/admin/providers"), data=json.dumps(provider_body(slug="by-token")), cert=files["ci"],
                      verify=pki["ca_file"], timeout=30,
                      headers={"Content-Type": "text/plain", "Authorization": "Bearer ops-token-0123456789"})
    assert r.status_code == 201, r.text


def test_mtls_refuses_missing_and_wrong_ca_certificates(mtls, pki):
    gw, files = mtls
    for cert in (None, files["forged"]):
        with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
            _get(gw, pki, cert, path="/healthz")
    out = subprocess.run(["curl", "-sS", "--cacert", pki["ca_file"], "--cert", files["forged"][0], "--key",
                          files["forged"][1], https(gw)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    wait_for_log(gw, "TLS handshake with 127.0.0.1 failed")  # at debug, for the operator
    out = subprocess.run(["curl", "-sS", "--cacert", pki["ca_file"], "--cert", files["ci"][0], "--key",
                          files["ci"][1], https(gw, "/admin/providers")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "success", out.stderr


def _handshake_and_get(gw, ctx):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(4096)


def test_expired_and_server_only_client_certificates_are_refused(mtls, pki):
    gw, files = mtls
    assert _handshake_and_get(gw, client_context(pki, *files["ci"])).startswith(b"HTTP/1.1 200")
    expired, key = files["ca"].issue(name("ci-runner"), server=False, expired=True)
    server_only, key2 = files["ca"].issue(name("ci-runner"), server=True)  # EKU serverAuth only
    for label, cert, k in (("expired", expired, key), ("server-only", server_only, key2)):
        paths = (write(pki["dir"] / f"{label}.pem", cert), write(pki["dir"] / f"{label}-key.pem", pem_key(k)))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake_and_get(gw, client_context(pki, *paths))


def _admin_get(conn):
    conn.request("GET", "/admin/providers")
    r = conn.getresponse()
    r.read()
    return r.status


def test_client_ca_replaced_on_sighup_ends_certificate_identities_on_open_connections(mtls, pki):
    # The operator revokes every certificate of the old client CA by replacing the CA file and sending SIGHUP.
    # A keep-alive connection made before the reload must not keep its identity: otherwise it keeps its access
    # for as long as it sends a request within each idle timeout (no upper bound).
    gw, files = mtls
    ctx = client_context(pki, *files["ci"])
    conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=ctx, timeout=30)
    assert _admin_get(conn) == 200
    write(pki["dir"] / "client-ca.pem", Ca("new-client-ca").pem())
    gw.proc.send_signal(signal.SIGHUP)
    wait_for_log(gw, "connections authenticated by client certificate close after their current request")
    # New connections with the revoked certificate are refused.
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(1)  # TLS 1.3: the refusal of the client certificate arrives after the client's Finished
    # The connection made before the reload: closed (idle at the reload), or at most a 401 and then closed.
    try:
        status = _admin_get(conn)
    except (OSError, http.client.HTTPException):
        status = None
    assert status in (None, 401), f"revoked client certificate still authenticated on an open connection: {status}"
    conn.close()
    assert gw.proc.poll() is None


def test_session_resumed_after_sighup_does_not_carry_the_old_ca(mtls, pki):
    gw, files = mtls
    ctx = client_context(pki, *files["ci"])
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


def test_sighup_on_plain_http_is_logged_not_fatal(make_gateway):
    gw = make_gateway().start()
    gw.proc.send_signal(signal.SIGHUP)
    wait_for_log(gw, "SIGHUP: plain HTTP, nothing to reload")
    assert requests.get(f"http://127.0.0.1:{gw.port}/healthz", timeout=30).status_code == 200
    assert gw.proc.poll() is None


# --- start-up refusals ---------------------------------------------------------------------------------------------

def start_or_refusal(env, tmp_path, admin_key=True):
    """(started, returncode, stderr): whether `serve` got as far as listening (then stopped), or its refusal."""
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


@pytest.mark.parametrize("empty", ["GATEWAY_TLS_CERT_FILE", "GATEWAY_TLS_KEY_FILE", "GATEWAY_TLS_CLIENT_CA_FILE"])
def test_empty_tls_variable_is_refused_naming_it(pki, tmp_path, empty):
    # GATEWAY_TLS_CLIENT_CA_FILE= (a template that did not expand) must not quietly turn client certificates off,
    # as GATEWAY_HOST= and GATEWAY_DATA_DIR= are refused rather than defaulted.
    env = tls_env(pki)
    env[empty] = ""
    started, rc, err = start_or_refusal(env, tmp_path)
    assert not started, f"started with {empty} empty"
    assert rc == 2 and f"{empty}: is set but empty" in err, err[-2000:]


def test_empty_cert_and_key_do_not_start_plain_http(tmp_path):
    started, rc, err = start_or_refusal({"GATEWAY_TLS_CERT_FILE": "", "GATEWAY_TLS_KEY_FILE": ""}, tmp_path)
    assert not started and rc == 2 and "GATEWAY_TLS_CERT_FILE: is set but empty" in err, err[-2000:]


def test_only_certificate_identities_without_client_ca_refuse_the_start(pki, tmp_path):
    # The tokens file names only certificate subjects and no client CA asks for certificates: nobody can log in,
    # which a tokens file of nothing usable already refuses.
    tokens = tmp_path / "only-subjects.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "ci", "role": "admin", "clientCertSubject": "CN=ci"}]}))
    started, rc, err = start_or_refusal(tls_env(pki, GATEWAY_ADMIN_TOKENS_FILE=str(tokens)), tmp_path,
                                        admin_key=False)
    assert not started, "started although nobody can log in"
    assert rc == 2 and "nobody could log in" in err, err[-2000:]
    for variable in ("GATEWAY_ADMIN_TOKENS_FILE", "GATEWAY_TLS_CLIENT_CA_FILE", "GATEWAY_ADMIN_API_KEY"):
        assert variable in err

def test_plaintext_off_loopback_is_refused_before_binding(tmp_path):
    r = run({"GATEWAY_HOST": "0.0.0.0"}, tmp_path)
    assert r.returncode == 2
    assert "GATEWAY_HOST: '0.0.0.0' is not a loopback address" in r.stderr
    assert "GATEWAY_ALLOW_PLAINTEXT=true" in r.stderr and "GATEWAY_TLS_CERT_FILE" in r.stderr
    assert "listening" not in r.stdout + r.stderr


@pytest.mark.parametrize("missing", ["GATEWAY_TLS_CERT_FILE", "GATEWAY_TLS_KEY_FILE"])
def test_cert_and_key_both_or_neither(pki, tmp_path, missing):
    env = tls_env(pki)
    del env[missing]
    r = run(env, tmp_path)
    assert r.returncode == 2 and f"{missing}: is required" in r.stderr, r.stderr


def test_bad_files_refuse_the_start_naming_variable_and_file(pki, tmp_path):
    key_pem = (pki["dir"] / "key.pem").read_bytes()
    r = run(tls_env(pki, GATEWAY_TLS_KEY_FILE=str(tmp_path / "absent.pem")), tmp_path)
    assert r.returncode == 2 and f"GATEWAY_TLS_KEY_FILE: '{tmp_path / 'absent.pem'}' cannot be read" in r.stderr
    other = write(pki["dir"] / "other-key.pem", pem_key(ec.generate_private_key(ec.SECP256R1())))
    r = run(tls_env(pki, GATEWAY_TLS_KEY_FILE=other), tmp_path)
    assert r.returncode == 2 and f"GATEWAY_TLS_KEY_FILE: '{other}' does not match the certificate" in r.stderr
    r = run(tls_env(pki, GATEWAY_TLS_CERT_FILE=pki["key_file"]), tmp_path)
    assert r.returncode == 2 and f"GATEWAY_TLS_CERT_FILE: '{pki['key_file']}' holds no usable PEM certificate" in r.stderr
    # An encrypted key is refused, without asking for a passphrase.
    key = serialization.load_pem_private_key(key_pem, None)
    enc = write(pki["dir"] / "enc-key.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    r = run(tls_env(pki, GATEWAY_TLS_KEY_FILE=enc), tmp_path)
    assert r.returncode == 2 and "GATEWAY_TLS_KEY_FILE" in r.stderr and "unencrypted" in r.stderr
    bad_ca = write(pki["dir"] / "bad-ca.pem", b"nothing\n")
    r = run(tls_env(pki, GATEWAY_TLS_CLIENT_CA_FILE=bad_ca), tmp_path)
    assert r.returncode == 2 and f"GATEWAY_TLS_CLIENT_CA_FILE: '{bad_ca}'" in r.stderr
    body = key_pem.decode().splitlines()[1]
    for out in (r.stderr, r.stdout):
        assert body not in out


def test_certificate_identities_without_client_ca_are_a_warning(make_gateway, pki, tmp_path):
    tokens = tmp_path / "subject-tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "ci", "role": "viewer", "clientCertSubject": "CN=ci"}]}))
    gw = make_gateway(tls_env(pki, GATEWAY_ADMIN_TOKENS_FILE=str(tokens))).start()
    assert "GATEWAY_TLS_CLIENT_CA_FILE is not set: no client certificate is asked for" in gw.logs()


def test_group_readable_key_is_a_warning(make_gateway, pki):
    os.chmod(pki["key_file"], 0o640)
    gw = make_gateway(tls_env(pki)).start()
    assert f"GATEWAY_TLS_KEY_FILE: '{pki['key_file']}' is readable or writable by group or others (mode 0640)" \
        in gw.logs()
    assert requests.get(https(gw), verify=pki["ca_file"], timeout=30).status_code == 200
