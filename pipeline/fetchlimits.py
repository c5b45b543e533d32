"""What one download may read: bytes per kind of response, and one deadline on every socket read.

The download's request handler (:mod:`pipeline.fetch`) wraps every response it returns in
:class:`BoundedResponse`, which counts what is read against the cap of the response's kind:

- ``page``: each web page, manifest or API answer an extractor reads (``VIDBRIEF_MAX_PAGE_MB``);
- ``subtitle``: one subtitle download, all its segments together (``VIDBRIEF_MAX_SUBTITLE_MB``);
- ``media``: one media download — the body, or every HLS/DASH segment and the playlist read on
  the way — together (``VIDBRIEF_MAX_DOWNLOAD_MB``); the duration probe has a budget of its own.

Compressed bodies are decoded under the same cap (yt-dlp would inflate a whole gzip body in
memory). Time: every socket the download opens is a :class:`DeadlineSocket` (or its TLS twin),
whose every ``recv`` waits at most the time left before the download's deadline, so a server
that trickles a byte a second cannot keep a read alive past it. Reads are cut, not truncated:
going over a cap is an error, never a short page or file.

:func:`capped_subtitle_text` bounds what a subtitle file may bring into the transcript.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yt_dlp.networking import Response

from ingest.errors import PermanentStepError, VidbriefError
from ingest.settings import Settings

__all__ = [
    "MEDIA",
    "PAGE",
    "SUBTITLE",
    "BoundedResponse",
    "DeadlinePassed",
    "DeadlineSocket",
    "OverLimit",
    "ReadBounds",
    "SubtitleCaps",
    "capped_subtitle_text",
    "decode_bounded",
    "subtitle_caps",
]

log = logging.getLogger(__name__)

PAGE, SUBTITLE, MEDIA = "page", "subtitle", "media"
BYTES_PER_MB = 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024  # a "read everything" is done in pieces this big, each counted
_SETTING = {
    PAGE: "VIDBRIEF_MAX_PAGE_MB",
    SUBTITLE: "VIDBRIEF_MAX_SUBTITLE_MB",
    MEDIA: "VIDBRIEF_MAX_DOWNLOAD_MB",
}
_WHAT = {
    PAGE: "a web page or manifest",
    SUBTITLE: "a subtitle file",
    MEDIA: "the video",
}


class OverLimit(PermanentStepError):
    """A response went over the byte cap of its kind (``kind``: page, subtitle or media)."""

    def __init__(self, kind: str, cap: int) -> None:
        what = f"more than {cap / BYTES_PER_MB:.1f} MB received"
        first = "too large" if kind == MEDIA else f"{_WHAT[kind]} too large"
        super().__init__(f"{first}: {what} ({_SETTING[kind]})", step="download")
        self.kind, self.cap = kind, cap


class DeadlinePassed(VidbriefError, TimeoutError):
    """The download's overall deadline passed during a socket operation."""

    def __init__(self) -> None:
        super().__init__(
            "the download's overall time limit passed (VIDBRIEF_DOWNLOAD_TIMEOUT_SECONDS)"
        )


# --------------------------------------------------------------------------- byte budgets


@dataclass
class _Meter:
    """Bytes read against one cap; shared by the responses of one media or subtitle fetch."""

    kind: str
    cap: int
    used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def room(self) -> int:
        return max(0, self.cap - self.used)

    def add(self, n: int) -> None:
        with self._lock:
            self.used += n
            if self.used > self.cap:
                raise OverLimit(self.kind, self.cap)


@dataclass
class ReadBounds:
    """One download's deadline (``time.monotonic()``) and byte caps, and what it reads now."""

    deadline: float
    caps: dict[str, int]
    _kind: str = field(default=PAGE, init=False)
    _meter: _Meter | None = field(default=None, init=False)

    def left(self) -> float:
        """Seconds before the deadline; DeadlinePassed when none are left."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlinePassed()
        return left

    @contextlib.contextmanager
    def reading(self, kind: str) -> Iterator[None]:
        """Responses opened in this block are of ``kind`` and share one budget (pages: each
        has its own)."""
        saved = self._kind, self._meter
        self._kind, self._meter = kind, None if kind == PAGE else _Meter(kind, self.caps[kind])
        try:
            yield
        finally:
            self._kind, self._meter = saved

    def meter(self) -> _Meter:
        """The budget a response opened now counts against (each page has its own)."""
        return self._meter or _Meter(self._kind, self.caps[self._kind])


class BoundedResponse(Response):
    """A yt-dlp response whose reads count against a budget; "read all" goes in pieces."""

    def __init__(self, inner: Response, meter: _Meter) -> None:
        super().__init__(
            fp=inner,
            url=inner.url,
            headers=inner.headers,
            status=inner.status,
            reason=inner.reason,
            extensions=inner.extensions,
        )
        self._meter = meter

    def read(self, amt: int | None = None) -> bytes:
        if amt is None or amt < 0:
            return b"".join(iter(lambda: self._read_some(READ_CHUNK_BYTES), b""))
        return self._read_some(amt)

    def _read_some(self, amt: int) -> bytes:
        # One byte past the room is enough to know the body is over the cap.
        data = self.fp.read(min(amt, self._meter.room() + 1))
        self._meter.add(len(data))
        if self.fp.closed:
            self.close()
        return data


# --------------------------------------------------------------------------- decoding

_Stage = Callable[[bytes, int], bytes]  # (input, most output wanted) → output


def _stage(encoding: str) -> _Stage | None:
    """A streaming decoder for one Content-Encoding; None for one we do not decode."""
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress  # one member, as yt-dlp does
    if encoding == "deflate":
        return _deflate_stage()
    if encoding == "br":
        with contextlib.suppress(ImportError):
            import brotli

            unbrotli = brotli.Decompressor()
            return lambda data, most: unbrotli.process(data, output_buffer_limit=most)
    return None


def _deflate_stage() -> _Stage:
    """Deflate as the standard says (zlib-wrapped) or as some servers send it (raw)."""
    state: dict[str, Any] = {}

    def stage(data: bytes, most: int) -> bytes:
        if "d" not in state and data:
            wrapped = len(data) > 1 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            state["d"] = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return state["d"].decompress(data, most) if data else b""

    return stage


def decode_bounded(resp: Any, meter: _Meter) -> Any:
    """``resp`` with its Content-Encoding decoded as it arrives, stopped at the cap.

    What yt-dlp's handler does (the whole body decoded into memory), without a gzip bomb or an
    endless compressed stream taking the memory: every stage may produce at most one byte more
    than the room left, and producing it is the error. Unknown encodings pass through, as there.
    """
    header = resp.headers.get("Content-encoding", "")
    encodings = [e.strip().lower() for e in reversed(header.split(",")) if e.strip()]
    stages = [_stage(e) for e in encodings if e != "identity"]
    if not stages or None in stages:
        return resp
    room, body = meter.room(), io.BytesIO()
    while chunk := resp.read(READ_CHUNK_BYTES):
        for stage in stages:
            chunk = stage(chunk, room + 1 - body.tell())  # type: ignore[misc]
            if body.tell() + len(chunk) > room:
                raise OverLimit(meter.kind, meter.cap)
        body.write(chunk)
    body.seek(0)
    decoded = urllib.request.addinfourl(body, resp.headers, resp.url, resp.code)
    decoded.msg = resp.msg
    return decoded


# --------------------------------------------------------------------------- time


class _Armed:
    """Before every receive, the socket's timeout is cut to the time left (a mixin)."""

    bounds: ReadBounds | None = None
    io_timeout_s: float | None = None

    def recv(self, *args: Any) -> bytes:
        return self._armed(super().recv, *args)  # type: ignore[misc]

    def recv_into(self, *args: Any) -> int:
        return self._armed(super().recv_into, *args)  # type: ignore[misc]

    def _armed(self, receive: Callable[..., Any], *args: Any) -> Any:
        if self.bounds is None:
            return receive(*args)
        left = self.bounds.left()
        timeout = self.io_timeout_s
        self.settimeout(left if timeout is None else min(timeout, left))  # type: ignore[attr-defined]
        try:
            return receive(*args)
        except TimeoutError:
            self.bounds.left()  # the deadline's own error when that is what ran out
            raise


class DeadlineSocket(_Armed, socket.socket):
    """A TCP socket bound to a download's deadline."""


class DeadlineSSLSocket(_Armed, ssl.SSLSocket):
    """The TLS socket made from a :class:`DeadlineSocket`; keeps its deadline."""

    @classmethod
    def _create(cls, sock: socket.socket, *args: Any, **kwargs: Any) -> DeadlineSSLSocket:
        bounds, io_timeout = getattr(sock, "bounds", None), getattr(sock, "io_timeout_s", None)
        tls = super()._create(sock, *args, **kwargs)  # type: ignore[misc]
        tls.bounds, tls.io_timeout_s = bounds, io_timeout
        return tls


def connect_socket(
    bounds: ReadBounds, addrinfo: tuple, timeout: Any, source_address: Any
) -> DeadlineSocket:
    """yt-dlp's socket connect, making a :class:`DeadlineSocket`."""
    family, kind, proto, _canonname, address = addrinfo
    sock = DeadlineSocket(family, kind, proto)
    try:
        if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
            sock.settimeout(timeout)
            sock.io_timeout_s = timeout
        if source_address:
            sock.bind(source_address)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    sock.bounds = bounds
    return sock


# --------------------------------------------------------------------------- subtitles


@dataclass(frozen=True)
class SubtitleCaps:
    """How much a subtitle file may bring: bytes, and cues per minute of video."""

    max_bytes: int
    max_cues_per_minute: int
    max_duration_s: float  # stands in for the duration when it is unknown

    @classmethod
    def from_settings(cls, settings: Settings) -> SubtitleCaps:
        return cls(
            int(settings.max_subtitle_mb * BYTES_PER_MB),
            settings.max_subtitle_cues_per_minute,
            settings.max_duration_seconds,
        )

    def max_cues(self, duration_s: float | None) -> int:
        """Cues allowed for a video this long (shorter than a minute counts as one)."""
        minutes = max(1.0, (duration_s or self.max_duration_s) / 60)
        return int(self.max_cues_per_minute * minutes)


#: The caps of the download running in this context, set by ``download()``: the code that
#: reads subtitle files does not carry the download's limits (and may move to its own module).
_SUBTITLE_CAPS: ContextVar[SubtitleCaps | None] = ContextVar("vidbrief_subtitle_caps", default=None)


@contextlib.contextmanager
def subtitle_caps(caps: SubtitleCaps) -> Iterator[None]:
    """Subtitle files read in this block are held to ``caps``."""
    token = _SUBTITLE_CAPS.set(caps)
    try:
        yield
    finally:
        _SUBTITLE_CAPS.reset(token)


def capped_subtitle_text(path: Path, duration_s: float | None) -> str:
    """The text of a subtitle file, or "" (no cues) when it is over a cap, with a log line.

    Called where the subtitle file is read. Over a cap the subtitles are ignored rather than the
    job failed: speech to text still briefs the video, and a cut file would be a silently
    partial transcript. Cues are counted by their ``-->`` before anything is parsed.
    """
    caps = _SUBTITLE_CAPS.get() or SubtitleCaps.from_settings(Settings.model_construct())
    size = path.stat().st_size
    if size > caps.max_bytes:
        _ignored(path, f"{size} bytes, more than {caps.max_bytes} (VIDBRIEF_MAX_SUBTITLE_MB)")
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    cues, allowed = text.count("-->"), caps.max_cues(duration_s)
    if cues > allowed:
        length = f"{duration_s:.0f} s" if duration_s else "unknown-length"
        _ignored(
            path,
            f"{cues} cues for a {length} video, more than {allowed} "
            "(VIDBRIEF_MAX_SUBTITLE_CUES_PER_MINUTE)",
        )
        return ""
    return text


def _ignored(path: Path, why: str) -> None:
    log.warning("subtitles %s ignored: %s; speech to text is used instead", path.name, why)
