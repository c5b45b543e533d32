"""The download step against a real loopback HTTP server, with the real yt-dlp.

Hostile inputs must be refused with a clear, permanent error *before* the body is fetched:
the server's request log proves what was (not) asked for.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.errors import PermanentStepError, RetryableStepError, UnsafeURL
from ingest.models import JobRequest
from ingest.settings import Settings
from ingest.urlsafety import AddressPolicy
from pipeline.context import JobContext
from pipeline.download import MEDIA_JSON, DownloadLimits, download, parse_vtt, run

try:
    from tests.media import RequestLog, make_sample_video, serve_directory, write_vtt
except ImportError:  # tests/ is not a package: pytest put the folder itself on sys.path
    from media import RequestLog, make_sample_video, serve_directory, write_vtt

SAMPLE_SECONDS = 6.0
LONG_SECONDS = 12.0
LIMITS = DownloadLimits(max_bytes=50 * 1024**2, max_duration_s=600, timeout_s=60)
PRIVATE_OK = AddressPolicy.create(allow_private=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder to serve: a short video, a long noisy one, pages with subtitle tracks."""
    root = tmp_path_factory.mktemp("site")
    make_sample_video(root / "sample.mp4", seconds=SAMPLE_SECONDS, cuts=[3.0], text="")
    make_sample_video(
        root / "long.mp4", seconds=LONG_SECONDS, cuts=[6.0], text="", noise=0.4, audio=False
    )
    write_vtt(
        root / "full.en.vtt",
        [(0.5, 2.5, "<c>Hello</c> and welcome."), (2.5, 5.5, "This is the update.")],
    )
    write_vtt(root / "sparse.en.vtt", [(0.5, 1.5, "Hello.")])
    for name in ("full", "sparse"):
        (root / f"{name}.html").write_text(
            f"<html><head><title>Update {name}</title></head><body><video controls>"
            f'<source src="sample.mp4" type="video/mp4">'
            f'<track kind="subtitles" src="{name}.en.vtt" srclang="en" label="English">'
            "</video></body></html>"
        )
    (root / "text.html").write_text("<html><body><p>No video here.</p></body></html>")
    (root / "two.html").write_text(
        '<html><body><video src="sample.mp4"></video><video src="long.mp4"></video></body></html>'
    )
    make_sample_video(root / "seg0.ts", seconds=SAMPLE_SECONDS, cuts=[3.0], text="")
    (root / "good.m3u8").write_text(hls_playlist("seg0.ts"))
    return root


def hls_playlist(segment_url: str) -> str:
    return (
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SAMPLE_SECONDS:.0f}\n"
        f"#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:{SAMPLE_SECONDS},\n{segment_url}\n"
        "#EXT-X-ENDLIST\n"
    )


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


def assert_left_nothing(workdir: Path) -> None:
    assert list(workdir.iterdir()) == [], "a failed download must leave no files"


# --------------------------------------------------------------------------- success


@pytest.mark.integration
def test_run_downloads_a_direct_mp4(server: Server, tmp_path: Path, site: Path):
    settings = Settings(_env_file=None, work_dir=tmp_path, allow_private_urls=True)
    ctx = JobContext("job-1", JobRequest(url=f"{server.url}/sample.mp4"), settings)
    media = run(ctx)
    assert Path(media.path) == (tmp_path / "job-1" / "download" / "media.mp4").resolve()
    assert media.size_bytes == (site / "sample.mp4").stat().st_size
    assert media.duration_s == pytest.approx(SAMPLE_SECONDS, abs=0.1)
    assert (media.width, media.height) == (320, 180)
    assert media.subtitles is None
    files = sorted(p.name for p in (tmp_path / "job-1" / "download").iterdir())
    assert files == [MEDIA_JSON, "media.mp4"]


@pytest.mark.integration
def test_a_finished_download_is_returned_without_fetching(server: Server, tmp_path: Path):
    first = download(f"{server.url}/sample.mp4", tmp_path, LIMITS, policy=PRIVATE_OK)
    asked = len(server.log.requests)
    again = download(f"{server.url}/sample.mp4", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert again == first
    assert len(server.log.requests) == asked


@pytest.mark.integration
def test_a_redirect_within_the_policy_is_followed(server: Server, tmp_path: Path):
    media = download(f"{server.url}/redirect?to=/sample.mp4", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert media.duration_s == pytest.approx(SAMPLE_SECONDS, abs=0.1)


@pytest.mark.integration
def test_platform_subtitles_that_cover_the_video_replace_asr(server: Server, tmp_path: Path):
    media = download(f"{server.url}/full.html", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert media.subtitles_language == "en"
    assert [s.text for s in media.subtitles or []] == ["Hello and welcome.", "This is the update."]
    assert media.subtitles[0].start == pytest.approx(0.5)


@pytest.mark.integration
def test_sparse_subtitles_fail_the_quality_gate(server: Server, tmp_path: Path):
    media = download(f"{server.url}/sparse.html", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert media.subtitles is None
    assert "/sparse.en.vtt" in server.log.paths()


@pytest.mark.integration
def test_subtitles_in_another_language_are_not_used(server: Server, tmp_path: Path):
    media = download(f"{server.url}/full.html", tmp_path, LIMITS, policy=PRIVATE_OK, language="de")
    assert media.subtitles is None
    assert "/full.en.vtt" not in server.log.paths()


@pytest.mark.integration
def test_hls_is_fetched_natively_through_the_guard(server: Server, tmp_path: Path):
    media = download(f"{server.url}/good.m3u8", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert media.duration_s == pytest.approx(SAMPLE_SECONDS, abs=0.2)
    assert "/seg0.ts" in server.log.paths()


# --------------------------------------------------------------------------- hostile input


def refused(url: str, workdir: Path, policy: AddressPolicy, **limits: float) -> str:
    """Download ``url``, expecting a permanent refusal; return the message."""
    with pytest.raises(PermanentStepError) as err:
        download(url, workdir, dataclasses.replace(LIMITS, **limits), policy=policy)
    assert not err.value.retryable and err.value.step == "download"
    assert_left_nothing(workdir)
    return str(err.value)


@pytest.mark.integration
@pytest.mark.chaos
@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1:{port}/sample.mp4", "loopback address 127.0.0.1"),
        ("http://localhost:{port}/sample.mp4", "'localhost' resolves to it"),
        ("http://[::1]:{port}/sample.mp4", "loopback address ::1"),
        ("http://2130706433:{port}/sample.mp4", "loopback address 127.0.0.1"),
        ("http://10.0.0.1/sample.mp4", "private address 10.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
    ],
)
def test_internal_addresses_are_refused_before_any_request(
    server: Server, tmp_path: Path, target: str, reason: str
):
    message = refused(target.format(port=server.port), tmp_path, AddressPolicy.create())
    assert "refused URL" in message and reason in message
    assert server.log.requests == []


@pytest.mark.integration
@pytest.mark.chaos
def test_file_urls_are_refused_clearly(tmp_path: Path):
    message = refused("file:///etc/passwd", tmp_path, PRIVATE_OK)
    assert "scheme 'file' is not allowed" in message


@pytest.mark.integration
@pytest.mark.chaos
@pytest.mark.parametrize(
    "target",
    [
        "http://localhost:{port}/sample.mp4",
        "http://10.0.0.1/sample.mp4",
        "http://127.0.0.2:{port}/sample.mp4",
    ],
)
def test_an_allowed_host_redirecting_inside_is_refused_at_the_hop(
    server: Server, tmp_path: Path, target: str
):
    # 127.0.0.1:PORT plays a public site; everything else internal stays refused.
    policy = AddressPolicy.create(allowed_hosts=[f"127.0.0.1:{server.port}"])
    hop = target.format(port=server.port)
    message = refused(f"{server.url}/redirect?to={hop}", tmp_path, policy)
    assert f"redirect from {server.url}/redirect" in message
    assert server.log.paths() == ["/redirect"], "the redirect target must not be requested"


@pytest.mark.integration
@pytest.mark.chaos
def test_an_hls_segment_pointing_inside_is_refused(server: Server, tmp_path: Path, site: Path):
    (site / "evil.m3u8").write_text(hls_playlist(f"http://localhost:{server.port}/seg0.ts"))
    policy = AddressPolicy.create(allowed_hosts=[f"127.0.0.1:{server.port}"])
    message = refused(f"{server.url}/evil.m3u8", tmp_path, policy)
    assert "loopback address" in message
    assert "/seg0.ts" not in server.log.paths()


@pytest.mark.integration
@pytest.mark.chaos
def test_a_playlist_disguised_as_mp4_is_not_followed_by_ffmpeg(
    server: Server, tmp_path: Path, site: Path
):
    # FFmpeg's own hls/concat demuxers would fetch what the file lists, around the guard.
    (site / "disguised.mp4").write_text(hls_playlist(f"{server.url}/sample.mp4"))
    message = refused(f"{server.url}/disguised.mp4", tmp_path, PRIVATE_OK)
    assert "not a playable video" in message
    assert "/sample.mp4" not in server.log.paths()


@pytest.mark.integration
@pytest.mark.chaos
def test_dns_rebinding_is_caught_at_connect_time(server: Server, tmp_path: Path):
    # The check sees a public answer; the socket would reach loopback: refused there.
    policy = AddressPolicy.create(resolver=lambda host, port: ["93.184.216.34"])
    message = refused(f"http://localhost:{server.port}/sample.mp4", tmp_path, policy)
    assert "loopback address" in message
    assert server.log.requests == []


@pytest.mark.integration
@pytest.mark.chaos
def test_a_file_over_the_size_limit_is_refused_from_its_first_bytes(
    server: Server, tmp_path: Path, site: Path
):
    size = (site / "long.mp4").stat().st_size
    message = refused(f"{server.url}/long.mp4", tmp_path, PRIVATE_OK, max_bytes=size // 2)
    assert "too large" in message and "VIDBRIEF_MAX_DOWNLOAD_MB" in message
    assert server.log.body_bytes["/long.mp4"] < size / 4


@pytest.mark.integration
@pytest.mark.chaos
def test_a_video_over_the_duration_limit_is_refused_before_the_body(
    server: Server, tmp_path: Path, site: Path
):
    size = (site / "long.mp4").stat().st_size
    message = refused(f"{server.url}/long.mp4", tmp_path, PRIVATE_OK, max_duration_s=5)
    assert f"too long: {LONG_SECONDS:.0f} s > 5 s" in message
    assert server.log.body_bytes["/long.mp4"] < size / 4
    ranged = [r for m, p, r in server.log.requests if p == "/long.mp4" and r]
    assert ranged, "the duration comes from range requests"


@pytest.mark.integration
@pytest.mark.chaos
def test_a_huge_declared_length_is_refused_without_streaming_it(server: Server, tmp_path: Path):
    message = refused(f"{server.url}/huge", tmp_path, PRIVATE_OK)
    assert "too large: 10240.0 MB" in message
    assert server.log.body_bytes["/huge"] < 2 * 1024**2


@pytest.mark.integration
@pytest.mark.chaos
def test_a_stream_of_unknown_length_is_cut_at_the_limit(server: Server, tmp_path: Path):
    limit = 2 * 1024**2
    message = refused(f"{server.url}/huge?chunked=1", tmp_path, PRIVATE_OK, max_bytes=limit)
    assert "too large: more than 2.0 MB received" in message
    assert server.log.body_bytes["/huge"] < limit + 4 * 1024**2


# --------------------------------------------------------------------------- error classes


@pytest.mark.integration
def test_http_errors_are_classified(server: Server, tmp_path: Path):
    with pytest.raises(PermanentStepError, match="HTTP 404"):
        download(f"{server.url}/404", tmp_path / "a", LIMITS, policy=PRIVATE_OK)
    with pytest.raises(RetryableStepError, match="HTTP 500"):
        download(f"{server.url}/500", tmp_path / "b", LIMITS, policy=PRIVATE_OK)


@pytest.mark.integration
def test_a_page_without_video_is_a_permanent_error(server: Server, tmp_path: Path):
    with pytest.raises(PermanentStepError):
        download(f"{server.url}/text.html", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert_left_nothing(tmp_path)


@pytest.mark.integration
def test_a_page_with_several_videos_is_refused_as_a_playlist(server: Server, tmp_path: Path):
    with pytest.raises(PermanentStepError, match="playlists are not supported"):
        download(f"{server.url}/two.html", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert not {"/sample.mp4", "/long.mp4"} & set(server.log.paths())
    assert_left_nothing(tmp_path)


@pytest.mark.integration
def test_a_refused_connection_is_retryable(tmp_path: Path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RetryableStepError, match="network error"):
        download(f"http://127.0.0.1:{port}/v.mp4", tmp_path, LIMITS, policy=PRIVATE_OK)
    assert_left_nothing(tmp_path)


def test_a_refusal_keeps_its_cause():
    with pytest.raises(PermanentStepError) as err:
        download(
            "http://10.0.0.1/v.mp4",
            Path("/nonexistent-unused"),
            LIMITS,
            policy=AddressPolicy.create(),
        )
    assert isinstance(err.value.__cause__, UnsafeURL)


def test_parse_vtt_strips_tags_and_rolling_repeats():
    text = (
        "WEBVTT\nKind: captions\n\n1\n00:01.000 --> 00:02.500 align:start\n<c>one</c> two\n\n"
        "00:00:02.500 --> 00:00:04.000\none two\n\n01:00:00.000 --> 01:00:01,000\nthree\n"
    )
    cues = parse_vtt(text)
    assert [(c.start, c.end, c.text) for c in cues] == [
        (1.0, 2.5, "one two"),
        (3600.0, 3601.0, "three"),
    ]


@pytest.mark.integration
def test_the_overall_deadline_stops_a_download_as_retryable(server: Server, tmp_path: Path):
    limits = DownloadLimits(max_bytes=LIMITS.max_bytes, max_duration_s=600, timeout_s=0.001)
    with pytest.raises(RetryableStepError, match="VIDBRIEF_DOWNLOAD_TIMEOUT_SECONDS"):
        download(f"{server.url}/sample.mp4", tmp_path, limits, policy=PRIVATE_OK)
    assert_left_nothing(tmp_path)
