"""A loopback HTTP server that answers each path from a script and records every request:
the webhook receiver of the tests. Also a receiver that answers a byte at a time."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOLD_MAX_S = 60.0  # a held request is answered at teardown at the latest


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False  # keep the request open until the test ends (a worker killed mid-POST)
    body: bytes = b""  # sent after the headers
    echo: bool = False  # append the request's headers to the body (a server that echoes)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """A loopback HTTP server answering each path from a script; records every request."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[Received] = []
        self.connections = 0  # TCP connections accepted, whether a request came or not
        self.release = threading.Event()
        self._arrived = threading.Condition()
        self.server = _CountingServer(("127.0.0.1", 0), _handler(self))
        self.server.receiver = self
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path: str, *replies: Reply | int) -> str:
        self.scripts[path] = [r if isinstance(r, Reply) else Reply(r) for r in replies]
        return self.url(path)

    def record(self, request: Received) -> Reply:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
            script = self.scripts.get(request.path, [])
            return script.pop(0) if script else Reply(200)

    def wait_for(self, path: str, n: int, timeout_s: float) -> list[Received]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.on(path)) >= n, timeout_s)
            got = self.on(path)
        assert len(got) >= n, f"{path}: {len(got)} of {n} request(s) within {timeout_s} s"
        return got

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class _CountingServer(ThreadingHTTPServer):
    receiver: Receiver

    def verify_request(self, request: object, client_address: object) -> bool:
        self.receiver.connections += 1
        return True


@contextlib.contextmanager
def trickling_receiver(byte_every_s: float = 0.25, for_s: float = 30.0) -> Iterator[str]:
    """A receiver on 127.0.0.1 that answers a POST with a status line, then one byte of a
    header every ``byte_every_s`` for ``for_s`` (each read is quick; the whole never ends).
    Yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                ends = time.monotonic() + for_s
                while not stop.wait(byte_every_s) and time.monotonic() < ends:
                    conn.sendall(b"x")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = receiver.record(Received(self.path, headers, body, time.monotonic()))
            if reply.hold:
                receiver.release.wait(HOLD_MAX_S)
            answer = reply.body + (repr(headers).encode() if reply.echo else b"")
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the sender is gone (killed mid-request)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
