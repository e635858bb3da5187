"""Black-box fixtures: start the real dyad-gateway binary on a free loopback port."""
import hashlib
import json
import os
import pathlib
import secrets
import signal
import subprocess
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("DYAD_GATEWAY_BIN", str(ROOT / "build" / "dyad-gateway"))
ADMIN_TOKEN = "admin-" + "x" * 20
VIEWER_TOKEN = "viewer-token-0123456789"


class Gateway:
    """One gateway process; restartable on the same data dir."""

    def __init__(self, data_dir, extra_env=None, args=("serve",)):
        self.data_dir = pathlib.Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env_extra = dict(extra_env or {})
        self.args = list(args)
        self.proc = None
        self.port = None
        self.stderr_path = self.data_dir.parent / (self.data_dir.name + "-stderr.log")
        self.stdout = ""

    def env(self):
        tokens = self.data_dir.parent / "tokens.json"
        tokens.write_text(json.dumps({"tokens": [
            {"name": "ci-viewer", "role": "viewer", "sha256": hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest()}]}))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GATEWAY_PORT": "0",
            "GATEWAY_DATA_DIR": str(self.data_dir),
            "ENCRYPTION_KEY": "ab" * 32,
            "GATEWAY_ADMIN_API_KEY": ADMIN_TOKEN,
            "GATEWAY_ADMIN_TOKENS_FILE": str(tokens),
            "GATEWAY_LOG_LEVEL": "debug",
        }
        env.update(self.env_extra)
        return {k: v for k, v in env.items() if v is not None}

    def start(self):
        self.stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([BINARY] + self.args, env=self.env(), stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, text=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.stdout += line
            if line.startswith("listening on "):
                self.port = int(line.strip().rsplit(":", 1)[1])
                return self
        raise RuntimeError(f"gateway did not start: rc={self.proc.poll()} stdout={self.stdout!r} "
                           f"stderr={self.stderr_path.read_text()[-2000:]!r}")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        rc = self.proc.returncode if self.proc else None
        if self.proc:
            self.proc.stdout.close()
            self.stderr_file.close()
        return rc

    def restart(self):
        self.stop()
        return self.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def call(self, method, path, token=ADMIN_TOKEN, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def logs(self):
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
def gateway(tmp_path):
    gw = Gateway(tmp_path / "data").start()
    yield gw
    gw.stop()


@pytest.fixture
def make_gateway(tmp_path):
    made = []

    def make(extra_env=None, args=("serve",), name="data"):
        gw = Gateway(tmp_path / name, extra_env, args)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        if gw.proc and gw.proc.poll() is None:
            gw.stop()


def data(r, status=200):
    """The `data` of a success envelope, after checking the status code."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "success"
    return body["data"]


def create_provider(gw, slug, creds):
    return data(gw.call("POST", "/admin/providers", json=provider_body(slug=slug, credentials=creds)), 201)


def provider_body(slug="openai", **over):
    body = {"name": "OpenAI", "slug": slug, "type": "http-sdk",
            "models": [{"dyadModelId": "gpt-4o", "adapterModelId": "gpt-4o-2024", "maxTokens": 4096,
                        "contextWindow": 128000}],
            "adapterConfig": {"baseUrl": "https://192.0.2.1"}}  # TEST-NET-1: no DNS lookup at create
    body.update(over)
    creds = body.get("credentials")
    if "adapterConfig" not in over and isinstance(creds, dict) and creds and "api_key" not in creds:
        # The /v1 path sends auth.template's fields ("Bearer {api_key}" by default), and a write of credentials
        # without them is refused: a test's provider without an api_key sends one of the fields it has.
        body["adapterConfig"] = {**body["adapterConfig"], "auth": {"header": "x-api-key", "template": f"{{{min(creds)}}}"}}
    return body


def fingerprint(credentials):
    text = json.dumps(credentials, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def canary():
    return "sk-CANARY-" + secrets.token_hex(12)
