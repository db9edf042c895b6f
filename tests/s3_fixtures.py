"""A real S3 endpoint for the tests: moto's server on 127.0.0.1, started and stopped by pytest.

boto3 and Streaming talk to it over HTTP exactly as they would to a bucket in the cloud; they
find it through the standard environment (``S3_ENDPOINT_URL`` and dummy ``AWS_*``
credentials), which ``s3`` puts in place for one test and subprocess tests pass on. Nothing
but loopback is ever contacted.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

import pytest

# Dummy credentials: moto accepts any. The config files are pointed away from ~/.aws so that a
# developer's own profile can never be picked up by a test.
_FIXED_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent/aws-config",
              "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
              "AWS_EC2_METADATA_DISABLED": "true"}  # no credential lookups off loopback
_buckets = itertools.count()


@dataclass
class S3Endpoint:
    """The running loopback server: its URL and the environment that points clients at it."""

    url: str
    env: dict[str, str] = field(default_factory=dict)

    def client(self):
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing",
            region_name="us-east-1").client("s3", endpoint_url=self.url)

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test keeps tests independent)."""
        name = f"vtp-test-{os.getpid()}-{next(_buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in a thread on 127.0.0.1, on a free port the OS picks; stops at the end."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    yield S3Endpoint(url, {**_FIXED_ENV, "S3_ENDPOINT_URL": url})
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3Endpoint:
    """The loopback endpoint, with this test's process environment pointing at it."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return s3_server
