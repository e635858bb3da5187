"""SECRETS_PROVIDER=aws under exactly the seed's IAM policy (issue 10).

A second moto IAM user gets an inline policy with the seed's eight actions and nothing else; moto then checks every
request's signature and that user's policy. moto evaluates these services' calls against resource `*`, so the
actions are granted on `*`. The whole lifecycle must work under that policy; what needs more degrades with one log
line naming the missing permission. Every test also runs under the seed's policy plus the store's optional
permissions (`seed+store`), so the KMS side can be told apart from the store's conditional writes and listing.
"""
import json
import time

import boto3
import botocore.exceptions
import pytest

from aws_peers import REGION, Moto
from conftest import canary, create_provider, data
from test_aws import unique, validate
from test_ops import cli
from test_rotation import wait_idle
from test_secrets import keyed_fingerprint

SEED_ACTIONS = [
    "secretsmanager:GetSecretValue", "secretsmanager:CreateSecret", "secretsmanager:UpdateSecret",
    "secretsmanager:DeleteSecret",
    "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:RotateKeyOnDemand",
]
# What the store uses when it may: conditional writes without a registry lease, and listing (gc, orphans).
STORE_EXTRAS = ["secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage",
                "secretsmanager:ListSecrets"]
POLICIES = {"seed": SEED_ACTIONS, "seed+store": SEED_ACTIONS + STORE_EXTRAS}

# The one-time messages of the KMS key manager, one per permission the seed's policy lacks.
KMS_MESSAGES = ["kms:DescribeKey is not permitted", "kms:ReEncrypt* is not permitted",
                "kms:ListKeyRotations is not permitted"]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto-policy"))
    m.users = {}
    yield m
    m.stop()


@pytest.fixture(params=sorted(POLICIES))
def user(request, moto):
    """Access keys of an IAM user whose only policy grants POLICIES[param] on `*` (made once per module)."""
    name = request.param
    if name not in moto.users:
        iam = moto.client("iam")
        user_name = "dyad-" + name.replace("+", "-")
        iam.create_user(UserName=user_name)
        iam.put_user_policy(UserName=user_name, PolicyName="dyad-gateway", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": POLICIES[name], "Resource": "*"}]}))
        key = iam.create_access_key(UserName=user_name)["AccessKey"]
        moto.users[name] = {"policy": name, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    return moto.users[name]


def as_user(moto, user, service):
    return boto3.client(service, endpoint_url=moto.endpoint, region_name=REGION,
                        aws_access_key_id=user["key"], aws_secret_access_key=user["secret"])


def policy_gateway(make_gateway, moto, user, **env):
    """A gateway signing as `user`, on its own KMS key (made by the admin user) and secret prefix."""
    alias = unique("policy-key")
    key = moto.make_key(alias)
    env.setdefault("SECRETS_PREFIX", unique("dyad"))
    gw = make_gateway(moto.gateway_env(ENCRYPTION_KEY_ID=alias, AWS_ACCESS_KEY_ID=user["key"],
                                       AWS_SECRET_ACCESS_KEY=user["secret"], **env))
    gw.prefix, gw.kms_key, gw.alias = env["SECRETS_PREFIX"], key, alias
    return gw.start()


def denied(call):
    """The AWS error of a call that must be refused for want of permission."""
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["Error"]


def log_lines(gw, needle):
    return [line for line in gw.logs().splitlines() if needle in line]


def test_moto_enforces_exactly_the_policy(moto, user):
    """Without this, every other test here could pass with the policy ignored. moto answers a refused action with
    HTTP 403 and a query-protocol XML body: Code AccessDenied, Message "User: ARN is not authorized to perform:
    ACTION" (real AWS: 400 AccessDeniedException JSON)."""
    kms, sm = as_user(moto, user, "kms"), as_user(moto, user, "secretsmanager")
    alias = unique("enforce-key")
    key = moto.make_key(alias)
    made = kms.generate_data_key(KeyId="alias/" + alias, KeySpec="AES_256", EncryptionContext={"secret": "a"})
    assert made["KeyId"] == key["Arn"]  # the seed's policy lets the gateway learn the key's ARN from here
    assert kms.encrypt(KeyId="alias/" + alias, Plaintext=b"x")["KeyId"] == key["Arn"]
    assert kms.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext={"secret": "a"})["Plaintext"] == \
        made["Plaintext"]
    for action, call in [
            ("kms:ReEncrypt", lambda: kms.re_encrypt(CiphertextBlob=made["CiphertextBlob"],
                                                     SourceEncryptionContext={"secret": "a"},
                                                     DestinationKeyId=key["Arn"])),
            ("kms:DescribeKey", lambda: kms.describe_key(KeyId=key["Arn"])),
            ("kms:ListKeyRotations", lambda: kms.list_key_rotations(KeyId=key["Arn"])),
            ("secretsmanager:DescribeSecret", lambda: sm.describe_secret(SecretId="nope"))]:
        err = denied(call)
        assert err["Code"] == "403" and "<Code>AccessDenied</Code>" in err["Message"], err
        assert f"is not authorized to perform: {action}<" in err["Message"], err
    name = unique("enforce") + "/providers/x"
    sm.create_secret(Name=name, SecretString="v1")
    sm.update_secret(SecretId=name, SecretString="v2")
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v2"
    extras = [("secretsmanager:PutSecretValue", lambda: sm.put_secret_value(SecretId=name, SecretString="v3")),
              ("secretsmanager:ListSecrets", lambda: sm.list_secrets())]
    for action, call in extras:
        if user["policy"] == "seed":
            assert f"is not authorized to perform: {action}<" in denied(call)["Message"]
        else:
            call()
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    # The admin user (Action "*") may do what the restricted user may not: the refusals above are the policy's.
    moto.client("kms").describe_key(KeyId=key["Arn"])


def test_lifecycle(make_gateway, moto, user):
    """create, read, update, credential rotate, validate, health, test-connection, delete."""
    gw = policy_gateway(make_gateway, moto, user)
    sm = moto.client("secretsmanager")  # the admin's view of what the gateway stored
    creds = {"api_key": canary()}
    p = create_provider(gw, "openai", creds)
    name = f"{gw.prefix}/providers/{p['id']}"
    envelope = json.loads(sm.get_secret_value(SecretId=name)["SecretString"])
    assert envelope["kms"] == "aws-kms" and envelope["kver"] == 1
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["source"] == "store" and v["fingerprint"] == keyed_fingerprint(gw, creds), v

    # Health probes the key every second or so (DescribeKey denied: by Encrypt) and looks for rotations KMS made
    # (ListKeyRotations denied): healthy, and each missing permission named once, however often it was needed.
    for _ in range(3):
        h = data(gw.call("GET", "/admin/secrets/health"))
        time.sleep(1.1)
    h = data(gw.call("GET", "/admin/secrets/health"))
    assert h["status"] == "healthy" and h["keyManager"]["status"] == "healthy", h
    for _ in range(2):
        t = data(gw.call("POST", "/admin/secrets/test-connection"))
        assert t["connected"] is True and all(s["ok"] for s in t["steps"]), t
    for message in ("kms:DescribeKey is not permitted", "kms:ListKeyRotations is not permitted"):
        lines = log_lines(gw, message)
        assert len(lines) == 1 and "is not authorized to perform: kms:" in lines[0], (message, lines)

    # Update (PUT with credentials), then a credential rotation: both replace the stored secret.
    updated = {"api_key": canary()}
    r = gw.call("PUT", f"/admin/providers/{p['id']}", json={"description": "updated", "credentials": updated})
    assert r.status_code == 200, f"update under the {user['policy']} policy: {r.text}"
    v = validate(gw, p["id"])
    assert v["fingerprint"] == keyed_fingerprint(gw, updated), v
    rotated = {"api_key": canary()}
    r = gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": rotated})
    assert r.status_code == 200, f"credential rotation under the {user['policy']} policy: {r.text}"
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = validate(gw, p["id"])
    assert v["valid"] and v["source"] == "store" and v["fingerprint"] == keyed_fingerprint(gw, rotated), v
    stored = sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"]
    assert rotated["api_key"] not in stored and json.loads(stored)["kver"] == 1

    data(gw.call("DELETE", f"/admin/providers/{p['id']}"))
    assert "DeletedDate" in sm.describe_secret(SecretId=name)

    # The store's missing permissions are named once each too (listing at start; the conditional write at the first
    # update, which then goes straight to UpdateSecret); with them granted, nothing of Secrets Manager is refused.
    if user["policy"] == "seed":
        for permission in ("secretsmanager:ListSecrets", "secretsmanager:PutSecretValue"):
            lines = log_lines(gw, permission)
            assert len(lines) == 1, (permission, lines)
    else:
        assert log_lines(gw, "not authorized to perform: secretsmanager:") == []
    for text in (gw.logs(), gw.stdout):
        for c in (creds, updated, rotated):
            assert c["api_key"] not in text


def test_key_rotation_reencrypts_without_reencrypt(make_gateway, moto, user):
    """RotateKeyOnDemand is granted, ReEncrypt is not: every data key moves by Decrypt + Encrypt, and the audit key
    too (before version 1 is retired). A rotation KMS makes on its own is not seen without ListKeyRotations."""
    gw = policy_gateway(make_gateway, moto, user)
    kms_admin, sm = moto.client("kms"), moto.client("secretsmanager")
    # More secrets than AWS_CONCURRENCY (8): under the seed's policy the store finds it cannot compare-and-swap
    # while a batch is in flight, and every secret of it is then written under its provider's lease instead.
    made = {create_provider(gw, f"p-{i}", {"api_key": f"sk-{i}-{canary()}"})["id"]: i for i in range(12)}

    kms_admin.rotate_key_on_demand(KeyId=gw.kms_key["KeyId"])  # outside the gateway
    time.sleep(1.5)  # the gateway would look within a second if it were allowed to list rotations
    assert data(gw.call("GET", "/admin/secrets/key-rotation/status"))["primaryKeyVersion"] == 1

    run = data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
    h = wait_idle(gw)["history"][0]
    assert h["id"] == run["id"] and h["status"] == "completed", h
    assert (h["fromKeyVersion"], h["toKeyVersion"], h["reencrypted"], h["failed"]) == (1, 2, 12, 0), h
    assert len(kms_admin.list_key_rotations(KeyId=gw.kms_key["KeyId"])["Rotations"]) == 2  # theirs and ours
    for pid in made:
        # AWSCURRENT named: moto resolves a label moved by UpdateSecretVersionStage only when it is named.
        stored = sm.get_secret_value(SecretId=f"{gw.prefix}/providers/{pid}", VersionStage="AWSCURRENT")["SecretString"]
        assert json.loads(stored)["kver"] == 2, stored
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    for pid in made:
        assert validate(gw, pid)["valid"] is True
    h = data(gw.call("GET", "/admin/secrets/health"))
    assert [v["state"] for v in h["keyManager"]["versions"]] == ["retired", "active"], h
    assert h["status"] == "healthy", h

    # Each KMS permission the policy lacks is named once, with AWS's refusal, however often it was needed.
    for _ in range(3):
        data(gw.call("GET", "/admin/secrets/health"))
        time.sleep(1.1)
    for message in KMS_MESSAGES:
        lines = log_lines(gw, message)
        assert len(lines) == 1, (message, lines)
        assert "is not authorized to perform: kms:" in lines[0], lines[0]


def test_gc_names_list_secrets_when_it_may_not_list(make_gateway, moto, user):
    gw = policy_gateway(make_gateway, moto, user)
    p = create_provider(gw, "kept", {"api_key": canary()})
    gw.stop()
    r = cli(gw, "secrets", "gc", "--older-than", "0s")
    out = r.stdout + r.stderr
    if user["policy"] == "seed":
        # Degrades: the gateway's own message (not a crash) names the permission it lacks.
        said = [line for line in r.stderr.splitlines() if line.startswith("dyad-gateway") and "ListSecrets" in line]
        assert r.returncode == 2 and said and "secretsmanager:ListSecrets" in said[-1], out
    else:
        assert r.returncode == 0 and "0 orphaned secret(s)" in r.stdout, out
    gw.start()
    assert validate(gw, p["id"])["valid"] is True  # gc deleted nothing it should not have
