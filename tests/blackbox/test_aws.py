"""SECRETS_PROVIDER=aws against real peers: moto_server with SigV4 verification, local-kms, ec2-metadata-mock."""
import base64
import datetime
import json
import os
import time
import uuid

import botocore.exceptions
import pytest

from aws_peers import LocalKms, MetadataMock, Moto
from conftest import canary, create_provider, data, provider_body
from fault_proxy import FaultProxy
from test_rotation import wait_idle
from test_secrets import keyed_fingerprint


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto"))
    yield m
    m.stop()


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def aws_gateway(make_gateway, moto, mode="envelope", name="data", **env):
    """A gateway on moto with its own KMS key and secret prefix (tests share one moto)."""
    key = None
    if "ENCRYPTION_KEY_ID" not in env:
        alias = unique("dyad-key")
        key = moto.make_key(alias)
        env["ENCRYPTION_KEY_ID"] = alias
    env.setdefault("SECRETS_PREFIX", unique("dyad"))
    gw = make_gateway(moto.gateway_env(SECRETS_ENCRYPTION_MODE=mode, **env), name=name)
    gw.prefix, gw.kms_key = env["SECRETS_PREFIX"], key
    return gw.start()


def validate(gw, pid):
    return data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))


def test_lifecycle_rotate_validate_health(make_gateway, moto):
    gw = aws_gateway(make_gateway, moto)
    sm = moto.client("secretsmanager")
    creds = {"api_key": canary(), "note": "naïve “quotes” \"x\" 'y'\nline two\t🔑 日本語"}
    p = create_provider(gw, "openai", creds)
    name = f"{gw.prefix}/providers/{p['id']}"
    stored = sm.get_secret_value(SecretId=name)["SecretString"]
    envelope = json.loads(stored)
    assert envelope["kms"] == "aws-kms" and envelope["kver"] == 1 and creds["api_key"] not in stored
    assert {"Key": "managed-by", "Value": "dyad-gateway"} in sm.describe_secret(SecretId=name)["Tags"]
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["source"] == "store" and v["fingerprint"] == keyed_fingerprint(gw, creds)
    assert validate(gw, p["id"])["source"] == "cache"

    new = {"api_key": canary()}
    data(gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": new}))
    v = validate(gw, p["id"])
    assert v["fingerprint"] == keyed_fingerprint(gw, new) and v["source"] == "store"
    versions = sm.list_secret_version_ids(SecretId=name)["Versions"]
    # A replace is a compare-and-swap: the new version was staged as "dyad-pending" before AWSCURRENT moved to it.
    assert sorted(s for v in versions for s in v.get("VersionStages", [])) == ["AWSCURRENT", "AWSPREVIOUS",
                                                                              "dyad-pending"]

    h = data(gw.call("GET", "/admin/secrets/health"))
    assert h["status"] == "healthy" and h["provider"] == "aws" and h["keyManager"]["kind"] == "aws-kms"
    t = data(gw.call("POST", "/admin/secrets/test-connection"))
    assert t["connected"] is True and all(s["ok"] for s in t["steps"])
    # Every cloud call is counted per endpoint and operation.
    metrics = gw.call("GET", "/metrics").text
    host = moto.endpoint.removeprefix("http://")
    for op in ("GetSecretValue", "CreateSecret", "PutSecretValue", "UpdateSecretVersionStage", "GenerateDataKey"):
        assert f'dyad_cloud_calls_total{{endpoint="{host}",op="{op}",outcome="ok"}}' in metrics, (op, metrics[-3000:])

    data(gw.call("DELETE", f"/admin/providers/{p['id']}"))
    assert "DeletedDate" in sm.describe_secret(SecretId=name)  # kept for the recovery window
    listed = sm.list_secrets(Filters=[{"Key": "name", "Values": [gw.prefix + "/"]}])["SecretList"]
    assert listed == []  # test-connection's probe was deleted at once, the provider's is pending deletion
    for text in (gw.logs(), gw.stdout):
        assert creds["api_key"] not in text and new["api_key"] not in text


def test_key_rotation_reencrypts_every_secret(make_gateway, moto):
    gw = aws_gateway(make_gateway, moto)
    made = {create_provider(gw, f"p-{i}", {"api_key": f"sk-{i}-{canary()}"})["id"]: i for i in range(110)}  # > 1 page
    run = data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
    h = wait_idle(gw)["history"][0]
    assert h["id"] == run["id"] and h["status"] == "completed", h
    assert (h["fromKeyVersion"], h["toKeyVersion"], h["reencrypted"], h["failed"]) == (1, 2, 110, 0), h
    sm = moto.client("secretsmanager")
    rotations = moto.client("kms").list_key_rotations(KeyId=gw.kms_key["KeyId"])
    assert len(rotations["Rotations"]) == 1  # RotateKeyOnDemand reached KMS
    for pid in made:
        stored = sm.get_secret_value(SecretId=f"{gw.prefix}/providers/{pid}", VersionStage="AWSCURRENT")
        assert json.loads(stored["SecretString"])["kver"] == 2
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    for pid in made:
        assert validate(gw, pid)["valid"] is True
    h = data(gw.call("GET", "/admin/secrets/health"))
    assert [v["state"] for v in h["keyManager"]["versions"]] == ["retired", "active"]


def test_a_rotation_kms_makes_on_its_own_is_seen_and_reencrypted(make_gateway, moto):
    gw = aws_gateway(make_gateway, moto)
    made = [create_provider(gw, f"p-{i}", {"api_key": canary()})["id"] for i in range(3)]
    assert data(gw.call("GET", "/admin/secrets/key-rotation/status"))["primaryKeyVersion"] == 1
    moto.client("kms").rotate_key_on_demand(KeyId=gw.kms_key["KeyId"])  # outside the gateway
    rotated_at = time.monotonic()
    # KMS is asked about rotations at most once a second: the new version shows within about that.
    while data(gw.call("GET", "/admin/secrets/key-rotation/status"))["primaryKeyVersion"] != 2:
        assert time.monotonic() - rotated_at < 5, "the rotation made outside the gateway was not seen"
        time.sleep(0.05)
    assert "was rotated outside the gateway" in gw.logs()
    data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
    h = wait_idle(gw)["history"][0]
    assert h["status"] == "completed" and h["reencrypted"] == 3 and h["toKeyVersion"] >= 2, h
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    assert all(validate(gw, pid)["valid"] for pid in made)


def test_prefix_with_every_allowed_character_and_64k_values(make_gateway, moto):
    prefix = unique("a/b_c+d=e.f@g-h")
    gw = aws_gateway(make_gateway, moto, mode="provider", SECRETS_PREFIX=prefix)
    big = {"api_key": "k" * (65536 - len('{"api_key":""}'))}  # exactly the 64 KiB SecretString limit
    p = create_provider(gw, "big", big)
    got = moto.client("secretsmanager").get_secret_value(SecretId=f"{prefix}/providers/{p['id']}")["SecretString"]
    assert len(got.encode()) == 65536 and json.loads(got) == big
    assert validate(gw, p["id"])["fingerprint"] == keyed_fingerprint(gw, big)
    too_big = {"api_key": "k" * 65536}
    r = gw.call("POST", "/admin/providers", json=provider_body(slug="too-big", credentials=too_big))
    assert r.status_code in (400, 413, 422), r.text
    assert too_big["api_key"] not in r.text and "65536" in r.text
    assert [x["slug"] for x in data(gw.call("GET", "/admin/providers"))["items"]] == ["big"]
    # Envelope mode: base64 and the wrapped key take a quarter of the room.
    env_gw = aws_gateway(make_gateway, moto, name="envelope")
    fits = {"api_key": "é" * 22000}  # 44,000 bytes of UTF-8
    p = create_provider(env_gw, "fits", fits)
    assert validate(env_gw, p["id"])["fingerprint"] == keyed_fingerprint(env_gw, fits)
    r = env_gw.call("POST", "/admin/providers", json=provider_body(slug="no-room", credentials={"api_key": "k" * 50000}))
    assert r.status_code == 400 and "AWS Secrets Manager stores at most 65536" in r.text, r.text
    assert [x["slug"] for x in data(env_gw.call("GET", "/admin/providers"))["items"]] == ["fits"]


def test_provider_mode_interop_with_boto3(make_gateway, moto):
    alias = unique("sm-key")
    key = moto.make_key(alias)
    gw = aws_gateway(make_gateway, moto, mode="provider", ENCRYPTION_KEY_ID=alias)
    sm = moto.client("secretsmanager")
    creds = {"api_key": canary(), "org": "ünïcode \"q\"\n"}
    p = create_provider(gw, "interop", creds)
    name = f"{gw.prefix}/providers/{p['id']}"
    assert json.loads(sm.get_secret_value(SecretId=name)["SecretString"]) == creds  # boto3 reads the gateway's
    assert sm.describe_secret(SecretId=name)["KmsKeyId"] in ("alias/" + alias, key["Arn"], key["KeyId"])
    theirs = {"api_key": canary()}
    sm.put_secret_value(SecretId=name, SecretString=json.dumps(theirs))  # the gateway reads boto3's
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = validate(gw, p["id"])
    assert v["fingerprint"] == keyed_fingerprint(gw, theirs) and v["credentialsVersion"] == 1
    run = data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
    h = wait_idle(gw)["history"][0]
    assert h["id"] == run["id"] and h["status"] == "completed" and h["reencrypted"] == 1, h
    current = sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    assert json.loads(current["SecretString"]) == theirs  # rewritten, unchanged


def test_wrong_secret_key_fails_health_and_test_connection_without_fallback(make_gateway, moto):
    gw = aws_gateway(make_gateway, moto, AWS_SECRET_ACCESS_KEY="wrong" + moto.secret_key[5:],
                     DYAD_PROVIDER_OPENAI_API_KEY="sk-from-env")
    r = gw.call("POST", "/admin/secrets/test-connection")
    assert r.status_code == 503 and "SignatureDoesNotMatch" in r.text, r.text
    h = data(gw.call("GET", "/admin/secrets/health"))
    assert h["status"] == "unhealthy" and "SignatureDoesNotMatch" in h["storeError"]
    r = gw.call("POST", "/admin/providers", json=provider_body(slug="openai", credentials={"api_key": canary()}))
    assert r.status_code >= 400 and data(gw.call("GET", "/admin/providers"))["items"] == []


def test_moto_stopped_then_back_cache_stale_fallback_recovery(make_gateway, tmp_path):
    """Secrets Manager down, first stopped (SIGSTOP: requests hang until the timeout), then killed (connections
    refused) and restarted on the same port: reads go cache → stale → fallback, each audited, and come back from
    the store without restarting the gateway. KMS is local-kms here so that keys outlive the moto restart."""
    moto = Moto(tmp_path / "own-moto")
    key_id, alias = str(uuid.uuid4()), unique("stop-key")
    kms = LocalKms(tmp_path / "kms", key_id, alias, [uuid.uuid4().hex + uuid.uuid4().hex])
    try:
        gw = aws_gateway(make_gateway, moto, ENCRYPTION_KEY_ID=alias, AWS_ENDPOINT_URL_KMS=kms.endpoint,
                         SECRETS_CACHE_TTL_SECONDS="1", AWS_REQUEST_TIMEOUT_MS="400", AWS_MAX_ATTEMPTS="2",
                         DYAD_PROVIDER_ANTHROPIC_API_KEY="sk-env-fallback")
        a = create_provider(gw, "openai", {"api_key": canary()})
        b = create_provider(gw, "anthropic", {"api_key": canary()})
        names = [f"{gw.prefix}/providers/{x['id']}" for x in (a, b)]
        saved = {n: moto.client("secretsmanager").get_secret_value(SecretId=n)["SecretString"] for n in names}

        def degraded():
            data(gw.call("POST", "/admin/secrets/clear-cache"))  # b is never cached: it can only fall back
            assert validate(gw, a["id"])["source"] == "store"
            assert validate(gw, a["id"])["source"] == "cache"
            time.sleep(1.2)
            outage()
            assert validate(gw, a["id"])["source"] == "stale"
            vb = validate(gw, b["id"])
            assert vb["source"] == "fallback" and vb["fingerprint"] == keyed_fingerprint(gw, {"api_key": "sk-env-fallback"})
            deadline = time.time() + 10  # health answers from its background probe: unhealthy once that has failed
            while (h := data(gw.call("GET", "/admin/secrets/health")))["status"] != "unhealthy":
                assert time.time() < deadline, h
                time.sleep(0.2)
            assert h["staleServes"] >= 1 and h["fallbackReads"] >= 1

        def recovers():
            deadline = time.time() + 20
            for x in (b, a):
                while validate(gw, x["id"])["source"] != "store":  # after the 5 s error backoff, the store again
                    assert time.time() < deadline, "no recovery after moto came back"
                    time.sleep(0.5)

        outage = moto.pause
        degraded()
        moto.resume()
        recovers()

        port = moto.port
        outage = moto.stop
        degraded()
        # A new process on the same port starts empty and does not know the old access key: it runs without
        # signature checks, and the secrets are put back as they were.
        moto = Moto(tmp_path / "own-moto-2", verify_signatures=False, port=port)
        for n, v in saved.items():
            moto.client("secretsmanager").create_secret(Name=n, SecretString=v)
        recovers()

        audit = [json.loads(line) for line in (gw.data_dir / "audit.log").read_text().splitlines()]
        sources = [e.get("source") for e in audit if e.get("action") == "secret.get"]
        assert sources.count("stale") >= 2 and sources.count("fallback") >= 2 and "store" in sources, sources
    finally:
        moto.stop()
        kms.stop()


def test_throttling_is_retried_with_backoff_without_a_storm(make_gateway, moto, tmp_path):
    proxy = FaultProxy(moto.endpoint)
    try:
        gw = aws_gateway(make_gateway, moto, AWS_ENDPOINT_URL_SECRETS_MANAGER=proxy.endpoint, AWS_MAX_ATTEMPTS="5",
                         SECRETS_CACHE_ENABLED="false")
        p = create_provider(gw, "openai", {"api_key": canary()})
        for fault in ("throttle", "503"):
            proxy.fail_next(fault, 3)  # three refusals, then through
            v = validate(gw, p["id"])
            assert v["valid"] is True and v["source"] == "store"
            tries = proxy.requests_since_fault()
            assert len(tries) == 4, tries  # three refused + one served: retried, not given up, no storm
            gaps = [b - a for a, b in zip(tries, tries[1:])]
            assert sum(gaps) > 0.01, gaps  # full-jitter waits of up to 100, 200, 400 ms
        proxy.fail_next("throttle", 1000)  # throttled throughout: bounded attempts per read
        v = validate(gw, p["id"])  # answered, and says it could not read them (no cache, no fallback)
        checks = {c["check"]: c for c in v["checks"]}
        assert v["valid"] is False and "fingerprint" not in v, v
        assert checks["decryptable"]["ok"] is False and "ThrottlingException" in checks["decryptable"]["message"], v
        assert len(proxy.requests_since_fault()) == 5
    finally:
        proxy.stop()


def test_one_kept_alive_connection_per_endpoint(make_gateway, moto):
    proxy = FaultProxy(moto.endpoint)  # speaks HTTP/1.1 keep-alive, unlike moto itself
    try:
        gw = aws_gateway(make_gateway, moto, AWS_ENDPOINT_URL_SECRETS_MANAGER=proxy.endpoint,
                         SECRETS_CACHE_ENABLED="false")
        p = create_provider(gw, "openai", {"api_key": canary()})
        before = proxy.connections
        for _ in range(20):
            assert validate(gw, p["id"])["source"] == "store"
        assert proxy.connections - before <= 1, proxy.connections  # 20 reads, at most one new connection
    finally:
        proxy.stop()


def test_credentials_from_profile_file(make_gateway, moto, tmp_path):
    files = tmp_path / "aws"
    files.mkdir()
    (files / "credentials").write_text(
        f"[default]\naws_access_key_id = AKIAWRONGWRONGWRONG\naws_secret_access_key = nope\n\n"
        f"[dyad]\naws_access_key_id = {moto.access_key}\naws_secret_access_key = {moto.secret_key}\n")
    (files / "config").write_text(f"[profile dyad]\nregion = {'us-east-1'}\n")
    gw = aws_gateway(make_gateway, moto, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_REGION=None,
                     AWS_PROFILE="dyad", AWS_SHARED_CREDENTIALS_FILE=str(files / "credentials"),
                     AWS_CONFIG_FILE=str(files / "config"))
    assert data(gw.call("GET", "/admin/secrets/health"))["status"] == "healthy"
    assert data(gw.call("POST", "/admin/secrets/test-connection"))["connected"] is True
    assert "using profile dyad" in gw.logs()


def test_credentials_from_imdsv2(make_gateway, moto, tmp_path):
    imds = MetadataMock(tmp_path, moto.access_key, moto.secret_key, "2099-01-01T00:00:00Z")
    try:
        assert imds.token_required()
        gw = aws_gateway(make_gateway, moto, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None,
                         AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint,
                         HOME=str(tmp_path))
        p = create_provider(gw, "openai", {"api_key": canary()})
        assert validate(gw, p["id"])["valid"] is True
        assert "using instance metadata" in gw.logs()
    finally:
        imds.stop()


def test_expiring_instance_credentials_are_refreshed_before_they_expire(make_gateway, moto, tmp_path):
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5, seconds=8)
    imds = MetadataMock(tmp_path, moto.access_key, moto.secret_key, expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    try:
        gw = aws_gateway(make_gateway, moto, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None,
                         AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint,
                         HOME=str(tmp_path), SECRETS_CACHE_ENABLED="false")
        p = create_provider(gw, "openai", {"api_key": canary()})
        fetched = imds.credential_fetches()
        assert fetched == 1
        for _ in range(3):
            assert validate(gw, p["id"])["valid"] is True
        assert imds.credential_fetches() == fetched  # more than five minutes left: kept
        window = expires - datetime.timedelta(minutes=5)  # the refresh is due from here on
        while True:
            before = datetime.datetime.now(datetime.timezone.utc)
            assert validate(gw, p["id"])["valid"] is True
            if imds.credential_fetches() > fetched:  # fetched again: only once inside the five-minute window
                assert datetime.datetime.now(datetime.timezone.utc) >= window - datetime.timedelta(seconds=1)
                break
            assert before < window + datetime.timedelta(seconds=5), "not refreshed inside the five-minute window"
            time.sleep(0.2)
    finally:
        imds.stop()


def test_no_credentials_anywhere_is_a_clear_error(make_gateway, moto, tmp_path):
    gw = aws_gateway(make_gateway, moto, ENCRYPTION_KEY_ID="unused", AWS_ACCESS_KEY_ID=None,
                     AWS_SECRET_ACCESS_KEY=None, HOME=str(tmp_path))
    h = data(gw.call("GET", "/admin/secrets/health"))
    assert h["status"] == "unhealthy" and "no AWS credentials found" in h["storeError"]


def test_local_kms_backing_key_rotation(make_gateway, moto, tmp_path):
    """Old envelopes decrypt after local-kms rotates its material; a rewrap moves them to the new material, so they
    still open when the old material is gone."""
    key_id, alias = str(uuid.uuid4()), unique("lkms")
    k1, k2, other = (uuid.uuid4().hex + uuid.uuid4().hex for _ in range(3))
    kms = LocalKms(tmp_path / "kms1", key_id, alias, [k1])
    gw = aws_gateway(make_gateway, moto, AWS_ENDPOINT_URL_KMS=kms.endpoint, ENCRYPTION_KEY_ID=alias)
    sm = moto.client("secretsmanager")

    import base64

    def material(pid):  # local-kms blobs: ident length, ident, little-endian backing-key index, ciphertext
        # AWSCURRENT named: moto's unlabelled read misses a label moved by UpdateSecretVersionStage.
        stored = sm.get_secret_value(SecretId=f"{gw.prefix}/providers/{pid}", VersionStage="AWSCURRENT")
        blob = base64.b64decode(json.loads(stored["SecretString"])["dek"])
        n = blob[0]
        return int.from_bytes(blob[1 + n:5 + n], "little")

    made = {create_provider(gw, f"p-{i}", {"api_key": canary()})["id"] for i in range(5)}
    assert {material(pid) for pid in made} == {0}
    kms.stop()
    kms = LocalKms(tmp_path / "kms2", key_id, alias, [k1, k2])  # rotated: same key, new backing material
    try:
        gw.env_extra["AWS_ENDPOINT_URL_KMS"] = kms.endpoint
        gw.restart()
        data(gw.call("POST", "/admin/secrets/clear-cache"))
        assert all(validate(gw, pid)["valid"] for pid in made)  # old envelopes still decrypt
        data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
        h = wait_idle(gw)["history"][0]
        assert h["status"] == "completed" and h["reencrypted"] == 5, h
        assert {material(pid) for pid in made} == {1}  # rewrapped under the new material
    finally:
        kms.stop()
    kms = LocalKms(tmp_path / "kms3", key_id, alias, [other, k2])  # the old material gone
    try:
        gw.env_extra["AWS_ENDPOINT_URL_KMS"] = kms.endpoint
        gw.restart()
        assert all(validate(gw, pid)["valid"] for pid in made)
    finally:
        kms.stop()


def test_credentials_from_web_identity_through_sts(make_gateway, tmp_path):
    # AssumeRoleWithWebIdentity is an unsigned call, which moto refuses while it checks signatures (it looks for an
    # Authorization header on every action): this moto does not check them; the STS exchange is what is tested.
    moto = Moto(tmp_path / "sts-moto", verify_signatures=False)
    try:
        iam = moto.client("iam")
        role = iam.create_role(RoleName="gw-role", AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Federated": "oidc"},
                                                     "Action": "sts:AssumeRoleWithWebIdentity"}]}))["Role"]
        token = tmp_path / "token"
        token.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJkeWFkIn0.\n")
        gw = aws_gateway(make_gateway, moto, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None,
                         HOME=str(tmp_path), AWS_WEB_IDENTITY_TOKEN_FILE=str(token), AWS_ROLE_ARN=role["Arn"])
        p = create_provider(gw, "openai", {"api_key": canary()})
        assert validate(gw, p["id"])["valid"] is True
        assert "using web identity" in gw.logs()
    finally:
        moto.stop()


def envelope_of(moto, name):
    stored = moto.client("secretsmanager").get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    return json.loads(stored["SecretString"])


def kms_error(call):
    with pytest.raises(botocore.exceptions.ClientError) as failed:
        call()
    return failed.value.response["Error"]["Code"]


def test_a_dek_unwraps_under_its_own_secret_name_only(make_gateway, moto):
    """Item 5: the secret name is the KMS EncryptionContext, so KMS itself refuses a DEK under another name."""
    gw = aws_gateway(make_gateway, moto)
    a, b = (create_provider(gw, slug, {"api_key": canary()}) for slug in ("a", "b"))
    name_a, name_b = (f"{gw.prefix}/providers/{x['id']}" for x in (a, b))
    env = envelope_of(moto, name_a)
    assert env["ctx"] == 1
    dek = base64.b64decode(env["dek"])
    kms = moto.client("kms")
    assert len(kms.decrypt(CiphertextBlob=dek, EncryptionContext={"secret": name_a})["Plaintext"]) == 32
    assert kms_error(lambda: kms.decrypt(CiphertextBlob=dek, EncryptionContext={"secret": name_b})) == \
        "InvalidCiphertextException"
    assert kms_error(lambda: kms.decrypt(CiphertextBlob=dek)) == "InvalidCiphertextException"
    # a's envelope under b's name opens for nobody.
    moto.client("secretsmanager").put_secret_value(SecretId=name_b, SecretString=json.dumps(env))
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    assert validate(gw, b["id"])["valid"] is False and validate(gw, a["id"])["valid"] is True


def test_envelopes_sealed_without_a_context_open_and_a_rotation_binds_them(make_gateway, moto):
    """Item 5: an envelope as the gateway wrote it before contexts (DEK from GenerateDataKey with no context, no "ctx"
    field) still opens, and the next key rotation moves its DEK to the secret's name."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    gw = aws_gateway(make_gateway, moto)
    p = create_provider(gw, "legacy", {"api_key": canary()})
    name = f"{gw.prefix}/providers/{p['id']}"
    creds = {"api_key": canary()}
    kms = moto.client("kms")
    dk = kms.generate_data_key(KeyId="alias/" + gw.env_extra["ENCRYPTION_KEY_ID"], KeySpec="AES_256")
    nonce = os.urandom(12)
    aad = b"dyad-envelope-v1" + len(name).to_bytes(4, "big") + name.encode() + (1).to_bytes(8, "big")
    payload = json.dumps(creds, sort_keys=True, separators=(",", ":")).encode()
    legacy = {"v": 1, "kms": "aws-kms", "kid": gw.env_extra["ENCRYPTION_KEY_ID"], "kver": 1, "cv": 1,
              "dek": base64.b64encode(dk["CiphertextBlob"]).decode(), "iv": base64.b64encode(nonce).decode(),
              "ct": base64.b64encode(AESGCM(dk["Plaintext"]).encrypt(nonce, payload, aad)).decode()}
    moto.client("secretsmanager").put_secret_value(SecretId=name, SecretString=json.dumps(legacy))
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["fingerprint"] == keyed_fingerprint(gw, creds)
    data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
    assert wait_idle(gw)["history"][0]["status"] == "completed"
    env = envelope_of(moto, name)
    assert env["ctx"] == 1 and env["ct"] == legacy["ct"]
    dek = base64.b64decode(env["dek"])
    assert kms.decrypt(CiphertextBlob=dek, EncryptionContext={"secret": name})["Plaintext"] == dk["Plaintext"]
    assert kms_error(lambda: kms.decrypt(CiphertextBlob=dek)) == "InvalidCiphertextException"
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    assert validate(gw, p["id"])["fingerprint"] == keyed_fingerprint(gw, creds)


def test_a_rolled_back_secret_is_refused_as_tampered_not_served(make_gateway, moto):
    """Item 5: an old, validly sealed envelope put back in Secrets Manager is refused (DATA_LOSS), audited and
    counted in /metrics."""
    gw = aws_gateway(make_gateway, moto)
    p = create_provider(gw, "openai", {"api_key": canary()})
    name = f"{gw.prefix}/providers/{p['id']}"
    sm = moto.client("secretsmanager")
    old = sm.get_secret_value(SecretId=name)["VersionId"]
    data(gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": {"api_key": canary()}}))
    # The rollback: AWSCURRENT moved back to the old, validly sealed version (the label move, not a new version:
    # moto mislabels a plain PutSecretValue after a staging-label move).
    now = sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["VersionId"]
    sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=old,
                                   RemoveFromVersionId=now)
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = validate(gw, p["id"])
    check = {c["check"]: c for c in v["checks"]}["decryptable"]
    assert v["valid"] is False and not check["ok"] and "older than the registry's 2" in check["message"], v
    assert 'dyad_secrets_tampered_total{reason="rollback"} 1' in gw.call("GET", "/metrics").text
    audit = [json.loads(line) for line in (gw.data_dir / "audit.log").read_text().splitlines()]
    assert [e for e in audit if e["action"] == "secret.tampered" and e.get("resource") == p["id"]]


def timed(gw, path):
    started = time.monotonic()
    r = gw.call("GET", path)
    return r, time.monotonic() - started


def test_health_and_readyz_answer_at_once_while_moto_is_stopped(make_gateway, tmp_path):
    """Item 6: with the store hanging (SIGSTOP), health and /readyz answer at once and say unhealthy; after SIGCONT
    they recover. The bound is generous (1 s) on purpose: it is a hang that is being ruled out."""
    moto = Moto(tmp_path / "own-moto")
    try:
        gw = aws_gateway(make_gateway, moto, AWS_REQUEST_TIMEOUT_MS="30000", AWS_MAX_ATTEMPTS="1")
        create_provider(gw, "openai", {"api_key": canary()})
        assert data(gw.call("GET", "/admin/secrets/health"))["status"] == "healthy"
        moto.pause()
        try:
            deadline = time.time() + 20
            while True:
                ready, took_ready = timed(gw, "/readyz")
                health, took_health = timed(gw, "/admin/secrets/health")
                assert took_ready < 1 and took_health < 1, (took_ready, took_health)
                h = data(health)
                if ready.status_code == 503 and h["status"] == "unhealthy":
                    break
                assert time.time() < deadline, "health still says healthy with the store stopped"
                time.sleep(0.2)
            assert "has not answered the health probe" in h["storeError"], h
            assert "secret store has not answered" in ready.json()["error"]["message"]
        finally:
            moto.resume()
        deadline = time.time() + 20
        while True:
            ready, took_ready = timed(gw, "/readyz")
            health, took_health = timed(gw, "/admin/secrets/health")
            assert took_ready < 1 and took_health < 1, (took_ready, took_health)
            if ready.status_code == 200 and data(health)["status"] == "healthy":
                break
            assert time.time() < deadline, "no recovery after SIGCONT"
            time.sleep(0.2)
    finally:
        moto.stop()


def test_an_unreachable_kms_makes_the_key_manager_unhealthy(make_gateway, moto, tmp_path):
    """Item 6: keyManager.status comes from the KMS itself, not from the versions the registry remembers."""
    key_id, alias = str(uuid.uuid4()), unique("probe-key")
    kms = LocalKms(tmp_path / "kms", key_id, alias, [uuid.uuid4().hex + uuid.uuid4().hex])
    try:
        gw = aws_gateway(make_gateway, moto, ENCRYPTION_KEY_ID=alias, AWS_ENDPOINT_URL_KMS=kms.endpoint,
                         AWS_MAX_ATTEMPTS="1", AWS_REQUEST_TIMEOUT_MS="1000")
        create_provider(gw, "openai", {"api_key": canary()})
        h = data(gw.call("GET", "/admin/secrets/health"))
        assert h["status"] == "healthy" and h["keyManager"]["status"] == "healthy", h
    finally:
        kms.stop()
    deadline = time.time() + 20
    while True:
        h, took = timed(gw, "/admin/secrets/health")
        assert took < 1
        km = data(h)["keyManager"]
        if km["status"] == "unhealthy":
            break
        assert time.time() < deadline, "keyManager still healthy with KMS gone"
        time.sleep(0.2)
    assert km["error"] and km["kind"] == "aws-kms", km
    assert gw.call("GET", "/readyz").status_code == 503


def test_a_changed_kms_key_is_a_start_up_error_naming_both(make_gateway, moto):
    """Item 6: ENCRYPTION_KEY_ID pointed at another key than the one that sealed the stored data stops the start."""
    gw = aws_gateway(make_gateway, moto)
    create_provider(gw, "openai", {"api_key": canary()})
    gw.stop()
    first, second = gw.env_extra["ENCRYPTION_KEY_ID"], unique("dyad-key")
    moto.make_key(second)
    gw.env_extra["ENCRYPTION_KEY_ID"] = second
    with pytest.raises(RuntimeError) as failed:
        gw.start()
    assert f"'{first}'" in str(failed.value) and f"'{second}'" in str(failed.value), failed.value
