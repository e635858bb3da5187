"""The SecretStore and KeyManager contract suite (src/backends/contract_test.cc) against Azure on the Key Vault double.

The suite is the unit-test binary's `Backends/StoreContract.*/azure` cases, opened through the backend registry as
the gateway opens SECRETS_PROVIDER=azure (Entra client-secret auth, the double's CA); here they get a double with two
RSA keys (the second for the wrong-key case), and an oct-HSM key for a second run.
"""
import os
import subprocess
import uuid

import pytest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient

from azure_double import AzureDouble
from test_contract import unit_tests_binary

SECRET = "client-secret-" + "c" * 20


@pytest.fixture(scope="module")
def double():
    d = AzureDouble().start()
    d.client_id = d.add_app(secret=SECRET)
    d.lag = 2  # deletes and recoveries complete asynchronously, as Key Vault's do
    yield d
    d.stop()


def make_key(double, kty="RSA"):
    credential = ClientSecretCredential(double.tenant_id, double.client_id, SECRET, authority=double.authority_host,
                                        disable_instance_discovery=True, connection_verify=double.ca_pem)
    keys = KeyClient(double.vault_url, credential, verify_challenge_resource=False, connection_verify=double.ca_pem)
    name = f"contract-{uuid.uuid4().hex[:8]}"
    if kty == "RSA":
        keys.create_rsa_key(name, size=2048)
    else:
        keys.create_oct_key(name, size=256, hardware_protected=True)
    return name


def run_contract(double, key, other, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "SECRETS_", "ENCRYPTION_", "DYAD_"))}
    env.update(DYAD_CONTRACT_AZURE="1", DYAD_CONTRACT_OTHER_KEY_ID=other, ENCRYPTION_KEY_ID=key,
               AZURE_KEY_VAULT_URL=double.vault_url, AZURE_CA_BUNDLE=double.ca_pem, AZURE_AUTH_METHOD="secret",
               AZURE_TENANT_ID=double.tenant_id, AZURE_CLIENT_ID=double.client_id, AZURE_CLIENT_SECRET=SECRET,
               AZURE_AUTHORITY_HOST=double.authority_host, AZURE_VERIFY_CHALLENGE_RESOURCE="false", **extra)
    run = subprocess.run([str(unit_tests_binary()), "--gtest_filter=Backends/StoreContract.*/azure"], env=env,
                         capture_output=True, text=True, timeout=900)
    return run.returncode, run.stdout + run.stderr


def test_azure_passes_the_backend_contract(double):
    rc, out = run_contract(double, make_key(double), make_key(double))
    assert rc == 0, out[-6000:]
    # Only the conditional-write cases skip: Key Vault has none, the lease fences its writers.
    assert "2 tests, listed below" in out, out[-3000:]
    assert "ATokenFromBeforeADeleteDoesNotMatchTheNameCreatedAgain" in out, out[-3000:]
    assert "ATokenFromBeforeADeleteDoesNotWriteTheSecretBack" in out, out[-3000:]
    assert double.count("recover_deleted_secret") > 0  # DeleteNow without purge leaves names to recover


def test_azure_passes_the_key_contract_with_an_oct_hsm_key(double):
    rc, out = run_contract(double, make_key(double, "oct-HSM"), make_key(double, "oct-HSM"))
    assert rc == 0, out[-6000:]


def test_azure_passes_the_store_contract_purging_deleted_secrets(double):
    purged = double.count("purge_deleted_secret", 204)
    double.lag = 1  # each purge waits once for its delete: 120 secrets are purged at the end of one case
    try:
        rc, out = run_contract(double, make_key(double), make_key(double), AZURE_PURGE_ON_DELETE="true")
    finally:
        double.lag = 2
    assert rc == 0, out[-6000:]
    assert double.count("purge_deleted_secret", 204) > purged
