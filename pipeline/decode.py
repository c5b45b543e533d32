"""The analysis pass over a media file: one streaming decode, in bounded memory, honestly.

Video frames are sampled at ``frame_sample_fps`` and downscaled at once (64×36 for cuts,
≤480 px for keyframes, see :mod:`pipeline.shots`); the chosen audio stream
(:mod:`pipeline.tracks`) is resampled to 16 kHz mono float32 and appended to a file on disk;
text subtitle streams are decoded into cues (:mod:`pipeline.subtitles`). Nothing holds the
whole video.

What the file says is checked against what it holds:

- **Time zero** is the container's start time: shots, keyframes, audio and subtitles all start
  at 0 whatever the file's first timestamp (1.4 s for ffmpeg's MPEG-TS, any value for a
  recorded broadcast).
- **The duration limit** (``VIDBRIEF_MAX_DURATION_SECONDS``) applies to what is decoded:
  decoding stops, with a permanent error, at the first frame past it — a header that declares
  5 s does not let 600 s through.
- **Frames larger than** ``VIDBRIEF_MAX_FRAME_PIXELS`` (8K) are refused before any decoding.
- **Truncation**: the decoded length is compared with the declared one
  (:func:`integrity_notices`); packets that fail to decode are counted and skipped, as players
  do; a read error mid-file ends the pass with what was decoded so far.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.errors import PermanentStepError
from ingest.names import ANALYSE_STEP
from pipeline.containers import AV_CONTAINER_OPTIONS
from pipeline.hooks import NO_HOOKS, StepHooks
from pipeline.models import Notice, Segment, Shot
from pipeline.shots import HIST_SIZE_PX, ShotTracker, keyframe_size
from pipeline.speech import SAMPLE_RATE_HZ
from pipeline.subtitles import EmbeddedSubtitles
from pipeline.tracks import AudioChoice, choose_audio

__all__ = [
    "AV_CONTAINER_OPTIONS",
    "DecodeLimits",
    "Decoded",
    "decode",
    "integrity_notices",
]

log = logging.getLogger(__name__)

STEP = ANALYSE_STEP
AUDIO_FILE = "audio-16k-mono.f32"
#: A file is called truncated when its content stops short of the declared duration by more
#: than both of these.
TRUNCATED_MIN_SECONDS = 2.0
TRUNCATED_MIN_SHARE = 0.05
#: Skipped packets are reported when at least this many and this share of all packets.
DECODE_ERRORS_MIN = 3
DECODE_ERRORS_MIN_SHARE = 0.001
#: A gap in the audio timestamps longer than this is filled with silence (keeps sync).
AUDIO_GAP_SECONDS = 0.25


@dataclass(frozen=True)
class DecodeLimits:
    sample_fps: float
    max_duration_s: float
    max_frame_pixels: int


@dataclass
class Decoded:
    """What one decoding pass found; times in seconds from the container's start."""

    shots: list[Shot]
    frames_sampled: int
    duration_s: float  # decoded: the end of the last video frame or audio sample
    declared_duration_s: float | None
    audio_path: Path | None
    audio: AudioChoice
    subtitles: EmbeddedSubtitles
    audio_language: str | None = None  # the chosen audio stream's language tag, if any
    video_end_s: float | None = None
    audio_end_s: float | None = None
    decode_errors: int = 0
    packets: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class _AudioSink:
    """16 kHz mono float32 audio appended to a file, aligned to time zero: bounded memory."""

    def __init__(self, path: Path) -> None:
        import av

        self.path, self.samples = path, 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)

    @property
    def end_s(self) -> float:
        return self.samples / SAMPLE_RATE_HZ

    def add(self, frame: Any, t: float | None) -> None:
        if t is not None and t - self.end_s > AUDIO_GAP_SECONDS:  # late start or a gap
            self._silence(int((t - self.end_s) * SAMPLE_RATE_HZ))
        for out in self._resampler.resample(frame):
            self._write(out.to_ndarray().reshape(-1))

    def _silence(self, count: int) -> None:
        block = np.zeros(min(count, SAMPLE_RATE_HZ * 10), np.float32)
        while count > 0:
            self._write(block[:count])
            count -= block.size

    def _write(self, data: np.ndarray) -> None:
        data = data.astype(np.float32, copy=False)
        self._file.write(data.tobytes())
        self.samples += data.size

    def close(self) -> Path | None:
        for out in self._resampler.resample(None):  # flush what the resampler holds
            self._write(out.to_ndarray().reshape(-1))
        self._file.close()
        return self.path if self.samples else None


class _FrameSampler:
    """Takes the first frame at or after each tick of a ``fps`` grid; downscales it."""

    def __init__(self, fps: float, tracker: ShotTracker, stored_size: tuple[int, int]) -> None:
        self.interval, self.next_t, self.count = 1.0 / fps, 0.0, 0
        self.tracker, self.stored_size = tracker, stored_size
        self.end_t: float | None = None  # end of the last decoded frame
        #: Quarter turns from the first sampled frame, and the size to scale each frame to.
        self.quarter_turns: int | None = None
        self.scaled_size = stored_size

    def add(self, frame: Any, t: float, frame_s: float) -> None:
        self.end_t = max(self.end_t or 0.0, t + frame_s)
        if t + 1e-6 < self.next_t:
            return
        while self.next_t <= t + 1e-6:
            self.next_t += self.interval
        if self.quarter_turns is None:
            self._first(frame)
        small = frame.reformat(*HIST_SIZE_PX, format="rgb24").to_ndarray()
        key = frame.reformat(*self.scaled_size, format="rgb24").to_ndarray()
        if self.quarter_turns:
            key = np.ascontiguousarray(np.rot90(key, self.quarter_turns))  # counter-clockwise
        self.tracker.add(t, small, key)
        self.count += 1

    def _first(self, frame: Any) -> None:
        """Keyframes are what a player shows. A phone stores a portrait video as landscape
        frames with a display matrix that turns them: unturned, its keyframes lie on their
        side. One turn for the whole video (the first frame's), so that every keyframe has
        the same shape, sized as shown; the cut test needs none (a turn changes no
        histogram)."""
        self.quarter_turns = display_turns(frame)
        width, height = self.stored_size
        if self.quarter_turns % 2:  # sized as shown: the stored width is the shown height
            shown_w, shown_h = keyframe_size(height, width)
            self.scaled_size = (shown_h, shown_w)
        else:
            self.scaled_size = keyframe_size(width, height)


def display_turns(frame: Any) -> int:
    """The quarter turns (counter-clockwise) a player gives this frame: its display matrix's
    rotation (PyAV's ``rotation``, counter-clockwise degrees). 0 where the matrix mirrors
    (a turn alone would show a mirrored video upside down), is not a quarter turn, or is not
    a rotation at all (PyAV then answers INT_MIN)."""
    degrees = getattr(frame, "rotation", 0) or 0
    turns = round(degrees / 90)
    if not -180 <= degrees <= 180 or abs(degrees - 90 * turns) > 1 or _mirrored(frame):
        return 0
    return turns % 4


def _mirrored(frame: Any) -> bool:
    """Whether the frame's display matrix flips it (a negative determinant)."""
    import av

    try:
        wanted = av.sidedata.sidedata.Type.DISPLAYMATRIX
        for data in frame.side_data:
            if data.type == wanted:
                m = [int(x) for x in np.frombuffer(bytes(data), dtype=np.int32)[:5]]
                return m[0] * m[4] - m[1] * m[3] < 0
    except (AttributeError, TypeError, ValueError):  # an older PyAV: no side data to read
        return False
    return False


def decode(
    path: Path,
    out_dir: Path,
    limits: DecodeLimits,
    device: str,
    threads: int,
    hooks: StepHooks = NO_HOOKS,
) -> Decoded:
    """One streaming pass: sampled frames into shots and keyframes, audio into a file.
    ``hooks``: media seconds decoded as progress; a cancel stops the pass (StepCancelled)."""
    import av

    began = time.perf_counter()
    try:
        audio = choose_audio(path, AV_CONTAINER_OPTIONS)
        with av.open(str(path), container_options=AV_CONTAINER_OPTIONS) as container:
            decoded = _Pass(container, out_dir, limits, device, threads, audio, hooks).run()
    except av.FFmpegError as e:
        raise PermanentStepError(f"cannot decode {path.name}: {e}", step=STEP) from e
    shots_s = decoded.timings["shots_s"]
    decoded.timings["decode_s"] = round(time.perf_counter() - began - shots_s, 3)
    return decoded


def _origin_s(container: Any) -> float:
    """The container's first timestamp, in seconds: time zero of every output."""
    start = container.start_time
    return start / 1_000_000 if start not in (None, 0) else 0.0


def _check_frame_size(video: Any, max_pixels: int) -> None:
    _check_pixels(video.codec_context.width, video.codec_context.height, max_pixels)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse frames over the limit (the header's size, and each frame's: a stream may lie)."""
    if width * height > max_pixels:
        raise PermanentStepError(
            f"the video's frames are {width}×{height}, more than VIDBRIEF_MAX_FRAME_PIXELS "
            f"({max_pixels:,} pixels): refused",
            step=STEP,
        )


class _Pass:
    """The state of one decoding pass over an open container."""

    def __init__(
        self,
        container: Any,
        out_dir: Path,
        limits: DecodeLimits,
        device: str,
        threads: int,
        audio: AudioChoice,
        hooks: StepHooks = NO_HOOKS,
    ) -> None:
        self.container, self.limits, self.audio_choice = container, limits, audio
        self.hooks = hooks
        self.declared_s = container.duration / 1_000_000 if container.duration else None
        self.video = next(iter(container.streams.video), None)
        self.audio = container.streams[audio.index] if audio.index is not None else None
        if self.video is not None:
            _check_frame_size(self.video, limits.max_frame_pixels)
            self.video.thread_type = "AUTO"  # frame and slice threads: decoding is the hot loop
            self.video.codec_context.thread_count = threads
        self.origin = _origin_s(container)
        self.tracker = ShotTracker(out_dir, device)
        self.sampler = _FrameSampler(limits.sample_fps, self.tracker, self._stored_size())
        self.sink = _AudioSink(out_dir / AUDIO_FILE) if self.audio is not None else None
        self.subtitles = EmbeddedSubtitles.of(container, self.origin)
        self.errors = self.packets = 0

    def _stored_size(self) -> tuple[int, int]:
        if self.video is None:
            return 2, 2
        return self.video.codec_context.width, self.video.codec_context.height

    def _frame_seconds(self) -> float:
        """How long one video frame lasts (the last one's end is the video's end)."""
        assert self.video is not None
        rate = self.video.average_rate or self.video.guessed_rate
        return float(1 / rate) if rate else 1.0 / self.limits.sample_fps

    def run(self) -> Decoded:
        streams = [s for s in (self.video, self.audio) if s is not None]
        try:
            self._demux([*streams, *self.subtitles.streams])
        except BaseException:
            self._discard_audio()  # stopped (cancelled, too long): no half-written audio left
            raise
        audio_path = self.sink.close() if self.sink is not None else None
        return self._result(audio_path)

    def _discard_audio(self) -> None:
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink.close()
            self.sink.path.unlink(missing_ok=True)

    def _demux(self, streams: list[Any]) -> None:
        import av

        if not streams:
            return
        frame_s = self._frame_seconds() if self.video is not None else 0.0
        packets = iter(self.container.demux(*streams))
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as e:  # unreadable from here on (a cut file): stop here
                log.warning("reading stopped after %d packets: %s", self.packets, e)
                self.errors += 1
                return
            self.packets += 1
            self.hooks.check(STEP)
            self._packet(packet, frame_s)

    def _packet(self, packet: Any, frame_s: float) -> None:
        import av

        if packet.stream.type == "subtitle":
            self.errors += self.subtitles.add(packet)
            return
        for frame in self._frames(packet):
            t = None if frame.time is None else float(frame.time) - self.origin
            self._check_limit(t)
            if t is not None:
                self.hooks.progress("decoding", max(0.0, t), self.declared_s)
            if isinstance(frame, av.VideoFrame):
                _check_pixels(frame.width, frame.height, self.limits.max_frame_pixels)
                if t is not None:
                    self.sampler.add(frame, max(0.0, t), frame_s)
            elif self.sink is not None:
                self.sink.add(frame, t)
                self._check_limit(self.sink.end_s)

    def _frames(self, packet: Any) -> list[Any]:
        """A packet's frames; a corrupt packet is counted and skipped, as players do."""
        import av

        try:
            return packet.decode()
        except (av.InvalidDataError, av.EOFError, av.PermissionError) as e:
            log.debug("skipping a corrupt packet: %s", e)
            self.errors += 1
            return []

    def _check_limit(self, t: float | None) -> None:
        if t is not None and t > self.limits.max_duration_s:
            raise PermanentStepError(
                f"too long: the content runs past {self.limits.max_duration_s:.0f} s "
                "(VIDBRIEF_MAX_DURATION_SECONDS); decoding stopped there",
                step=STEP,
            )

    def _result(self, audio_path: Path | None) -> Decoded:
        video_end = self.sampler.end_t
        audio_end = self.sink.end_s if self.sink is not None and self.sink.samples else None
        duration = round(max(video_end or 0.0, audio_end or 0.0), 3)
        shots = self.tracker.finish(duration) if self.video is not None else []
        declared = self.container.duration / 1_000_000 if self.container.duration else None
        return Decoded(
            shots=shots,
            frames_sampled=self.sampler.count,
            duration_s=duration,
            declared_duration_s=round(declared, 3) if declared else None,
            audio_path=audio_path,
            audio=self.audio_choice,
            subtitles=self.subtitles.detach(),
            audio_language=self.audio.metadata.get("language") if self.audio else None,
            video_end_s=round(video_end, 3) if video_end is not None else None,
            audio_end_s=round(audio_end, 3) if audio_end is not None else None,
            decode_errors=self.errors,
            packets=self.packets,
            timings={"shots_s": round(self.tracker.seconds_in_shots, 3)},
        )


# --------------------------------------------------------------------------- honesty


def _clock(seconds: float) -> str:
    s = round(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def integrity_notices(decoded: Decoded) -> list[Notice]:
    """Notices for a file that holds less than it declares, or that decodes with errors.

    Raises PermanentStepError when nothing at all could be decoded.
    """
    if decoded.duration_s <= 0:
        raise PermanentStepError(
            "no video frame or audio sample could be decoded from the file", step=STEP
        )
    notices = []
    declared = decoded.declared_duration_s
    if declared and declared - decoded.duration_s > max(
        TRUNCATED_MIN_SECONDS, TRUNCATED_MIN_SHARE * declared
    ):
        notices.append(
            Notice(
                code="truncated",
                message=f"The file declares {_clock(declared)} but its content stops at "
                f"{_clock(decoded.duration_s)}: it is cut short (an incomplete upload or "
                f"download?). This brief covers only the first {_clock(decoded.duration_s)}.",
            )
        )
    if decoded.decode_errors >= max(DECODE_ERRORS_MIN, DECODE_ERRORS_MIN_SHARE * decoded.packets):
        notices.append(
            Notice(
                code="decode_errors",
                message=f"{decoded.decode_errors} of {decoded.packets} packets could not be "
                "decoded and were skipped: parts of the picture or sound may be missing.",
            )
        )
    return notices


def clamp_segments(segments: list[Segment], duration: float) -> list[Segment]:
    """Segments inside [0, duration] (a decoder may stamp a little past the end)."""
    out = []
    for s in segments:
        start = min(max(0.0, s.start), duration)
        end = min(max(start, s.end), duration)
        out.append(
            s
            if (start, end) == (s.start, s.end)
            else s.model_copy(update={"start": start, "end": end})
        )
    return out
