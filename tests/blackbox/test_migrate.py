"""`dyad-gateway migrate --to-env-file`: every provider's credentials moved between backends on the real peers
(moto + local-kms, OpenBao, the Azure double), a kill -9 midway and its resume, --dry-run, --delete-source, a bad
TARGET.env, two runs at once, and a writer on the source meanwhile."""
import fcntl
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid

import boto3
import pytest
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

from aws_peers import REGION, LocalKms, Moto
from azure_double import AzureDouble
from conftest import BINARY, Gateway, canary, create_provider, data, provider_body
from test_secrets import keyed_fingerprint
from vault_peers import Bao

N = int(os.environ.get("DYAD_MIGRATE_PROVIDERS", "500"))
AZURE_SECRET = "gw-client-secret-" + "m" * 20


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def write_env(path, env):
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items() if v is not None))
    return path


def migrate(source, target_file, *flags, timeout=900):
    return subprocess.run([BINARY, "migrate", "--to-env-file", str(target_file), *flags], env=source.env(),
                          capture_output=True, text=True, timeout=timeout)


def counts(out):
    m = re.search(r"^copied (\d+), skipped (\d+), failed (\d+)$", out, re.M)
    assert m, out[-2000:]
    return tuple(int(x) for x in m.groups())


def make_providers(gw, n):
    """n providers with credentials, through the admin API; {id: credentials}."""
    made = {}
    for i in range(n):
        creds = {"api_key": canary(), "org": f"org-{i}"}
        made[create_provider(gw, f"p-{i}-{uuid.uuid4().hex[:6]}", creds)["id"]] = creds
    return made


def no_secret_in(text, providers):
    for creds in providers.values():
        assert creds["api_key"] not in text


def serve_and_read(data_dir, env, providers):
    """`serve` under `env` reads every provider's credentials back (validate: the keyed fingerprint of what it
    opened), writes through the audit log, and `secrets verify` passes."""
    gw = Gateway(data_dir, env).start()
    try:
        for pid, creds in providers.items():
            v = data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))
            assert v["valid"] is True and v["source"] == "store", v
            assert v["fingerprint"] == keyed_fingerprint(gw, creds)
        data(gw.call("POST", "/admin/secrets/clear-cache"))  # not a GET: the audit key opens under the target
    finally:
        gw.stop()
    r = subprocess.run([BINARY, "secrets", "verify"], env=gw.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"{len(providers)} open, 0 failed" in r.stdout, r.stdout + r.stderr


def aws_env(moto, kms, alias, prefix):
    return moto.gateway_env(ENCRYPTION_KEY_ID=alias, AWS_ENDPOINT_URL_KMS=kms.endpoint, SECRETS_PREFIX=prefix)


def aws_names(moto, prefix):
    sm, names, token = moto.client("secretsmanager"), [], None
    while True:
        kw = {"Filters": [{"Key": "name", "Values": [prefix + "/"]}], "MaxResults": 100}
        if token:
            kw["NextToken"] = token
        page = sm.list_secrets(**kw)
        names += [s["Name"] for s in page["SecretList"]]
        token = page.get("NextToken")
        if not token:
            return names


def env_secret_count(data_dir):
    db = sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM secrets WHERE name LIKE '%/providers/%'").fetchone()[0]
    finally:
        db.close()


def kill_midway(source, target_file, total):
    """Starts migrate and kill -9s it once some providers are done; returns how many were."""
    proc = subprocess.Popen([BINARY, "migrate", "--to-env-file", str(target_file), "--verify"], env=source.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = 0
    for line in proc.stderr:
        m = re.match(r"copy (\d+)/(\d+)$", line.strip())
        if m and int(m.group(1)) >= min(50, total // 4):
            done = int(m.group(1))
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and 0 < done < total
    return done


@pytest.fixture
def peers(tmp_path):
    moto = Moto(tmp_path / "moto")
    key_id, alias = str(uuid.uuid4()), unique("mig-key")
    kms = LocalKms(tmp_path / "kms", key_id, alias, [uuid.uuid4().hex + uuid.uuid4().hex])
    bao = Bao(tmp_path / "bao")
    double = AzureDouble().start()
    double.client_id = double.add_app(secret=AZURE_SECRET)
    try:
        yield moto, kms, alias, bao, double
    finally:
        double.stop()
        bao.stop()
        kms.stop()
        moto.stop()


def azure_env(double, key_name, prefix):
    cred = ClientSecretCredential(double.tenant_id, double.client_id, AZURE_SECRET, authority=double.authority_host,
                                  disable_instance_discovery=True, connection_verify=double.ca_pem)
    KeyClient(double.vault_url, cred, verify_challenge_resource=False, connection_verify=double.ca_pem).create_rsa_key(
        key_name, size=2048)
    return {"SECRETS_PROVIDER": "azure", "ENCRYPTION_KEY": None, "AZURE_KEY_VAULT_URL": double.vault_url,
            "ENCRYPTION_KEY_ID": key_name, "SECRETS_PREFIX": prefix, "AZURE_AUTHORITY_HOST": double.authority_host,
            "AZURE_CA_BUNDLE": double.ca_pem, "AZURE_VERIFY_CHALLENGE_RESOURCE": "false",
            "AZURE_TENANT_ID": double.tenant_id, "AZURE_CLIENT_ID": double.client_id,
            "AZURE_CLIENT_SECRET": AZURE_SECRET}


def test_chain_environment_aws_vault_azure_environment_with_a_kill(tmp_path, peers):
    moto, kms, alias, bao, double = peers
    started = time.monotonic()
    data_dir = tmp_path / "data"
    source = Gateway(data_dir).start()
    providers = make_providers(source, N)
    source.stop()
    env_of = {"environment": {}}

    # environment -> aws, killed midway and resumed; the source's secrets deleted after a clean verify.
    prefix = unique("mig")
    env_of["aws"] = aws_env(moto, kms, alias, prefix)
    target = write_env(tmp_path / "aws.env", env_of["aws"])
    done = kill_midway(source, target, N)
    r = migrate(source, target, "--verify", "--delete-source")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    copied, skipped, failed = counts(r.stdout)
    assert failed == 0 and copied + skipped == N and skipped >= done - 1, (copied, skipped, done)
    assert f"verified {N}, verify failed 0" in r.stdout and f"source secrets deleted: {N}" in r.stdout
    no_secret_in(r.stdout + r.stderr, providers)
    assert "AWS_SECRET_ACCESS_KEY=<secret" in r.stdout and moto.secret_key not in r.stdout
    assert sorted(aws_names(moto, prefix)) == sorted(f"{prefix}/providers/{pid}" for pid in providers)  # no duplicates
    assert env_secret_count(data_dir) == 0
    serve_and_read(data_dir, env_of["aws"], providers)

    # aws -> vault
    key, token = bao.seed()
    env_of["vault"] = bao.gateway_env(token=token, key=key)  # the seed policy covers the default prefix
    as_aws = Gateway(data_dir, env_of["aws"])
    r = migrate(as_aws, write_env(tmp_path / "vault.env", env_of["vault"]), "--verify")
    assert r.returncode == 0 and counts(r.stdout) == (N, 0, 0), r.stdout[-3000:] + r.stderr[-2000:]
    no_secret_in(r.stdout + r.stderr, providers)
    assert token not in r.stdout + r.stderr and "VAULT_TOKEN=<secret" in r.stdout
    serve_and_read(data_dir, env_of["vault"], providers)

    # vault -> azure
    env_of["azure"] = azure_env(double, unique("mig-key"), unique("mig"))
    as_vault = Gateway(data_dir, env_of["vault"])
    r = migrate(as_vault, write_env(tmp_path / "azure.env", env_of["azure"]), "--verify")
    assert r.returncode == 0 and counts(r.stdout) == (N, 0, 0), r.stdout[-3000:] + r.stderr[-2000:]
    no_secret_in(r.stdout + r.stderr, providers)
    serve_and_read(data_dir, env_of["azure"], providers)

    # azure -> environment (the keyring the first hop started from)
    env_of["back"] = {"SECRETS_PROVIDER": "environment", "ENCRYPTION_KEY": "ab" * 32}
    as_azure = Gateway(data_dir, env_of["azure"])
    r = migrate(as_azure, write_env(tmp_path / "env.env", env_of["back"]), "--verify")
    assert r.returncode == 0 and counts(r.stdout) == (N, 0, 0), r.stdout[-3000:] + r.stderr[-2000:]
    assert "ENCRYPTION_KEY=<secret" in r.stdout and "ab" * 32 not in r.stdout
    assert env_secret_count(data_dir) == N
    serve_and_read(data_dir, {}, providers)
    print(f"\n{N} providers across four backends, a kill and a resume: {time.monotonic() - started:.1f} s")


@pytest.fixture
def small(tmp_path):
    """Three providers on the environment backend, and moto with a KMS key as the target."""
    moto = Moto(tmp_path / "moto")
    alias = unique("k")
    moto.make_key(alias)
    gw = Gateway(tmp_path / "data").start()
    providers = make_providers(gw, 3)
    gw.stop()
    try:
        yield gw, providers, moto, moto.gateway_env(ENCRYPTION_KEY_ID=alias, SECRETS_PREFIX=unique("mig"))
    finally:
        moto.stop()


def test_dry_run_reads_everything_and_writes_nothing(tmp_path, small):
    gw, providers, moto, target_env = small
    gw.start()
    bare = data(gw.call("POST", "/admin/providers", json=provider_body(slug="bare", type="local")), 201)
    gw.stop()
    r = migrate(gw, write_env(tmp_path / "t.env", target_env), "--dry-run", "--delete-source")
    assert r.returncode == 0, r.stdout + r.stderr
    # Nothing to copy is not a copy left alone: counted apart.
    assert "would copy 3, skipped 0, failed 0, no credentials 1\n" in r.stdout and "switch to" not in r.stdout
    assert re.search(rf"^no credentials +{bare['id']}$", r.stdout, re.M), r.stdout
    assert aws_names(moto, target_env["SECRETS_PREFIX"]) == []
    assert env_secret_count(gw.data_dir) == 3
    db = sqlite3.connect(f"file:{gw.data_dir / 'gateway.db'}?mode=ro", uri=True)
    assert db.execute("SELECT count(*) FROM migration_progress").fetchone()[0] == 0
    db.close()
    no_secret_in(r.stdout + r.stderr, providers)


def test_a_provider_updated_on_a_live_source_is_copied_again(tmp_path, small):
    gw, providers, moto, target_env = small
    target = write_env(tmp_path / "t.env", target_env)
    gw.start()  # the source keeps serving while migrate runs
    try:
        r = migrate(gw, target, "--verify")
        assert r.returncode == 0 and counts(r.stdout) == (3, 0, 0), r.stdout + r.stderr
        pid = next(iter(providers))
        providers[pid] = {"api_key": canary()}
        data(gw.call("POST", f"/admin/providers/{pid}/credentials/rotate", json={"credentials": providers[pid]}))
        r = migrate(gw, target, "--verify")
        assert r.returncode == 0 and counts(r.stdout) == (1, 2, 0), r.stdout + r.stderr
        assert re.search(rf"^copied\s+{pid}$", r.stdout, re.M)
    finally:
        gw.stop()
    serve_and_read(gw.data_dir, target_env, providers)


@pytest.mark.parametrize("content,variable", [
    ("SECRETS_PROVIDER=bogus\n", "SECRETS_PROVIDER"),
    ("SECRETS_PROVIDER=vault\nVAULT_TOKEN=t\nENCRYPTION_KEY_ID=k\n", "VAULT_ADDR"),
    ("SECRETS_PROVIDER=environment\nENCRYPTION_KEY=" + "cd" * 32 + "\nGATEWAY_DATA_DIR=/tmp/elsewhere\n",
     "GATEWAY_DATA_DIR"),
    ("SECRETS_CACHE_TTL_SECONDS=soon\n", "SECRETS_CACHE_TTL_SECONDS"),
])
def test_a_bad_target_names_the_variable_and_the_file(tmp_path, gateway, content, variable):
    gateway.stop()
    target = tmp_path / "bad.env"
    target.write_text(content)
    r = migrate(gateway, target)
    assert r.returncode == 2, r.stdout + r.stderr
    assert variable in r.stderr and str(target) in r.stderr, r.stderr
    assert "cd" * 32 not in r.stderr


def test_a_second_migrate_at_once_is_refused(tmp_path, gateway):
    gateway.stop()
    target = write_env(tmp_path / "t.env", {"SECRETS_PROVIDER": "environment", "SECRETS_PREFIX": "other",
                                            "ENCRYPTION_KEY_ID": "other-key", "ENCRYPTION_KEY": "cd" * 32})
    with open(gateway.data_dir / "migrate.lock", "a") as held:  # as a running migrate holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        r = migrate(gateway, target)
    assert r.returncode == 1 and "another `dyad-gateway migrate` is running" in r.stderr, r.stderr  # not a config error
    r = migrate(gateway, target)  # released: runs
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_source_itself_is_refused_as_target(tmp_path, gateway):
    gateway.stop()
    r = migrate(gateway, write_env(tmp_path / "same.env", {"SECRETS_PROVIDER": "environment",
                                                            "ENCRYPTION_KEY": "ab" * 32}))
    assert r.returncode == 2 and "the target stores credentials where the source does" in r.stderr, r.stderr


def test_delete_source_after_a_clean_run_is_audited_under_the_source(tmp_path, small):
    gw, providers, moto, target_env = small
    target = write_env(tmp_path / "t.env", target_env)
    r = migrate(gw, target, "--verify")
    assert r.returncode == 0, r.stdout + r.stderr

    def holders():
        db = sqlite3.connect(f"file:{gw.data_dir / 'gateway.db'}?mode=ro", uri=True)
        try:
            return sorted(kind for (kind,) in db.execute("SELECT kind FROM audit_key"))
        finally:
            db.close()

    assert holders() == ["aws-kms", "local"]  # the target's wrapping beside the source's
    r = migrate(gw, target, "--delete-source")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "source secrets deleted: 3" in r.stdout and "the source's wrapping dropped" in r.stdout, r.stdout
    assert env_secret_count(gw.data_dir) == 0
    assert holders() == ["aws-kms"]
    lines = (gw.data_dir / "audit.log").read_text().splitlines()
    assert all(any(pid in line and "cli-migrate" in line for line in lines) for pid in providers)
    v = subprocess.run([BINARY, "audit", "verify"], env=Gateway(gw.data_dir, target_env).env(), capture_output=True,
                       text=True, timeout=60)
    assert v.returncode == 0 and "chain intact" in v.stdout, v.stdout + v.stderr
    # Once more under the source's configuration: it holds no wrapping to audit deletions with.
    r = migrate(gw, target, "--delete-source")
    assert r.returncode == 1 and "the deletions would go unaudited" in r.stderr, r.stdout + r.stderr  # a refusal
    assert "aws-kms" in r.stderr and "migrate" in r.stderr
    r = migrate(gw, target, "--verify")  # nor copies
    assert r.returncode == 1 and "the copies would go unaudited" in r.stderr, r.stdout + r.stderr


def test_the_same_backend_and_prefix_in_another_region_is_another_place(tmp_path, small):
    gw, providers, moto, east = small
    r = migrate(gw, write_env(tmp_path / "east.env", east), "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    west_region = "eu-west-1"

    def west_client(service):
        return boto3.client(service, endpoint_url=moto.endpoint, region_name=west_region,
                            aws_access_key_id=moto.access_key, aws_secret_access_key=moto.secret_key)

    kms = west_client("kms")
    # First the source's key name in the other region: another key under one key id cannot open what the source
    # wrapped (the audit key), so the run stops before anything is copied.
    kms.create_alias(AliasName="alias/" + east["ENCRYPTION_KEY_ID"], TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    r = migrate(Gateway(gw.data_dir, east), write_env(tmp_path / "same-name.env", dict(east, AWS_REGION=west_region)),
                "--verify", "--delete-source")
    assert r.returncode == 1 and "cannot take the audit key, so nothing was copied" in r.stderr, r.stdout + r.stderr
    assert west_client("secretsmanager").list_secrets()["SecretList"] == []
    assert len(aws_names(moto, east["SECRETS_PREFIX"])) == 3
    alias = unique("west")
    kms.create_alias(AliasName="alias/" + alias, TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    west = dict(east, AWS_REGION=west_region, ENCRYPTION_KEY_ID=alias)  # the same SECRETS_PREFIX
    r = migrate(Gateway(gw.data_dir, east), write_env(tmp_path / "west.env", west), "--verify")
    assert r.returncode == 0 and counts(r.stdout) == (3, 0, 0), r.stdout + r.stderr
    listed = west_client("secretsmanager").list_secrets(
        Filters=[{"Key": "name", "Values": [east["SECRETS_PREFIX"] + "/"]}])["SecretList"]
    assert len(listed) == 3
    assert len(aws_names(moto, east["SECRETS_PREFIX"])) == 3  # the source region's copies are kept
    serve_and_read(gw.data_dir, west, providers)
