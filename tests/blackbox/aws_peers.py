"""Real AWS peers for the black-box tests, each on a free loopback port.

moto_server (Secrets Manager, KMS, IAM, STS) runs with INITIAL_NO_AUTH_ACTION_COUNT=3: the three IAM calls that make a
user, its policy and its access key go unsigned, and every later request's SigV4 signature is verified against that
key. local-kms (real backing-key rotation) and amazon-ec2-metadata-mock (IMDSv2 only) come from .peers/bin, installed
by scripts/install-peers.sh.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import boto3
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
PEERS_BIN = pathlib.Path(os.environ.get("DYAD_PEERS_BIN", ROOT / ".peers" / "bin"))
REGION = "us-east-1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def peer_binary(name):
    path = PEERS_BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run scripts/install-peers.sh")
    return str(path)


class Process:
    def __init__(self, args, env, log_path, port, what):
        pathlib.Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = port
        wait_port(port, self.proc, what)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Moto(Process):
    """moto_server with signature checking on (unless told otherwise), and an IAM user allowed everything."""

    def __init__(self, workdir, verify_signatures=True, port=None):
        port = port or free_port()
        env = {"MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        if verify_signatures:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        super().__init__([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env,
                         pathlib.Path(workdir) / f"moto-{port}.log", port, "moto_server")
        bootstrap = dict(endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id="bootstrap",
                         aws_secret_access_key="bootstrap")
        iam = boto3.client("iam", **bootstrap)
        iam.create_user(UserName="dyad-gateway")
        iam.put_user_policy(UserName="dyad-gateway", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="dyad-gateway")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, service):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def gateway_env(self, **over):
        env = {"SECRETS_PROVIDER": "aws", "AWS_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint,
               "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
               "ENCRYPTION_KEY": None, "AWS_EC2_METADATA_DISABLED": "true"}
        env.update(over)
        return env

    def make_key(self, alias):
        kms = self.client("kms")
        key = kms.create_key(Description=alias)["KeyMetadata"]
        kms.create_alias(AliasName="alias/" + alias, TargetKeyId=key["KeyId"])
        return key


class LocalKms(Process):
    """local-kms seeded with one AES key (given backing keys, newest last) and its alias."""

    def __init__(self, workdir, key_id, alias, backing_keys):
        workdir = pathlib.Path(workdir)
        port = free_port()
        data = workdir / f"local-kms-{port}"
        data.mkdir(parents=True)
        seed = data / "seed.yaml"
        lines = ["Keys:", "  Symmetric:", "    Aes:", "      - Metadata:", f"          KeyId: {key_id}",
                 "        BackingKeys:"] + [f"          - {k}" for k in backing_keys] + [
                "Aliases:", f"  - AliasName: alias/{alias}", f"    TargetKeyId: {key_id}"]
        seed.write_text("\n".join(lines) + "\n")
        super().__init__([peer_binary("local-kms")], {"PORT": str(port), "KMS_DATA_PATH": str(data / "db"),
                                                      "KMS_SEED_PATH": str(seed), "KMS_REGION": REGION,
                                                      "KMS_ACCOUNT_ID": "111122223333"},
                         data / "log", port, "local-kms")


class MetadataMock(Process):
    """amazon-ec2-metadata-mock serving IMDSv2 only (-I), with the given role credentials."""

    def __init__(self, workdir, access_key, secret_key, expiration):
        workdir = pathlib.Path(workdir)
        port = free_port()
        config = workdir / f"imds-{port}.json"
        config.write_text(json.dumps({"metadata": {"values": {
            "iam-security-credentials-role": "dyad-gateway-role",
            "iam-security-credentials": {"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC",
                                         "AccessKeyId": access_key, "SecretAccessKey": secret_key, "Token": "",
                                         "Expiration": expiration}}}}))
        self.log_path = workdir / f"imds-{port}.log"
        super().__init__([peer_binary("ec2-metadata-mock"), "-n", "127.0.0.1", "-p", str(port), "-I", "-c",
                          str(config)], {}, self.log_path, port, "ec2-metadata-mock")

    def credential_fetches(self):
        """How many times the role's credentials were served (the mock logs every request)."""
        self.log.flush()
        text = self.log_path.read_text(errors="replace")
        return text.count("Received request to mock static metadata: /latest/meta-data/iam/security-credentials/"
                          "dyad-gateway-role")

    def token_required(self):
        """IMDSv1 (no token) must be refused."""
        r = requests.get(self.endpoint + "/latest/meta-data/iam/security-credentials/", timeout=5)
        return r.status_code == 401
