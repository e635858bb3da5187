"""A loopback Azure Key Vault (data plane, api-version 7.5) with its Entra ID and managed-identity endpoints.

No Key Vault emulator installs here, so the black-box tests bring this double, written from Microsoft's REST
reference and proven with Microsoft's own SDKs (test_azure_double.py). One HTTPS server (its own throwaway CA;
`ca_pem` is the file a client trusts) serves the vault (/secrets, /deletedsecrets, /keys) and Entra ID
(/<tenant>/oauth2/v2.0/token, /<tenant>/v2.0/.well-known/openid-configuration) on different paths, so both
vault_url and authority_host are https://127.0.0.1:PORT. A plain-HTTP server (the real IMDS is http) serves IMDS
(/metadata/identity/oauth2/token, header `Metadata: true`), the App Service endpoint (/msi/token with
X-IDENTITY-HEADER, api-version 2019-08-01) and a control API (/_double/...) for a process that runs the double
standalone (`python3 azure_double.py DIR` writes DIR/double.json).

Every vault request needs a bearer token this double issued for https://vault.azure.net in its tenant, not expired
(token_ttl is settable, expire_tokens() ends them all); without one it answers 401 with Key Vault's challenge.
Faults: fail_next(n, status, ops) (429 with Retry-After, 5xx, 403 with Key Vault's RBAC Forbidden body), deny(ops)
(403 until allow()), set_down(mode) (connection reset, 503 or hang), lag (deletes and recoveries complete only after that many
further requests naming the secret, as Key Vault's do asynchronously). counts[op] counts every request by operation name
("get_secret", "unwrap_key", "token", "imds", ...), statuses[(op, status)] what was answered.
"""
import base64
import datetime
import hashlib
import http.server
import importlib
import json
import os
import pathlib
import re
import secrets as pysecrets
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter, deque

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.x509.oid import NameOID

VAULT_RESOURCE = "https://vault.azure.net"
KNOWN_RESOURCES = (VAULT_RESOURCE, "https://management.azure.com")
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
RECOVERABLE_DAYS = 90
MAX_SECRET_BYTES = 25 * 1024
HELP = "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"

# Key Vault RBAC: the data actions each built-in role grants (a subset: the ones this double serves).
SECRET_ACTIONS = {"set_secret": "secrets/setSecret/action", "get_secret": "secrets/getSecret/action",
                  "list_secrets": "secrets/readMetadata/action", "list_secret_versions": "secrets/readMetadata/action",
                  "update_secret": "secrets/writeMetadata/action", "delete_secret": "secrets/delete",
                  "get_deleted_secret": "secrets/readMetadata/action", "list_deleted_secrets":
                  "secrets/readMetadata/action", "recover_deleted_secret": "secrets/recover/action",
                  "purge_deleted_secret": "secrets/purge/action"}
KEY_ACTIONS = {"create_key": "keys/create/action", "get_key": "keys/read", "list_keys": "keys/read",
               "list_key_versions": "keys/read", "rotate_key": "keys/rotate/action", "update_key": "keys/write",
               "wrap_key": "keys/wrap/action", "unwrap_key": "keys/unwrap/action"}
ROLES = {
    "Key Vault Administrator": set(SECRET_ACTIONS.values()) | set(KEY_ACTIONS.values()),
    "Key Vault Secrets Officer": set(SECRET_ACTIONS.values()),
    "Key Vault Secrets User": {"secrets/getSecret/action", "secrets/readMetadata/action"},
    "Key Vault Crypto Officer": set(KEY_ACTIONS.values()),
    "Key Vault Crypto User": {"keys/read", "keys/wrap/action", "keys/unwrap/action"},
    "Key Vault Crypto Service Encryption User": {"keys/read", "keys/wrap/action", "keys/unwrap/action"},
}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_bytes(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------- certificates

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls_files(directory):
    """A throwaway CA and a server certificate for 127.0.0.1/localhost; returns (ca.pem, server.pem, key.pem)."""
    import ipaddress
    directory = pathlib.Path(directory)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (x509.CertificateBuilder().subject_name(_name("dyad azure double CA")).issuer_name(_name("dyad azure double CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem(key))
    return tuple(str(p) for p in paths)


def make_client_certificate(cn="dyad-gateway"):
    """A self-signed client certificate as Entra ID app credentials take it: returns PEM of key + certificate."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return _pem(key) + cert.public_bytes(serialization.Encoding.PEM)


def sign_jwt(private_key, claims, headers):
    header = {"alg": "RS256", "typ": "JWT", **headers}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(sig)


def _verify_jwt(token, public_key):
    """Returns (header, claims) when the RS256/PS256 signature verifies, else None."""
    try:
        h, c, s = token.split(".")
        header, claims = json.loads(unb64url(h)), json.loads(unb64url(c))
        data, sig = (h + "." + c).encode(), unb64url(s)
        if header.get("alg") == "RS256":
            public_key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        elif header.get("alg") == "PS256":
            public_key.verify(sig, data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:
            return None
        return header, claims
    except (ValueError, InvalidSignature, TypeError):
        return None


def _jwt_header(token):
    try:
        return json.loads(unb64url(token.split(".")[0])), json.loads(unb64url(token.split(".")[1]))
    except (ValueError, IndexError):
        return None, None


class Reply(Exception):
    """An answer decided early (an error): status, JSON body, extra headers."""

    def __init__(self, status, body=None, headers=None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def kv_error(status, code, message, inner=None):
    err = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return Reply(status, {"error": err})


def aad_error(status, error, code, description):
    return Reply(status, {"error": error, "error_description": f"AADSTS{code}: {description}",
                          "error_codes": [code], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                          "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())})


# ---------------------------------------------------------------------------------------------------- the double

def forget_sdk_challenges():
    """The Key Vault SDKs keep each vault URL's auth challenge (its tenant) process-wide: a double started on the port
    of an earlier, stopped one would otherwise be asked for tokens of the earlier double's tenant, which the SDK's
    credential refuses. With none kept, the SDK asks the vault again (a 401 challenge) and gets this double's."""
    for name in ("azure.keyvault.secrets._shared.http_challenge_cache", "azure.keyvault.keys._shared.http_challenge_cache"):
        try:
            importlib.import_module(name).clear()
        except ImportError:  # the SDK is not installed: nothing kept
            pass


class AzureDouble:
    """The vault, its tenant and identities; all state behind one lock. start() before use, stop() after."""

    def __init__(self, workdir=None, tenant_id=None, token_ttl=3600, identity=None):
        """identity: another AzureDouble whose tenant, apps and tokens this vault shares (a second vault, as for
        AZURE_KEY_VAULT_KEY_URL): its challenge then names that double's authority."""
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="azure-double-")
        self.workdir = pathlib.Path(workdir or self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.tenant_id = identity.tenant_id if identity else tenant_id or str(uuid.uuid4())
        self.token_ttl = token_ttl
        self.lock = threading.Lock()
        if identity:  # one CA for both, as a client trusting one bundle would see
            self.ca_pem, self._server_pem, self._server_key = identity.ca_pem, identity._server_pem, identity._server_key
        else:
            self.ca_pem, self._server_pem, self._server_key = make_tls_files(self.workdir)
        self.secrets = {}          # name -> [version dicts], newest last
        self.deleted_secrets = {}  # name -> {"versions": [...], "deletedDate", "scheduledPurgeDate"}
        self.keys = {}             # name -> [version dicts], newest last
        shared = identity.__dict__ if identity else {}
        # client_id -> {"secret", "certs": {b64url sha1/sha256 thumbprint: public key}, "federated": {(iss, sub)}}
        self.apps = shared.get("apps", {})
        self.issuers = shared.get("issuers", {})  # issuer -> private key that signs its federated tokens
        self.managed = shared.get("managed", {})  # client_id -> object id; the first one is the default identity
        self.app_service_header = shared.get("app_service_header") or pysecrets.token_hex(16)
        self.tokens = shared.get("tokens", {})    # access token -> {"aud", "exp", "appid", "tid"}
        self.roles = shared.get("roles", {})      # client_id -> set of role names (only consulted when enforce_rbac)
        # Deletes and recoveries complete asynchronously in Key Vault: for `lag` requests naming the secret after
        # one, it reads as not there yet and a PUT is refused (409 ObjectIsBeingDeleted / ObjectIsBeingRecovered).
        self.lag = 0
        self._pending = {}         # secret name -> ["deleting" | "recovering", requests left]
        self.enforce_rbac = False
        self.counts = Counter()
        self.statuses = Counter()
        self.api_versions = Counter()
        self.history = deque(maxlen=100000)  # (time.monotonic(), op, status) of every answer, oldest first
        self._up = threading.Event()
        self._up.set()
        self._faults = []          # [remaining, status, ops or None, retry_after]
        self._denied = set()
        self.down = None           # None, "reset" or "503"
        self._servers = []

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        forget_sdk_challenges()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self._server_pem, self._server_key)
        tls = _Server(("127.0.0.1", 0), self)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
        plain = _Server(("127.0.0.1", 0), self)
        self._servers = [tls, plain]
        self.port, self.http_port = tls.server_address[1], plain.server_address[1]
        for s in self._servers:
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self):
        self._up.set()  # release requests held by a "hang"
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers = []
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def vault_url(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority_host(self):
        return self.identity.authority_host if self.identity else f"https://127.0.0.1:{self.port}"

    @property
    def imds_endpoint(self):
        """What AZURE_POD_IDENTITY_AUTHORITY_HOST (azure-identity's IMDS override) takes."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def app_service_endpoint(self):
        """IDENTITY_ENDPOINT; IDENTITY_HEADER is app_service_header."""
        return f"http://127.0.0.1:{self.http_port}/msi/token"

    @property
    def token_endpoint(self):
        return f"{self.authority_host}/{self.tenant_id}/oauth2/v2.0/token"

    # ------------------------------------------------------------------ identities and roles
    def add_app(self, client_id=None, secret=None, certificate_pem=None):
        """Registers an app (service principal) with a client secret and/or a certificate (PEM)."""
        client_id = client_id or str(uuid.uuid4())
        with self.lock:
            app = self.apps.setdefault(client_id, {"secret": None, "certs": {}, "federated": set()})
            if secret is not None:
                app["secret"] = secret
            if certificate_pem is not None:
                data = certificate_pem if isinstance(certificate_pem, bytes) else certificate_pem.encode()
                cert = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE-----"):])
                for algo in (hashes.SHA1(), hashes.SHA256()):
                    app["certs"][b64url(cert.fingerprint(algo))] = cert.public_key()
        return client_id

    def add_federated(self, client_id, issuer, subject):
        """A federated identity credential on the app: tokens of `issuer` for `subject` (workload identity)."""
        self.add_app(client_id)
        with self.lock:
            if issuer not in self.issuers:
                self.issuers[issuer] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.apps[client_id]["federated"].add((issuer, subject))

    def federated_token(self, issuer, subject, audience=FEDERATED_AUDIENCE, ttl=3600, key=None):
        """A token `issuer` would mint for `subject` (what a Kubernetes projected service-account token is)."""
        now = int(time.time())
        key = key or self.issuers[issuer]
        return sign_jwt(key, {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now,
                              "exp": now + ttl}, {"kid": "double"})

    def add_managed_identity(self, client_id=None):
        client_id = client_id or str(uuid.uuid4())
        with self.lock:
            self.managed[client_id] = str(uuid.uuid4())
        return client_id

    def assign_role(self, client_id, role):
        if role not in ROLES:
            raise ValueError(f"unknown role {role}")
        with self.lock:
            self.roles.setdefault(client_id, set()).add(role)

    def issue_token(self, appid, resource=VAULT_RESOURCE, ttl=None):
        token = b64url(os.urandom(32))
        ttl = self.token_ttl if ttl is None else ttl
        with self.lock:
            self.tokens[token] = {"aud": resource, "exp": time.time() + ttl, "appid": appid, "tid": self.tenant_id}
        return token, ttl

    def expire_tokens(self):
        with self.lock:
            for t in self.tokens.values():
                t["exp"] = 0

    # ------------------------------------------------------------------ faults and counters
    def fail_next(self, n, status=429, ops=None, retry_after=1):
        """The next n requests (of the given operations, or any) answer `status` (429 with Retry-After, 5xx, 403)."""
        with self.lock:
            self._faults.append([n, status, set(ops) if ops else None, retry_after])

    def deny(self, ops):
        """Those operations answer 403 ForbiddenByRbac until allow()."""
        with self.lock:
            self._denied |= set(ops)

    def allow(self, ops=None):
        with self.lock:
            self._denied = set() if ops is None else self._denied - set(ops)

    def set_down(self, mode="reset"):
        """mode: "reset" (connections closed unanswered), "503", "hang" (requests wait unanswered until the double
        is up again, at most 60 s, then are dropped), or None (up again)."""
        with self.lock:
            self.down = mode
            (self._up.clear if mode == "hang" else self._up.set)()

    def clear_faults(self):
        """Back to a healthy vault: no pending faults, nothing denied, up, RBAC not enforced."""
        with self.lock:
            self._faults, self._denied, self.down, self.enforce_rbac = [], set(), None, False
            self._up.set()
            self.lag, self._pending = 0, {}

    def reset_counts(self):
        with self.lock:
            self.history.clear()
            self.counts.clear()
            self.statuses.clear()
            self.api_versions.clear()

    def times(self, op):
        """When each answer to `op` was sent (time.monotonic()), oldest first."""
        with self.lock:
            return [t for t, o, _ in self.history if o == op]

    def count(self, op, status=None):
        with self.lock:
            return self.counts[op] if status is None else self.statuses[(op, status)]

    def _take_fault(self, op):
        with self.lock:
            if op in self._denied:
                return 403, 0
            for f in self._faults:
                if f[0] > 0 and (f[2] is None or op in f[2]):
                    f[0] -= 1
                    return f[1], f[3]
            return None, 0

    # ------------------------------------------------------------------ request entry
    def handle(self, method, raw_path, headers, body, tls):
        """Returns (status, body dict or None, headers); raises ConnectionAbortedError to drop the connection."""
        url = urllib.parse.urlsplit(raw_path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        if parts[:1] == ["_double"]:
            return self._control(method, parts[1:], body)
        op, call = self._route(method, parts, tls)
        with self.lock:
            self.counts[op] += 1
            down = self.down
        if down == "hang":
            self._up.wait(60)
            raise ConnectionAbortedError
        if down == "reset":
            raise ConnectionAbortedError
        try:
            if down == "503":
                raise kv_error(503, "ServiceUnavailable", "The service is unavailable.")
            if call is None:
                raise kv_error(404, "NotFound", f"No route for {method} {url.path}")
            status, reply, extra = call(method=method, parts=parts, query=query, headers=headers, body=body, op=op)
        except Reply as r:
            status, reply, extra = r.status, r.body, r.headers
        with self.lock:
            self.statuses[(op, status)] += 1
            self.history.append((time.monotonic(), op, status))
        return status, reply, extra

    def _route(self, method, parts, tls):
        if not tls:
            if parts == ["metadata", "identity", "oauth2", "token"] and method == "GET":
                return "imds", self._imds
            if parts == ["msi", "token"] and method == "GET":
                return "app_service", self._app_service
            return "unknown", None
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"] and method == "POST":
            return "token", self._token
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return "openid_configuration", self._openid
        n = len(parts)
        table = {
            ("PUT", "secrets", 2): "set_secret", ("GET", "secrets", 2): "get_secret",
            ("GET", "secrets", 3): "get_secret", ("GET", "secrets", 1): "list_secrets",
            ("PATCH", "secrets", 2): "update_secret", ("PATCH", "secrets", 3): "update_secret",
            ("DELETE", "secrets", 2): "delete_secret", ("GET", "deletedsecrets", 1): "list_deleted_secrets",
            ("GET", "deletedsecrets", 2): "get_deleted_secret", ("DELETE", "deletedsecrets", 2): "purge_deleted_secret",
            ("GET", "keys", 1): "list_keys", ("GET", "keys", 2): "get_key", ("GET", "keys", 3): "get_key",
            ("PATCH", "keys", 2): "update_key", ("PATCH", "keys", 3): "update_key",
        }
        if n == 3 and parts[0] == "secrets" and parts[2] == "versions" and method == "GET":
            return "list_secret_versions", self._vault
        if n == 3 and parts[0] == "deletedsecrets" and parts[2] == "recover" and method == "POST":
            return "recover_deleted_secret", self._vault
        if n == 3 and parts[0] == "keys" and method == "POST" and parts[2] in ("create", "rotate"):
            return parts[2] + "_key", self._vault
        if n == 3 and parts[0] == "keys" and parts[2] == "versions" and method == "GET":
            return "list_key_versions", self._vault
        if n in (3, 4) and parts[0] == "keys" and method == "POST" and parts[-1] in ("wrapkey", "unwrapkey"):
            return parts[-1][:-3] + "_key", self._vault
        op = table.get((method, parts[0] if parts else "", n))
        return (op, self._vault) if op else ("unknown", None)

    # ------------------------------------------------------------------ identity endpoints
    def _openid(self, parts, **_):
        tenant = parts[0]
        if tenant != self.tenant_id:
            raise aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        base = f"{self.authority_host}/{tenant}"
        return 200, {"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint":
                     base + "/oauth2/v2.0/authorize", "issuer": base + "/v2.0", "token_endpoint_auth_methods_supported":
                     ["client_secret_post", "private_key_jwt", "client_secret_basic"], "tenant_region_scope": "NA",
                     "jwks_uri": base + "/discovery/v2.0/keys"}, {}

    def _token(self, parts, headers, body, op, **_):
        self._fault(op)
        if parts[0] != self.tenant_id:
            raise aad_error(400, "invalid_request", 90002, f"Tenant '{parts[0]}' not found.")
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            raise aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id = form.get("client_id", "")
        scopes = form.get("scope", "").split()
        resource = next((s[:-len("/.default")] for s in scopes if s.endswith("/.default")), None)
        if resource:
            resource = resource.rstrip("/")
        if resource not in KNOWN_RESOURCES:
            raise aad_error(400, "invalid_resource", 500011, f"The resource principal named {resource} was not "
                            f"found in the tenant named {self.tenant_id}.")
        with self.lock:
            app = self.apps.get(client_id)
        if app is None:
            raise aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not "
                            "found in the directory.")
        if "client_secret" in form:
            if app["secret"] is None or not pysecrets.compare_digest(form["client_secret"], app["secret"]):
                raise aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                                "being sent in the request is the client secret value, not the client secret ID, for "
                                f"a secret added to app '{client_id}'.")
        elif form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            self._check_assertion(app, client_id, form.get("client_assertion", ""))
        else:
            raise aad_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                            "'client_assertion' or 'client_secret'.")
        token, ttl = self.issue_token(client_id, resource)
        return 200, {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": token}, {}

    def _check_assertion(self, app, client_id, assertion):
        header, claims = _jwt_header(assertion)
        if header is None:
            raise aad_error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        now = time.time()
        if claims.get("iss") == client_id and claims.get("sub") == client_id:  # a certificate credential
            thumb = str(header.get("x5t#S256") or header.get("x5t") or "")
            key = app["certs"].get(thumb.rstrip("=").replace("+", "-").replace("/", "_"))
            if key is None:
                raise aad_error(401, "invalid_client", 700027, "The certificate with identifier used to sign the "
                                f"client assertion is not registered on application. [Reason - The key was not "
                                f"found., Thumbprint of key used by client: '{thumb}']")
            if _verify_jwt(assertion, key) is None:
                raise aad_error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
            aud = claims.get("aud", "")
            if not aud.endswith(f"/{self.tenant_id}/oauth2/v2.0/token"):
                raise aad_error(401, "invalid_client", 700212, "No matching federated identity record found for "
                                f"presented assertion audience '{aud}'.")
        else:  # a federated token (workload identity)
            key = self.issuers.get(claims.get("iss"))
            if key is None or (claims.get("iss"), claims.get("sub")) not in app["federated"]:
                raise aad_error(400, "invalid_request", 70021, "No matching federated identity record found for "
                                f"presented assertion. Assertion Issuer: '{claims.get('iss')}'. Assertion Subject: "
                                f"'{claims.get('sub')}'. Assertion Audience: '{claims.get('aud')}'.")
            if _verify_jwt(assertion, key.public_key()) is None:
                raise aad_error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
            if claims.get("aud") != FEDERATED_AUDIENCE:
                raise aad_error(400, "invalid_request", 700212, "No matching federated identity record found for "
                                f"presented assertion audience '{claims.get('aud')}'.")
        if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < now:
            raise aad_error(400, "invalid_client", 700024, "Client assertion is not within its valid time range.")

    def _managed_token(self, query, kind):
        resource = query.get("resource", "").rstrip("/")
        if resource.endswith("/.default"):
            resource = resource[:-len("/.default")]
        with self.lock:
            ids = list(self.managed)
        wanted = query.get("client_id")
        if not ids or (wanted and wanted not in ids):
            raise Reply(400, {"error": "invalid_request", "error_description": "Identity not found"})
        if resource not in KNOWN_RESOURCES:
            raise Reply(400, {"error": "invalid_resource", "error_description": f"AADSTS500011: The resource "
                              f"principal named {resource} was not found in the tenant."})
        client_id = wanted or ids[0]
        token, ttl = self.issue_token(client_id, resource)
        now = int(time.time())
        reply = {"access_token": token, "expires_on": str(now + ttl), "resource": resource, "token_type": "Bearer",
                 "client_id": client_id}
        if kind == "imds":
            reply.update({"refresh_token": "", "expires_in": str(ttl), "ext_expires_in": str(ttl),
                          "not_before": str(now)})
        return reply

    def _imds(self, query, headers, op, **_):
        self._fault(op)
        if headers.get("Metadata", "").lower() != "true":
            raise Reply(400, {"error": "invalid_request", "error_description": "Required metadata header not "
                              "specified"})
        if query.get("api-version") != "2018-02-01":
            raise Reply(400, {"error": "invalid_request", "error_description": "Invalid or missing api-version"})
        return 200, self._managed_token(query, "imds"), {}

    def _app_service(self, query, headers, op, **_):
        self._fault(op)
        if not pysecrets.compare_digest(headers.get("X-IDENTITY-HEADER", ""), self.app_service_header):
            raise Reply(401, {"statusCode": 401, "message": "Unauthorized request"})
        if query.get("api-version") != "2019-08-01":
            raise Reply(400, {"statusCode": 400, "message": "Invalid api-version"})
        return 200, self._managed_token(query, "app_service"), {}

    # ------------------------------------------------------------------ vault
    def _challenge(self, code, message):
        auth = f'Bearer authorization="{self.authority_host}/{self.tenant_id}", resource="{VAULT_RESOURCE}"'
        return Reply(401, {"error": {"code": "Unauthorized", "message": message}}, {"WWW-Authenticate": auth})

    def _authenticate(self, headers):
        value = headers.get("Authorization", "")
        if not value.startswith("Bearer ") or not value[7:]:
            raise self._challenge("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
        with self.lock:
            t = dict(self.tokens.get(value[7:]) or {})
        if not t:
            raise self._challenge("Unauthorized", "AKV10032: Invalid issuer. The token was not issued by this tenant.")
        if t["exp"] < time.time():
            raise self._challenge("Unauthorized", "AKV10021: Invalid token: the access token has expired.")
        if t["aud"] != VAULT_RESOURCE:
            raise self._challenge("Unauthorized", f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: "
                                  f"{t['aud']}.")
        return t

    def _forbidden(self, op, principal):
        action = "Microsoft.KeyVault/vaults/" + (SECRET_ACTIONS.get(op) or KEY_ACTIONS.get(op, op))
        return kv_error(403, "Forbidden", "Caller is not authorized to perform action on resource.\r\nIf role "
                        "assignments, deny assignments or role definitions were changed recently, please observe "
                        f"propagation time.\r\nCaller: appid={principal};oid={principal};iss=https://sts.windows.net/"
                        f"{self.tenant_id}/\r\nAction: '{action}'\r\nResource: '/subscriptions/00000000-0000-0000-0000-"
                        "000000000000/resourcegroups/dyad/providers/microsoft.keyvault/vaults/dyad-double'\r\n"
                        "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: "
                        "dyad-double;location=eastus\r\n", "ForbiddenByRbac")

    def _fault(self, op, principal="unknown"):
        status, retry_after = self._take_fault(op)
        if status is None:
            return
        if status == 429:
            raise Reply(429, {"error": {"code": "Throttled", "message": "Request was not processed because too many "
                                        "requests were received. Reason: VaultRequestTypeLimitReached"}},
                        {"Retry-After": str(retry_after)})
        if status == 403:
            raise self._forbidden(op, principal)
        raise kv_error(status, "ServiceUnavailable" if status == 503 else "InternalServerError",
                       "The service is temporarily unavailable." if status == 503 else "An internal error occurred.")

    def _vault(self, method, parts, query, headers, body, op):
        token = self._authenticate(headers)
        version = query.get("api-version")
        if not version:
            raise kv_error(400, "BadParameter", "The api-version query parameter is missing.")
        with self.lock:
            self.api_versions[version] += 1
        self._fault(op, token["appid"])
        if self.enforce_rbac:
            action = SECRET_ACTIONS.get(op) or KEY_ACTIONS.get(op)
            with self.lock:
                granted = set().union(*(ROLES[r] for r in self.roles.get(token["appid"], ())))
            if action not in granted:
                raise self._forbidden(op, token["appid"])
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            raise kv_error(400, "BadParameter", "The request body is not valid JSON.")
        if not isinstance(payload, dict):
            raise kv_error(400, "BadParameter", "The request body must be a JSON object.")
        if len(parts) > 1 and not NAME_RE.match(parts[1]):
            raise kv_error(400, "BadParameter", "The request URI contains an invalid name: " + parts[1])
        with self.lock:
            if op in SECRET_ACTIONS and len(parts) > 1:
                self._check_pending(op, parts[1])
            result = getattr(self, "_op_" + op)(parts, query, payload)
        return (200, result, {}) if not isinstance(result, tuple) else result

    # ---- secrets
    def _check_pending(self, op, name):
        pending = self._pending.get(name)
        if pending is None:
            return
        pending[1] -= 1
        if pending[1] < 0:
            del self._pending[name]
            return
        state = pending[0]
        if op == "set_secret":
            if state == "deleting":
                raise kv_error(409, "Conflict", f"Secret {name} is currently being deleted.", "ObjectIsBeingDeleted")
            raise kv_error(409, "Conflict", f"Secret {name} is currently being recovered and cannot be re-created; "
                           "retry later.", "ObjectIsBeingRecovered")
        if state == "deleting" and op in ("get_deleted_secret", "recover_deleted_secret"):
            raise kv_error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        if state == "deleting" and op == "purge_deleted_secret":
            raise kv_error(409, "Conflict", f"Secret {name} is currently being deleted.", "ObjectIsBeingDeleted")
        if state == "recovering" and op in ("get_secret", "list_secret_versions", "update_secret"):
            raise kv_error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault. "
                           + HELP)

    def _sid(self, name, version=None, kind="secrets"):
        return f"{self.vault_url}/{kind}/{name}" + (f"/{version}" if version else "")

    def _secret_bundle(self, name, v, with_value=True, versioned=True):
        out = {"id": self._sid(name, v["version"] if versioned else None), "attributes": dict(v["attributes"]),
               "tags": dict(v["tags"])}
        if v.get("contentType") is not None:
            out["contentType"] = v["contentType"]
        if with_value:
            out["value"] = v["value"]
        return out

    def _attributes(self, given, now):
        attrs = {"enabled": True, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable",
                 "recoverableDays": RECOVERABLE_DAYS}
        for k in ("enabled", "nbf", "exp"):
            if isinstance(given, dict) and k in given and given[k] is not None:
                attrs[k] = given[k]
        return attrs

    def _secret_version(self, name, version):
        versions = self.secrets.get(name)
        if not versions:
            raise kv_error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault. "
                           "If you recently deleted this secret you may be able to recover it using the correct "
                           "recovery command. " + HELP)
        if not version:
            return versions[-1]
        for v in versions:
            if v["version"] == version:
                return v
        raise kv_error(404, "SecretNotFound", f"A secret with (name/id) {name}/{version} was not found in this key "
                       "vault. " + HELP)

    def _op_set_secret(self, parts, query, p):
        name = parts[1]
        if name in self.deleted_secrets:
            raise kv_error(409, "Conflict", f"Secret {name} is currently in a deleted but recoverable state, and its "
                           "name cannot be reused; in this state, the secret can only be recovered or purged.",
                           "ObjectIsDeletedButRecoverable")
        value = p.get("value")
        if not isinstance(value, str):
            raise kv_error(400, "BadParameter", "Property 'value' is required and must be a string.")
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise kv_error(400, "BadParameter", f"Secret value is larger than {MAX_SECRET_BYTES} bytes.")
        tags = p.get("tags") or {}
        if not isinstance(tags, dict) or len(tags) > 15:
            raise kv_error(400, "BadParameter", "Tags must be an object of at most 15 entries.")
        now = int(time.time())
        v = {"version": uuid.uuid4().hex, "value": value, "contentType": p.get("contentType"), "tags": tags,
             "attributes": self._attributes(p.get("attributes"), now)}
        self.secrets.setdefault(name, []).append(v)
        return self._secret_bundle(name, v)

    def _op_get_secret(self, parts, query, p):
        v = self._secret_version(parts[1], parts[2] if len(parts) > 2 else None)
        if not v["attributes"]["enabled"]:
            raise kv_error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        return self._secret_bundle(parts[1], v)

    def _op_update_secret(self, parts, query, p):
        v = self._secret_version(parts[1], parts[2] if len(parts) > 2 else None)
        for k in ("enabled", "nbf", "exp"):
            if isinstance(p.get("attributes"), dict) and k in p["attributes"]:
                v["attributes"][k] = p["attributes"][k]
        if "contentType" in p:
            v["contentType"] = p["contentType"]
        if isinstance(p.get("tags"), dict):
            v["tags"] = p["tags"]
        v["attributes"]["updated"] = int(time.time())
        return self._secret_bundle(parts[1], v, with_value=False)

    def _page(self, items, query, path):
        try:
            size = int(query.get("maxresults", "25"))
            start = int(unb64url(query.get("$skiptoken", "")).decode() or "0") if query.get("$skiptoken") else 0
        except ValueError:
            raise kv_error(400, "BadParameter", "Invalid maxresults or $skiptoken.")
        if not 1 <= size <= 25:
            raise kv_error(400, "BadParameter", "maxresults must be between 1 and 25.")
        page = items[start:start + size]
        nxt = None
        if start + size < len(items):
            nxt = (f"{self.vault_url}/{path}?api-version={query.get('api-version')}&$skiptoken="
                   f"{b64url(str(start + size).encode())}&maxresults={size}")
        return {"value": page, "nextLink": nxt}

    def _op_list_secrets(self, parts, query, p):
        items = [self._secret_bundle(n, vs[-1], with_value=False, versioned=False)
                 for n, vs in sorted(self.secrets.items())]
        return self._page(items, query, "secrets")

    def _op_list_secret_versions(self, parts, query, p):
        self._secret_version(parts[1], None)
        items = [self._secret_bundle(parts[1], v, with_value=False) for v in self.secrets[parts[1]]]
        return self._page(items, query, f"secrets/{parts[1]}/versions")

    def _deleted_bundle(self, name, d, with_value=True):
        out = self._secret_bundle(name, d["versions"][-1], with_value=with_value, versioned=with_value)
        out.update({"recoveryId": self._sid(name, kind="deletedsecrets"), "deletedDate": d["deletedDate"],
                    "scheduledPurgeDate": d["scheduledPurgeDate"]})
        return out

    def _op_delete_secret(self, parts, query, p):
        name = parts[1]
        self._secret_version(name, None)
        now = int(time.time())
        d = {"versions": self.secrets.pop(name), "deletedDate": now,
             "scheduledPurgeDate": now + RECOVERABLE_DAYS * 86400}
        self.deleted_secrets[name] = d
        if self.lag:
            self._pending[name] = ["deleting", self.lag]
        return self._deleted_bundle(name, d)

    def _deleted(self, name):
        d = self.deleted_secrets.get(name)
        if d is None:
            raise kv_error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return d

    def _op_get_deleted_secret(self, parts, query, p):
        return self._deleted_bundle(parts[1], self._deleted(parts[1]), with_value=False)

    def _op_list_deleted_secrets(self, parts, query, p):
        items = [self._deleted_bundle(n, d, with_value=False) for n, d in sorted(self.deleted_secrets.items())]
        return self._page(items, query, "deletedsecrets")

    def _op_purge_deleted_secret(self, parts, query, p):
        self._deleted(parts[1])
        del self.deleted_secrets[parts[1]]
        return 204, None, {}

    def _op_recover_deleted_secret(self, parts, query, p):
        d = self._deleted(parts[1])
        del self.deleted_secrets[parts[1]]
        self.secrets[parts[1]] = d["versions"]
        if self.lag:
            self._pending[parts[1]] = ["recovering", self.lag]
        return self._secret_bundle(parts[1], d["versions"][-1], with_value=False)

    # ---- keys
    def _key_version(self, name, version):
        versions = self.keys.get(name)
        if not versions:
            raise kv_error(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault. If you "
                           "recently deleted this key you may be able to recover it using the correct recovery "
                           "command. " + HELP)
        if not version:
            return versions[-1]
        for v in versions:
            if v["version"] == version:
                return v
        raise kv_error(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault. "
                       + HELP)

    def _key_bundle(self, name, v, item=False):
        kid = self._sid(name, v["version"], kind="keys")
        if item:
            return {"kid": kid, "attributes": dict(v["attributes"]), "tags": dict(v["tags"])}
        jwk = {"kid": kid, "kty": v["kty"], "key_ops": list(v["key_ops"])}
        if v["kty"].startswith("RSA"):
            pub = v["private"].public_key().public_numbers()
            jwk.update({"n": b64url(int_bytes(pub.n)), "e": b64url(int_bytes(pub.e))})
        return {"key": jwk, "attributes": dict(v["attributes"]), "tags": dict(v["tags"])}

    def _new_key_version(self, name, kty, size, key_ops, attributes, tags):
        if kty in ("RSA", "RSA-HSM"):
            if size not in (2048, 3072, 4096):
                raise kv_error(400, "BadParameter", f"The key size {size} is not supported for RSA keys.")
            private = rsa.generate_private_key(public_exponent=65537, key_size=size)
            ops = key_ops or ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
        elif kty == "oct-HSM":
            if size not in (128, 192, 256):
                raise kv_error(400, "BadParameter", f"The key size {size} is not supported for oct-HSM keys.")
            private = os.urandom(size // 8)
            ops = key_ops or ["encrypt", "decrypt", "wrapKey", "unwrapKey"]
        else:
            raise kv_error(400, "BadParameter", f"The key type {kty} is not supported.")
        now = int(time.time())
        attrs = self._attributes(attributes, now)
        attrs["exportable"] = False
        v = {"version": uuid.uuid4().hex, "kty": kty, "size": size, "key_ops": ops, "private": private,
             "attributes": attrs, "tags": tags if isinstance(tags, dict) else {}}
        self.keys.setdefault(name, []).append(v)
        return v

    def _op_create_key(self, parts, query, p):
        kty = p.get("kty")
        size = p.get("key_size") or (2048 if kty in ("RSA", "RSA-HSM") else 256)
        if not isinstance(size, int):
            raise kv_error(400, "BadParameter", "key_size must be an integer.")
        v = self._new_key_version(parts[1], kty, size, p.get("key_ops"), p.get("attributes"), p.get("tags"))
        return self._key_bundle(parts[1], v)

    def _op_rotate_key(self, parts, query, p):
        cur = self._key_version(parts[1], None)
        v = self._new_key_version(parts[1], cur["kty"], cur["size"], cur["key_ops"], None, dict(cur["tags"]))
        return self._key_bundle(parts[1], v)

    def _op_get_key(self, parts, query, p):
        return self._key_bundle(parts[1], self._key_version(parts[1], parts[2] if len(parts) > 2 else None))

    def _op_list_keys(self, parts, query, p):
        items = [{"kid": self._sid(n, kind="keys"), "attributes": dict(vs[-1]["attributes"]),
                  "tags": dict(vs[-1]["tags"])} for n, vs in sorted(self.keys.items())]
        return self._page(items, query, "keys")

    def _op_list_key_versions(self, parts, query, p):
        self._key_version(parts[1], None)
        items = [self._key_bundle(parts[1], v, item=True) for v in self.keys[parts[1]]]
        return self._page(items, query, f"keys/{parts[1]}/versions")

    def _op_update_key(self, parts, query, p):
        v = self._key_version(parts[1], parts[2] if len(parts) > 2 else None)
        for k in ("enabled", "nbf", "exp"):
            if isinstance(p.get("attributes"), dict) and k in p["attributes"]:
                v["attributes"][k] = p["attributes"][k]
        if isinstance(p.get("tags"), dict):
            v["tags"] = p["tags"]
        if isinstance(p.get("key_ops"), list):
            v["key_ops"] = p["key_ops"]
        v["attributes"]["updated"] = int(time.time())
        return self._key_bundle(parts[1], v)

    def _wrap_args(self, parts, p, op_name):
        v = self._key_version(parts[1], parts[2] if len(parts) > 3 else None)
        alg, value = p.get("alg"), p.get("value")
        if not isinstance(value, str):
            raise kv_error(400, "BadParameter", "Property 'value' is required.")
        try:
            data = unb64url(value)
        except ValueError:
            raise kv_error(400, "BadParameter", "Property 'value' is not base64url.")
        if op_name not in v["key_ops"]:
            raise kv_error(403, "Forbidden", f"Operation {op_name} is not permitted on this key.", "KeyOperationForbidden")
        return v, alg, data

    def _rsa_padding(self, v, alg):
        if not v["kty"].startswith("RSA"):
            return None
        if alg == "RSA-OAEP-256":
            return padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        if alg == "RSA-OAEP":
            return padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
        if alg == "RSA1_5":
            return padding.PKCS1v15()
        return None

    def _aes_alg_ok(self, v, alg):
        return v["kty"] == "oct-HSM" and alg == f"A{v['size']}KW"

    def _op_wrap_key(self, parts, query, p):
        v, alg, data = self._wrap_args(parts, p, "wrapKey")
        pad = self._rsa_padding(v, alg)
        if pad is not None:
            try:
                out = v["private"].public_key().encrypt(data, pad)
            except ValueError:
                raise kv_error(400, "BadParameter", "The value is too long for the key and algorithm.")
        elif self._aes_alg_ok(v, alg):
            if len(data) < 16 or len(data) % 8:
                raise kv_error(400, "BadParameter", "A key wrap input must be a multiple of 8 bytes, at least 16.")
            out = aes_key_wrap(v["private"], data)
        else:
            raise kv_error(400, "BadParameter", f"Invalid algorithm {alg} for a {v['kty']} key.")
        return {"kid": self._sid(parts[1], v["version"], kind="keys"), "value": b64url(out)}

    def _op_unwrap_key(self, parts, query, p):
        v, alg, data = self._wrap_args(parts, p, "unwrapKey")
        if not v["attributes"]["enabled"]:
            raise kv_error(403, "Forbidden", "Operation unwrapKey is not allowed on a disabled key.", "KeyDisabled")
        pad = self._rsa_padding(v, alg)
        try:
            if pad is not None:
                out = v["private"].decrypt(data, pad)
            elif self._aes_alg_ok(v, alg):
                out = aes_key_unwrap(v["private"], data)
            else:
                raise kv_error(400, "BadParameter", f"Invalid algorithm {alg} for a {v['kty']} key.")
        except (ValueError, InvalidUnwrap, InvalidTag):
            raise kv_error(400, "BadParameter", "The parameter is incorrect: unwrap failed for this key.")
        return {"kid": self._sid(parts[1], v["version"], kind="keys"), "value": b64url(out)}

    # ------------------------------------------------------------------ control API (standalone use)
    def _control(self, method, parts, body):
        p = json.loads(body) if body else {}
        if parts == ["fail"] and method == "POST":
            self.fail_next(p.get("n", 1), p.get("status", 429), p.get("ops"), p.get("retry_after", 1))
        elif parts == ["deny"] and method == "POST":
            self.deny(p.get("ops", []))
        elif parts == ["allow"] and method == "POST":
            self.allow(p.get("ops"))
        elif parts == ["down"] and method == "POST":
            self.set_down(p.get("mode"))
        elif parts == ["expire"] and method == "POST":
            self.expire_tokens()
        elif parts == ["lag"] and method == "POST":
            self.lag = int(p["requests"])
        elif parts == ["rbac"] and method == "POST":
            self.enforce_rbac = bool(p["enforce"])
            for client_id, role in p.get("assign", []):
                self.assign_role(client_id, role)
        elif parts == ["ttl"] and method == "POST":
            self.token_ttl = int(p["seconds"])
        elif parts == ["reset"] and method == "POST":
            self.reset_counts()
        elif parts == ["clear"] and method == "POST":
            self.clear_faults()
        elif parts == ["counts"] and method == "GET":
            with self.lock:
                return 200, {"counts": dict(self.counts), "statuses": {f"{o} {s}": c for (o, s), c in
                                                                       self.statuses.items()},
                             "api_versions": dict(self.api_versions)}, {}
        else:
            return 404, {"error": "no such control"}, {}
        return 200, {"ok": True}, {}

    def describe(self):
        return {"vault_url": self.vault_url, "authority_host": self.authority_host, "tenant_id": self.tenant_id,
                "ca_pem": self.ca_pem, "imds_endpoint": self.imds_endpoint, "app_service_endpoint":
                self.app_service_endpoint, "app_service_header": self.app_service_header,
                "control": f"http://127.0.0.1:{self.http_port}/_double"}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a gateway re-encrypting in parallel opens many connections at once

    def __init__(self, address, double):
        self.double = double
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):  # a dropped or failed TLS connection is not news
        pass

    def get_request(self):
        conn, addr = super().get_request()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and the client's delayed
        # ACK add ~40 ms to every answer.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dyad-azure-double"

    def log_message(self, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        tls = isinstance(self.connection, ssl.SSLSocket)
        try:
            status, reply, extra = self.server.double.handle(self.command, self.path, self.headers, body, tls)
        except ConnectionAbortedError:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        data = b"" if reply is None else json.dumps(reply).encode()
        self.send_response(status)
        if reply is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("x-ms-keyvault-service-version", "1.9.0.0")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve


def main():
    """Standalone: python3 azure_double.py DIR [CLIENT_ID CLIENT_SECRET] -> DIR/double.json, serves until killed."""
    workdir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="azure-double-"))
    double = AzureDouble(workdir).start()
    client_id = sys.argv[2] if len(sys.argv) > 2 else str(uuid.uuid4())
    secret = sys.argv[3] if len(sys.argv) > 3 else pysecrets.token_urlsafe(24)
    double.add_app(client_id, secret=secret)
    mi = double.add_managed_identity()
    info = dict(double.describe(), client_id=client_id, client_secret=secret, managed_identity_client_id=mi)
    (workdir / "double.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        double.stop()


if __name__ == "__main__":
    main()
