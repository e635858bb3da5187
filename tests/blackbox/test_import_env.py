"""`migrate import-env`: DYAD_PROVIDER_* variables of existing providers stored in the backend (seed Migration
Guide, step 5), on the environment backend and on AWS (moto)."""
import json
import subprocess

from conftest import BINARY, canary, create_provider, data, provider_body
from test_aws import aws_gateway, moto  # noqa: F401 (moto: the module's moto_server fixture)
from test_secrets import keyed_fingerprint


def import_env(gw, variables, *flags):
    env = {**gw.env(), **variables}
    return subprocess.run([BINARY, "migrate", "import-env", *flags], env=env, capture_output=True, text=True,
                          timeout=120)


def validate(gw, pid):
    return data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))


def assert_no_value(run, values):
    for v in values:
        assert v not in run.stdout and v not in run.stderr, "a value in the output"


def check_import(gw, extra_check=None):
    """Providers made with the gateway running; then import-env with the gateway stopped, as an operator would."""
    old, key_a, org_a, key_b, stray = canary(), canary(), canary(), canary(), canary()
    # api_key is not stored (filled from its variable); org_id is, with another value than its variable: the stored
    # one may have been rotated since, so it is kept and its variable is not removable.
    a = create_provider(gw, "open-ai", {"org_id": old, "region": "kept"})
    b = data(gw.call("POST", "/admin/providers", json=provider_body(slug="bee")), 201)  # no credentials yet
    quiet = create_provider(gw, "quiet", {"api_key": old})
    fp_quiet = validate(gw, quiet["id"])["fingerprint"]
    gw.stop()
    variables = {"DYAD_PROVIDER_OPEN_AI_API_KEY": key_a, "DYAD_PROVIDER_OPEN_AI_ORG_ID": org_a,
                 "DYAD_PROVIDER_BEE_API_KEY": key_b, "DYAD_PROVIDER_NOBODY_API_KEY": stray}
    values = [old, key_a, org_a, key_b, stray]

    dry = import_env(gw, variables, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert_no_value(dry, values)
    assert "open-ai" in dry.stdout and "would store" in dry.stdout and "nothing written" in dry.stdout
    assert "unknown: DYAD_PROVIDER_NOBODY_API_KEY" in dry.stdout
    assert "can now be removed" not in dry.stdout
    gw.start()  # without the variables: the dry run changed nothing
    assert validate(gw, a["id"])["fingerprint"] == keyed_fingerprint(gw, {"org_id": old, "region": "kept"})
    assert validate(gw, b["id"])["valid"] is False
    gw.stop()

    run = import_env(gw, variables)
    assert run.returncode == 0, run.stdout + run.stderr
    assert_no_value(run, values)
    lines = run.stdout.splitlines()
    assert any(l.startswith("open-ai (") and " stored " in l and
               l.endswith("stored value differs, kept: DYAD_PROVIDER_OPEN_AI_ORG_ID") for l in lines), run.stdout
    assert any(l.startswith("bee (") and " stored " in l for l in lines), run.stdout
    assert not any(l.startswith("quiet (") for l in lines), run.stdout  # no variables: left alone
    assert "unknown: DYAD_PROVIDER_NOBODY_API_KEY" in run.stdout
    removable = run.stdout.split("can now be removed", 1)[1].split()
    assert removable[-2:] == ["DYAD_PROVIDER_BEE_API_KEY", "DYAD_PROVIDER_OPEN_AI_API_KEY"], run.stdout
    assert "DYAD_PROVIDER_OPEN_AI_ORG_ID" not in removable
    assert "DYAD_PROVIDER_NOBODY_API_KEY" not in removable

    gw.start()  # a serve without the variables reads the credentials from the store
    va = validate(gw, a["id"])
    assert va["source"] == "store" and va["fingerprint"] == keyed_fingerprint(
        gw, {"api_key": key_a, "org_id": old, "region": "kept"})
    vb = validate(gw, b["id"])
    assert vb["valid"] is True and vb["source"] == "store"
    assert vb["fingerprint"] == keyed_fingerprint(gw, {"api_key": key_b})
    assert validate(gw, quiet["id"])["fingerprint"] == fp_quiet
    audit = (gw.data_dir / "audit.log").read_text()
    assert all(v not in audit for v in values)
    writes = [json.loads(l) for l in audit.splitlines() if '"credentials.rotate"' in l]
    assert {(e["actor"], e["resource"]) for e in writes} >= {("cli", a["id"]), ("cli", b["id"])}
    if extra_check:
        extra_check(a, values)
    gw.stop()

    again = import_env(gw, variables)  # the second time: nothing to write
    assert again.returncode == 0, again.stderr
    assert "  stored  [" not in again.stdout and again.stdout.count("  unchanged  [") == 2, again.stdout
    gw.start()


def test_import_env_on_the_environment_backend(make_gateway):
    check_import(make_gateway().start())


def test_import_env_on_aws(make_gateway, moto):
    gw = aws_gateway(make_gateway, moto)
    sm = moto.client("secretsmanager")

    def stored_sealed(a, values):
        stored = sm.get_secret_value(SecretId=f"{gw.prefix}/providers/{a['id']}")["SecretString"]
        assert json.loads(stored)["kms"] == "aws-kms" and all(v not in stored for v in values)

    check_import(gw, stored_sealed)
