"""One moto S3 server (``ThreadedMotoServer`` on 127.0.0.1) for the whole test session, and a
fresh bucket per test that asks for one: starting a server costs about a second, a bucket
a few milliseconds."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

_BUCKETS = itertools.count()


def start_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto3, pyarrow and s3fs (and child processes) at it."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


def new_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this test's environment at the server and create an empty bucket in it."""
    import boto3

    for name, value in s3_env(endpoint).items():
        monkeypatch.setenv(name, value)
    bucket = f"test-{next(_BUCKETS):04d}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return bucket
