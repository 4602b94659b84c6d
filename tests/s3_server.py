"""A local S3 emulator for tests: moto's S3 API server on 127.0.0.1, with signatures checked.

``s3_emulator()`` starts ``moto`` in server mode on a free loopback port, creates an IAM user with an
access key allowed every S3 action and a bucket, then turns moto's authentication on, so requests
signed with any other key or secret are refused as they are by real S3. Moto keeps one in-process
backend per test process, so user and bucket names are unique per emulator. Clients reach it through
the environment variables of ``S3Emulator.env()``, the ones AWS clients read.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
import httpx
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ALLOW_S3 = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})


@dataclass(frozen=True)
class S3Emulator:
    """Where the emulator listens, its bucket, and the only credentials it accepts."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    access_key_id: str
    secret_access_key: str

    def env(self, **changes: str) -> dict[str, str]:
        """AWS_* variables that point a client at the emulator (``changes`` override them)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            **changes,
        }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def s3_emulator() -> Iterator[S3Emulator]:
    """Start an authenticating S3 emulator with one bucket; stop it on exit."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    endpoint = f"http://127.0.0.1:{free_port()}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(endpoint.rsplit(":", 1)[1]), verbose=False)
    server.start()
    try:
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()  # open, to set up
        suffix = uuid.uuid4().hex[:12]
        setup = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **setup)
        user = f"mmae-test-{suffix}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=ALLOW_S3)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        bucket = f"mmae-test-{suffix}"
        boto3.client("s3", **setup).create_bucket(Bucket=bucket)
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()  # every request signed
        yield S3Emulator(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.stop()
