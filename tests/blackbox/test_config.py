"""Start-up configuration errors: non-zero exit, the variable named, no secret echoed."""
import hashlib
import subprocess

import pytest

from conftest import BINARY

GOOD = {"ENCRYPTION_KEY": "ab" * 32, "GATEWAY_ADMIN_API_KEY": "admin-" + "x" * 20}


def run(env, args=("serve",), tmp_path=None):
    full = {"PATH": "/usr/bin:/bin", "GATEWAY_PORT": "0"}
    if tmp_path:
        full["GATEWAY_DATA_DIR"] = str(tmp_path)
    full.update(env)
    return subprocess.run([BINARY, *args], env=full, capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("var,value,expect", [
    ("SECRETS_CACHE_ENABLED", "maybe", "true or false"),
    ("GATEWAY_PORT", "99999", "integer from 0 to 65535"),
    ("SECRETS_CACHE_TTL_SECONDS", "ten", "integer from"),
    ("SECRETS_PROVIDER", "gcp", "is not a backend of this build; use one of: aws, azure, environment, vault"),
    ("SECRETS_ENCRYPTION_MODE", "both", "envelope, provider"),
    ("GATEWAY_LOG_LEVEL", "chatty", "trace, debug, info"),
    ("KEY_ROTATION_SCHEDULE", "0 3 *", "expected 5 fields"),
    ("KEY_ROTATION_SCHEDULE", "61 * * * *", "minute field '61'"),
    ("GATEWAY_DATABASE_URL", "mysql://db", "sqlite://"),
    ("ENCRYPTION_KEY", "tooshort", "64 hexadecimal"),
    ("GATEWAY_ADMIN_API_KEY", "short", "at least 16"),
    ("GATEWAY_HOST", "not-an-ip", "not an IP address"),
])
def test_bad_value_names_variable(var, value, expect, tmp_path):
    env = dict(GOOD)
    env[var] = value
    r = run(env, tmp_path=tmp_path)
    assert r.returncode == 2
    assert var in r.stderr
    assert expect in r.stderr
    if var in ("ENCRYPTION_KEY", "GATEWAY_ADMIN_API_KEY"):
        assert value not in r.stderr + r.stdout


def test_missing_encryption_key(tmp_path):
    r = run({"GATEWAY_ADMIN_API_KEY": GOOD["GATEWAY_ADMIN_API_KEY"]}, tmp_path=tmp_path)
    assert r.returncode != 0
    assert "ENCRYPTION_KEY: is required" in r.stderr


def test_bad_tokens_file(tmp_path):
    f = tmp_path / "tokens.json"
    f.write_text('{"tokens":[{"name":"x","role":"god","sha256":"00"}]}')
    r = run({**GOOD, "GATEWAY_ADMIN_TOKENS_FILE": str(f)}, tmp_path=tmp_path)
    assert r.returncode != 0
    assert "GATEWAY_ADMIN_TOKENS_FILE" in r.stderr and "tokens[0].role" in r.stderr


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_a_clients_file_holds_client_tokens_only(role, tmp_path):
    """GATEWAY_CLIENT_API_KEYS_FILE is for the /v1 clients' tokens (whoever manages app keys edits it): an admin or
    viewer entry there would be a way into /admin, so the gateway refuses to start, naming the file and the entry."""
    f = tmp_path / "clients.json"
    f.write_text('{"tokens":[{"name":"app","role":"client","sha256":"' + "a" * 64 + '"},'
                 '{"name":"sneaky","role":"' + role + '","sha256":"' + "b" * 64 + '"}]}')
    r = run({**GOOD, "GATEWAY_CLIENT_API_KEYS_FILE": str(f)}, tmp_path=tmp_path)
    assert r.returncode != 0
    assert "GATEWAY_CLIENT_API_KEYS_FILE" in r.stderr and "tokens[1]" in r.stderr and "sneaky" in r.stderr, r.stderr


def test_bad_env_file_line(tmp_path):
    f = tmp_path / ".env"
    f.write_text("GOOD=1\nthis line is wrong\n")
    r = run(GOOD, args=("serve", "--env-file", str(f)), tmp_path=tmp_path)
    assert r.returncode != 0
    assert "line 2" in r.stderr


def test_env_file_supplies_variables(tmp_path):
    f = tmp_path / ".env"
    f.write_text("SECRETS_CACHE_MAX_SIZE=bogus\n")
    r = run(GOOD, args=("serve", "--env-file", str(f)), tmp_path=tmp_path)
    assert r.returncode != 0 and "SECRETS_CACHE_MAX_SIZE" in r.stderr


def test_help_and_version():
    r = subprocess.run([BINARY, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "serve" in r.stdout
    r = subprocess.run([BINARY, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "dyad-gateway" in r.stdout
    r = subprocess.run([BINARY, "migrate"], capture_output=True, text=True)  # README: "with no subcommand: its help"
    assert r.returncode == 0 and "--to-env-file" in r.stdout and "import-env" in r.stdout, r.stdout + r.stderr


def test_token_hash_refuses_a_short_token():
    """A tokens file holds hashes only: `token hash` is where a token's length can be checked (16, as the API key)."""
    for short in ("", "a", "x" * 15):
        r = subprocess.run([BINARY, "token", "hash"], input=short + "\n", capture_output=True, text=True, timeout=20)
        assert r.returncode == 2 and "shorter than 16 characters" in r.stderr and r.stdout == "", (short, r.stderr)
    for line in ("y" * 16 + "\n", "y" * 16 + "\r\n"):  # a file saved with CRLF: the token is the line
        r = subprocess.run([BINARY, "token", "hash"], input=line, capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and r.stdout.strip() == hashlib.sha256(b"y" * 16).hexdigest(), r.stderr
    r = subprocess.run([BINARY, "token", "hash"], input="x" * 15 + "\r\n", capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, r.stdout


@pytest.mark.parametrize("args,expect", [
    ((), "A subcommand is required"),
    (("serve", "--bogus"), "--bogus"),
    (("backup",), "--out is required"),
    (("restore",), "file is required"),
    (("secrets",), "A subcommand is required"),
    (("migrate", "--dry-run"), "--to-env-file TARGET.env is required"),
])
def test_a_usage_error_exits_2_saying_what(args, expect):
    """The README: exit 2 for a configuration or usage error (the command-line parser's own codes were 106, 109)."""
    r = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert expect in r.stderr, r.stderr


@pytest.mark.parametrize("env,var,expect", [
    ({}, "AWS_REGION", "is required when SECRETS_PROVIDER=aws"),
    ({"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_KMS": "localhost:4566"}, "AWS_ENDPOINT_URL_KMS", "https://host"),
    ({"AWS_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "0"}, "AWS_MAX_ATTEMPTS", "integer from 1 to 10"),
    ({"AWS_REGION": "us-east-1", "AWS_SECRETS_RECOVERY_WINDOW_DAYS": "90"}, "AWS_SECRETS_RECOVERY_WINDOW_DAYS",
     "integer from 7 to 30"),
    ({"AWS_REGION": "us-east-1", "SECRETS_PREFIX": "no spaces"}, "SECRETS_PREFIX", "/_+=.@-"),
])
def test_aws_settings_are_checked_at_start(env, var, expect, tmp_path):
    r = run({"SECRETS_PROVIDER": "aws", "GATEWAY_ADMIN_API_KEY": GOOD["GATEWAY_ADMIN_API_KEY"],
             "HOME": str(tmp_path), **env}, tmp_path=tmp_path)
    assert r.returncode == 2 and var in r.stderr and expect in r.stderr, r.stderr
    # The backend's settings are checked before anything is opened.
    assert not (tmp_path / "gateway.db").exists()


def test_provider_mode_is_refused_for_the_environment_provider(tmp_path):
    r = run({**GOOD, "SECRETS_ENCRYPTION_MODE": "provider"}, tmp_path=tmp_path)
    assert r.returncode != 0 and "SECRETS_ENCRYPTION_MODE" in r.stderr and "envelope" in r.stderr


@pytest.mark.parametrize("content", ["", '{"tokens":[]}'])
def test_empty_tokens_file_without_admin_key_refuses_to_start(content, tmp_path):
    """Issue 9 item 13: nobody could log in to such a gateway."""
    f = tmp_path / "tokens.json"
    f.write_text(content)
    try:
        r = run({"ENCRYPTION_KEY": GOOD["ENCRYPTION_KEY"], "GATEWAY_ADMIN_TOKENS_FILE": str(f)}, tmp_path=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("the gateway started with no token anyone could use")
    assert r.returncode != 0
    assert "nobody could log in" in r.stderr and "GATEWAY_ADMIN_TOKENS_FILE" in r.stderr


def test_env_file_quoted_values_may_be_followed_by_a_comment(make_gateway, tmp_path):
    """Issue 9 item 13: KEY="value" # comment was an unterminated quoted value."""
    f = tmp_path / ".env"
    f.write_text(f'GATEWAY_ADMIN_API_KEY="{GOOD["GATEWAY_ADMIN_API_KEY"]}" # the admin token\n'
                 f"ENCRYPTION_KEY='{GOOD['ENCRYPTION_KEY']}'   # 64 hex characters\n")
    gw = make_gateway({"GATEWAY_ADMIN_API_KEY": None, "ENCRYPTION_KEY": None, "GATEWAY_ADMIN_TOKENS_FILE": None},
                      args=("serve", "--env-file", str(f))).start()
    assert gw.call("GET", "/admin/providers", token=GOOD["GATEWAY_ADMIN_API_KEY"]).status_code == 200
