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
