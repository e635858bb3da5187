#!/usr/bin/env python3
"""Cache-miss credential read over Azure Key Vault in envelope mode (issue 12): a secret read and an unwrapKey of the
data key, then AES-GCM open of the payload, three clients in one run:

  ours   build/dyad_azure_get_bench: AzureSecretStore::Get + the Azure key manager's Decrypt (unwrapKey RSA-OAEP-256,
         binding-tag check) + the envelope's AES-GCM open, the gateway's own path (pooled libcurl keep-alive,
         nlohmann JSON, Entra token cached)
  sdk    SecretClient.get_secret + CryptographyClient(key id).unwrap_key(RSA_OAEP_256) on warm clients
         (azure-keyvault-secrets, azure-keyvault-keys, azure-identity ClientSecretCredential), the same binding-tag
         check, then AESGCM open (cryptography)
  floor  the same two HTTPS requests by the curl CLI on one kept-alive connection (-w %{time_total}, --next), with
         a bearer token fetched once from the double's token endpoint

The vault is the loopback Key Vault double tests/blackbox/azure_double.py, run standalone in its own process (so
that it does not share an interpreter lock with the SDK client), holding one RSA-2048 key and one sealed credential
written by the gateway's own code. Every client's first read of a run (challenge, token, TLS handshake) is untimed.
Rounds alternate between the clients so that machine noise falls on all of them. Prints p50/p99 per client, the
client-side overhead (round trip minus the floor's) of ours and the SDK's, and their ratio.

Usage: python3 bench/azure_bench.py [--json] [ROUNDS] [PER_ROUND]
  --json  one JSON object on stdout instead of the table (bench/run.py reads it)
The bench binary is DYAD_BUILD_DIR/dyad_azure_get_bench (default build/).
"""
import base64
import hashlib
import hmac
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import requests
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = pathlib.Path(__file__).resolve().parents[1]
JSON = "--json" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--json"]
ROUNDS = int(ARGS[0]) if len(ARGS) > 0 else 20
PER_ROUND = int(ARGS[1]) if len(ARGS) > 1 else 100
BENCH = pathlib.Path(os.environ.get("DYAD_BUILD_DIR", ROOT / "build")) / "dyad_azure_get_bench"
KEY = "dyad-gateway-bench"
NAME = "dyad-gateway--providers--bench"  # AzureSecretStore's name for provider "bench" under the default prefix
CLIENT_ID, CLIENT_SECRET = "00000000-0000-4000-8000-00000000beec", "bench-client-secret-" + "q" * 20
API = "api-version=7.5"


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def aad(cv):
    # src/secrets/envelope.cc AppendEnvelopeAad: label, name length (4 bytes), name, credentials version (8 bytes).
    name = NAME.encode()
    return b"dyad-envelope-v1" + len(name).to_bytes(4, "big") + name + int(cv).to_bytes(8, "big")


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def split_dek(doc):
    # The Azure key manager's wrapped form: "<kid version>:<base64url of the wrapped key>" (key_manager.h).
    version, wrapped = base64.b64decode(doc["dek"]).decode().split(":", 1)
    return version, wrapped


BINDING = hashlib.sha256(NAME.encode()).digest()[:16]  # backends/key_binding.h: DEK ‖ SHA-256(context)[:16]


def start_double(work):
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "blackbox" / "azure_double.py"), work, CLIENT_ID,
                             CLIENT_SECRET], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the Key Vault double did not start")
    return proc, json.loads(line)


def main():
    with tempfile.TemporaryDirectory(prefix="azure-bench-") as work:
        double, info = start_double(work)
        try:
            run(info)
        finally:
            double.terminate()
            double.wait()


def run(info):
    vault, ca = info["vault_url"], info["ca_pem"]
    cred = ClientSecretCredential(info["tenant_id"], CLIENT_ID, CLIENT_SECRET, authority=info["authority_host"],
                                  disable_instance_discovery=True, connection_verify=ca)
    kwargs = dict(verify_challenge_resource=False, connection_verify=ca)
    KeyClient(vault, cred, **kwargs).create_rsa_key(KEY, size=2048)
    secrets = SecretClient(vault, cred, **kwargs)
    cryptos = {}  # kid version -> CryptographyClient, as a reader keeps one per key version

    def sdk_read():
        doc = json.loads(secrets.get_secret(NAME).value)
        version, wrapped = split_dek(doc)
        crypto = cryptos.get(version)
        if crypto is None:
            crypto = cryptos[version] = CryptographyClient(f"{vault}/keys/{KEY}/{version}", cred, **kwargs)
        plain = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, unb64url(wrapped)).key
        if len(plain) != 48 or not hmac.compare_digest(plain[32:], BINDING):
            raise SystemExit("the data key is bound to another secret")
        return AESGCM(plain[:32]).decrypt(base64.b64decode(doc["iv"]), base64.b64decode(doc["ct"]), aad(doc["cv"]))

    bench = str(BENCH)
    env = {**os.environ, "AZURE_KEY_VAULT_URL": vault, "AZURE_AUTHORITY_HOST": info["authority_host"],
           "AZURE_TENANT_ID": info["tenant_id"], "AZURE_CLIENT_ID": CLIENT_ID, "AZURE_CLIENT_SECRET": CLIENT_SECRET,
           "AZURE_CA_BUNDLE": ca, "AZURE_VERIFY_CHALLENGE_RESOURCE": "false", "ENCRYPTION_KEY_ID": KEY}
    env.pop("ENCRYPTION_KEY", None)
    # The gateway's code seals one credential (about the size of a provider's) and stores it.
    subprocess.run([bench, NAME, "seal"], env=env, check=True, capture_output=True)
    sdk_read()  # warm: challenge, token, connections, the CryptographyClient's key read

    token = requests.post(info["authority_host"] + f"/{info['tenant_id']}/oauth2/v2.0/token", verify=ca,
                          data={"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                "client_secret": CLIENT_SECRET, "scope": "https://vault.azure.net/.default"}
                          ).json()["access_token"]
    version, wrapped = split_dek(json.loads(secrets.get_secret(NAME).value))
    unwrap = json.dumps({"alg": "RSA-OAEP-256", "value": wrapped})
    auth = f"Authorization: Bearer {token}"
    common = ["-s", "-S", "-f", "--cacert", ca, "-o", "/dev/null", "-w", "%{time_total}\n", "-H", auth]
    # A kept-alive warm-up GET first, its time dropped: the TLS handshake, which the other clients paid untimed.
    args = ["curl", *common, f"{vault}/secrets/{NAME}?{API}"]
    for _ in range(PER_ROUND):
        args += ["--next", *common, f"{vault}/secrets/{NAME}?{API}",
                 "--next", *common, "-H", "Content-Type: application/json", "--data-binary", unwrap,
                 f"{vault}/keys/{KEY}/{version}/unwrapkey?{API}"]

    samples = {"ours": [], "sdk": [], "floor": []}
    for _ in range(ROUNDS):
        out = subprocess.run([bench, NAME, str(PER_ROUND)], env=env, capture_output=True, text=True,
                             check=True).stdout
        samples["ours"] += [float(x) for x in out.split()]
        for _ in range(PER_ROUND):
            t0 = time.perf_counter()
            sdk_read()
            samples["sdk"].append((time.perf_counter() - t0) * 1e6)
        times = [float(x) * 1e6 for x in subprocess.run(args, capture_output=True, text=True,
                                                        check=True).stdout.split()][1:]
        samples["floor"] += [times[i] + times[i + 1] for i in range(0, len(times) - 1, 2)]
    floor50 = pct(samples["floor"], 50)
    ours, theirs = pct(samples["ours"], 50) - floor50, pct(samples["sdk"], 50) - floor50
    counts = requests.get(info["control"] + "/counts").json()["counts"]
    if JSON:
        print(json.dumps({"rounds": ROUNDS, "per_round": PER_ROUND, "ratio": ours / theirs, "double_calls": counts,
                          **{k: {"p50_us": pct(v, 50), "p99_us": pct(v, 99)} for k, v in samples.items()}}))
        return
    print(f"{ROUNDS} rounds x {PER_ROUND} reads per client (get secret + unwrapKey RSA-OAEP-256 + AES-GCM open), "
          "Key Vault double on loopback\n")
    print("| client | p50 µs | p99 µs | overhead over the floor at p50 µs |")
    print("| --- | --- | --- | --- |")
    for k in ("ours", "sdk", "floor"):
        over = "" if k == "floor" else f"{pct(samples[k], 50) - floor50:.0f}"
        print(f"| {k} | {pct(samples[k], 50):.0f} | {pct(samples[k], 99):.0f} | {over} |")
    print(f"\nclient-side overhead ratio ours/sdk at p50: {ours / theirs:.3f}")
    # Each read is two vault calls for every client: get_secret = unwrap_key ≈ 3 × ROUNDS × PER_ROUND (+ warm-ups).
    print("calls the double answered: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in
                                                   ("get_secret", "unwrap_key", "get_key", "token")))


if __name__ == "__main__":
    main()
