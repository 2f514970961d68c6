"""S3 for real: ingest from an ``s3://`` prefix and from a list file of ``s3://`` URIs, annotate
those images in a round, against a real S3 server (moto's, on loopback, checking credentials);
a wrong key, a missing bucket, an unreachable endpoint and an unknown scheme give error rows or a
clear refusal, never a traceback."""

from __future__ import annotations

import collections
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.dataset.ingest import IngestConfig, ingest
from engine.dataset.sources import SourceError
from engine.dataset.store import Store
from engine.round.run import run_round
from engine.round.runtime import Runtime
from tests.engine.test_bounded_failure import config as toy_round

BUCKET = "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(small_world):
    """A moto S3 server on loopback that checks keys, a user with S3 rights, and the world's pool
    (with one non-image object) under ``pool/`` and its gold behind a list file."""
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # the first 3 calls (make the user, its key, its policy) go unchecked; every later one is checked
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "3", "PATH": str(Path(sys.executable).parent)}
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        base = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        iam = boto3.client("iam", aws_access_key_id="unused", aws_secret_access_key="unused", **base)
        iam.create_user(UserName="fld")
        key = iam.create_access_key(UserName="fld")["AccessKey"]
        iam.put_user_policy(UserName="fld", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        credentials = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        s3 = boto3.client("s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **base)
        s3.create_bucket(Bucket=BUCKET)
        for split in ("pool", "gold"):
            for path in sorted(small_world.images(split).iterdir()):
                s3.put_object(Bucket=BUCKET, Key=f"{split}/{path.name}", Body=path.read_bytes())
        s3.put_object(Bucket=BUCKET, Key="pool/README.txt", Body=b"not an image")
        gold = [f"s3://{BUCKET}/gold/{p.name}" for p in sorted(small_world.images("gold").iterdir())]
        s3.put_object(Bucket=BUCKET, Key="lists/gold.txt", Body=("# gold images\n" + "\n".join(gold) + "\n").encode())
        yield {"AWS_ENDPOINT_URL": endpoint, **credentials, "AWS_REGION": "us-east-1"}
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def aws(server, monkeypatch):
    for name, value in server.items():
        monkeypatch.setenv(name, value)
    return server


def test_a_prefix_and_an_s3_list_are_ingested_and_annotated_in_a_round(small_world, aws, tmp_path):
    store = Store(tmp_path / "ds", create=True)
    pool = ingest(f"s3://{BUCKET}/pool/", store, IngestConfig(split="pool"))
    gold = ingest(f"s3://{BUCKET}/lists/gold.txt", store, IngestConfig(split="gold"))
    assert (pool.ok, pool.errors, pool.skipped_files) == (len(list(small_world.images("pool").iterdir())), 0, 1)
    assert (gold.ok, gold.errors) == (len(list(small_world.images("gold").iterdir())), 0)
    images = store.read("images").to_pylist()
    assert all(row["uri"].startswith(f"s3://{BUCKET}/") for row in images)
    with Runtime(num_cpus=2):  # the workers read the images from S3 with the same variables
        summary = run_round(store, 1, toy_round([]))
    assert summary.failures == 0
    regions = collections.Counter(store.read("regions", 1).column("image_id").to_pylist())
    assert set(regions) == {row["image_id"] for row in images}


def test_a_wrong_key_refuses_a_prefix_and_makes_error_rows_from_a_list(aws, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = Store(tmp_path / "ds", create=True)
    with pytest.raises(SourceError, match="AWS_SECRET_ACCESS_KEY"):
        ingest(f"s3://{BUCKET}/pool/", store)
    listing = tmp_path / "list.txt"
    listing.write_text(f"s3://{BUCKET}/gold/missing.png\ns3://{BUCKET}/pool/README.txt\n")
    summary = ingest(str(listing), store)
    assert summary.ok == 0 and summary.errors == 2
    assert all("ACCESS_DENIED" in row["error"] and row["uri"] in row["error"] for row in summary.error_rows)


def test_a_missing_bucket_and_an_unreachable_endpoint_are_refused_quickly(aws, monkeypatch, tmp_path):
    store = Store(tmp_path / "ds", create=True)
    with pytest.raises(SourceError, match="s3://no-such-bucket/ holds nothing"):
        ingest("s3://no-such-bucket/", store)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SourceError, match="is the server up"):
        ingest(f"s3://{BUCKET}/pool/", store)
    assert store.read("images").num_rows == 0  # nothing was written


def test_unknown_schemes_are_error_rows_in_a_list_and_refused_as_a_source(tmp_path):
    store = Store(tmp_path / "ds", create=True)
    with pytest.raises(SourceError, match="unsupported source 'gs://bucket/images/'"):
        ingest("gs://bucket/images/", store)
    listing = tmp_path / "list.txt"
    listing.write_text("gs://bucket/a.png\nhttp://example.com/b.jpg\n")
    summary = ingest(str(listing), store)
    errors = [row["error"] for row in summary.error_rows]
    assert len(errors) == 2 and summary.ok == 0
    assert errors[0].startswith("unreadable: unsupported URI scheme 'gs' in 'gs://bucket/a.png'")
    assert errors[1].startswith("unreadable: unsupported URI scheme 'http' in 'http://example.com/b.jpg'")


def test_the_cli_says_what_is_wrong_without_a_traceback(aws, tmp_path):
    result = CliRunner().invoke(app, ["ingest", "s3://no-such-bucket/x/", "--data", str(tmp_path / "ds")])
    assert result.exit_code != 0
    assert "holds nothing" in result.output and "Traceback" not in result.output
