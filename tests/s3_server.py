"""A real S3-compatible server on loopback for tests: moto's server mode, in a thread.

    with S3Server() as server:
        server.endpoint_url        # http://127.0.0.1:<free port>
        server.create_bucket("reports")

Clients talk HTTP to it exactly as to AWS or MinIO (s3fs → aiobotocore → the socket); only the
credentials are dummies, which the tests set with ``monkeypatch.setenv`` (see
:func:`dummy_aws_env`).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class EchoingS3:
    """An S3-compatible endpoint that refuses everything with ``status`` and an S3 XML error
    whose message echoes what it was sent (the Authorization header: access key id and
    signature) and the given ``secret``, plus a URL with credentials: a misbehaving server or
    proxy. ``with EchoingS3(403, secret) as url:``"""

    def __init__(self, status: int, secret: str) -> None:
        self.status, self.secret = status, secret
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _echo_handler(self))
        self.server.daemon_threads = True

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def body(self, authorization: str) -> bytes:
        message = (
            f"key {self.secret} rejected; you sent {authorization}; "
            f"see http://admin:{self.secret}@internal.example/"
        )
        return (
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
            f"<Message>{message}</Message></Error>"
        ).encode()


def _echo_handler(echo: EchoingS3) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # answers ``Expect: 100-continue`` before the body

        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = echo.body(self.headers.get("authorization", ""))
            self.send_response(echo.status)
            self.send_header("content-type", "application/xml")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
