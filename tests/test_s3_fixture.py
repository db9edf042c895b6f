"""The loopback S3 server itself: reachable by boto3 through the environment, loopback only."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import boto3


def test_loopback_server_serves_the_s3_api_through_the_standard_environment(s3, tmp_path):
    assert urlparse(os.environ["S3_ENDPOINT_URL"]).hostname == "127.0.0.1"
    bucket = s3.new_bucket()
    # a client configured only by the environment, as Streaming builds its own
    client = boto3.session.Session().client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    (tmp_path / "a.bin").write_bytes(b"\x00\x01" * 1000)
    client.upload_file(str(tmp_path / "a.bin"), bucket, "x/a.bin")
    assert s3.keys(bucket) == ["x/a.bin"]
    client.download_file(bucket, "x/a.bin", str(tmp_path / "b.bin"))
    assert (tmp_path / "b.bin").read_bytes() == (tmp_path / "a.bin").read_bytes()
