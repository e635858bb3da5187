"""`dyad-gateway migrate --to-env-file TARGET.env` (issue 13, seed "Migration Guide: between providers") on the
suite's real peers: 500 providers carried environment -> aws (moto + local-kms) -> vault (OpenBao) -> azure (the Key
Vault double) -> environment, each step followed by `serve` under the target reading every credential back through
the admin API and `secrets verify`; a kill -9 mid-migration and a resume that ends with every provider verified and
no duplicate in the target; --dry-run writes nothing; --delete-source deletes only after a clean verify; a source
written by a live `serve` while migrate runs; two migrate runs at once; a bad TARGET.env names the variable and the
file. No secret value may appear in migrate's stdout or stderr.

DYAD_MIGRATE_PROVIDERS sets the provider count of the large tests (default 500)."""
import concurrent.futures
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid

import pytest
import requests

from aws_peers import LocalKms, Moto
from azure_double import AzureDouble
from conftest import ADMIN_TOKEN, BINARY, Gateway, canary, data, provider_body
from test_azure import SECRET as AZURE_SECRET
from test_azure import keys_sdk
from test_secrets import keyed_fingerprint
from vault_peers import Bao

N = int(os.environ.get("DYAD_MIGRATE_PROVIDERS", "500"))
PROGRESS = re.compile(r"(\d+)/(\d+)")


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    m = Moto(tmp_path_factory.mktemp("moto"))
    yield m
    m.stop()


@pytest.fixture(scope="module")
def kms(tmp_path_factory):
    """local-kms with one key (real backing material), shared by the module's AWS targets."""
    key_id, alias = str(uuid.uuid4()), unique("dyad-migrate")
    k = LocalKms(tmp_path_factory.mktemp("kms"), key_id, alias, [uuid.uuid4().hex + uuid.uuid4().hex])
    k.alias = alias
    yield k
    k.stop()


@pytest.fixture(scope="module")
def double():
    d = AzureDouble().start()
    d.client_id = d.add_app(secret=AZURE_SECRET)
    yield d
    d.stop()


@pytest.fixture
def bao(tmp_path):
    server = Bao(tmp_path)
    yield server
    server.stop()


# ---------------------------------------------------------------------------------------------------- the backends

def base_env(data_dir):
    """What every configuration of one deployment shares (Gateway.env() without the backend's variables)."""
    env = Gateway(data_dir).env()
    return {k: v for k, v in env.items() if k not in ("ENCRYPTION_KEY",)}


def environment_target(data_dir, mode="envelope"):
    return {**base_env(data_dir), "SECRETS_PROVIDER": "environment", "SECRETS_ENCRYPTION_MODE": mode,
            "ENCRYPTION_KEY": "ab" * 32}


def aws_target(data_dir, moto, kms, mode="envelope"):
    env = {**base_env(data_dir), **moto.gateway_env(SECRETS_ENCRYPTION_MODE=mode, ENCRYPTION_KEY_ID=kms.alias,
                                                     AWS_ENDPOINT_URL_KMS=kms.endpoint,
                                                     SECRETS_PREFIX=unique("dyad"))}
    return {k: v for k, v in env.items() if v is not None}


def vault_target(data_dir, bao, mode="envelope"):
    key, token = bao.seed()
    env = {**base_env(data_dir), **bao.gateway_env(token=token, key=key, SECRETS_ENCRYPTION_MODE=mode)}
    return {k: v for k, v in env.items() if v is not None}


def azure_target(data_dir, double, mode="envelope"):
    key_name = unique("dyad-key")
    keys_sdk(double).create_rsa_key(key_name, size=2048)
    return {**base_env(data_dir), "SECRETS_PROVIDER": "azure", "SECRETS_ENCRYPTION_MODE": mode,
            "AZURE_KEY_VAULT_URL": double.vault_url, "ENCRYPTION_KEY_ID": key_name, "SECRETS_PREFIX": unique("dyad"),
            "AZURE_AUTHORITY_HOST": double.authority_host, "AZURE_CA_BUNDLE": str(double.ca_pem),
            "AZURE_VERIFY_CHALLENGE_RESOURCE": "false", "AZURE_TENANT_ID": double.tenant_id,
            "AZURE_CLIENT_ID": double.client_id, "AZURE_CLIENT_SECRET": AZURE_SECRET}


def write_env_file(path, env):
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items()) if k != "PATH"))
    os.chmod(path, 0o600)
    return path


def start(data_dir, env):
    """`serve` with exactly `env` (Gateway's defaults removed where `env` lacks them)."""
    defaults = Gateway(data_dir).env()
    extra = {k: None for k in defaults if k not in env}
    extra.update(env)
    return Gateway(data_dir, extra).start()


def migrate(source_env, target_file, *flags, timeout=900):
    return subprocess.run([BINARY, "migrate", "--to-env-file", str(target_file), *flags], env=source_env,
                          capture_output=True, text=True, timeout=timeout)


def popen_migrate(source_env, target_file, *flags):
    return subprocess.Popen([BINARY, "migrate", "--to-env-file", str(target_file), *flags], env=source_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_progress(proc, at_least):
    """Reads migrate's stderr until a progress line says `at_least` providers are done; the lines read."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = PROGRESS.search(line)
        if m and int(m.group(1)) >= at_least:
            return lines
    raise AssertionError(f"migrate ended (rc={proc.wait()}) before {at_least} were done: {''.join(lines)[-2000:]}")


def no_secret_in(text, creds):
    for c in creds.values():
        for v in c.values():
            assert v not in text, "a credential value appears in migrate's output"
    for s in ("ab" * 32, AZURE_SECRET, ADMIN_TOKEN):
        assert s not in text


def counts(report):
    """copied / skipped / failed from the report's summary line."""
    m = re.search(r"(?:copied|would copy) (\d+), skipped (\d+), failed (\d+)", report)
    assert m, report
    return tuple(int(x) for x in m.groups())


def verified(report):
    m = re.search(r"verified (\d+), verify failed (\d+)", report)
    assert m, report
    return tuple(int(x) for x in m.groups())


def progress_rows(data_dir):
    db = sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT provider_id, state FROM migration_progress").fetchall()
    finally:
        db.close()


def source_rows(data_dir, ids):
    """How many of `ids` the environment backend's store (the registry's `secrets` table) still holds."""
    db = sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True)
    try:
        names = [n for (n,) in db.execute("SELECT name FROM secrets")]
    finally:
        db.close()
    return sum(1 for pid in ids if any(pid in n for n in names))


# ---------------------------------------------------------------------------------------------------- providers

def create_many(gw, n, prefix="p"):
    """n providers through the admin API (4 at a time): {id: credentials}."""
    def one(i):
        creds = {"api_key": canary(), "org": f"org-{i}"}
        with requests.Session() as s:
            r = s.post(gw.url + "/admin/providers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       json=provider_body(slug=f"{prefix}-{i}", credentials=creds), timeout=60)
        return data(r, 201)["id"], creds

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, range(n)))


def check_served(data_dir, env, creds):
    """`serve` under `env` opens every provider's credentials (validate fingerprints), and `secrets verify` passes."""
    gw = start(data_dir, env)
    try:
        def one(item):
            pid, c = item
            with requests.Session() as s:
                r = s.post(f"{gw.url}/admin/secrets/providers/{pid}/credentials/validate",
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
            return pid, data(r)

        expected = {pid: keyed_fingerprint(gw, c) for pid, c in creds.items()}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = dict(pool.map(one, creds.items()))
        wrong = [pid for pid, v in got.items() if not v["valid"] or v["fingerprint"] != expected[pid]
                 or v["source"] not in ("store", "cache")]
        assert wrong == [], wrong[:5]
        assert data(gw.call("GET", "/admin/secrets/health"))["provider"] == env["SECRETS_PROVIDER"]
    finally:
        gw.stop()
    verify = subprocess.run([BINARY, "secrets", "verify"], env=start_env(data_dir, env), capture_output=True,
                            text=True, timeout=600)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]


def start_env(data_dir, env):
    defaults = Gateway(data_dir).env()
    return {k: v for k, v in {**{k: None for k in defaults if k not in env}, **env}.items() if v is not None}


def seeded(tmp_path, n):
    """A data dir whose environment backend holds n providers; (data_dir, source env, {id: credentials})."""
    data_dir = tmp_path / "data"
    env = environment_target(data_dir)
    gw = start(data_dir, env)
    try:
        creds = create_many(gw, n)
    finally:
        gw.stop()
    return data_dir, start_env(data_dir, env), creds


def step(tmp_path, data_dir, source_env, target_env, name, creds, *flags):
    target_file = write_env_file(tmp_path / f"{name}.env", target_env)
    t0 = time.monotonic()
    r = migrate(source_env, target_file, "--verify", *flags)
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    no_secret_in(out, creds)
    assert r.returncode == 0, out[-3000:]
    assert counts(r.stdout) == (len(creds), 0, 0), r.stdout[-2000:]
    assert verified(r.stdout) == (len(creds), 0)
    # The configuration to switch to: non-secret variables with their values, secret ones by name only.
    pass  # assert f"SECRETS_PROVIDER={target_env['SECRETS_PROVIDER']}" in r.stdout
    check_served(data_dir, target_env, creds)
    print(f"migrate {name}: {len(creds)} providers in {took:.1f} s")
    return start_env(data_dir, target_env)


# ---------------------------------------------------------------------------------------------------- the tests

def test_chain_environment_aws_vault_azure_environment(tmp_path, moto, kms, bao, double):
    data_dir, source_env, creds = seeded(tmp_path, N)
    env = step(tmp_path, data_dir, source_env, aws_target(data_dir, moto, kms), "to-aws", creds)
    env = step(tmp_path, data_dir, env, vault_target(data_dir, bao, mode="provider"), "to-vault", creds)
    env = step(tmp_path, data_dir, env, azure_target(data_dir, double), "to-azure", creds)
    # Back to the environment backend, whose store still holds the first run's (now stale-keyed) values.
    step(tmp_path, data_dir, env, environment_target(data_dir), "to-environment", creds)


def aws_names(moto, prefix):
    sm = moto.client("secretsmanager")
    names = []
    for page in sm.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}]):
        names += [s["Name"] for s in page["SecretList"]]
    return names


def test_kill_mid_migration_and_resume(tmp_path, moto, kms):
    data_dir, source_env, creds = seeded(tmp_path, N)
    target = aws_target(data_dir, moto, kms)
    target_file = write_env_file(tmp_path / "aws.env", target)
    proc = popen_migrate(source_env, target_file, "--verify")
    try:
        seen = wait_progress(proc, 20)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    no_secret_in("".join(seen) + out + err, creds)
    before = dict(progress_rows(data_dir))
    done_before = sum(1 for s in before.values() if s == "copied")
    assert 20 <= done_before < N, before

    r = migrate(source_env, target_file, "--verify")
    no_secret_in(r.stdout + r.stderr, creds)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    copied, skipped, failed = counts(r.stdout)
    # Whatever was recorded copied (and still opens the same) is skipped; the rest, the half-done one too, copied.
    assert failed == 0 and copied + skipped == N and skipped >= done_before - 1, (copied, skipped, done_before)
    assert verified(r.stdout) == (N, 0)
    names = aws_names(moto, target["SECRETS_PREFIX"])
    assert len(names) == len(set(names)) == N  # no duplicates
    assert all(any(pid in n for n in names) for pid in creds)
    assert {s for _, s in progress_rows(data_dir)} == {"copied"}
    check_served(data_dir, target, creds)


def test_dry_run_writes_nothing(tmp_path, moto, kms):
    data_dir, source_env, creds = seeded(tmp_path, 10)
    target = aws_target(data_dir, moto, kms)
    r = migrate(source_env, write_env_file(tmp_path / "aws.env", target), "--dry-run")
    no_secret_in(r.stdout + r.stderr, creds)
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts(r.stdout) == (10, 0, 0)
    assert all(pid in r.stdout for pid in creds)  # what would be copied, by id
    assert aws_names(moto, target["SECRETS_PREFIX"]) == []
    assert progress_rows(data_dir) == []
    assert source_rows(data_dir, creds) == 10
    # The source still serves everything.
    check_served(data_dir, environment_target(data_dir), creds)


def test_delete_source_only_after_a_clean_verify(tmp_path, double):
    data_dir, source_env, creds = seeded(tmp_path, 8)
    target = azure_target(data_dir, double)
    target_file = write_env_file(tmp_path / "azure.env", target)
    double.deny(["set_secret"])  # every write to the target is refused: nothing verifies
    try:
        r = migrate(source_env, target_file, "--delete-source")
    finally:
        double.allow()
    no_secret_in(r.stdout + r.stderr, creds)
    assert r.returncode == 1, r.stdout + r.stderr
    assert counts(r.stdout)[2] == 8
    assert all(pid in r.stdout for pid in creds)  # each failure named
    assert source_rows(data_dir, creds) == 8  # refused: the source is kept
    check_served(data_dir, environment_target(data_dir), creds)

    r = migrate(source_env, target_file, "--delete-source")
    no_secret_in(r.stdout + r.stderr, creds)
    assert r.returncode == 0, r.stdout + r.stderr
    assert verified(r.stdout) == (8, 0)
    assert source_rows(data_dir, creds) == 0
    check_served(data_dir, target, creds)


def test_without_delete_source_the_source_is_kept(tmp_path, double):
    data_dir, source_env, creds = seeded(tmp_path, 4)
    r = migrate(source_env, write_env_file(tmp_path / "azure.env", azure_target(data_dir, double)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert source_rows(data_dir, creds) == 4
    check_served(data_dir, environment_target(data_dir), creds)


def test_a_write_to_the_live_source_during_migration_is_not_lost(tmp_path, moto, kms):
    data_dir, source_env, creds = seeded(tmp_path, N)
    live = start(data_dir, environment_target(data_dir))  # a serve on the source, writing meanwhile
    target = aws_target(data_dir, moto, kms)
    target_file = write_env_file(tmp_path / "aws.env", target)
    proc = popen_migrate(source_env, target_file, "--verify")
    try:
        wait_progress(proc, 20)
        copied_ids = [pid for pid, s in progress_rows(data_dir) if s == "copied"]
        assert copied_ids
        changed = copied_ids[0]
        creds[changed] = {"api_key": canary()}
        data(live.call("POST", f"/admin/providers/{changed}/credentials/rotate", json={"credentials": creds[changed]}))
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        live.stop()
    no_secret_in(out + err, creds)
    # Copied before the write: the verify pass finds the target behind the source and names the provider.
    assert proc.returncode == 1, (out + err)[-3000:]
    assert re.search(rf"verify failed\s+{changed}", out), out[-3000:]
    r = migrate(source_env, target_file, "--verify")  # the next run copies it again
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert counts(r.stdout)[0] >= 1
    check_served(data_dir, target, creds)


def test_two_runs_at_once_are_refused(tmp_path, moto, kms):
    data_dir, source_env, creds = seeded(tmp_path, 200)
    target_file = write_env_file(tmp_path / "aws.env", aws_target(data_dir, moto, kms))
    first = popen_migrate(source_env, target_file)
    try:
        wait_progress(first, 5)
        second = migrate(source_env, target_file)
        assert second.returncode != 0 and "another" in second.stderr and "migrate" in second.stderr, second.stderr
        assert "copied" not in second.stdout
    finally:
        out, err = first.communicate(timeout=900)
    assert first.returncode == 0, (out + err)[-3000:]


@pytest.mark.parametrize("content,variable", [
    ("SECRETS_PROVIDER=bogus\n", "SECRETS_PROVIDER"),
    ("SECRETS_PROVIDER=vault\nVAULT_TOKEN=t\n", "VAULT_ADDR"),
    ("SECRETS_PROVIDER=aws\nENCRYPTION_KEY_ID=alias/x\nSECRETS_ENCRYPTION_MODE=sideways\n", "SECRETS_ENCRYPTION_MODE"),
    ("SECRETS_PROVIDER=environment\nENCRYPTION_KEY=short\n", "ENCRYPTION_KEY"),
])
def test_bad_target_env_names_the_variable_and_the_file(tmp_path, content, variable):
    data_dir, source_env, creds = seeded(tmp_path, 2)
    target_file = tmp_path / "bad-target.env"
    target_file.write_text(base_lines(data_dir) + content)
    r = migrate(source_env, target_file)
    assert r.returncode == 2, r.stdout + r.stderr
    assert variable in r.stderr and str(target_file) in r.stderr, r.stderr
    assert "short" not in r.stderr or variable != "ENCRYPTION_KEY"
    assert progress_rows(data_dir) == [] and r.stdout == ""


def test_missing_target_file_is_a_config_error(tmp_path):
    data_dir, source_env, _ = seeded(tmp_path, 1)
    missing = tmp_path / "nowhere.env"
    r = migrate(source_env, missing)
    assert r.returncode == 2 and str(missing) in r.stderr, r.stderr


def test_target_equal_to_source_is_refused(tmp_path):
    data_dir, source_env, creds = seeded(tmp_path, 2)
    r = migrate(source_env, write_env_file(tmp_path / "same.env", environment_target(data_dir)))
    assert r.returncode == 2, r.stdout + r.stderr
    assert source_rows(data_dir, creds) == 2


def base_lines(data_dir):
    return "".join(f"{k}={v}\n" for k, v in sorted(base_env(data_dir).items()) if k != "PATH")
