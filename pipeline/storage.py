"""Object storage through the S3 API: the one place that knows about buckets.

The endpoint and credentials come from the standard environment only: ``S3_ENDPOINT_URL``
(the variable Streaming reads too, unset for AWS itself) and boto3's own ``AWS_*`` variables
or profiles; recipes and command lines name nothing but ``s3://bucket/prefix`` locations.

Setup problems (no credentials, no such bucket, an endpoint that does not answer) surface once,
before any work, as a ``StorageError`` with one sentence that says what to fix; boto3's own
retries are off for that check so that a wrong endpoint fails in seconds, not after a retry
storm. Object transfers retry a bounded number of times with exponential backoff; an object
that is not there is never retried.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SCHEME = "s3://"
# boto3 error codes that mean "not there" and "not allowed": retrying cannot help
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


class StorageError(ValueError):
    """The storage setup is unusable (credentials, bucket, endpoint): one clear sentence."""


class ObjectMissing(OSError):
    """An object that should be there is not (a sample's failure, not the run's)."""


def is_remote(path: object) -> bool:
    """True for an ``s3://`` location."""
    return isinstance(path, str) and path.startswith(SCHEME)


def path_or_url(text: str) -> Path | str:
    """argparse type: ``s3://...`` stays a string (a Path would fold its '//'), else a Path."""
    return text.rstrip("/") if is_remote(text) else Path(text)


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``.

    Raises:
        StorageError: not an ``s3://bucket[/key]`` location.
    """
    bucket, _, key = url.removeprefix(SCHEME).partition("/")
    if not is_remote(url) or not bucket:
        raise StorageError(f"not an s3://bucket/prefix location: {url!r}")
    return bucket, key.strip("/")


def join(url: str, *parts: str) -> str:
    """``url/part/part``, without doubled slashes."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts if p)])


def endpoint() -> str | None:
    """The endpoint clients use: ``S3_ENDPOINT_URL``, or None for AWS's own."""
    return os.environ.get("S3_ENDPOINT_URL") or None


def client(attempts: int = 1):
    """A boto3 S3 client for the environment's endpoint and credentials.

    Args:
        attempts: total tries boto3 makes per request (1 = no retries of its own).
    """
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=5,
                    read_timeout=60)
    return boto3.session.Session().client("s3", endpoint_url=endpoint(), config=config)


def _code(err: Exception) -> str:
    return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))


def check_access(url: str) -> None:
    """Fails fast, with what to fix, unless the bucket of ``url`` is reachable and allowed.

    Raises:
        StorageError: missing credentials, unreachable endpoint, no such bucket, access denied.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, _ = split_url(url)
    where = endpoint() or "AWS S3"
    if boto3.session.Session().get_credentials() is None:
        raise StorageError(f"no S3 credentials for {url}: set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment")
    try:
        client().head_bucket(Bucket=bucket)
    except NoCredentialsError as err:
        raise StorageError(f"no S3 credentials for {url}: {err}") from None
    except ClientError as err:
        code = _code(err)
        if code in _MISSING:
            raise StorageError(f"bucket {bucket!r} does not exist at {where} "
                               "(check the bucket name and S3_ENDPOINT_URL)") from None
        if code in _DENIED:
            raise StorageError(f"access to bucket {bucket!r} at {where} was denied (code {code}):"
                               " check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
        raise StorageError(f"bucket {bucket!r} at {where}: {err}") from None
    except (BotoCoreError, OSError) as err:
        raise StorageError(f"cannot reach the S3 endpoint {where} ({type(err).__name__}: "
                           f"{err}); check S3_ENDPOINT_URL") from None


def exists(url: str, s3=None) -> bool:
    """Whether there is an object at ``url`` (after ``check_access``: other errors propagate)."""
    from botocore.exceptions import ClientError

    bucket, key = split_url(url)
    try:
        (s3 or client(3)).head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if _code(err) in _MISSING:
            return False
        raise
    return True


def download(url: str, dest: Path, attempts: int = 4, backoff: float = 0.5, s3=None) -> None:
    """Copies the object at ``url`` to the local file ``dest``.

    Transient failures are retried ``attempts`` times in all, waiting ``backoff`` seconds,
    then twice that, and so on; a missing or forbidden object fails at once.

    Raises:
        ObjectMissing: there is no object at ``url``.
        OSError: access denied, or every attempt failed (the last error is quoted).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_url(url)
    s3 = s3 or client()
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            s3.download_file(bucket, key, str(dest))
            return
        except ClientError as err:
            if _code(err) in _MISSING:
                raise ObjectMissing(f"missing object: {url}") from None
            if _code(err) in _DENIED:
                raise OSError(f"access denied: {url}") from None
            last = err
        except (BotoCoreError, OSError) as err:
            last = err
        if attempt + 1 < attempts:
            time.sleep(backoff * 2 ** attempt)
    raise OSError(f"download failed after {attempts} attempts: {url}: {last}")


def list_keys(url: str, s3=None) -> list[str]:
    """Keys under the prefix ``url``, relative to it, sorted."""
    bucket, prefix = split_url(url)
    prefix = f"{prefix}/" if prefix else ""
    paginator = (s3 or client(3)).get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for page in pages for o in page.get("Contents", []))


def delete(url: str, keys: list[str], s3=None) -> None:
    """Deletes ``url/key`` for each key (1000 per request, the API's limit)."""
    bucket, prefix = split_url(url)
    s3 = s3 or client(3)
    names = [f"{prefix}/{k}" if prefix else k for k in keys]
    for start in range(0, len(names), 1000):
        s3.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": n} for n in names[start:start + 1000]], "Quiet": True})


def copy(src: str, dst: str, s3=None) -> None:
    """Server-side copy of one object: the bytes never pass through this machine."""
    src_bucket, src_key = split_url(src)
    dst_bucket, dst_key = split_url(dst)
    (s3 or client(3)).copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key)


class Uploader:
    """Uploads files of a local folder to the same relative keys under a remote prefix, with
    Streaming's own ``S3Uploader`` (its bounded retries; the local files are kept).

    Args:
        local: the local folder.
        remote: the ``s3://bucket/prefix`` it mirrors.
    """

    def __init__(self, local: Path, remote: str):
        import logging

        from streaming.base.storage.upload import S3Uploader

        # S3Uploader warns at WARNING that the folder is not empty: staging is exactly that
        logging.getLogger("streaming.base.storage.upload").setLevel(logging.ERROR)
        local.mkdir(parents=True, exist_ok=True)
        self._uploader = S3Uploader(out=(str(local), remote), keep_local=True, exist_ok=True)

    def upload(self, relative: str | Path) -> None:
        self._uploader.upload_file(str(relative))
