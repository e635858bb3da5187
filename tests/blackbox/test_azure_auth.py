"""Each Entra ID method of the Azure backend, end to end against the loopback Key Vault double
(azure_double.py, proven with Microsoft's SDKs): the gateway writes a provider's secret in provider mode, which
only succeeds after the 401 challenge, a token from that method, and an authorized PUT."""
import json
import uuid

import pytest

from azure_double import AzureDouble, make_client_certificate
from conftest import canary, create_provider, data

SECRET = "client-secret-" + "q" * 20


@pytest.fixture(scope="module")
def double():
    d = AzureDouble().start()
    d.app = d.add_app(secret=SECRET)
    with d.lock:
        d._new_key_version("wrap-key", "RSA", 2048, None, None, None)
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def healthy(double):
    double.clear_faults()
    double.reset_counts()
    double.token_ttl = 3600
    yield


def azure_env(double, **over):
    env = {"SECRETS_PROVIDER": "azure", "SECRETS_ENCRYPTION_MODE": "provider",
           "SECRETS_PREFIX": "dyad-" + uuid.uuid4().hex[:8], "AZURE_KEY_VAULT_URL": double.vault_url,
           "ENCRYPTION_KEY_ID": "wrap-key", "AZURE_CA_BUNDLE": str(double.ca_pem),
           "AZURE_AUTHORITY_HOST": double.authority_host, "AZURE_TENANT_ID": double.tenant_id,
           "AZURE_POD_IDENTITY_AUTHORITY_HOST": double.imds_endpoint,
           "AZURE_VERIFY_CHALLENGE_RESOURCE": "false", "AZURE_MAX_RETRIES": "1"}
    env.update(over)
    return env


def stored(double, gw, pid):
    versions = double.secrets.get(f"{gw.prefix}--providers--{pid}") or []
    return json.loads(versions[-1]["value"]) if versions else None


def write_one(make_gateway, double, name="data", **env):
    e = azure_env(double, **env)
    gw = make_gateway(e, name=name).start()
    gw.prefix = e["SECRETS_PREFIX"]
    creds = {"api_key": canary()}
    p = create_provider(gw, "openai", creds)
    assert stored(double, gw, p["id"]) == creds
    assert double.count("token") + double.count("imds") + double.count("app_service") >= 1
    return gw, p, creds


def test_client_secret(make_gateway, double):
    gw, _, creds = write_one(make_gateway, double, AZURE_CLIENT_ID=double.app, AZURE_CLIENT_SECRET=SECRET,
                             AZURE_AUTH_METHOD="secret")
    assert creds["api_key"] not in gw.logs() and SECRET not in gw.logs()


def test_client_certificate(make_gateway, double, tmp_path):
    text = make_client_certificate().decode()
    (tmp_path / "cert.pem").write_text(text)
    client = double.add_app(certificate_pem=text)
    write_one(make_gateway, double, AZURE_CLIENT_ID=client, AZURE_CLIENT_CERTIFICATE_PATH=str(tmp_path / "cert.pem"))


def test_workload_identity(make_gateway, double, tmp_path):
    client = double.add_app()
    double.add_federated(client, "https://oidc.example/cluster", "system:serviceaccount:dyad:gateway")
    (tmp_path / "token").write_text(double.federated_token("https://oidc.example/cluster",
                                                           "system:serviceaccount:dyad:gateway"))
    write_one(make_gateway, double, AZURE_CLIENT_ID=client, AZURE_FEDERATED_TOKEN_FILE=str(tmp_path / "token"))


def test_managed_identity_imds_and_app_service(make_gateway, double):
    mi = double.add_managed_identity()
    write_one(make_gateway, double, AZURE_CLIENT_ID=mi, AZURE_TENANT_ID=None)
    assert double.count("imds") >= 1
    double.reset_counts()
    write_one(make_gateway, double, AZURE_AUTH_METHOD="managed", IDENTITY_ENDPOINT=double.app_service_endpoint,
              IDENTITY_HEADER=double.app_service_header, AZURE_TENANT_ID=None, name="app")
    assert double.count("app_service") >= 1


def test_a_token_refused_moments_after_its_fetch_fails_closed(make_gateway, double):
    # A vault refusing a token fetched under 30 s ago (another tenant, revoked at once) is a denial: the call fails
    # and Entra is not asked again (the refresh of an older refused token is unit-tested with a fake clock).
    gw, p, creds = write_one(make_gateway, double, AZURE_CLIENT_ID=double.app, AZURE_CLIENT_SECRET=SECRET)
    tokens = double.count("token")
    double.expire_tokens()
    for _ in range(3):
        r = gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": {"api_key": canary()}})
        assert r.status_code >= 400
    assert double.count("token") == tokens
    assert "a token fetched moments ago was refused" in gw.logs()


def test_a_wrong_secret_fails_closed(make_gateway, double):
    e = azure_env(double, AZURE_CLIENT_ID=double.app, AZURE_CLIENT_SECRET="wrong-" + SECRET)
    gw = make_gateway(e).start()
    r = gw.call("POST", "/admin/providers", json={"name": "OpenAI", "slug": "openai", "type": "http-sdk",
                                                    "credentials": {"api_key": canary()},
                                                    "adapterConfig": {"baseUrl": "https://api.example"}})
    assert r.status_code >= 400
    assert "wrong-" + SECRET not in gw.logs()
    assert not any(n.startswith(e["SECRETS_PREFIX"]) for n in double.secrets)


def test_no_token_goes_to_a_vault_outside_the_challenge_resource(make_gateway, double):
    # Verification on (the default): a loopback vault is not in vault.azure.net, so no token is ever fetched or sent.
    e = azure_env(double, AZURE_CLIENT_ID=double.app, AZURE_CLIENT_SECRET=SECRET, AZURE_VERIFY_CHALLENGE_RESOURCE=None)
    gw = make_gateway(e).start()
    r = gw.call("POST", "/admin/providers", json={"name": "OpenAI", "slug": "openai", "type": "http-sdk",
                                                    "credentials": {"api_key": canary()},
                                                    "adapterConfig": {"baseUrl": "https://api.example"}})
    assert r.status_code >= 400
    assert double.count("token") == 0
    assert "the 401 challenge is for https://vault.azure.net/.default, which this vault is not part of" in gw.logs()
    assert not any(n.startswith(e["SECRETS_PREFIX"]) for n in double.secrets)
