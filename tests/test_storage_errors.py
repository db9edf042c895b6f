"""Bad storage setups: one clear error each (exit 2), fast, no retry storm, no traceback; and
the bounded, backed-off retries of a single download."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

import recipes
from commands.cli import main as vtp_main
from pipeline.storage import ObjectMissing, download

TINY = Path(recipes.__file__).parent / "tiny-synthetic.yaml"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def _commands(bucket: str, tmp: Path) -> dict[str, list[str]]:
    (tmp / "m.csv").write_text("videoid,page_dir,name\n1,p,a cat\n")
    (tmp / "videos").mkdir(exist_ok=True)
    return {
        "shard --out": ["shard", str(tmp / "m.csv"), "--video-root", str(tmp / "videos"),
                        "--out", f"s3://{bucket}/out", "--stage", str(tmp / "stage")],
        "shard --video-root": ["shard", str(tmp / "m.csv"), "--video-root",
                               f"s3://{bucket}/videos", "--out", str(tmp / "out")],
        "merge": ["merge", f"s3://{bucket}/p0", "--out", f"s3://{bucket}/all"],
        "train": ["train", str(TINY), f"data.remote=s3://{bucket}/mds",
                  f"data.path={tmp / 'cache'}", "loggers.file=null", "loggers.tensorboard=null"],
    }


def _exit_2(argv: list[str], capsys) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        vtp_main(argv)
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert "Traceback" not in err and len(errors) == 1, f"not one clear error line: {err}"
    return errors[0], seconds


@pytest.mark.parametrize("command", ["shard --out", "shard --video-root", "merge", "train"])
def test_wrong_bucket_missing_credentials_unreachable_endpoint(command, s3, tmp_path, monkeypatch,
                                                               capsys):
    argv = _commands("no-such-bucket", tmp_path)[command]
    err, _ = _exit_2(argv, capsys)
    assert "bucket 'no-such-bucket' does not exist" in err

    bucket = s3.new_bucket()
    argv = _commands(bucket, tmp_path)[command]
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    err, _ = _exit_2(argv, capsys)
    assert "no S3 credentials" in err and "AWS_ACCESS_KEY_ID" in err

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("S3_ENDPOINT_URL", dead)
    err, seconds = _exit_2(argv, capsys)
    assert f"cannot reach the S3 endpoint {dead}" in err and "S3_ENDPOINT_URL" in err
    assert seconds < 15, f"{seconds:.1f} s to give up on a dead endpoint: a retry storm"


def test_train_remote_without_an_mds_index_names_the_fix(s3, tmp_path, capsys):
    bucket = s3.new_bucket()
    err, _ = _exit_2(_commands(bucket, tmp_path)["train"], capsys)
    assert f"s3://{bucket}/mds has no index.json" in err


class _FakeS3:
    """Counts download attempts and fails each one with ``error``."""

    def __init__(self, error: Exception):
        self.error, self.calls = error, 0

    def download_file(self, bucket, key, dest):
        self.calls += 1
        raise self.error


def test_a_missing_object_is_not_retried_a_transient_error_is_retried_a_bounded_number_of_times(
        tmp_path):
    missing = _FakeS3(ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject"))
    with pytest.raises(ObjectMissing, match="missing object: s3://b/v/1.mp4"):
        download("s3://b/v/1.mp4", tmp_path / "x", s3=missing)
    assert missing.calls == 1

    flaky = _FakeS3(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    start = time.monotonic()
    with pytest.raises(OSError, match="download failed after 3 attempts: s3://b/v/1.mp4"):
        download("s3://b/v/1.mp4", tmp_path / "x", attempts=3, backoff=0.05, s3=flaky)
    assert flaky.calls == 3
    assert time.monotonic() - start >= 0.05 + 0.1, "no backoff between attempts"


def test_a_missing_remote_manifest_is_one_clear_error(s3, tmp_path, capsys):
    bucket = s3.new_bucket()
    err, _ = _exit_2(["shard", f"s3://{bucket}/lists/none.csv", "--video-root",
                      f"s3://{bucket}/videos", "--out", str(tmp_path / "out")], capsys)
    assert f"manifest: missing object: s3://{bucket}/lists/none.csv" in err
