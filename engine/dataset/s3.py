"""Images in S3 or an S3-compatible server (MinIO, Ceph, moto): one object, or every image under
a prefix. Settings come from the standard AWS environment variables, as every AWS tool reads them:
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server; unset: AWS itself),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``; without keys, pyarrow's credential chain (``~/.aws``) is used.

Every failure is an ``OSError`` that names the URI and says what is wrong, in a few seconds (short
timeouts, two attempts), never a retry loop of minutes against an endpoint that is not there.
"""

from __future__ import annotations

import functools
import os
from urllib.parse import urlparse

import pyarrow.fs as pafs

SCHEME = "s3"
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
ATTEMPTS = 2


def is_s3(uri: str) -> bool:
    return urlparse(uri).scheme.lower() == SCHEME


def bucket_and_key(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b.png`` -> ("bucket", "a/b.png"); OSError for an URI without a bucket."""
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise OSError(f"{uri!r} names no bucket (expected s3://bucket/key)")
    return parsed.netloc, parsed.path.lstrip("/")


def settings() -> tuple[tuple[str, str | None], ...]:
    """The AWS variables that decide the connection (the filesystem is cached per value)."""
    names = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")
    return tuple((name, os.environ.get(name)) for name in names)


@functools.lru_cache(maxsize=4)
def _filesystem(values: tuple[tuple[str, str | None], ...]) -> pafs.S3FileSystem:
    env = dict(values)
    endpoint = env["AWS_ENDPOINT_URL_S3"] or env["AWS_ENDPOINT_URL"]
    options: dict = {}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise OSError(f"AWS_ENDPOINT_URL {endpoint!r} is not an http(s)://host:port address")
        options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme)
    if env["AWS_ACCESS_KEY_ID"] or env["AWS_SECRET_ACCESS_KEY"]:
        options.update(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                       session_token=env["AWS_SESSION_TOKEN"])
    return pafs.S3FileSystem(region=env["AWS_REGION"] or env["AWS_DEFAULT_REGION"] or "us-east-1",
                             connect_timeout=CONNECT_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S,
                             retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS), **options)


def filesystem() -> pafs.S3FileSystem:
    """The S3 filesystem the environment describes."""
    return _filesystem(settings())


def _explain(uri: str, err: Exception) -> OSError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    hints = {"ACCESS_DENIED": "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
             "NETWORK_CONNECTION": "is the server up, and is AWS_ENDPOINT_URL right?",
             "does not exist": "check the bucket and key"}
    hint = next((h for marker, h in hints.items() if marker in text), None)
    return OSError(f"cannot read {uri} from {endpoint}: {text}" + (f" ({hint})" if hint else ""))


def read(uri: str) -> bytes:
    """The bytes of one object."""
    bucket, key = bucket_and_key(uri)
    try:
        with filesystem().open_input_stream(f"{bucket}/{key}") as stream:
            return stream.read()
    except OSError as err:
        raise _explain(uri, err) from None


def kind(uri: str) -> str:
    """``file``, ``prefix`` (a bucket or a folder-like prefix holding objects) or ``missing``."""
    bucket, key = bucket_and_key(uri)
    try:
        info = filesystem().get_file_info(f"{bucket}/{key}".rstrip("/"))
    except OSError as err:
        raise _explain(uri, err) from None
    return {pafs.FileType.File: "file", pafs.FileType.Directory: "prefix"}.get(info.type, "missing")


def list_prefix(uri: str) -> list[str]:
    """Every object under the prefix ``uri`` (recursively), as sorted ``s3://`` URIs."""
    bucket, key = bucket_and_key(uri)
    selector = pafs.FileSelector(f"{bucket}/{key}".rstrip("/"), recursive=True, allow_not_found=False)
    try:
        found = filesystem().get_file_info(selector)
    except OSError as err:
        raise _explain(uri, err) from None
    return sorted(f"s3://{info.path}" for info in found if info.type == pafs.FileType.File)
