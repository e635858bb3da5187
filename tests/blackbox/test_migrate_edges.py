"""`migrate --to-env-file` edges beside test_migrate.py: --delete-source when the target refuses every write (nothing
deleted, the source still serves), a rollback (going back is a migrate the other way), the audit key under both
configurations (a clean run adds the target's wrapping beside the source's; a run that deletes the source drops the
source's), target files that are missing or name another data dir, a dry run that writes nothing anywhere, the
source's SECRETS_ALLOWED_REGIONS holding the target, location checks before the target is opened, the switch block's
allow-list, and the lock file."""
import os
import pathlib
import sqlite3
import subprocess
import tempfile
import uuid

from aws_peers import REGION, free_port
from test_azure import own_double  # noqa: F401 (a fixture: a Key Vault double of the test's own)
from conftest import BINARY, Gateway, canary, data
from test_migrate import (AZURE_SECRET, aws_names, azure_env, counts, env_secret_count, make_providers, migrate,
                          no_secret_in, serve_and_read, small, unique, write_env)  # noqa: F401 (small: a fixture)


def seeded(tmp_path, n):
    source = Gateway(tmp_path / "data").start()
    try:
        providers = make_providers(source, n)
    finally:
        source.stop()
    return source, providers


def test_delete_source_is_refused_when_the_target_refuses_writes(tmp_path, own_double):
    double = own_double
    double.client_id = double.add_app(secret=AZURE_SECRET)  # test_migrate's azure_env signs in with it
    source, providers = seeded(tmp_path, 6)
    target_env = azure_env(double, unique("dyad-key"), unique("dyad"))
    target = write_env(tmp_path / "azure.env", {**target_env, "GATEWAY_DATA_DIR": str(source.data_dir)})
    double.deny(["set_secret"])
    try:
        r = migrate(source, target, "--delete-source")
    finally:
        double.allow()
    no_secret_in(r.stdout + r.stderr, providers)
    assert AZURE_SECRET not in r.stdout + r.stderr
    assert r.returncode == 1, r.stdout + r.stderr
    assert counts(r.stdout) == (0, 0, 6)
    assert all(pid in r.stdout for pid in providers)  # each failure named, with the backend's error
    assert "source secrets deleted" not in r.stdout and "switch to" not in r.stdout
    assert env_secret_count(source.data_dir) == 6
    serve_and_read(source.data_dir, {}, providers)  # not clean: the audit key stayed with the source

    r = migrate(source, target, "--delete-source")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified 6, verify failed 0" in r.stdout and "source secrets deleted: 6" in r.stdout
    assert env_secret_count(source.data_dir) == 0
    serve_and_read(source.data_dir, target_env, providers)


def test_a_rollback_is_a_migrate_back(tmp_path, own_double):
    double = own_double
    double.client_id = double.add_app(secret=AZURE_SECRET)  # test_migrate's azure_env signs in with it
    source, providers = seeded(tmp_path, 5)
    target_env = azure_env(double, unique("dyad-key"), unique("dyad"))
    target = write_env(tmp_path / "azure.env", target_env)
    r = migrate(source, target, "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert env_secret_count(source.data_dir) == 5  # kept without --delete-source
    # Back: the target's configuration is the source now, the first one the target.
    back = write_env(tmp_path / "environment.env", {k: v for k, v in Gateway(source.data_dir).env().items()
                                                    if k != "PATH"})
    r = migrate(Gateway(source.data_dir, target_env), back, "--verify")
    no_secret_in(r.stdout + r.stderr, providers)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified 5, verify failed 0" in r.stdout
    serve_and_read(source.data_dir, {}, providers)


def test_a_missing_target_file_is_a_configuration_error(tmp_path):
    source, _ = seeded(tmp_path, 1)
    missing = tmp_path / "nowhere.env"
    r = migrate(source, missing)
    assert r.returncode == 2 and str(missing) in r.stderr, r.stderr
    assert r.stdout == ""


def test_a_target_on_another_data_dir_is_refused(tmp_path):
    source, providers = seeded(tmp_path, 1)
    other = tmp_path / "other-" / uuid.uuid4().hex[:6]
    target = write_env(tmp_path / "t.env", {"SECRETS_PROVIDER": "environment", "ENCRYPTION_KEY": "cd" * 32,
                                            "GATEWAY_DATA_DIR": str(other)})
    r = migrate(source, target)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "GATEWAY_DATA_DIR" in r.stderr and str(target) in r.stderr and "cd" * 32 not in r.stderr
    assert env_secret_count(source.data_dir) == 1


def test_an_unreachable_target_ends_the_run_before_any_copy(tmp_path):
    source, providers = seeded(tmp_path, 3)
    secret_key = "s" * 40
    target = write_env(tmp_path / "aws.env", {
        "SECRETS_PROVIDER": "aws", "AWS_REGION": REGION, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "AKIAMIGRATEEDGE00000", "AWS_SECRET_ACCESS_KEY": secret_key,
        "ENCRYPTION_KEY_ID": "alias/nowhere", "AWS_EC2_METADATA_DISABLED": "true",
        "GATEWAY_DATA_DIR": str(source.data_dir)})
    r = migrate(source, target, "--verify", "--delete-source", timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr  # a runtime failure, not a configuration error
    # Its first call (the key manager taking the audit key; with no audit key yet, the store's first read) fails.
    assert "so nothing was copied" in r.stderr and "Couldn't connect" in r.stderr, r.stderr
    assert secret_key not in r.stdout + r.stderr
    no_secret_in(r.stdout + r.stderr, providers)
    assert env_secret_count(source.data_dir) == 3


def environment_target(tmp_path, name):
    """Another keyring (its own key id and ENCRYPTION_KEY) and prefix in the source's data dir: (env, file)."""
    env = {"SECRETS_PROVIDER": "environment", "SECRETS_PREFIX": unique(name), "ENCRYPTION_KEY_ID": unique(name),
           "ENCRYPTION_KEY": uuid.uuid4().hex * 2}
    return env, write_env(tmp_path / f"{name}.env", env)


def audit_holders(data_dir):
    db = sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True)
    try:
        return sorted(db.execute("SELECT kind, key_id FROM audit_key").fetchall())
    finally:
        db.close()


def audit_verify(gw):
    return subprocess.run([BINARY, "audit", "verify"], env=gw.env(), capture_output=True, text=True, timeout=60)


def secret_count(data_dir, prefix):
    db = sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM secrets WHERE name LIKE ?", (prefix + "/providers/%",)).fetchone()[0]
    finally:
        db.close()


def test_the_source_keeps_writing_the_one_audit_chain_until_it_is_deleted(tmp_path):
    source, providers = seeded(tmp_path, 2)
    source_holder = ("local", "dyad-gateway-encryption-key")
    assert audit_holders(source.data_dir) == [source_holder]
    first, first_file = environment_target(tmp_path, "first")
    r = migrate(source, first_file, "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    holders = sorted([source_holder, ("local", first["ENCRYPTION_KEY_ID"])])
    assert audit_holders(source.data_dir) == holders  # added beside the source's

    # The source's serve, restarted, still writes audited lines: a rotation is not refused.
    log = source.data_dir / "audit.log"
    before = len(log.read_text().splitlines())
    source.start()
    try:
        pid = next(iter(providers))
        providers[pid] = {"api_key": canary()}
        data(source.call("POST", f"/admin/providers/{pid}/credentials/rotate", json={"credentials": providers[pid]}))
    finally:
        source.stop()
    assert any(pid in line for line in log.read_text().splitlines()[before:])
    for config in (source, Gateway(source.data_dir, first)):  # one chain, opened under either configuration
        v = audit_verify(config)
        assert v.returncode == 0 and "chain intact" in v.stdout, v.stdout + v.stderr

    # A second migration from the same source, to another target.
    second, second_file = environment_target(tmp_path, "second")
    r = migrate(source, second_file, "--verify")
    assert r.returncode == 0 and counts(r.stdout) == (2, 0, 0), r.stdout + r.stderr
    holders = sorted(holders + [("local", second["ENCRYPTION_KEY_ID"])])
    assert audit_holders(source.data_dir) == holders
    serve_and_read(source.data_dir, second, providers)  # its serve writes through the audit log

    # Later, --delete-source under the source's configuration: runs, audited, and the source's wrapping goes.
    before = len(log.read_text().splitlines())
    r = migrate(source, first_file, "--delete-source")
    no_secret_in(r.stdout + r.stderr, providers)
    assert r.returncode == 0, r.stdout + r.stderr
    assert counts(r.stdout) == (1, 1, 0)  # the provider rotated since the first run is copied again
    assert "source secrets deleted: 2" in r.stdout and "the source's wrapping dropped" in r.stdout, r.stdout
    assert secret_count(source.data_dir, "dyad-gateway") == 0
    deletions = [line for line in log.read_text().splitlines()[before:] if "cli-migrate" in line]
    assert all(any(p in line for line in deletions) for p in providers), deletions
    assert audit_holders(source.data_dir) == [h for h in holders if h != source_holder]
    for config in (Gateway(source.data_dir, first), Gateway(source.data_dir, second)):
        v = audit_verify(config)
        assert v.returncode == 0 and "chain intact" in v.stdout, v.stdout + v.stderr
    serve_and_read(source.data_dir, first, providers)

    # The source's configuration holds no wrapping now: told who does, and how to get one.
    v = audit_verify(source)
    assert v.returncode != 0
    assert "dyad-gateway-encryption-key" in v.stderr and first["ENCRYPTION_KEY_ID"] in v.stderr, v.stderr
    assert "migrate" in v.stderr and first["ENCRYPTION_KEY"] not in v.stderr


def registry_state(data_dir):
    """Every row of the registry database, and its files' bytes (a dry run must change neither); read from a copy,
    as a reader of the file itself leaves an empty -wal behind. The -shm (an index, rebuilt) is left out."""
    files = {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())
             if p.name in ("gateway.db", "gateway.db-wal", "gateway.db-journal")}
    files = {name: data for name, data in files.items() if data or name == "gateway.db"}
    with tempfile.TemporaryDirectory() as copy:
        for name, data in files.items():
            pathlib.Path(copy, name).write_bytes(data)
        db = sqlite3.connect(pathlib.Path(copy, "gateway.db"))
        try:
            return list(db.iterdump()), files
        finally:
            db.close()


def test_a_dry_run_to_an_environment_target_writes_nothing(tmp_path):
    source, providers = seeded(tmp_path, 2)
    # A key id of its own: opening it writes a keyring row (its first version).
    target = write_env(tmp_path / "t.env", {"SECRETS_PROVIDER": "environment", "ENCRYPTION_KEY": "cd" * 32,
                                            "ENCRYPTION_KEY_ID": "dry-run-key", "SECRETS_PREFIX": "elsewhere"})
    before = registry_state(source.data_dir)
    r = migrate(source, target, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "would copy 2, skipped 0, failed 0" in r.stdout
    after = registry_state(source.data_dir)
    assert after[0] == before[0]  # rows
    assert after[1] == before[1]  # file bytes
    assert not (source.data_dir / "migrate.lock").exists()  # no lock file made either
    r = migrate(source, target, "--verify")  # and the real run still works
    assert r.returncode == 0 and "verified 2, verify failed 0" in r.stdout, r.stdout + r.stderr


def test_a_dry_run_to_an_aws_target_writes_nothing(tmp_path, small):
    gw, providers, moto, target_env = small
    before = registry_state(gw.data_dir)
    r = migrate(gw, write_env(tmp_path / "t.env", target_env), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert registry_state(gw.data_dir) == before
    assert aws_names(moto, target_env["SECRETS_PREFIX"]) == []


def test_the_sources_allowed_regions_hold_the_target(tmp_path, small):
    gw, providers, moto, target_env = small
    listed = Gateway(gw.data_dir, {"SECRETS_ALLOWED_REGIONS": "eu-central-1"})
    target = write_env(tmp_path / "t.env", target_env)  # AWS_REGION us-east-1, no list of its own
    before = registry_state(gw.data_dir)
    r = migrate(listed, target)
    assert r.returncode == 2, r.stdout + r.stderr
    for part in (str(target), "SECRETS_ALLOWED_REGIONS", "AWS_REGION", "us-east-1"):
        assert part in r.stderr, r.stderr
    assert moto.secret_key not in r.stderr
    assert aws_names(moto, target_env["SECRETS_PREFIX"]) == []
    assert registry_state(gw.data_dir) == before
    r = migrate(listed, write_env(tmp_path / "listed.env", {**target_env, "SECRETS_ALLOWED_REGIONS": "us-east-1"}))
    assert r.returncode == 2 and "AWS_REGION" in r.stderr, r.stderr  # a list of its own does not widen the source's
    r = migrate(Gateway(gw.data_dir, {"SECRETS_ALLOWED_REGIONS": "us-east-1"}), target)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_same_location_is_refused_before_the_target_is_opened(tmp_path):
    source, _ = seeded(tmp_path, 1)
    # The source's store and prefix under another key with the same key id: opening it would write a keyring row.
    target = write_env(tmp_path / "same.env", {"SECRETS_PROVIDER": "environment", "ENCRYPTION_KEY": "cd" * 32})
    before = registry_state(source.data_dir)
    r = migrate(source, target)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the target stores credentials where the source does" in r.stderr and str(target) in r.stderr, r.stderr
    assert "cd" * 32 not in r.stderr and "ab" * 32 not in r.stderr
    assert registry_state(source.data_dir)[0] == before[0]
    assert not (source.data_dir / "migrate.lock").exists()  # refused before the lock, too


def test_the_switch_block_prints_values_of_known_settings_only(tmp_path, small):
    gw, providers, moto, target_env = small
    target = write_env(tmp_path / "t.env", {**target_env, "DB_PASS": "canary-db-pass-value",
                                            "GATEWAY_LOG_LEVEL": "warn"})
    r = migrate(gw, target)
    assert r.returncode == 0, r.stdout + r.stderr
    block = r.stdout.split("switch to this configuration", 1)[1]
    assert "canary-db-pass-value" not in r.stdout + r.stderr
    assert f"DB_PASS=<not shown: the value in {target}>" in block, block
    assert f"AWS_SECRET_ACCESS_KEY=<secret: the value in {target}>" in block, block
    assert moto.access_key not in block  # AWS_ACCESS_KEY_ID is not on the list either
    assert "GATEWAY_LOG_LEVEL=warn" in block and f"SECRETS_PREFIX={target_env['SECRETS_PREFIX']}" in block, block


def test_a_symlinked_lock_file_is_refused(tmp_path):
    source, _ = seeded(tmp_path, 1)
    elsewhere = tmp_path / "elsewhere.lock"
    os.symlink(elsewhere, source.data_dir / "migrate.lock")
    target = write_env(tmp_path / "t.env", {"SECRETS_PROVIDER": "environment", "ENCRYPTION_KEY": "cd" * 32,
                                            "ENCRYPTION_KEY_ID": "other-key", "SECRETS_PREFIX": "other"})
    r = migrate(source, target)
    assert r.returncode == 1, r.stdout + r.stderr  # a refusal, as a held lock is
    assert "migrate.lock" in r.stderr and "symbolic link" in r.stderr, r.stderr
    assert not elsewhere.exists()
    assert r.stdout == ""
