"""A real S3-compatible server on loopback for tests: moto's server mode, in a thread.

    with S3Server() as server:
        server.endpoint_url        # http://127.0.0.1:<free port>
        server.create_bucket("reports")

Clients talk HTTP to it exactly as to AWS or MinIO (s3fs → aiobotocore → the socket); only the
credentials are dummies, which the tests set with ``monkeypatch.setenv`` (see
:func:`dummy_aws_env`).
"""

from __future__ import annotations

from types import TracebackType

import pytest

REGION = "us-east-1"
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def dummy_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials the server accepts; never real ones (and no ~/.aws profile is read)."""
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


class S3Server:
    """moto's ThreadedMotoServer on 127.0.0.1 and a free port, stopped on exit."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def __enter__(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop()

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the server's own S3 API (as an operator would)."""
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=name)
