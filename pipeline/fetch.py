"""Fetch one video with yt-dlp, inside the address policy and the limits (the download step's
work; :mod:`pipeline.download` runs it in a child process).

Every request yt-dlp makes — the page, the media, subtitles, HLS fragments, and each redirect
hop — goes through one request handler of ours (:class:`GuardedUrllibRH`): the URL is checked
against :mod:`ingest.urlsafety` before it is sent, each redirect ``Location`` before it is
followed, and the address each socket connects to just before it connects (so DNS rebinding
and URL-parser disagreements are caught too). yt-dlp's other handlers are not installed,
proxies are off (the policy must see the real destination), and ffmpeg is hidden from yt-dlp
(its HLS fallback would fetch on its own): only single-file formats, never merged ones.

Only yt-dlp's own HTTP, HLS and DASH downloaders run (for formats and subtitles alike): any
other (rtmpdump, ffmpeg, aria2c, curl, wget …) is refused before it starts.

Limits: size (known size before the download; every byte read counted against the cap of its
kind — page, subtitle, media — see :mod:`pipeline.fetchlimits`; the file after it), duration
(from yt-dlp's metadata, else probed from the first and last bytes of the file with HTTP range
requests and PyAV, before the body is fetched), time (one deadline that every socket read
waits for at most, checked too at every request and progress report). The step runs all this
in a child process with a memory limit, killed at the deadline (:mod:`pipeline.download_process`).
Failures leave no partial file. A finished download ends with ``media.json``; a resumed job
finds it and fetches nothing.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.downloader import DashSegmentsFD, HlsFD, HttpFD, get_suitable_downloader
from yt_dlp.networking import Request
from yt_dlp.networking._helper import create_connection
from yt_dlp.networking._urllib import HTTPHandler, RedirectHandler, UrllibRH
from yt_dlp.networking.exceptions import HTTPError, RequestError, TransportError
from yt_dlp.utils import ExtractorError, determine_protocol

from ingest.errors import PermanentStepError, RetryableStepError, StepError, UnsafeURL
from ingest.names import DOWNLOAD_STEP
from ingest.settings import Settings
from ingest.urlsafety import AddressPolicy, UnresolvableHost
from pipeline.containers import AV_CONTAINER_OPTIONS
from pipeline.fetchlimits import (
    MEDIA,
    PAGE,
    SUBTITLE,
    BoundedResponse,
    DeadlinePassed,
    DeadlineSSLSocket,
    OverLimit,
    ReadBounds,
    SubtitleCaps,
    capped_subtitle_text,
    connect_socket,
    decode_bounded,
    subtitle_caps,
)
from pipeline.models import Media, Segment
from pipeline.subtitles import parse_vtt, passes_gate

__all__ = ["MEDIA_JSON", "DownloadLimits", "GuardedUrllibRH", "download", "parse_vtt"]

log = logging.getLogger(__name__)

STEP = DOWNLOAD_STEP
MEDIA_JSON = "media.json"
BYTES_PER_MB = 1024 * 1024
SOCKET_TIMEOUT_MAX_S = 30.0
HTTP_RETRIES = 2
PROBE_BLOCK_BYTES = 64 * 1024
PROBE_MAX_BYTES = 8 * BYTES_PER_MB  # more than this to find a duration: give up, check after
DEFAULT_LANGUAGE = "en"
MAX_HEIGHT_PX = 720  # enough for keyframes and briefs; smaller downloads
#: Formats with audio and video in one file: merging would need ffmpeg, which is hidden.
FORMAT = f"b[height<={MAX_HEIGHT_PX}]/b"
#: Protocols whose downloaders fetch through yt-dlp's networking (and so through the guard).
GUARDED_PROTOCOLS = frozenset(
    {"http", "https", "m3u8", "m3u8_native", "http_dash_segments", "http_dash_segments_generator"}
)
#: yt-dlp's in-process downloaders: the only ones allowed to run (no external programs).
NATIVE_DOWNLOADERS = (HttpFD, HlsFD, DashSegmentsFD)
RETRYABLE_HTTP_STATUS = frozenset({408, 425, 429})
_PARTIAL_PREFIX = ".partial-"


_DEFAULTS = Settings.model_construct()  # the settings' defaults, for limits not given


@dataclass(frozen=True)
class DownloadLimits:
    """How much one download may take: bytes (per kind), seconds of video, of wall time."""

    max_bytes: int
    max_duration_s: float
    timeout_s: float
    max_page_bytes: int = int(_DEFAULTS.max_page_mb * BYTES_PER_MB)
    max_subtitle_bytes: int = int(_DEFAULTS.max_subtitle_mb * BYTES_PER_MB)
    max_subtitle_cues_per_minute: int = _DEFAULTS.max_subtitle_cues_per_minute

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadLimits:
        return cls(
            int(settings.max_download_mb * BYTES_PER_MB),
            settings.max_duration_seconds,
            settings.download_timeout_seconds,
            int(settings.max_page_mb * BYTES_PER_MB),
            int(settings.max_subtitle_mb * BYTES_PER_MB),
            settings.max_subtitle_cues_per_minute,
        )

    def read_bounds(self, deadline: float) -> ReadBounds:
        caps = {PAGE: self.max_page_bytes, SUBTITLE: self.max_subtitle_bytes}
        return ReadBounds(deadline, {**caps, MEDIA: self.max_bytes})

    def subtitle_caps(self) -> SubtitleCaps:
        return SubtitleCaps(
            self.max_subtitle_bytes, self.max_subtitle_cues_per_minute, self.max_duration_s
        )


# --------------------------------------------------------------------------- the network guard


class RefusedRequest(RequestError):
    """A request refused by the address policy; a RequestError so yt-dlp passes it through."""


class DeadlineExceeded(RequestError):
    """The download's overall deadline passed."""


class OverLimitRequest(RequestError):
    """A response over its cap while being opened (``cause``: the OverLimit); passes through."""


def _refuse(e: UnsafeURL) -> RefusedRequest:
    return RefusedRequest(str(e), cause=e)


def _guarded_create_connection(
    policy: AddressPolicy,
    bounds: ReadBounds,
    address: tuple[str, int],
    timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,
    source_address: Any = None,
) -> socket.socket:
    """yt-dlp's create_connection: each address checked, a socket bound to the deadline."""
    host, port = address

    def connect(addrinfo: tuple, timeout: Any, source_address: Any) -> socket.socket:
        try:
            policy.check_connect(host, port, str(addrinfo[4][0]))
        except UnsafeURL as e:
            raise _refuse(e) from e  # not an OSError: the next address is not tried
        return connect_socket(bounds, addrinfo, timeout, source_address)

    return create_connection(address, timeout, source_address, _create_socket_func=connect)


def _guarded_connection(
    policy: AddressPolicy, bounds: ReadBounds, http_class: type, *args: Any, **kwargs: Any
) -> http.client.HTTPConnection:
    conn = http_class(*args, **kwargs)
    conn._create_connection = functools.partial(_guarded_create_connection, policy, bounds)
    return conn


class _GuardedHTTPHandler(HTTPHandler):
    """yt-dlp's HTTP handler whose sockets pass the policy and whose decoding is capped."""

    def __init__(self, policy: AddressPolicy, bounds: ReadBounds, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy, self._bounds = policy, bounds
        if self._context is not None:  # TLS sockets keep the deadline of the plain ones
            self._context.sslsocket_class = DeadlineSSLSocket

    def _factory(self, http_class: type) -> Any:
        return functools.partial(_guarded_connection, self._policy, self._bounds, http_class)

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._factory(http.client.HTTPConnection), req)

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._factory(http.client.HTTPSConnection), req, context=self._context)

    def http_response(self, req: urllib.request.Request, resp: Any) -> Any:
        return decode_bounded(resp, self._bounds.meter())

    https_response = http_response


class _GuardedRedirectHandler(RedirectHandler):
    """Checks every redirect hop against the policy and the deadline before following it."""

    def __init__(self, policy: AddressPolicy, bounds: ReadBounds) -> None:
        super().__init__()
        self._policy, self._bounds = policy, bounds

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        try:
            self._policy.check_redirect(req.full_url, newurl)
        except UnsafeURL as e:
            raise _refuse(e) from e
        _check_deadline(self._bounds)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_deadline(bounds: ReadBounds) -> float:
    """Seconds left before the download's deadline; DeadlineExceeded when none."""
    try:
        return bounds.left()
    except DeadlinePassed as e:
        raise DeadlineExceeded(str(e)) from e


class GuardedUrllibRH(UrllibRH):
    """yt-dlp's urllib request handler, restricted to http(s), the address policy and bounds."""

    _SUPPORTED_URL_SCHEMES = ("http", "https", "data")

    def __init__(self, *, policy: AddressPolicy, bounds: ReadBounds, **kwargs: Any) -> None:
        kwargs.pop("enable_file_urls", None)  # never: file:// is refused by design
        super().__init__(**kwargs)
        self._policy, self._bounds = policy, bounds

    def _create_instance(
        self, proxies: Any, cookiejar: Any, legacy_ssl_support: Any = None
    ) -> urllib.request.OpenerDirector:
        # The parent's handler list minus proxies, FTP and file:, with guarded HTTP/redirects.
        opener = urllib.request.OpenerDirector()
        context = self._make_sslcontext(legacy_ssl_support=legacy_ssl_support)
        verbose = int(self.verbose)
        for handler in (
            _GuardedHTTPHandler(self._policy, self._bounds, context=context, debuglevel=verbose),
            urllib.request.HTTPCookieProcessor(cookiejar),
            urllib.request.DataHandler(),
            urllib.request.UnknownHandler(),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
            _GuardedRedirectHandler(self._policy, self._bounds),
        ):
            opener.add_handler(handler)
        opener.addheaders = []
        return opener

    def _send(self, request: Request) -> Any:
        if not request.url.startswith("data:"):
            try:
                self._policy.check_url(request.url)
            except UnsafeURL as e:
                raise _refuse(e) from e
        left = _check_deadline(self._bounds)
        request.extensions["timeout"] = min(self._calculate_timeout(request), left)
        meter = self._bounds.meter()
        try:
            response = super()._send(request)
        except HTTPError as e:  # extractors read error bodies too
            e.response = BoundedResponse(e.response, meter)
            raise
        except OverLimit as e:  # while decoding: yt-dlp would call anything else a bug
            raise OverLimitRequest(str(e), cause=e) from e
        return BoundedResponse(response, meter)


class _GuardedYoutubeDL(yt_dlp.YoutubeDL):
    """YoutubeDL whose only request handler is :class:`GuardedUrllibRH`, downloaders native."""

    def __init__(self, params: dict[str, Any], policy: AddressPolicy, bounds: ReadBounds) -> None:
        self._vb_policy, self._vb_bounds = policy, bounds  # before yt-dlp's __init__ runs
        super().__init__(params)

    @functools.cached_property
    def _request_director(self) -> Any:
        handler = functools.partial(GuardedUrllibRH, policy=self._vb_policy, bounds=self._vb_bounds)
        return self.build_request_director([handler])

    def dl(self, name: str, info: dict[str, Any], subtitle: bool = False, test: bool = False):
        """yt-dlp's download of a format or subtitle: native downloaders only, bytes counted."""
        _check_downloader(info, self.params, "subtitles" if subtitle else "video")
        with self._vb_bounds.reading(SUBTITLE if subtitle else MEDIA):
            try:
                return super().dl(name, info, subtitle, test)
            except Exception as e:
                over = next((c for c in _causes(e) if isinstance(c, OverLimit)), None)
                if not subtitle or over is None:
                    raise
                return _drop_subtitles(name, over)


def _drop_subtitles(name: str, why: OverLimit) -> bool:
    """Subtitles over their cap are dropped, not the job: speech to text briefs the video
    without them, and a cut file would be a silently partial transcript."""
    log.warning("subtitles ignored: %s; speech to text is used instead", why)
    for path in (Path(name), Path(name + ".part")):
        path.unlink(missing_ok=True)
    return False


def _check_downloader(info: dict[str, Any], params: dict[str, Any], what: str) -> None:
    """Refuse, before it starts, any downloader but yt-dlp's own HTTP, HLS and DASH ones."""
    if not info.get("url"):
        return  # yt-dlp's own "no formats" error follows
    downloader = get_suitable_downloader(info, params)
    if downloader not in NATIVE_DOWNLOADERS:
        name = getattr(downloader, "FD_NAME", None) or getattr(downloader, "__name__", "?")
        raise PermanentStepError(
            f"refused: the {what} would be fetched by yt-dlp's {name} downloader "
            f"(protocol {info.get('protocol')!r}); only its own HTTP, HLS and DASH downloaders "
            "run, never an external program",
            step=STEP,
        )


# --------------------------------------------------------------------------- one download


def download(
    url: str,
    workdir: Path,
    limits: DownloadLimits,
    *,
    policy: AddressPolicy | None = None,
    language: str = DEFAULT_LANGUAGE,
) -> Media:
    """Download ``url`` into ``workdir`` (or return the finished download already there).

    Raises PermanentStepError (refused URL, 4xx, too large, too long, live, unsupported) or
    RetryableStepError (network, 5xx, timeouts); leaves no partial file behind.
    """
    workdir = Path(workdir)
    done = _finished(workdir)
    if done is not None:
        return done
    policy = policy or AddressPolicy.create()
    _check_first(url, policy)
    workdir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(workdir)
    staging = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, dir=workdir))
    try:
        with subtitle_caps(limits.subtitle_caps()):
            media = _fetch(url, workdir, staging, limits, policy, language)
    except StepError:
        raise
    except Exception as e:
        raise _classify(e, url) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_atomic(workdir / MEDIA_JSON, media.model_dump_json(indent=2))
    return media


def _finished(workdir: Path) -> Media | None:
    """The Media of a finished earlier run, if its file is still there intact."""
    with contextlib.suppress(OSError, ValueError):
        media = Media.model_validate_json((workdir / MEDIA_JSON).read_text())
        if Path(media.path).stat().st_size == media.size_bytes:
            return media
    return None


def _check_first(url: str, policy: AddressPolicy) -> None:
    """The policy check before anything is fetched, as a step error."""
    try:
        policy.check_url(url)
    except UnresolvableHost as e:
        cls = RetryableStepError if e.temporary else PermanentStepError
        raise cls(f"refused URL: {e}", step=STEP) from e
    except UnsafeURL as e:
        raise PermanentStepError(f"refused URL: {e}", step=STEP) from e


def _remove_stale_partials(workdir: Path) -> None:
    """Remove what a killed earlier attempt left (it could not clean up itself)."""
    for stale in workdir.glob(_PARTIAL_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def _fetch(
    url: str,
    workdir: Path,
    staging: Path,
    limits: DownloadLimits,
    policy: AddressPolicy,
    language: str,
) -> Media:
    deadline = time.monotonic() + limits.timeout_s
    bounds = limits.read_bounds(deadline)
    params = _ydl_params(staging, limits, language, deadline)
    with _GuardedYoutubeDL(params, policy, bounds) as ydl:
        info = ydl.extract_info(url, download=False)
        _check_info(info)
        with bounds.reading(MEDIA):  # the probe's own budget, not the body's
            _check_size_and_duration(ydl, info, limits)
        info = ydl.process_ie_result(info, download=True)
    path = _downloaded_file(info, staging)
    return _finish(url, info, path, workdir, limits, language)


def _ydl_params(
    staging: Path, limits: DownloadLimits, language: str, deadline: float
) -> dict[str, Any]:
    base = language.split("-")[0].lower()
    return {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _YdlLogger(),
        "noplaylist": True,
        "extract_flat": "in_playlist",  # a playlist is refused: do not resolve its entries
        "format": FORMAT,
        "outtmpl": {"default": str(staging / "media.%(ext)s")},
        "socket_timeout": min(SOCKET_TIMEOUT_MAX_S, limits.timeout_s),
        "max_filesize": limits.max_bytes,
        "retries": HTTP_RETRIES,
        "fragment_retries": HTTP_RETRIES,
        "extractor_retries": 1,
        "writesubtitles": True,
        "writeautomaticsub": True,
        "subtitlesformat": "vtt/best",
        "subtitleslangs": [f"{re.escape(base)}(-.+)?"],
        "proxy": "",  # the address policy must see the real destination
        # Downloads only through yt-dlp's networking: native HLS/DASH, and no ffmpeg at all —
        # the native HLS downloader hands streams it cannot read to an ffmpeg process, which
        # would fetch segment URLs around the guard. A missing path hides ffmpeg from yt-dlp.
        "hls_prefer_native": True,
        "external_downloader": {"default": "native"},
        "ffmpeg_location": str(staging / "no-ffmpeg"),
        "js_runtimes": {},  # no JavaScript runtime program either (yt-dlp would run deno)
        "cachedir": False,
        "updatetime": False,
        "overwrites": True,
        "progress_hooks": [_progress_hook(limits.max_bytes, deadline)],
    }


class _YdlLogger:
    """yt-dlp's messages into our logging, at debug level except errors."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = debug

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.warning("yt-dlp: %s", msg)


def _progress_hook(max_bytes: int, deadline: float) -> Any:
    """Stops a download that passes the size limit (servers may not say the size up front)."""

    def hook(status: dict[str, Any]) -> None:
        if status.get("status") != "downloading":
            return
        got = int(status.get("downloaded_bytes") or 0)
        if got > max_bytes:
            raise PermanentStepError(
                f"too large: more than {_mb(max_bytes)} received (VIDBRIEF_MAX_DOWNLOAD_MB)",
                step=STEP,
            )
        if time.monotonic() > deadline:
            raise RetryableStepError(
                "download timed out (VIDBRIEF_DOWNLOAD_TIMEOUT_SECONDS)", step=STEP
            )

    return hook


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / BYTES_PER_MB:.1f} MB"


def _check_info(info: dict[str, Any] | None) -> None:
    """Refuse what vidbrief does not brief: playlists, live streams, unguarded protocols."""
    if not info:
        raise PermanentStepError("no video found at this URL", step=STEP)
    if info.get("_type") in ("playlist", "multi_video") or info.get("entries") is not None:
        raise PermanentStepError("playlists are not supported: send one video URL", step=STEP)
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise PermanentStepError("live streams are not supported", step=STEP)
    for fmt in info.get("requested_formats") or [info]:
        protocol = str(fmt.get("protocol") or "")
        if protocol not in GUARDED_PROTOCOLS:
            raise PermanentStepError(f"unsupported protocol {protocol!r}", step=STEP)
    for lang, sub in (info.get("requested_subtitles") or {}).items():
        if sub.get("data") is not None or not sub.get("url"):
            continue  # inline text: nothing to fetch
        protocol = str(sub.get("protocol") or determine_protocol(sub))
        if protocol not in GUARDED_PROTOCOLS:
            raise PermanentStepError(
                f"unsupported protocol {protocol!r} for the {lang} subtitles", step=STEP
            )


def _check_size_and_duration(
    ydl: yt_dlp.YoutubeDL, info: dict[str, Any], limits: DownloadLimits
) -> None:
    """Refuse too large or too long videos from what is known before the body is fetched."""
    size, duration = _known_size(info), info.get("duration")
    if duration is None and info.get("protocol") in ("http", "https") and info.get("url"):
        probed_size, duration = _probe_remote(ydl, info, limits.max_bytes)
        size = size or probed_size
    if size is not None and size > limits.max_bytes:
        raise PermanentStepError(
            f"too large: {_mb(size)} > {_mb(limits.max_bytes)} (VIDBRIEF_MAX_DOWNLOAD_MB)",
            step=STEP,
        )
    if duration is not None:
        _check_duration(float(duration), limits)
        info["duration"] = float(duration)


def _check_duration(duration_s: float, limits: DownloadLimits) -> None:
    if duration_s > limits.max_duration_s:
        raise PermanentStepError(
            f"too long: {duration_s:.0f} s > {limits.max_duration_s:.0f} s "
            "(VIDBRIEF_MAX_DURATION_SECONDS)",
            step=STEP,
        )


def _known_size(info: dict[str, Any]) -> int | None:
    sizes = [
        f.get("filesize") or f.get("filesize_approx")
        for f in info.get("requested_formats") or [info]
    ]
    return int(sum(sizes)) if sizes and all(sizes) else None


# --------------------------------------------------------------------------- remote probe


class _RangeReader(io.RawIOBase):
    """A seekable file over HTTP range requests, sent through the guarded YoutubeDL."""

    def __init__(self, ydl: yt_dlp.YoutubeDL, url: str, headers: dict[str, str]) -> None:
        super().__init__()
        self._ydl, self._url, self._headers = ydl, url, headers
        self.size: int | None = None
        self.ranged = True
        self.fetched = 0
        self._pos = 0
        self._block_start, self._block = -1, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size or 0}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self.size is not None and self._pos >= self.size:
            return 0
        if not self._block_start <= self._pos < self._block_start + len(self._block):
            self.fetch(self._pos)
        chunk = self._block[self._pos - self._block_start :][: len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def fetch(self, start: int) -> None:
        """Read the block at ``start`` (a 206 answer), or learn that ranges are unsupported."""
        if self.fetched >= PROBE_MAX_BYTES:
            raise OSError("probe budget spent")
        end = start + PROBE_BLOCK_BYTES - 1
        req = Request(self._url, headers={**self._headers, "Range": f"bytes={start}-{end}"})
        with contextlib.closing(self._ydl.urlopen(req)) as res:
            self._read_response(res, start)

    def _read_response(self, res: Any, start: int) -> None:
        if res.status != 206:  # Range ignored: the body would follow; take the size, stop
            self.ranged = False
            length = res.headers.get("Content-Length")
            self.size = int(length) if length and length.isdigit() else None
            raise OSError("server does not support range requests")
        total = (res.headers.get("Content-Range") or "").rpartition("/")[2]
        self.size = int(total) if total.isdigit() else self.size
        self._block_start, self._block = start, res.read(PROBE_BLOCK_BYTES)
        self.fetched += len(self._block)


def _probe_remote(
    ydl: yt_dlp.YoutubeDL, info: dict[str, Any], max_bytes: int
) -> tuple[int | None, float | None]:
    """(size, duration) of a direct media URL from a few ranged reads; None where unknown.

    Stops after the first read when the size alone already refuses the video.
    """
    import av

    reader = _RangeReader(ydl, info["url"], dict(info.get("http_headers") or {}))
    try:
        reader.fetch(0)
        if reader.size is not None and reader.size > max_bytes:
            return reader.size, None
        with av.open(reader, "r", container_options=AV_CONTAINER_OPTIONS) as container:
            duration = container.duration / 1_000_000 if container.duration else None
    except (OSError, av.FFmpegError, RequestError) as e:
        if isinstance(e, RefusedRequest):
            raise
        log.info("duration probe gave up (%s); checking after the download", e)
        duration = None
    return reader.size, duration


# --------------------------------------------------------------------------- after download


def _downloaded_file(info: dict[str, Any], staging: Path) -> Path:
    for item in info.get("requested_downloads") or []:
        path = Path(item.get("filepath") or "")
        if path.is_file():
            return path
    found = [p for p in staging.glob("media.*") if p.suffix not in (".part", ".vtt", ".ytdl")]
    if not found:
        raise PermanentStepError(
            "yt-dlp produced no file (over the size limit, or no format it could fetch)", step=STEP
        )
    return found[0]


def _probe_local(path: Path) -> tuple[float | None, int | None, int | None]:
    """(duration, width, height) of a local file; PermanentStepError if it is not media."""
    import av

    try:
        with av.open(str(path), container_options=AV_CONTAINER_OPTIONS) as container:
            duration = container.duration / 1_000_000 if container.duration else None
            video = next(iter(container.streams.video), None)
            size = (
                (video.codec_context.width, video.codec_context.height) if video else (None, None)
            )
    except av.FFmpegError as e:
        raise PermanentStepError(
            f"the downloaded file is not a playable video: {e}", step=STEP
        ) from e
    return duration, size[0], size[1]


def _finish(
    url: str, info: dict[str, Any], path: Path, workdir: Path, limits: DownloadLimits, language: str
) -> Media:
    """Check the real file, keep it, and build the Media."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise PermanentStepError(f"too large: {_mb(size)} (VIDBRIEF_MAX_DOWNLOAD_MB)", step=STEP)
    duration, width, height = _probe_local(path)
    duration = duration or info.get("duration")
    if duration is not None:
        _check_duration(float(duration), limits)
    subtitles, sub_lang = _pick_subtitles(info, duration, language)
    final = workdir / f"media{path.suffix}"
    os.replace(path, final)
    return Media(
        source_url=url,
        path=str(final.resolve()),
        size_bytes=size,
        title=info.get("title"),
        duration_s=duration,
        width=width or info.get("width"),
        height=height or info.get("height"),
        extractor=info.get("extractor_key"),
        subtitles=subtitles,
        subtitles_language=sub_lang,
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- subtitles


def _pick_subtitles(
    info: dict[str, Any], duration: float | None, language: str
) -> tuple[list[Segment] | None, str | None]:
    """Platform subtitles that pass the quality gate, else (None, None)."""
    wanted = language.split("-")[0].lower()
    for lang, sub in (info.get("requested_subtitles") or {}).items():
        path = Path(sub.get("filepath") or "")
        if lang.split("-")[0].lower() != wanted or sub.get("ext") != "vtt" or not path.is_file():
            continue
        cues = parse_vtt(capped_subtitle_text(path, duration))
        if passes_gate(cues, duration):
            return cues, lang
        log.info("subtitles %s cover too little of the video; using speech to text", lang)
    return None, None


# --------------------------------------------------------------------------- errors


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (yt-dlp keeps causes in exc_info and .cause)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        exc_info = getattr(e, "exc_info", None)
        todo += [
            exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None,
            getattr(e, "cause", None),
            e.__cause__,
            e.__context__,
        ]


def _classify_one(e: BaseException) -> StepError | None:
    if isinstance(e, StepError):
        return e
    if isinstance(e, UnresolvableHost) and e.temporary:
        return RetryableStepError(f"DNS lookup failed: {e}", step=STEP)
    if isinstance(e, UnsafeURL):
        return PermanentStepError(f"refused URL: {e}", step=STEP)
    if isinstance(e, DeadlineExceeded | DeadlinePassed):
        return RetryableStepError(f"timed out: {e}", step=STEP)
    if isinstance(e, MemoryError):  # the download process's limit (download_process.py)
        return PermanentStepError(
            "the download needed more memory than allowed (VIDBRIEF_DOWNLOAD_MEMORY_MB)", step=STEP
        )
    if isinstance(e, HTTPError):
        retry = e.status >= 500 or e.status in RETRYABLE_HTTP_STATUS
        cls = RetryableStepError if retry else PermanentStepError
        return cls(f"HTTP {e.status} from the video host: {e}", step=STEP)
    if isinstance(e, TransportError | TimeoutError | ConnectionError):
        return RetryableStepError(f"network error: {e}", step=STEP)
    return None


def _classify(exc: BaseException, url: str) -> StepError:
    """A StepError for any failure of yt-dlp or PyAV, retryable only where a retry may help.

    Our own errors (a limit, a refusal) win over the network errors that carry them.
    """
    causes = list(_causes(exc))
    ours = (StepError, UnsafeURL, DeadlineExceeded, DeadlinePassed, MemoryError)
    for e in [c for c in causes if isinstance(c, ours)] + causes:
        found = _classify_one(e)
        if found is not None:
            return found
    if any(isinstance(e, ExtractorError) and e.expected for e in causes):
        return PermanentStepError(f"cannot download {url}: {exc}", step=STEP)
    return RetryableStepError(f"download of {url} failed: {exc}", step=STEP)
