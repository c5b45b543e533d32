"""A loopback HTTP server that answers each path from a script and records every request:
the webhook receiver of the tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOLD_MAX_S = 60.0  # a held request is answered at teardown at the latest


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False  # keep the request open until the test ends (a worker killed mid-POST)


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
        self.release = threading.Event()
        self._arrived = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
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


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = receiver.record(Received(self.path, headers, body, time.monotonic()))
            if reply.hold:
                receiver.release.wait(HOLD_MAX_S)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender is gone (killed mid-request)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
