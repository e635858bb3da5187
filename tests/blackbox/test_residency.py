"""Data residency: SECRETS_ALLOWED_REGIONS refuses a start whose store, KMS or replicas lie elsewhere, and
AWS_SECRETS_REPLICA_REGIONS replicates each new secret (moto), its status in the health details."""
import re
import subprocess
import time

import pytest

from aws_peers import REGION
from conftest import BINARY, Gateway, canary, create_provider, data
from test_aws import aws_gateway, moto  # noqa: F401 (moto: the module's moto_server fixture)


def refused(tmp_path, env):
    """`serve` with `env`: it must exit 2 before opening anything; its stderr."""
    gw = Gateway(tmp_path / "data", env)
    run = subprocess.run([BINARY, "serve"], env=gw.env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert not (gw.data_dir / "gateway.db").exists()  # refused before anything was opened
    assert "listening" not in run.stdout
    return run.stderr


def aws_env(moto, **over):
    return moto.gateway_env(ENCRYPTION_KEY_ID="alias/whatever", SECRETS_PREFIX="residency", **over)


def sampled_health(gw):
    """Health once the replica check has looked at a secret (at start there may be none: retried within 5 s)."""
    deadline = time.time() + 30
    h = data(gw.call("GET", "/admin/secrets/health"))
    while not h.get("replication", {}).get("sampleSecret") and time.time() < deadline:
        time.sleep(0.2)
        h = data(gw.call("GET", "/admin/secrets/health"))
    return h


def test_replicas_made_in_the_listed_regions_and_shown_in_health(make_gateway, moto):
    gw = aws_gateway(make_gateway, moto, AWS_SECRETS_REPLICA_REGIONS="eu-west-1, eu-north-1",
                     SECRETS_ALLOWED_REGIONS=f"{REGION},eu-west-1,eu-north-1")
    key = canary()
    p = create_provider(gw, "openai", {"api_key": key})
    sm = moto.client("secretsmanager")
    described = sm.describe_secret(SecretId=f"{gw.prefix}/providers/{p['id']}")
    assert sorted(r["Region"] for r in described["ReplicationStatus"]) == ["eu-north-1", "eu-west-1"]
    assert described.get("PrimaryRegion", REGION) == REGION

    # The health probe checks one sample secret, not one per provider, at most once a minute.
    create_provider(gw, "gemini", {"api_key": canary()})
    h = sampled_health(gw)
    rep = h["replication"]
    assert rep["sampleSecret"].startswith(f"{gw.prefix}/providers/")
    assert sorted((r["region"], r["status"]) for r in rep["replicas"]) == [("eu-north-1", "InSync"),
                                                                           ("eu-west-1", "InSync")]
    assert h["status"] == "healthy" and key not in str(h)
    # The check is the probe's own phase, with its own status and time.
    assert rep["status"] == "healthy" and isinstance(rep["durationMs"], (int, float)) and rep["durationMs"] >= 0, rep
    first = rep["checkedAt"]
    for _ in range(5):  # several probes (each at most once a second) reuse the check
        time.sleep(0.3)
        h = data(gw.call("GET", "/admin/secrets/health"))
    assert h["replication"]["checkedAt"] == first
    metrics = gw.call("GET", "/metrics").text
    calls = re.findall(r'dyad_cloud_calls_total\{[^}]*op="DescribeSecret"[^}]*\} (\d+)', metrics)
    assert sum(int(c) for c in calls) == 1, calls


def test_health_degraded_for_a_missing_replica(make_gateway, moto):
    gw = aws_gateway(make_gateway, moto)
    create_provider(gw, "openai", {"api_key": canary()})  # made before replicas were configured
    gw.stop()
    gw.env_extra["AWS_SECRETS_REPLICA_REGIONS"] = "eu-west-1"
    gw.start()
    h = sampled_health(gw)
    assert h["replication"]["replicas"][0]["status"] == "Missing"
    assert h["status"] == "degraded"


def test_a_provider_with_replicas_is_deleted(make_gateway, moto):
    """AWS (and moto) refuse DeleteSecret of a secret that still has replicas: the gateway removes them first (found by
    review: with AWS_SECRETS_REPLICA_REGIONS a provider could not be deleted)."""
    gw = aws_gateway(make_gateway, moto, AWS_SECRETS_REPLICA_REGIONS="eu-west-1,eu-north-1")
    p = create_provider(gw, "openai", {"api_key": canary()})
    name = f"{gw.prefix}/providers/{p['id']}"
    sm = moto.client("secretsmanager")
    assert len(sm.describe_secret(SecretId=name)["ReplicationStatus"]) == 2
    r = gw.call("DELETE", f"/admin/providers/{p['id']}")
    assert r.status_code in (200, 204), r.text
    described = sm.describe_secret(SecretId=name)
    assert described.get("DeletedDate"), described  # scheduled for deletion, with its recovery window
    assert not described.get("ReplicationStatus"), described
    assert gw.call("GET", f"/admin/providers/{p['id']}").status_code == 404


def list_calls(gw):
    metrics = gw.call("GET", "/metrics").text
    return sum(int(c) for c in re.findall(r'dyad_cloud_calls_total\{[^}]*op="ListSecrets"[^}]*\} (\d+)', metrics))


def started_and_counted(make_gateway, moto, prefix, name, **env):
    """A gateway whose start has counted the orphans (and sampled a replica, with replicas): its ListSecrets calls."""
    gw = aws_gateway(make_gateway, moto, SECRETS_PREFIX=prefix, name=name, **env)
    deadline = time.time() + 30
    h = data(gw.call("GET", "/admin/secrets/health"))
    while time.time() < deadline and ("orphanedSecrets" not in h or
                                      (env and not h.get("replication", {}).get("sampleSecret"))):
        time.sleep(0.2)
        h = data(gw.call("GET", "/admin/secrets/health"))
    assert "orphanedSecrets" in h, h
    calls = list_calls(gw)
    gw.stop()
    return h, calls


def test_the_replica_check_reads_one_page_of_one_secret(make_gateway, moto):
    """Found by review: without a secret created by this instance, the replica check walked every page of
    ListSecrets (one call per 100 secrets, inside the key manager's phase). Now one call of MaxResults 1: a start
    with replicas makes exactly one ListSecrets call more than the same start without."""
    prefix = f"residency-many-{time.time_ns()}"
    sm = moto.client("secretsmanager")
    for i in range(150):  # two pages of the orphan count (100 a page)
        sm.create_secret(Name=f"{prefix}/providers/p{i:03d}", SecretString="{}")
    plain, without = started_and_counted(make_gateway, moto, prefix, "plain")
    assert plain["orphanedSecrets"] == 150 and "replication" not in plain
    h, with_replicas = started_and_counted(make_gateway, moto, prefix, "replicas",
                                           AWS_SECRETS_REPLICA_REGIONS="eu-west-1")
    assert h["replication"]["sampleSecret"].startswith(f"{prefix}/providers/p"), h["replication"]
    assert with_replicas - without == 1, (without, with_replicas)


def test_start_refused_for_a_region_not_listed(tmp_path, moto):
    err = refused(tmp_path, aws_env(moto, SECRETS_ALLOWED_REGIONS="eu-west-1,eu-central-1"))
    assert "SECRETS_ALLOWED_REGIONS" in err and "AWS_REGION" in err and REGION in err


def test_start_refused_for_a_replica_region_not_listed(tmp_path, moto):
    err = refused(tmp_path, aws_env(moto, SECRETS_ALLOWED_REGIONS=f"{REGION},eu-west-1",
                                    AWS_SECRETS_REPLICA_REGIONS="eu-west-1,ap-south-1"))
    assert "SECRETS_ALLOWED_REGIONS" in err and "AWS_SECRETS_REPLICA_REGIONS" in err and "ap-south-1" in err


def test_start_refused_for_a_kms_endpoint_or_key_in_another_region(tmp_path, moto):
    err = refused(tmp_path / "endpoint", aws_env(moto, SECRETS_ALLOWED_REGIONS=REGION,
                                                 AWS_ENDPOINT_URL_KMS="https://kms.eu-west-1.amazonaws.com"))
    assert "SECRETS_ALLOWED_REGIONS" in err and "AWS_ENDPOINT_URL_KMS" in err and "eu-west-1" in err
    env = aws_env(moto, SECRETS_ALLOWED_REGIONS=REGION)
    env["ENCRYPTION_KEY_ID"] = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    err = refused(tmp_path / "arn", env)
    assert "ENCRYPTION_KEY_ID" in err and "eu-west-1" in err


def test_bad_lists_are_refused_naming_the_variable(tmp_path, moto):
    for i, (name, value) in enumerate([("SECRETS_ALLOWED_REGIONS", "us-east-1,,eu-west-1"),
                                       ("SECRETS_ALLOWED_REGIONS", "https://admin:pw-CANARY@vault.example.com"),
                                       ("AWS_SECRETS_REPLICA_REGIONS", "eu-west-1,not a region")]):
        err = refused(tmp_path / str(i), aws_env(moto, **{name: value}))
        assert f"{name}: " in err and "pw-CANARY" not in err


def test_vault_and_azure_hosts_match_whole(tmp_path):
    err = refused(tmp_path / "vault", {"SECRETS_PROVIDER": "vault", "VAULT_ADDR": "https://vault.example.com:8201",
                                       "VAULT_TOKEN": "t", "ENCRYPTION_KEY": None,
                                       "SECRETS_ALLOWED_REGIONS": "https://vault.example.com:8200"})
    assert "VAULT_ADDR" in err and "vault.example.com:8201" in err
    azure = {"SECRETS_PROVIDER": "azure", "ENCRYPTION_KEY_ID": "dyad-key", "ENCRYPTION_KEY": None,
             "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s",
             "SECRETS_ALLOWED_REGIONS": "myvault.vault.azure.net"}
    err = refused(tmp_path / "azure", {**azure, "AZURE_KEY_VAULT_URL": "https://myvault.vault.azure.net.evil.com"})
    assert "AZURE_KEY_VAULT_URL" in err and "myvault.vault.azure.net.evil.com" in err
    err = refused(tmp_path / "key", {**azure, "AZURE_KEY_VAULT_URL": "https://MyVault.vault.azure.net.",
                                     "AZURE_KEY_VAULT_KEY_URL": "https://keys.vault.azure.net"})
    assert "AZURE_KEY_VAULT_KEY_URL" in err and "keys.vault.azure.net" in err
