"""The SecretStore and KeyManager contract suite (src/backends/contract_test.cc) against AWS on moto and Vault on
OpenBao.

The suite is the unit-test binary's `Backends/StoreContract.*/aws` and `…/vault` cases; here they get a moto with
signature and policy checks on and two KMS keys, or an OpenBao dev server with two Transit keys (the second key for
the wrong-key case). The other backends run it in ctest.
"""
import os
import pathlib
import subprocess

import pytest

from aws_peers import Moto
from test_aws import unique
from vault_peers import Bao


def unit_tests_binary():
    path = pathlib.Path(os.environ["DYAD_GATEWAY_BIN"]).parent / "dyad_contract_tests"
    if not path.exists():
        pytest.fail(f"{path} is missing: the contract suite is built with the unit tests (target dyad_contract_tests)")
    return path


def test_aws_passes_the_backend_contract(tmp_path):
    moto = Moto(tmp_path)
    try:
        key, other = unique("contract"), unique("contract-other")
        moto.make_key(key)
        moto.make_key(other)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SECRETS_", "ENCRYPTION_"))}
        env.update({k: v for k, v in moto.gateway_env(ENCRYPTION_KEY_ID="alias/" + key).items() if v is not None})
        env.update(DYAD_CONTRACT_AWS="1", DYAD_CONTRACT_OTHER_KEY_ID="alias/" + other)
        run = subprocess.run([str(unit_tests_binary()), "--gtest_filter=Backends/StoreContract.*/aws"], env=env,
                             capture_output=True, text=True, timeout=600)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-6000:]
        assert "[  SKIPPED ]" not in out, out[-6000:]  # every case ran against moto, the wrong-key one included
        assert "[  PASSED  ] 14 tests." in out, out[-3000:]
    finally:
        moto.stop()


def test_vault_passes_the_backend_contract(tmp_path):
    """On OpenBao with the root token: the suite writes under its own SECRETS_PREFIX (outside the seed's policy) and
    lists (metadata LIST, which the seed's policy lacks); two Transit keys, the second for the wrong-key case."""
    bao = Bao(tmp_path)
    try:
        bao.enable_transit()
        key, other = bao.make_key("dyad-gateway-contract"), bao.make_key()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "SECRETS_", "ENCRYPTION_"))}
        env.update({k: v for k, v in bao.gateway_env(token="root", key=key).items() if v is not None})
        env.update(DYAD_CONTRACT_VAULT="1", DYAD_CONTRACT_OTHER_KEY_ID=other)
        run = subprocess.run([str(unit_tests_binary()), "--gtest_filter=Backends/StoreContract.*/vault"], env=env,
                             capture_output=True, text=True, timeout=600)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-6000:]
        assert "[  SKIPPED ]" not in out, out[-6000:]  # every case ran against OpenBao, the wrong-key one included
        assert "[  PASSED  ] 14 tests." in out, out[-3000:]
    finally:
        bao.stop()
