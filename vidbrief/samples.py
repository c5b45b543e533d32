"""Sample videos with real speech: for the demo, the benchmarks and the tests.

:func:`make_sample_video` writes an H.264 + AAC mp4 with hard cuts at known times and espeak-ng
speech of a known text (a tone when espeak-ng is missing). :func:`serve_files` serves a folder
on 127.0.0.1 for yt-dlp to download from, as a video site would.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import subprocess
import tempfile
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

AUDIO_RATE_HZ = 22_050  # espeak-ng's native rate
SHOT_COLOURS_RGB = [(200, 40, 40), (30, 160, 60), (40, 60, 200), (220, 200, 40), (160, 40, 200)]


@dataclass(frozen=True)
class Talk:
    """A sample talk: its title, what is said, where the picture cuts."""

    title: str
    text: str
    cuts: tuple[float, ...]
    seconds: float = 20.0


DEMO_TALKS = (
    Talk(
        "Quarterly review",
        "Welcome to the quarterly review. Revenue grew by twelve percent this quarter. "
        "The new factory in Lisbon opens in March. Customer support answered every ticket "
        "within one day. Thank you for watching.",
        (5.0, 10.0, 15.0),
    ),
    Talk(
        "The garden robot",
        "This is the garden robot. It waters the tomatoes every morning and measures the "
        "soil. The battery lasts three days on one charge. Next year it will also pick "
        "strawberries.",
        (6.0, 13.0),
    ),
    Talk(
        "Welcome aboard",
        "Good morning and welcome aboard. Please keep your luggage in the racks above the "
        "seats. The emergency exits are at both ends of every carriage. The train arrives "
        "in Berlin at noon.",
        (4.0, 9.0, 14.0, 17.0),
    ),
)


def speak(text: str, path: Path, *, words_per_minute: int = 150, voice: str | None = None) -> bool:
    """Write espeak-ng speech of ``text`` to a WAV file; False when espeak-ng is missing.

    ``voice``: an espeak-ng voice (``de``, ``es`` …; default English).
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    subprocess.run(
        [
            exe,
            "-w",
            str(path),
            "-s",
            str(words_per_minute),
            *(["-v", voice] if voice else []),
            text,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return True


def _read_wav_mono(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        raw = w.readframes(w.getnframes())
        rate, channels = w.getframerate(), w.getnchannels()
    samples = np.frombuffer(raw, dtype=np.int16).reshape(-1, channels)[:, 0]
    return samples.astype(np.float32) / 32768.0, rate


def _tone(seconds: float, rate: int) -> np.ndarray:
    """A quiet warbling tone: an audio track with content where no TTS is available."""
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return (0.2 * np.sin(2 * np.pi * (220 + 80 * np.sin(2 * np.pi * 0.5 * t)) * t)).astype(
        np.float32
    )


def sample_audio(
    text: str, seconds: float, rate: int = AUDIO_RATE_HZ, *, voice: str | None = None
) -> np.ndarray:
    """Speech of ``text`` (or a tone), padded with silence or trimmed to ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        if text and speak(text, wav, voice=voice):
            audio, speech_rate = _read_wav_mono(wav)
            if speech_rate != rate:
                audio = np.interp(
                    np.arange(0, len(audio), speech_rate / rate), np.arange(len(audio)), audio
                ).astype(np.float32)
        else:
            audio = _tone(seconds, rate)
    # Half a second of lead-in silence, as a real recording would have.
    lead = np.zeros(int(0.5 * rate), dtype=np.float32)
    audio = np.concatenate([lead, audio])[: int(seconds * rate)]
    return np.pad(audio, (0, int(seconds * rate) - len(audio)))


@functools.lru_cache(maxsize=8)
def _shot_background(shot: int, size: tuple[int, int]) -> np.ndarray:
    """The shot's colour with a per-shot stripe width (read-only; copied per frame)."""
    width, height = size
    colour = np.array(SHOT_COLOURS_RGB[shot % len(SHOT_COLOURS_RGB)], dtype=np.uint8)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = colour
    img[:, (np.arange(width) // (8 + 4 * shot)) % 2 == 0] //= 2
    img.flags.writeable = False
    return img


def _frame_rgb(
    index: int,
    fps: int,
    size: tuple[int, int],
    cuts: list[float],
    noise: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One frame: the shot's background, a moving square, optional noise."""
    width, height = size
    t = index / fps
    shot = sum(1 for c in cuts if t >= c)
    img = _shot_background(shot, size).copy()
    side = max(8, height // 9)
    x = int((t * width / 8) % max(1, width - side))
    img[height // 2 - side // 2 : height // 2 + side // 2, x : x + side] = 255 - img[0, 0]
    if noise:
        jitter = rng.integers(-int(noise * 127), int(noise * 127) + 1, img.shape, dtype=np.int16)
        img = np.clip(img + jitter, 0, 255).astype(np.uint8)
    return img


def make_sample_video(
    path: Path,
    *,
    seconds: float,
    cuts: list[float],
    text: str,
    size: tuple[int, int] = (320, 180),
    fps: int = 25,
    noise: float = 0.0,
    audio: bool = True,
    preset: str = "veryfast",
    voice: str | None = None,
    samples: np.ndarray | None = None,
) -> Path:
    """Write an H.264 + AAC mp4 with hard cuts at ``cuts`` (seconds) and speech of ``text``.

    ``noise`` (0..1) adds per-frame random noise, which makes the file large (size tests);
    ``audio=False`` leaves the audio track out; ``voice`` is the espeak-ng voice; ``samples``
    (mono float32 at AUDIO_RATE_HZ) replaces the spoken text.
    """
    import av

    path = Path(path)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.options = {"preset": preset, "crf": "26"}
        sound = out.add_stream("aac", rate=AUDIO_RATE_HZ) if audio else None
        if sound is not None:
            sound.layout = "mono"
        _write_video(out, video, seconds, fps, size, cuts, noise, rng)
        if sound is not None:
            speech = sample_audio(text, seconds, voice=voice) if samples is None else samples
            _write_audio(out, sound, speech)
    return path


def _write_video(out, stream, seconds, fps, size, cuts, noise, rng) -> None:
    import av

    for i in range(round(seconds * fps)):
        frame = av.VideoFrame.from_ndarray(_frame_rgb(i, fps, size, cuts, noise, rng), "rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _write_audio(out, stream, samples: np.ndarray) -> None:
    import av

    block = 1024
    for start in range(0, len(samples), block):
        chunk = samples[start : start + block].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE_HZ, start
        frame.time_base = Fraction(1, AUDIO_RATE_HZ)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def ensure_demo_videos(folder: Path, count: int = 3) -> list[Path]:
    """The demo's sample videos, generated once and reused by later runs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        talk = DEMO_TALKS[i % len(DEMO_TALKS)]
        path = folder / f"talk-{i + 1}.mp4"
        if not path.exists():
            tmp = path.with_suffix(".tmp.mp4")
            make_sample_video(tmp, seconds=talk.seconds, cuts=list(talk.cuts), text=talk.text)
            tmp.replace(path)
        paths.append(path)
    return paths


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # yt-dlp probes with range requests and hangs up early: not an error worth a traceback.
        pass


@contextlib.contextmanager
def serve_files(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) until the block ends; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    with serving(_Server(("127.0.0.1", 0), handler)) as base_url:
        yield base_url


@contextlib.contextmanager
def serving(server: http.server.HTTPServer) -> Iterator[str]:
    """Run ``server`` in a thread until the block ends; yield its base URL."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="http", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
