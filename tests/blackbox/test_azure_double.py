"""The Key Vault double is proven by Microsoft's own SDKs: what azure-keyvault-secrets/keys and azure-identity
accept from it is what the gateway's Azure backend is tested against (test_azure.py)."""
import base64
import json
import re
import time
import uuid

import msal
import pytest
import requests
from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                   ResourceNotFoundError, ServiceRequestError, ServiceResponseError)
from azure.identity import (CertificateCredential, ClientSecretCredential, ManagedIdentityCredential,
                            WorkloadIdentityCredential)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from azure_double import AzureDouble, b64url, make_client_certificate, sign_jwt

SECRET = "client-secret-" + "z" * 20
VERSION_RE = r"[0-9a-f]{32}"


@pytest.fixture(scope="module")
def double():
    d = AzureDouble().start()
    d.client_id = d.add_app(secret=SECRET)
    yield d
    d.stop()


@pytest.fixture(autouse=True)
def healthy(double):
    double.clear_faults()
    double.reset_counts()
    double.token_ttl = 3600
    yield


def sdk(double):
    """What every SDK client and credential of these tests is built with (a loopback vault, its own CA)."""
    return dict(connection_verify=double.ca_pem, retry_backoff_factor=0.01)


def credential_kwargs(double):
    return dict(authority=double.authority_host, disable_instance_discovery=True, **sdk(double))


def secret_credential(double):
    return ClientSecretCredential(double.tenant_id, double.client_id, SECRET, **credential_kwargs(double))


def secrets_client(double, credential=None, **kw):
    return SecretClient(double.vault_url, credential or secret_credential(double), verify_challenge_resource=False,
                        **{**sdk(double), **kw})


def keys_client(double, credential=None):
    return KeyClient(double.vault_url, credential or secret_credential(double), verify_challenge_resource=False,
                     **sdk(double))


def crypto_client(double, key, credential=None):
    return CryptographyClient(key, credential or secret_credential(double), verify_challenge_resource=False,
                              **sdk(double))


def name(prefix="s"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------------------------ secrets

def test_secret_set_get_versions_and_update(double):
    client, n = secrets_client(double), name()
    first = client.set_secret(n, "v1", content_type="text/plain", tags={"owner": "dyad"})
    second = client.set_secret(n, "v2")
    assert re.fullmatch(rf"{double.vault_url}/secrets/{n}/{VERSION_RE}", first.id)
    assert first.properties.version != second.properties.version
    assert client.get_secret(n).value == "v2"
    old = client.get_secret(n, first.properties.version)
    assert (old.value, old.properties.content_type, old.properties.tags) == ("v1", "text/plain", {"owner": "dyad"})
    assert old.properties.enabled is True and old.properties.recoverable_days == 90
    versions = {p.version for p in client.list_properties_of_secret_versions(n)}
    assert versions == {first.properties.version, second.properties.version}
    client.update_secret_properties(n, first.properties.version, enabled=False)
    with pytest.raises(HttpResponseError) as err:
        client.get_secret(n, first.properties.version)
    assert err.value.status_code == 403 and "disabled secret" in err.value.message
    with pytest.raises(ResourceNotFoundError) as err:
        client.get_secret(n, "0" * 32)
    assert err.value.error.code == "SecretNotFound"


def test_secret_list_pages(double):
    client, prefix = secrets_client(double), name("page")
    for i in range(12):
        client.set_secret(f"{prefix}-{i:02d}", "x")
    double.reset_counts()
    names = [p.name for p in client.list_properties_of_secrets(max_page_size=5)]
    assert sorted(n for n in names if n.startswith(prefix)) == [f"{prefix}-{i:02d}" for i in range(12)]
    assert len(names) == len(set(names))
    assert double.count("list_secrets") >= 3  # followed nextLink more than once


def test_secret_delete_recover_purge_and_conflict(double):
    client, n = secrets_client(double), name()
    client.set_secret(n, "v1")
    deleted = client.begin_delete_secret(n).result()
    assert deleted.recovery_id == f"{double.vault_url}/deletedsecrets/{n}"
    assert deleted.scheduled_purge_date > deleted.deleted_date
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(n)
    with pytest.raises(ResourceExistsError) as err:
        client.set_secret(n, "v2")
    assert err.value.status_code == 409
    assert f"Secret {n} is currently in a deleted but recoverable state" in err.value.message
    assert client.get_deleted_secret(n).name == n
    assert n in {s.name for s in client.list_deleted_secrets()}
    client.begin_recover_deleted_secret(n).result()
    assert client.get_secret(n).value == "v1"
    client.begin_delete_secret(n).result()
    client.purge_deleted_secret(n)
    with pytest.raises(ResourceNotFoundError) as err:
        client.get_deleted_secret(n)
    assert "Deleted Secret not found" in err.value.message
    assert client.set_secret(n, "fresh").value == "fresh"  # the name is free once purged
    assert len(list(client.list_properties_of_secret_versions(n))) == 1


def test_delete_and_recover_complete_asynchronously(double):
    client, n = secrets_client(double), name()
    client.set_secret(n, "v1")
    double.lag = 2
    poller = client.begin_delete_secret(n, _polling_interval=0.05)
    with pytest.raises(ResourceExistsError) as err:  # the name is held while the delete completes
        client.set_secret(n, "v2")
    assert "currently being deleted" in err.value.message
    poller.wait()  # a Key Vault poller's result() does not wait; wait() polls get_deleted_secret
    assert poller.done() and poller.result().name == n
    assert double.count("get_deleted_secret", 404) == 1 and double.count("get_deleted_secret", 200) >= 1
    client.begin_recover_deleted_secret(n, _polling_interval=0.05).wait()
    assert double.count("get_secret", 404) >= 1  # the poller looked until the secret read again
    assert client.get_secret(n).value == "v1"


# ------------------------------------------------------------------------------------------------ keys

def test_key_create_get_rotate_versions_disable(double):
    client, n = keys_client(double), name("k")
    key = client.create_rsa_key(n, size=3072)
    assert re.fullmatch(rf"{double.vault_url}/keys/{n}/{VERSION_RE}", key.id)
    assert key.key_type == "RSA" and "unwrapKey" in key.key_operations
    public = rsa.RSAPublicNumbers(int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big"))
    assert public.public_key().key_size == 3072
    rotated = client.rotate_key(n)
    assert rotated.properties.version != key.properties.version and rotated.key.n != key.key.n
    assert client.get_key(n).id == rotated.id
    assert client.get_key(n, key.properties.version).key.n == key.key.n
    versions = {p.version for p in client.list_properties_of_key_versions(n)}
    assert versions == {key.properties.version, rotated.properties.version}
    disabled = client.update_key_properties(n, key.properties.version, enabled=False)
    assert disabled.properties.enabled is False
    assert client.get_key(n).properties.enabled is True
    with pytest.raises(ResourceNotFoundError) as err:
        client.get_key(name("missing"))
    assert err.value.error.code == "KeyNotFound"


def test_wrap_unwrap_rsa_oaep_256_and_disabled_version(double):
    keys, n = keys_client(double), name("k")
    key = keys.create_rsa_key(n, size=2048)
    crypto = crypto_client(double, key)
    dek = bytes(range(32))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)  # with key material at hand: local
    assert wrapped.key_id == key.id and len(wrapped.encrypted_key) == 256
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek  # remote
    assert double.count("unwrap_key", 200) == 1

    # the SDK's local wrap from the public JWK only, unwrapped by the vault
    local = CryptographyClient.from_jwk(key.key).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, local.encrypted_key).key == dek

    # a caller without keys/read (Crypto Service Encryption User-like): the SDK wraps remotely
    double.fail_next(1, 403, ops=["get_key"])
    remote = crypto_client(double, key.id)
    remote_wrapped = remote.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
    assert double.count("wrap_key", 200) == 1 and remote_wrapped.key_id == key.id
    assert remote.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, remote_wrapped.encrypted_key).key == dek

    # an old version keeps unwrapping after a rotation, until it is disabled
    keys.rotate_key(n)
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek
    keys.update_key_properties(n, key.properties.version, enabled=False)
    with pytest.raises(HttpResponseError) as err:
        crypto_client(double, key.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    assert err.value.status_code == 403 and err.value.error.code == "Forbidden"
    assert "not allowed on a disabled key" in err.value.message

    with pytest.raises(HttpResponseError) as err:  # someone else's ciphertext
        crypto_client(double, keys.get_key(n).id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"\x01" * 256)
    assert err.value.status_code == 400


def test_oct_hsm_a256kw(double):
    keys, n = keys_client(double), name("oct")
    key = keys.create_oct_key(n, size=256, hardware_protected=True)
    assert key.key_type == "oct-HSM" and key.key.k is None  # an HSM key never leaves the vault
    # Given a JWK without k the SDK would wrap locally with a key of its own making; a caller without keys/read
    # makes it use the vault, as the gateway does.
    double.fail_next(1, 403, ops=["get_key"])
    crypto = crypto_client(double, key.id)
    dek = b"\x07" * 32
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.aes_256, dek)
    assert len(wrapped.encrypted_key) == 40
    assert crypto.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key == dek
    assert double.count("wrap_key", 200) == 1 and double.count("unwrap_key", 200) == 1


def test_key_in_a_second_vault_of_the_same_tenant(double):
    other = AzureDouble(identity=double).start()
    other.client_id = double.client_id
    try:
        key = keys_client(other).create_rsa_key(name("k"))
        assert key.id.startswith(other.vault_url + "/keys/")
        wrapped = CryptographyClient.from_jwk(key.key).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"d" * 32)
        unwrapped = crypto_client(other, key).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
        assert unwrapped.key == b"d" * 32
        assert other.count("token") == 0 and double.count("token") >= 1  # one tenant, one token endpoint
    finally:
        other.stop()


# ------------------------------------------------------------------------------------------------ identities

def test_client_secret_and_wrong_secret(double):
    assert secrets_client(double).set_secret(name(), "x").value == "x"
    bad = ClientSecretCredential(double.tenant_id, double.client_id, "wrong", **credential_kwargs(double))
    with pytest.raises(ClientAuthenticationError) as err:
        secrets_client(double, bad).get_secret("anything")
    assert "AADSTS7000215" in str(err.value)
    assert double.count("token", 401) == 1 and double.count("get_secret", 200) == 0
    unknown = ClientSecretCredential(double.tenant_id, str(uuid.uuid4()), SECRET, **credential_kwargs(double))
    with pytest.raises(ClientAuthenticationError) as err:
        unknown.get_token("https://vault.azure.net/.default")
    assert "AADSTS700016" in str(err.value)


def test_certificate_credential(double, tmp_path):
    pem = make_client_certificate()
    client_id = double.add_app(certificate_pem=pem)
    path = tmp_path / "app.pem"
    path.write_bytes(pem)
    cred = CertificateCredential(double.tenant_id, client_id, certificate_path=str(path), **credential_kwargs(double))
    assert secrets_client(double, cred).set_secret(name(), "by-cert").value == "by-cert"
    other = CertificateCredential(double.tenant_id, client_id, certificate_data=make_client_certificate(),
                                  **credential_kwargs(double))
    with pytest.raises(ClientAuthenticationError) as err:
        other.get_token("https://vault.azure.net/.default")
    assert "AADSTS700027" in str(err.value)


def test_certificate_assertion_ps256_x5t_s256_and_forged_signature(double):
    """MSAL's own PS256 + x5t#S256 form (what a client computing the SHA-256 thumbprint sends), and a forgery."""
    pem = make_client_certificate()
    client_id = double.add_app(certificate_pem=pem)
    key_pem, cert_pem = pem.split(b"-----BEGIN CERTIFICATE-----")
    session = requests.Session()
    session.verify, session.trust_env = double.ca_pem, False  # REQUESTS_CA_BUNDLE would win over verify
    app = msal.ConfidentialClientApplication(
        client_id, client_credential={"private_key": key_pem.decode(),
                                      "public_certificate": "-----BEGIN CERTIFICATE-----" + cert_pem.decode()},
        authority=f"{double.authority_host}/{double.tenant_id}", http_client=session, instance_discovery=False)
    result = app.acquire_token_for_client(["https://vault.azure.net/.default"])
    assert "access_token" in result, result

    cert = x509.load_pem_x509_certificate(b"-----BEGIN CERTIFICATE-----" + cert_pem)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    forged = sign_jwt(forger, {"iss": client_id, "sub": client_id, "aud": double.token_endpoint, "exp": now + 600,
                               "nbf": now, "jti": str(uuid.uuid4())},
                      {"x5t#S256": b64url(cert.fingerprint(hashes.SHA256()))})
    r = session.post(double.token_endpoint, data={
        "grant_type": "client_credentials", "client_id": client_id, "scope": "https://vault.azure.net/.default",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": forged})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "AADSTS700027: Client assertion failed signature validation." in r.json()["error_description"]


def test_workload_identity(double, tmp_path):
    issuer, subject = "https://oidc.dyad.example/cluster", "system:serviceaccount:dyad:gateway"
    client_id = str(uuid.uuid4())
    double.add_federated(client_id, issuer, subject)
    token_file = tmp_path / "token"
    token_file.write_text(double.federated_token(issuer, subject))
    cred = WorkloadIdentityCredential(tenant_id=double.tenant_id, client_id=client_id,
                                      token_file_path=str(token_file), **credential_kwargs(double))
    assert secrets_client(double, cred).set_secret(name(), "wi").value == "wi"
    token_file.write_text(double.federated_token(issuer, "system:serviceaccount:other:sa"))
    stranger = WorkloadIdentityCredential(tenant_id=double.tenant_id, client_id=client_id,
                                          token_file_path=str(token_file), **credential_kwargs(double))
    with pytest.raises(ClientAuthenticationError) as err:
        stranger.get_token("https://vault.azure.net/.default")
    assert "AADSTS70021" in str(err.value)


def test_managed_identity_imds(double, monkeypatch):
    mi = double.add_managed_identity()
    for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", double.imds_endpoint)
    cred = ManagedIdentityCredential(client_id=mi, **sdk(double))
    assert secrets_client(double, cred).set_secret(name(), "mi").value == "mi"
    assert double.count("imds", 200) == 1
    r = requests.get(double.imds_endpoint + "/metadata/identity/oauth2/token",
                     params={"api-version": "2018-02-01", "resource": "https://vault.azure.net"}, timeout=5)
    assert r.status_code == 400 and "metadata header" in r.json()["error_description"]


def test_managed_identity_app_service(double, monkeypatch):
    double.add_managed_identity()
    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", double.app_service_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", double.app_service_header)
    cred = ManagedIdentityCredential(**sdk(double))
    assert secrets_client(double, cred).set_secret(name(), "app-service").value == "app-service"
    assert double.count("app_service", 200) == 1
    r = requests.get(double.app_service_endpoint, params={"api-version": "2019-08-01",
                                                          "resource": "https://vault.azure.net"},
                     headers={"X-IDENTITY-HEADER": "guess"}, timeout=5)
    assert r.status_code == 401


def test_short_lived_tokens_are_refreshed_and_expired_ones_refused(double):
    double.token_ttl = 30  # under the SDKs' 5-minute refresh margin: every request fetches a fresh token
    client, n = secrets_client(double), name()
    client.set_secret(n, "v")
    client.get_secret(n)
    assert double.count("token", 200) >= 2
    token = secret_credential(double).get_token("https://vault.azure.net/.default").token
    url = f"{double.vault_url}/secrets/{n}?api-version=7.5"
    assert requests.get(url, headers={"Authorization": "Bearer " + token}, verify=double.ca_pem).status_code == 200
    double.expire_tokens()
    r = requests.get(url, headers={"Authorization": "Bearer " + token}, verify=double.ca_pem)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------------------ the wire

def test_challenge_and_wire_shapes(double):
    r = requests.get(f"{double.vault_url}/secrets/x?api-version=7.5", verify=double.ca_pem)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (f'Bearer authorization="{double.authority_host}/{double.tenant_id}", '
                                             'resource="https://vault.azure.net"')
    token = secret_credential(double).get_token("https://vault.azure.net/.default").token
    auth = {"Authorization": "Bearer " + token}
    mgmt = secret_credential(double).get_token("https://management.azure.com/.default").token
    r = requests.get(f"{double.vault_url}/secrets/x?api-version=7.5", headers={"Authorization": "Bearer " + mgmt},
                     verify=double.ca_pem)
    assert r.status_code == 401 and "AKV10022" in r.json()["error"]["message"]

    def call(method, path, body=None, raw=None):
        return requests.request(method, f"{double.vault_url}{path}", headers=auth, verify=double.ca_pem,
                                data=raw if raw is not None else (json.dumps(body) if body is not None else None))

    assert call("PUT", "/secrets/bad?api-version=7.5", raw="{not json").json()["error"]["code"] == "BadParameter"
    assert call("PUT", "/secrets/bad?api-version=7.5", body={"value": 5}).status_code == 400
    assert call("PUT", "/secrets/bad?api-version=7.5", body={"value": "x" * 30000}).status_code == 400
    assert call("PUT", "/secrets/bad_name!?api-version=7.5", body={"value": "x"}).status_code == 400
    assert call("GET", "/secrets/x").status_code == 400  # no api-version
    assert call("POST", "/keys/nope/wrapkey?api-version=7.5", body={"alg": "RSA-OAEP-256", "value": "AA"}
                ).json()["error"]["code"] == "KeyNotFound"
    n = name("k")
    bundle = call("POST", f"/keys/{n}/create?api-version=7.5", body={"kty": "RSA", "key_size": 2048}).json()
    assert set(bundle["key"]) == {"kid", "kty", "key_ops", "n", "e"} and bundle["key"]["e"] == "AQAB"
    assert call("POST", f"/keys/{n}/create?api-version=7.5", body={"kty": "RSA", "key_size": 1000}).status_code == 400
    v = bundle["key"]["kid"].rsplit("/", 1)[1]
    assert call("POST", f"/keys/{n}/{v}/wrapkey?api-version=7.5", body={"alg": "A256KW", "value": "AA"}
                ).status_code == 400
    listing = call("GET", "/secrets?api-version=7.5&maxresults=1").json()
    assert set(listing) == {"value", "nextLink"}
    assert call("GET", "/secrets?api-version=7.5&maxresults=26").status_code == 400
    assert double.api_versions["7.5"] >= 8


# ------------------------------------------------------------------------------------------------ faults

def test_429_then_success_and_no_storm(double):
    client, n = secrets_client(double), name()
    client.set_secret(n, "v")
    double.reset_counts()
    double.fail_next(1, 429, ops=["get_secret"], retry_after=1)
    assert client.get_secret(n).value == "v"
    assert double.count("get_secret", 429) == 1 and double.count("get_secret", 200) == 1
    refused, served = double.times("get_secret")
    assert served - refused >= 0.9  # Retry-After: 1 was honoured
    double.fail_next(2, 503, ops=["get_secret"])
    assert client.get_secret(n).value == "v"
    assert double.count("get_secret", 503) == 2 and double.count("get_secret") == 5  # 429+200, 503+503+200


def test_rbac_denial_roles_and_down(double):
    client, n = secrets_client(double), name()
    client.set_secret(n, "v")
    double.deny(["get_secret"])
    with pytest.raises(HttpResponseError) as err:
        client.get_secret(n)
    assert err.value.status_code == 403 and "Caller is not authorized to perform action on resource" in \
        err.value.message and "secrets/getSecret/action" in err.value.message
    assert double.count("get_secret", 403) == 1  # a 403 is not retried
    double.allow()

    reader = double.add_app(secret="reader-secret-123456")
    double.assign_role(reader, "Key Vault Secrets User")
    double.enforce_rbac = True
    reader_client = secrets_client(double, ClientSecretCredential(double.tenant_id, reader, "reader-secret-123456",
                                                                  **credential_kwargs(double)))
    assert reader_client.get_secret(n).value == "v"
    with pytest.raises(HttpResponseError) as err:
        reader_client.set_secret(n, "w")
    assert err.value.status_code == 403 and err.value.error.code == "Forbidden"
    double.enforce_rbac = False

    quick = secrets_client(double, retry_total=0)
    quick.get_secret(n)
    double.set_down("reset")
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        quick.get_secret(n)
    double.set_down("503")
    with pytest.raises(HttpResponseError) as err:
        quick.get_secret(n)
    assert err.value.status_code == 503
    double.set_down("hang")
    started = time.monotonic()
    with pytest.raises(ServiceResponseError):
        quick.get_secret(n, read_timeout=0.3)
    assert time.monotonic() - started < 5
    double.set_down(None)
    assert quick.get_secret(n).value == "v"


def test_standalone_control_api(double):
    control = double.describe()["control"]
    assert requests.post(control + "/fail", json={"n": 1, "status": 500, "ops": ["get_key"]}, timeout=5).ok
    assert double._take_fault("get_key") == (500, 1)
    assert requests.post(control + "/reset", timeout=5).ok
    assert requests.get(control + "/counts", timeout=5).json()["counts"] == {}
