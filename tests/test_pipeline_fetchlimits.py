"""Every byte and second a download reads is bounded: hostile servers on loopback, real yt-dlp.

The servers (tests/media.py): a page that never ends (plain and gzipped), a manifest and a
subtitle file that never end, a page and a video body that trickle a byte at a time (never
silent for a whole socket timeout). And programs named like yt-dlp's external downloaders on
PATH, each recording that it ran: none may.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from yt_dlp.networking.exceptions import TransportError

from ingest.errors import PermanentStepError, RetryableStepError
from ingest.urlsafety import AddressPolicy
from pipeline.download import DownloadLimits, download

try:
    from tests.media import (
        RequestLog,
        make_sample_video,
        serve_directory,
        write_fake_programs,
        write_vtt,
    )
except ImportError:  # tests/ is not a package: pytest put the folder itself on sys.path
    from media import (
        RequestLog,
        make_sample_video,
        serve_directory,
        write_fake_programs,
        write_vtt,
    )

MB = 1024**2
SAMPLE_SECONDS = 6.0
DEFAULT_PAGE_CAP = 16 * MB  # VIDBRIEF_MAX_PAGE_MB's default
DEFAULT_SUBTITLE_CAP = 5 * MB  # VIDBRIEF_MAX_SUBTITLE_MB's default
#: Bytes a server may have sent beyond what the client read (socket buffers on loopback)…
IN_FLIGHT_BYTES = 4 * MB
#: … and the client may have read beyond what the server logged (its last write, cut short).
UNLOGGED_BYTES = 64 * 1024
DEADLINE_S = 3.0
#: The deadline's guarantee: the download ends no later than this after it.
DEADLINE_SLACK_S = 2.0
LIMITS = DownloadLimits(max_bytes=50 * MB, max_duration_s=600, timeout_s=60)
PRIVATE_OK = AddressPolicy.create(allow_private=True)
HOSTILE_CUES = 8000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    make_sample_video(root / "sample.mp4", seconds=SAMPLE_SECONDS, cuts=[3.0], text="")
    step = SAMPLE_SECONDS / HOSTILE_CUES
    write_vtt(
        root / "many.en.vtt", [(i * step, (i + 1) * step, f"c{i}") for i in range(HOSTILE_CUES)]
    )
    for name, track in {
        "sub-endless": "endless.vtt?type=text/vtt",
        "many-cues": "many.en.vtt",
        "rtmp-sub": "rtmp://169.254.169.254/live/captions.vtt",
    }.items():
        (root / f"{name}.html").write_text(
            '<html><body><video controls><source src="sample.mp4" type="video/mp4">'
            f'<track kind="subtitles" src="{track}" srclang="en"></video></body></html>'
        )
    (root / "rtmp-video.html").write_text(
        '<html><body><video src="rtmp://169.254.169.254/live/stream"></video></body></html>'
    )
    # SAMPLE-AES is beyond yt-dlp's native HLS downloader: it would hand the stream to ffmpeg.
    (root / "sample-aes.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n"
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="key.bin"\n#EXTINF:6,\nsample.mp4\n#EXT-X-ENDLIST\n'
    )
    return root


@dataclass
class Server:
    url: str
    log: RequestLog

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture
def server(site: Path) -> Iterator[Server]:
    log = RequestLog()
    with serve_directory(site, log=log) as url:
        yield Server(url, log)


def refused(url: str, workdir: Path, error: type = PermanentStepError, **limits: float) -> str:
    """Download ``url`` expecting ``error``; check nothing was left; return the message."""
    with pytest.raises(error) as err:
        download(url, workdir, dataclasses.replace(LIMITS, **limits), policy=PRIVATE_OK)
    assert err.value.step == "download"
    assert list(workdir.iterdir()) == [], "a failed download must leave no files"
    return str(err.value)


# --------------------------------------------------------------------------- size


@pytest.mark.integration
@pytest.mark.chaos
@pytest.mark.parametrize(
    "path",
    ["/endless", "/endless.m3u8?type=application/vnd.apple.mpegurl"],
    ids=["page", "manifest"],
)
def test_an_endless_page_or_manifest_is_cut_at_the_page_cap(
    server: Server, tmp_path: Path, path: str
):
    message = refused(server.url + path, tmp_path)
    assert "more than 16.0 MB received (VIDBRIEF_MAX_PAGE_MB)" in message
    sent = sum(server.log.body_bytes.values())
    assert DEFAULT_PAGE_CAP - UNLOGGED_BYTES < sent < DEFAULT_PAGE_CAP + IN_FLIGHT_BYTES


@pytest.mark.integration
@pytest.mark.chaos
def test_an_endless_gzipped_page_is_cut_as_it_is_decoded(server: Server, tmp_path: Path):
    # About 1,000 bytes of page per byte sent: the cap must hold on the decoded bytes.
    message = refused(f"{server.url}/endless?gzip=1", tmp_path)
    assert "VIDBRIEF_MAX_PAGE_MB" in message
    assert server.log.body_bytes["/endless"] < DEFAULT_PAGE_CAP / 100


@pytest.mark.integration
@pytest.mark.chaos
def test_an_endless_subtitle_file_is_ignored_and_the_video_kept(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    media = download(f"{server.url}/sub-endless.html", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert media.subtitles is None and media.duration_s == pytest.approx(SAMPLE_SECONDS, abs=0.1)
    sent = server.log.body_bytes["/endless.vtt"]
    assert DEFAULT_SUBTITLE_CAP - UNLOGGED_BYTES < sent < DEFAULT_SUBTITLE_CAP + IN_FLIGHT_BYTES
    assert "subtitles ignored" in caplog.text and "VIDBRIEF_MAX_SUBTITLE_MB" in caplog.text
    assert not [p for p in tmp_path.rglob("*.vtt*")], "no part of the subtitles is kept"


@pytest.mark.integration
@pytest.mark.chaos
def test_thousands_of_cues_on_a_short_video_do_not_reach_the_transcript(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    media = download(f"{server.url}/many-cues.html", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert "/many.en.vtt" in server.log.paths()
    assert media.subtitles is None  # speech to text briefs it instead
    assert f"{HOSTILE_CUES} cues for a 6 s video, more than 120" in caplog.text
    assert "VIDBRIEF_MAX_SUBTITLE_CUES_PER_MINUTE" in caplog.text


@pytest.mark.integration
@pytest.mark.chaos
def test_hls_segments_count_against_the_video_cap(server: Server, tmp_path: Path, site: Path):
    (site / "segment-endless.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\nhuge?chunked=1\n#EXT-X-ENDLIST\n"
    )
    message = refused(f"{server.url}/segment-endless.m3u8", tmp_path, max_bytes=2 * MB)
    assert "too large: more than 2.0 MB received (VIDBRIEF_MAX_DOWNLOAD_MB)" in message
    assert server.log.body_bytes["/huge"] < 2 * MB + IN_FLIGHT_BYTES


# --------------------------------------------------------------------------- time


@pytest.mark.integration
@pytest.mark.chaos
@pytest.mark.parametrize(
    "path",
    ["/trickle?every=2", "/trickle.mp4?type=video/mp4&length=1000000&every=1"],
    ids=["page", "media-body"],
)
def test_a_trickling_server_cannot_keep_a_download_past_its_deadline(
    server: Server, tmp_path: Path, path: str
):
    # A byte every 1–2 s never trips the 3 s socket timeout: only the deadline stops it.
    started = time.monotonic()
    message = refused(server.url + path, tmp_path, RetryableStepError, timeout_s=DEADLINE_S)
    elapsed = time.monotonic() - started
    assert "VIDBRIEF_DOWNLOAD_TIMEOUT_SECONDS" in message
    assert elapsed < DEADLINE_S + DEADLINE_SLACK_S
    assert sum(server.log.body_bytes.values()) >= 1, "the server did start answering"


# --------------------------------------------------------------------------- programs


@pytest.fixture
def fake_programs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Programs named like yt-dlp's external downloaders first on PATH; returns their log."""
    folder = tmp_path_factory.mktemp("bin")
    calls = write_fake_programs(folder)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ.get('PATH', '')}")
    return calls


@pytest.mark.integration
@pytest.mark.chaos
@pytest.mark.parametrize(
    ("page", "reason"),
    [
        ("/rtmp-sub.html", "unsupported protocol 'rtmp' for the en subtitles"),
        ("/rtmp-video.html", "unsupported protocol 'rtmp'"),
        ("/sample-aes.m3u8", "ffmpeg could not be found"),
    ],
)
def test_no_external_program_ever_runs(
    server: Server, tmp_path: Path, fake_programs: Path, page: str, reason: str
):
    with pytest.raises((PermanentStepError, RetryableStepError)) as err:
        download(server.url + page, tmp_path, LIMITS, policy=PRIVATE_OK)
    assert reason in str(err.value)
    assert not fake_programs.exists(), fake_programs.read_text()


@pytest.mark.integration
@pytest.mark.chaos
def test_a_subtitle_url_pointing_inside_is_refused_like_a_format(
    server: Server, tmp_path: Path, site: Path
):
    (site / "inside-sub.html").write_text(
        '<html><body><video controls><source src="sample.mp4" type="video/mp4">'
        f'<track src="http://localhost:{server.port}/many.en.vtt" srclang="en">'
        "</video></body></html>"
    )
    policy = AddressPolicy.create(allowed_hosts=[f"127.0.0.1:{server.port}"])
    with pytest.raises(PermanentStepError, match="loopback address"):
        download(f"{server.url}/inside-sub.html", tmp_path, LIMITS, policy=policy)
    assert "/many.en.vtt" not in server.log.paths()


# --------------------------------------------------------------------------- TLS


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (cryptography comes with moto, a test dependency)."""
    import datetime

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextlib.contextmanager
def trickling_tls_server(folder: Path) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 whose body comes a byte every half second; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed_cert(folder))
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 999\r\n\r\n"
            )
            while not stop.wait(0.5):
                tls.sendall(b"x")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


@pytest.mark.integration
@pytest.mark.chaos
def test_a_trickling_tls_server_is_held_to_the_deadline_too(tmp_path: Path):
    # TLS sockets are made by the SSL context from ours: they must keep the deadline.
    from pipeline.fetch import _GuardedYoutubeDL
    from pipeline.fetchlimits import DeadlinePassed

    bounds = LIMITS.read_bounds(time.monotonic() + DEADLINE_S)
    params = {"quiet": True, "nocheckcertificate": True, "socket_timeout": 10}
    with (
        trickling_tls_server(tmp_path) as port,
        _GuardedYoutubeDL(params, PRIVATE_OK, bounds) as ydl,
    ):
        started = time.monotonic()
        response = ydl.urlopen(f"https://127.0.0.1:{port}/")
        with pytest.raises(TransportError) as err:
            response.read()
        elapsed = time.monotonic() - started
    assert isinstance(err.value.cause, DeadlinePassed)
    assert elapsed < DEADLINE_S + DEADLINE_SLACK_S
