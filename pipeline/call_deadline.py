"""A total time limit per HTTP call for httpx2 clients (the ``openai`` SDK's HTTP library).

httpx's timeouts are per operation: a server that sends one byte every second never trips a
120 s read timeout, and one call can last for hours. Here every socket operation — connect,
TLS handshake, each read and each write — waits at most the time left before the deadline of
the call in progress (:func:`call_deadline`), and fails at once when none is left, as the
timeout of its kind (so the SDK reports ``APITimeoutError`` and retry policies treat it as one).

httpx2's transport takes no network backend; its connection pool does, so
:class:`DeadlineTransport` wraps the pool's backend. The deadline is a context variable: calls
made at the same time from different threads each keep their own.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import urllib.request
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

__all__ = ["DeadlineBackend", "DeadlineTransport", "call_deadline", "env_proxy"]

_DEADLINE: ContextVar[float | None] = ContextVar("vidbrief_call_deadline", default=None)
_PASSED = "the call's total time limit passed"


@contextlib.contextmanager
def call_deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this context ends within ``seconds`` from now."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None, timeout_error: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left in the current call; raise when none is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise timeout_error(_PASSED)
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    """A network stream whose every operation is bounded by the call's deadline."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore2.NetworkBackend):
    """httpcore2's network backend, with streams bounded by the call's deadline."""

    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        inner = self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(inner)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx2.HTTPTransport):
    """httpx2's own transport whose connections come from :class:`DeadlineBackend`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        if not isinstance(getattr(pool, "_network_backend", None), httpcore2.NetworkBackend):
            # Fail loudly if a new httpx2 moves it: a silently unbounded call is worse.
            raise RuntimeError("httpx2's connection pool has no network backend to bound")
        pool._network_backend = DeadlineBackend(pool._network_backend)


def env_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTPS_PROXY``, ``NO_PROXY`` …), if any.

    httpx2 reads the environment only when it builds its own transport; with ours, we do.
    """
    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
