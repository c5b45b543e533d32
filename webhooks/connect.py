"""The webhook sender's connections: to the addresses the policy checked, within one deadline.

Two gaps this closes. A check of the URL's name followed by a connect that resolves the name
again lets a rebinding name answer a public address to the check and an inside one to the
connect: the socket would reach the inside address before any later check could refuse it. So
the name is resolved once (``AddressPolicy.checked_addresses``), and the connection goes to
those addresses only, while TLS still sends the name (SNI) and checks the certificate against
it and the request carries it as ``Host`` — httpcore takes both from the URL, which is
unchanged. And httpx's timeouts are per socket operation: a receiver that sends its answer a
byte at a time never trips one. Here every connect, TLS handshake, read and write waits at most
what is left of the delivery's total time (``VIDBRIEF_WEBHOOK_TIMEOUT_SECONDS``), and fails at
once, as the timeout of its kind, when nothing is left.

httpx's transport takes no network backend; its connection pool does, so :func:`transport`
replaces the pool's.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpcore
import httpx

__all__ = ["PinnedBackend", "transport"]

_PASSED = "the delivery's total time limit passed"


def transport(
    host: str, addresses: list[str], timeout_s: float, verify: ssl.SSLContext | bool = True
) -> httpx.HTTPTransport:
    """An httpx transport whose connections to ``host`` go to ``addresses``, all within
    ``timeout_s`` from now (no retries: the webhook's own schedule retries). ``verify``: as
    httpx's (the default checks certificates against certifi's roots)."""
    pinned = httpx.HTTPTransport(verify=verify, retries=0)
    pool = pinned._pool
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(inner, httpcore.NetworkBackend):
        # Fail loudly if a new httpx moves it: an unpinned connect is the hole this closes.
        raise RuntimeError("httpx's connection pool has no network backend to pin")
    deadline = time.monotonic() + timeout_s
    pool._network_backend = PinnedBackend(host, addresses, deadline, inner)
    return pinned


def _bounded(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    """``timeout`` shortened to the time left before ``deadline``; ``error`` when none is."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise error(_PASSED)
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(self._deadline, timeout, httpcore.ConnectTimeout)
        tls = self._inner.start_tls(ssl_context, server_hostname, bounded)
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects to ``host`` only, at the checked ``addresses`` (in order), by ``deadline``."""

    def __init__(
        self, host: str, addresses: list[str], deadline: float, inner: httpcore.NetworkBackend
    ) -> None:
        self._host = host
        self._addresses = addresses
        self._deadline = deadline
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        if host.strip("[]").lower() != self._host or not self._addresses:
            raise httpcore.ConnectError(f"no checked address for {host!r}")
        failure: Exception | None = None
        for address in self._addresses:
            bounded = _bounded(self._deadline, timeout, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(
                    address, port, bounded, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                failure = e  # the next checked address, if any
                continue
            return _DeadlineStream(stream, self._deadline)
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
