"""SECRETS_PROVIDER=azure end to end on the Key Vault double (azure_double.py, proven with Microsoft's SDKs): the
Key Vault SecretStore and KeyManager through the gateway, read back and written with the official SDKs (interop),
key rotation in the gateway and in Azure, RBAC refusals naming the role."""
import base64
import json
import time
import uuid

import pytest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

from azure_double import AzureDouble
from conftest import canary, create_provider, data
from test_secrets import keyed_fingerprint

SECRET = "client-secret-" + "k" * 20


@pytest.fixture(scope="module")
def double():
    d = AzureDouble().start()
    d.app = d.add_app(secret=SECRET)
    d.lag = 2  # deletes and recoveries complete asynchronously, as Key Vault's do
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def healthy(double):
    double.clear_faults()
    double.enforce_rbac = False
    yield


def sdk(double):
    credential = ClientSecretCredential(double.tenant_id, double.app, SECRET, authority=double.authority_host,
                                        disable_instance_discovery=True, connection_verify=double.ca_pem)
    kw = dict(verify_challenge_resource=False, connection_verify=double.ca_pem)
    return SecretClient(double.vault_url, credential, **kw), KeyClient(double.vault_url, credential, **kw)


def azure_gateway(make_gateway, double, mode="envelope", name="data", **over):
    _, keys = sdk(double)
    key = over.pop("key", None) or f"dyad-key-{uuid.uuid4().hex[:8]}"
    if not over.pop("no_key", False):
        keys.create_rsa_key(key, size=2048)
    env = {"SECRETS_PROVIDER": "azure", "SECRETS_ENCRYPTION_MODE": mode,
           "SECRETS_PREFIX": "dyad-" + uuid.uuid4().hex[:8], "AZURE_KEY_VAULT_URL": double.vault_url,
           "ENCRYPTION_KEY_ID": key, "AZURE_CA_BUNDLE": str(double.ca_pem), "AZURE_AUTH_METHOD": "secret",
           "AZURE_AUTHORITY_HOST": double.authority_host, "AZURE_TENANT_ID": double.tenant_id,
           "AZURE_CLIENT_ID": double.app, "AZURE_CLIENT_SECRET": SECRET, "AZURE_VERIFY_CHALLENGE_RESOURCE": "false",
           "AZURE_MAX_RETRIES": "1", "ENCRYPTION_KEY": None}
    env.update(over)
    gw = make_gateway(env, name=name).start()
    gw.prefix, gw.key = env["SECRETS_PREFIX"], key
    return gw


def rotate_and_wait(gw, force=False):
    run = data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={"force": force}), 202)
    for _ in range(300):
        status = data(gw.call("GET", "/admin/secrets/key-rotation/status"))
        done = [h for h in status["history"] if h["id"] == run["id"] and h["status"] != "running"]
        if done:
            return done[0], status
        time.sleep(0.1)
    raise AssertionError("the rotation did not finish")


def wrapped_kid_version(envelope):
    """The Key Vault key version the envelope's DEK was wrapped under ("<version>:<base64url>")."""
    return base64.b64decode(envelope["dek"]).decode().split(":", 1)[0]


def test_envelope_lifecycle_read_back_with_the_sdk(make_gateway, double):
    gw = azure_gateway(make_gateway, double)
    secrets, keys = sdk(double)
    creds = {"api_key": canary(), "note": "naïve “quotes” 🔑 日本語"}
    p = create_provider(gw, "openai", creds)
    s = secrets.get_secret(f"{gw.prefix}--providers--{p['id']}")
    envelope = json.loads(s.value)
    assert creds["api_key"] not in s.value
    assert envelope["kms"] == "azure-kv" and envelope["kver"] == 1 and envelope["kid"].endswith("/" + gw.key)
    assert wrapped_kid_version(envelope) == keys.get_key(gw.key).properties.version
    assert s.properties.content_type == "application/json"
    assert s.properties.tags == {"managed-by": "dyad-gateway", "provider-id": p["id"],
                                 "credentials-version": str(envelope["cv"])}
    v = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] is True and v["source"] == "store" and v["fingerprint"] == keyed_fingerprint(gw, creds)
    # A rotation in the gateway: a new Key Vault key version, every DEK rewrapped under it.
    run, status = rotate_and_wait(gw)
    assert run["status"] == "completed" and run["reencrypted"] == 1 and run["toKeyVersion"] == 2, run
    after = json.loads(secrets.get_secret(f"{gw.prefix}--providers--{p['id']}").value)
    assert after["kver"] == 2 and after["cv"] == envelope["cv"]
    assert wrapped_kid_version(after) == keys.get_key(gw.key).properties.version != wrapped_kid_version(envelope)
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] is True and v["source"] == "store" and v["fingerprint"] == keyed_fingerprint(gw, creds)
    # Deleting the provider soft-deletes its secret.
    assert gw.call("DELETE", f"/admin/providers/{p['id']}").status_code == 200
    assert f"{gw.prefix}--providers--{p['id']}" in [d.name for d in secrets.list_deleted_secrets()]
    assert creds["api_key"] not in gw.logs()


def test_a_key_rotation_made_in_azure_becomes_the_next_version(make_gateway, double):
    gw = azure_gateway(make_gateway, double)
    secrets, keys = sdk(double)
    p = create_provider(gw, "openai", {"api_key": canary()})
    keys.rotate_key(gw.key)  # outside the gateway: a rotation policy, the portal
    for _ in range(30):  # Key Vault is asked at most once a second
        status = data(gw.call("GET", "/admin/secrets/key-rotation/status"))
        if status["primaryKeyVersion"] != 1:
            break
        time.sleep(0.2)
    assert status["primaryKeyVersion"] == 2, (status, gw.logs()[-2000:])
    # New writes go to it at once: the blob of a credentials rotation names it.
    data(gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": {"api_key": canary()}}))
    envelope = json.loads(secrets.get_secret(f"{gw.prefix}--providers--{p['id']}").value)
    assert envelope["kver"] == 2 and wrapped_kid_version(envelope) == keys.get_key(gw.key).properties.version
    # A run makes its own new version (3) and moves the blob to it.
    run, _ = rotate_and_wait(gw)
    assert run["status"] == "completed" and run["reencrypted"] == 1 and run["toKeyVersion"] == 3, run
    envelope = json.loads(secrets.get_secret(f"{gw.prefix}--providers--{p['id']}").value)
    assert envelope["kver"] == 3 and wrapped_kid_version(envelope) == keys.get_key(gw.key).properties.version


def test_provider_mode_interop_both_ways(make_gateway, double):
    gw = azure_gateway(make_gateway, double, mode="provider")
    secrets, _ = sdk(double)
    creds = {"api_key": canary()}
    p = create_provider(gw, "openai", creds)
    name = f"{gw.prefix}--providers--{p['id']}"
    assert json.loads(secrets.get_secret(name).value) == creds
    theirs = {"api_key": canary()}
    secrets.set_secret(name, json.dumps(theirs), content_type="application/json")
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] is True and v["fingerprint"] == keyed_fingerprint(gw, theirs)


def test_rbac_refusals_name_the_role(make_gateway, double):
    gw = azure_gateway(make_gateway, double)
    double.enforce_rbac = True
    double.assign_role(double.app, "Key Vault Secrets Officer")  # but no crypto role
    try:
        r = gw.call("POST", "/admin/providers", json={"name": "OpenAI", "slug": "openai", "type": "http-sdk", "adapterConfig": {"baseUrl": "https://api.example"},
                                                      "credentials": {"api_key": canary()}})
        assert r.status_code >= 400, r.text
        assert "Key Vault Crypto Officer" in r.text + gw.logs()
    finally:
        double.enforce_rbac = False
