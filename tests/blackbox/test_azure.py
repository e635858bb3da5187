"""SECRETS_PROVIDER=azure against the loopback Key Vault double (azure_double.py), itself proven with Microsoft's
SDKs in test_azure_double.py; what the gateway writes is read back with those SDKs here, and the reverse. Each
Entra ID method is tested in test_azure_auth.py."""
import base64
import hashlib
import json
import threading
import time
import uuid

import pytest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from azure.keyvault.secrets import SecretClient

from azure_double import AzureDouble
from conftest import canary, create_provider, data, provider_body
from test_rotation import wait_idle
from test_secrets import keyed_fingerprint

SECRET = "gw-client-secret-" + "q" * 20


@pytest.fixture(scope="module")
def double():
    d = AzureDouble().start()
    d.client_id = d.add_app(secret=SECRET)
    yield d
    d.stop()


@pytest.fixture
def own_double():
    """A double of its own, for a test that fills the vault (others list the shared one's secrets)."""
    d = AzureDouble().start()
    d.client_id = d.add_app(secret=SECRET)
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def healthy(double):
    double.clear_faults()
    double.token_ttl = 3600
    yield


def sdk_credential(double):
    return ClientSecretCredential(double.tenant_id, double.client_id, SECRET, authority=double.authority_host,
                                  disable_instance_discovery=True, connection_verify=double.ca_pem)


def sdk_kwargs(double):
    return dict(verify_challenge_resource=False, connection_verify=double.ca_pem, retry_backoff_factor=0.01)


def secrets_sdk(double):
    return SecretClient(double.vault_url, sdk_credential(double), **sdk_kwargs(double))


def keys_sdk(double):
    return KeyClient(double.vault_url, sdk_credential(double), **sdk_kwargs(double))


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def base_env(double, key_name, prefix, mode="envelope"):
    return {"SECRETS_PROVIDER": "azure", "SECRETS_ENCRYPTION_MODE": mode, "ENCRYPTION_KEY": None,
            "AZURE_KEY_VAULT_URL": double.vault_url, "ENCRYPTION_KEY_ID": key_name, "SECRETS_PREFIX": prefix,
            "AZURE_AUTHORITY_HOST": double.authority_host, "AZURE_CA_BUNDLE": double.ca_pem,
            "AZURE_VERIFY_CHALLENGE_RESOURCE": "false", "AZURE_TENANT_ID": double.tenant_id}


def azure_gateway(make_gateway, double, mode="envelope", name="data", auth="secret", key_name=None, create_key=True,
                  **env):
    """A gateway on the double with its own Key Vault key and secret prefix (tests share one double)."""
    key_name = key_name or unique("dyad-key")
    if create_key and key_name not in double.keys:
        keys_sdk(double).create_rsa_key(key_name, size=2048)
    full = base_env(double, key_name, unique("dyad"), mode)
    if auth == "secret":
        full.update({"AZURE_CLIENT_ID": double.client_id, "AZURE_CLIENT_SECRET": SECRET})
    full.update(env)
    gw = make_gateway(full, name=name)
    gw.prefix, gw.key_name = full["SECRETS_PREFIX"], key_name
    return gw.start()


def validate(gw, pid):
    return data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))


def vault_name(double, gw, pid):
    """The Key Vault secret the gateway keeps provider `pid` in (found by its provider-id tag)."""
    with double.lock:
        names = [n for n, vs in double.secrets.items() if n.startswith(gw.prefix + "--")
                 and vs[-1]["tags"].get("provider-id") == pid]
    assert len(names) == 1, names
    return names[0]


def test_lifecycle_rotate_validate_health(make_gateway, double):
    gw = azure_gateway(make_gateway, double)
    creds = {"api_key": canary(), "note": "naïve “quotes” \"x\" 'y'\nline two\t🔑 日本語"}
    p = create_provider(gw, "openai", creds)
    name = vault_name(double, gw, p["id"])
    assert name.startswith(f"{gw.prefix}--providers--")
    sdk = secrets_sdk(double)
    stored = sdk.get_secret(name)
    envelope = json.loads(stored.value)
    assert creds["api_key"] not in stored.value and envelope["kver"] == 1
    assert stored.properties.content_type == "application/json"
    assert stored.properties.tags["managed-by"] == "dyad-gateway" and stored.properties.tags["provider-id"] == p["id"]
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["source"] == "store" and v["fingerprint"] == keyed_fingerprint(gw, creds)
    assert validate(gw, p["id"])["source"] == "cache"

    new = {"api_key": canary()}
    data(gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": new}))
    v = validate(gw, p["id"])
    assert v["fingerprint"] == keyed_fingerprint(gw, new) and v["source"] == "store"
    assert len(list(sdk.list_properties_of_secret_versions(name))) == 2  # a new version, the old one kept

    h = data(gw.call("GET", "/admin/secrets/health"))
    assert h["status"] == "healthy" and h["provider"] == "azure", h
    t = data(gw.call("POST", "/admin/secrets/test-connection"))
    assert t["connected"] is True and all(s["ok"] for s in t["steps"]), t
    metrics = gw.call("GET", "/metrics").text
    host = double.vault_url.removeprefix("https://")
    for op in ("secrets.set", "secrets.get", "keys.wrap", "keys.unwrap"):
        assert f'dyad_cloud_calls_total{{endpoint="{host}",op="{op}",outcome="ok"}}' in metrics, (op, metrics[-3000:])

    data(gw.call("DELETE", f"/admin/providers/{p['id']}"))
    deleted = sdk.get_deleted_secret(name)  # soft-deleted: recoverable for the vault's retention
    assert deleted.recovery_id.endswith(f"/deletedsecrets/{name}")
    for text in (gw.logs(), gw.stdout):
        assert creds["api_key"] not in text and new["api_key"] not in text and SECRET not in text


def test_a_key_the_gateway_wrapped_unwraps_through_the_sdk(make_gateway, double):
    """An envelope the gateway sealed opens with nothing but the SDK's CryptographyClient and AES-GCM."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    gw = azure_gateway(make_gateway, double)
    creds = {"api_key": canary()}
    p = create_provider(gw, "openai", creds)
    name = vault_name(double, gw, p["id"])
    envelope = json.loads(secrets_sdk(double).get_secret(name).value)
    assert envelope["kms"] == "azure-kv" and envelope["ctx"] == 1
    version, wrapped = base64.b64decode(envelope["dek"]).decode().split(":", 1)
    key = keys_sdk(double).get_key(gw.key_name, version)
    crypto = CryptographyClient(key, sdk_credential(double), **sdk_kwargs(double))
    plain = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256,
                              base64.urlsafe_b64decode(wrapped + "=" * (-len(wrapped) % 4))).key
    # the DEK, then the first 16 bytes of SHA-256 of the Key Vault secret it belongs to
    assert len(plain) == 48 and plain[32:] == hashlib.sha256(name.encode()).digest()[:16]
    aad = b"dyad-envelope-v1" + len(name).to_bytes(4, "big") + name.encode() + envelope["cv"].to_bytes(8, "big")
    opened = AESGCM(plain[:32]).decrypt(base64.b64decode(envelope["iv"]), base64.b64decode(envelope["ct"]), aad)
    assert json.loads(opened) == creds


def test_key_rotation_reencrypts_2000_while_readers_read(make_gateway, own_double):
    double = own_double
    gw = azure_gateway(make_gateway, double, AZURE_CONCURRENCY="8")
    made = {}
    for i in range(2000):
        creds = {"api_key": f"sk-{i}-{canary()}"}
        made[create_provider(gw, f"p-{i}", creds)["id"]] = creds
    first_version = keys_sdk(double).get_key(gw.key_name).properties.version
    failures, reads, stop = [], [0], threading.Event()

    def reader(ids):
        while not stop.is_set():
            for pid in ids:
                v = validate(gw, pid)
                reads[0] += 1
                if not v["valid"] or v["fingerprint"] != keyed_fingerprint(gw, made[pid]):
                    failures.append(v)
                if stop.is_set():
                    break

    ids = list(made)
    readers = [threading.Thread(target=reader, args=(ids[i::3],)) for i in range(3)]
    for t in readers:
        t.start()
    try:
        run = data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
        h = wait_idle(gw, timeout=300)["history"][0]
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert failures == [] and reads[0] > 0
    assert h["id"] == run["id"] and h["status"] == "completed", h
    assert (h["fromKeyVersion"], h["toKeyVersion"], h["reencrypted"], h["failed"]) == (1, 2, 2000, 0), h
    versions = [p.version for p in keys_sdk(double).list_properties_of_key_versions(gw.key_name)]
    new_version = keys_sdk(double).get_key(gw.key_name).properties.version
    assert len(versions) == 2 and new_version != first_version and double.count("rotate_key", 200) == 1
    with double.lock:
        envelopes = [json.loads(vs[-1]["value"]) for n, vs in double.secrets.items()
                     if n.startswith(gw.prefix + "--providers--")]
    assert len(envelopes) == 2000
    assert all(e["kver"] == 2 and base64.b64decode(e["dek"]).startswith(new_version.encode() + b":")
               for e in envelopes)
    # nothing is sealed under the old version any more: disabling it in Azure breaks nothing
    keys_sdk(double).update_key_properties(gw.key_name, first_version, enabled=False)
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    for pid in ids[::50]:
        assert validate(gw, pid)["valid"] is True


def test_an_unwrap_under_a_disabled_version_fails_clearly(make_gateway, double):
    gw = azure_gateway(make_gateway, double)
    p = create_provider(gw, "openai", {"api_key": canary()})
    version = keys_sdk(double).get_key(gw.key_name).properties.version
    keys_sdk(double).update_key_properties(gw.key_name, version, enabled=False)
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = validate(gw, p["id"])
    check = {c["check"]: c for c in v["checks"]}["decryptable"]
    assert v["valid"] is False and not check["ok"] and "disabled" in check["message"], v
    assert version in check["message"] or "version" in check["message"], v


def test_provider_mode_interop_with_the_sdk(make_gateway, double):
    gw = azure_gateway(make_gateway, double, mode="provider")
    sdk = secrets_sdk(double)
    creds = {"api_key": canary(), "org": "ünïcode \"q\"\n"}
    p = create_provider(gw, "interop", creds)
    name = vault_name(double, gw, p["id"])
    assert json.loads(sdk.get_secret(name).value) == creds  # the SDK reads the gateway's
    theirs = {"api_key": canary()}
    sdk.set_secret(name, json.dumps(theirs), content_type="application/json")  # the gateway reads the SDK's
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["fingerprint"] == keyed_fingerprint(gw, theirs)


def test_a_soft_deleted_name_is_recovered_then_written(make_gateway, double):
    gw = azure_gateway(make_gateway, double)
    p = create_provider(gw, "openai", {"api_key": canary()})
    name = vault_name(double, gw, p["id"])
    sdk = secrets_sdk(double)
    sdk.begin_delete_secret(name).wait()  # someone deleted it in Azure
    double.lag = 2  # and Key Vault completes the recovery asynchronously
    new = {"api_key": canary()}
    data(gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": new}))
    assert double.count("recover_deleted_secret", 200) == 1
    assert json.loads(sdk.get_secret(name).value)["cv"] >= 2
    assert len(list(sdk.list_properties_of_secret_versions(name))) == 2  # the old history came back, plus one
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    assert validate(gw, p["id"])["fingerprint"] == keyed_fingerprint(gw, new)


def test_purge_on_delete_purges_instead_of_recovering(make_gateway, double):
    gw = azure_gateway(make_gateway, double, AZURE_PURGE_ON_DELETE="true")
    p = create_provider(gw, "openai", {"api_key": canary()})
    name = vault_name(double, gw, p["id"])
    sdk = secrets_sdk(double)
    sdk.begin_delete_secret(name).wait()
    double.lag = 2
    double.reset_counts()
    new = {"api_key": canary()}
    data(gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": new}))
    assert double.count("purge_deleted_secret", 204) == 1 and double.count("recover_deleted_secret") == 0
    assert len(list(sdk.list_properties_of_secret_versions(name))) == 1  # the old history is gone
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    assert validate(gw, p["id"])["fingerprint"] == keyed_fingerprint(gw, new)
    # test-connection's probe secret is purged too, not left soft-deleted
    assert data(gw.call("POST", "/admin/secrets/test-connection"))["connected"] is True
    with double.lock:
        assert not [n for n in double.deleted_secrets if n.startswith(gw.prefix + "--")]


def test_throttling_and_5xx_are_retried_without_a_storm(make_gateway, double):
    gw = azure_gateway(make_gateway, double, SECRETS_CACHE_ENABLED="false", AZURE_MAX_RETRIES="4")
    p = create_provider(gw, "openai", {"api_key": canary()})
    assert validate(gw, p["id"])["valid"] is True
    for status in (429, 503):
        before = double.count("get_secret")
        double.fail_next(3, status, ops=["get_secret"], retry_after=0)
        v = validate(gw, p["id"])
        assert v["valid"] is True and v["source"] == "store", v
        assert double.count("get_secret") - before == 4  # three refused, one served
    double.reset_counts()
    double.fail_next(1, 429, ops=["get_secret"], retry_after=1)
    assert validate(gw, p["id"])["valid"] is True
    refused, served = double.times("get_secret")
    assert served - refused >= 0.9  # Key Vault's Retry-After: 1 was honoured
    assert set(double.api_versions) == {"7.5"}  # every gateway call names the GA api-version
    before = double.count("get_secret")
    double.fail_next(1000, 429, ops=["get_secret"], retry_after=0)
    v = validate(gw, p["id"])
    assert v["valid"] is False, v
    assert double.count("get_secret") - before == 5  # AZURE_MAX_RETRIES=4: five attempts, then the error
    double.clear_faults()


def test_rbac_denial_names_the_role_and_never_falls_back(make_gateway, double):
    gw = azure_gateway(make_gateway, double, DYAD_PROVIDER_OPENAI_API_KEY="sk-from-env")
    double.deny(["set_secret"])
    r = gw.call("POST", "/admin/providers", json=provider_body(slug="openai", credentials={"api_key": canary()}))
    assert r.status_code >= 400 and "Key Vault Secrets Officer" in r.text, r.text
    assert double.count("set_secret", 403) == 1  # a 403 is not retried








def test_double_down_then_up_cache_stale_fallback_recovery(make_gateway, double):
    gw = azure_gateway(make_gateway, double, SECRETS_CACHE_TTL_SECONDS="1", AZURE_REQUEST_TIMEOUT_MS="400",
                       AZURE_MAX_RETRIES="1", DYAD_PROVIDER_ANTHROPIC_API_KEY="sk-env-fallback")
    a = create_provider(gw, "openai", {"api_key": canary()})
    b = create_provider(gw, "anthropic", {"api_key": canary()})
    for mode in ("reset", "503"):
        data(gw.call("POST", "/admin/secrets/clear-cache"))
        assert validate(gw, a["id"])["source"] == "store"
        assert validate(gw, a["id"])["source"] == "cache"
        time.sleep(1.2)
        double.set_down(mode)
        assert validate(gw, a["id"])["source"] == "stale"
        vb = validate(gw, b["id"])
        assert vb["source"] == "fallback" and vb["fingerprint"] == keyed_fingerprint(gw, {"api_key": "sk-env-fallback"})
        deadline = time.time() + 10
        while (h := data(gw.call("GET", "/admin/secrets/health")))["status"] != "unhealthy":
            assert time.time() < deadline, h
            time.sleep(0.2)
        double.set_down(None)
        deadline = time.time() + 20
        for x in (b, a):
            while validate(gw, x["id"])["source"] != "store":
                assert time.time() < deadline, f"no recovery after the double came back ({mode})"
                time.sleep(0.5)
    audit = [json.loads(line) for line in (gw.data_dir / "audit.log").read_text().splitlines()]
    sources = [e.get("source") for e in audit if e.get("action") == "secret.get"]
    assert sources.count("stale") >= 2 and sources.count("fallback") >= 2 and "store" in sources, sources


def timed(gw, path):
    started = time.monotonic()
    r = gw.call("GET", path)
    return r, time.monotonic() - started


def test_health_and_readyz_answer_at_once_while_the_vault_hangs(make_gateway, double):
    gw = azure_gateway(make_gateway, double, AZURE_REQUEST_TIMEOUT_MS="30000", AZURE_MAX_RETRIES="0")
    create_provider(gw, "openai", {"api_key": canary()})
    assert data(gw.call("GET", "/admin/secrets/health"))["status"] == "healthy"
    double.set_down("hang")
    try:
        deadline = time.time() + 20
        while True:
            ready, took_ready = timed(gw, "/readyz")
            health, took_health = timed(gw, "/admin/secrets/health")
            assert took_ready < 1 and took_health < 1, (took_ready, took_health)
            if ready.status_code == 503 and data(health)["status"] == "unhealthy":
                break
            assert time.time() < deadline, "health still says healthy with the vault hanging"
            time.sleep(0.2)
    finally:
        double.set_down(None)
    deadline = time.time() + 30
    while not (gw.call("GET", "/readyz").status_code == 200
               and data(gw.call("GET", "/admin/secrets/health"))["status"] == "healthy"):
        assert time.time() < deadline, "no recovery after the vault answered again"
        time.sleep(0.2)


def test_the_key_in_another_vault(make_gateway, double):
    """AZURE_KEY_VAULT_KEY_URL: secrets in one vault, the key in another of the same tenant (one credential)."""
    keys_vault = AzureDouble(identity=double).start()
    keys_vault.client_id = double.client_id
    try:
        key = keys_sdk(keys_vault).create_rsa_key(unique("far-key"))
        gw = azure_gateway(make_gateway, double, key_name=key.name, create_key=False,
                           ENCRYPTION_KEY_ID=f"{keys_vault.vault_url}/keys/{key.name}",
                           AZURE_KEY_VAULT_KEY_URL=keys_vault.vault_url)
        creds = {"api_key": canary()}
        double.reset_counts()
        p = create_provider(gw, "openai", creds)
        data(gw.call("POST", "/admin/secrets/clear-cache"))
        assert validate(gw, p["id"])["fingerprint"] == keyed_fingerprint(gw, creds)
        assert keys_vault.count("unwrap_key", 200) >= 1 and double.count("unwrap_key") == 0
        assert vault_name(double, gw, p["id"]) and not keys_vault.secrets
    finally:
        keys_vault.stop()
