"""Shot boundaries and keyframes from a stream of sampled frames, in bounded memory.

Cuts: each sampled frame is downscaled to 64×36 and reduced to a joint RGB histogram
(8×8×8 bins); a hard cut is where the total-variation distance between consecutive histograms
passes :data:`CUT_THRESHOLD` (a cut measures near 1, motion within a shot under 0.1). The
histograms are computed in batches on the analysis device (CUDA when present).

Keyframes: for the current shot only, a thinned sample of at most :data:`KEYFRAME_CANDIDATES`
larger frames is kept; when the shot ends, the one nearest its middle is written as a JPEG.
Memory is bounded by the batch and the candidates, whatever the length of the video.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models import Shot

HIST_SIZE_PX = (64, 36)  # (width, height) of the frames compared for cuts
HIST_BITS_PER_CHANNEL = 3  # 8 levels per channel: 512 joint bins
CUT_THRESHOLD = 0.5  # total-variation distance in [0, 1]
MIN_SHOT_SECONDS = 1.0  # a "cut" sooner than this after the last one is a flash, not a shot
BATCH_FRAMES = 64  # sampled frames per device batch (also bounds the pending keyframes)
KEYFRAME_CANDIDATES = 16  # larger frames kept per shot to choose its middle one
KEYFRAME_MAX_WIDTH_PX = 480
KEYFRAME_JPEG_QUALITY = 85


def keyframe_size(width: int, height: int) -> tuple[int, int]:
    """The size keyframes are kept at: at most KEYFRAME_MAX_WIDTH_PX wide, even numbers."""
    scale = min(1.0, KEYFRAME_MAX_WIDTH_PX / max(1, width))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def histograms(frames: Any, bits: int = HIST_BITS_PER_CHANNEL) -> Any:
    """Normalised joint RGB histograms of a (B, H, W, 3) uint8 tensor: (B, 2**(3*bits))."""
    import torch

    q = (frames >> (8 - bits)).long()
    index = (q[..., 0] << (2 * bits)) | (q[..., 1] << bits) | q[..., 2]
    flat = index.reshape(frames.shape[0], -1)
    hist = torch.zeros(frames.shape[0], 1 << (3 * bits), device=frames.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=hist.dtype))
    return hist / flat.shape[1]


def cut_distances(hists: Any, previous: Any | None) -> Any:
    """Total-variation distance of each histogram to the one before it (0 for the first)."""
    import torch

    before = torch.cat([hists[:1] if previous is None else previous[None], hists[:-1]])
    return 0.5 * (hists - before).abs().sum(dim=1)


class _MiddlePicker:
    """An evenly thinned sample of one shot's frames (at most ``capacity``)."""

    def __init__(self, capacity: int = KEYFRAME_CANDIDATES) -> None:
        self.capacity, self.stride, self.count = capacity, 1, 0
        self.kept: list[tuple[float, np.ndarray]] = []
        self.first_t = self.last_t = 0.0

    def offer(self, t: float, frame: np.ndarray) -> None:
        if self.count == 0:
            self.first_t = t
        self.last_t = t
        if self.count % self.stride == 0:
            self.kept.append((t, frame))
            if len(self.kept) > self.capacity:  # halve: keep every other, double the stride
                self.kept, self.stride = self.kept[::2], self.stride * 2
        self.count += 1

    def middle(self) -> tuple[float, np.ndarray]:
        target = (self.first_t + self.last_t) / 2
        return min(self.kept, key=lambda item: abs(item[0] - target))


@dataclass
class ShotTracker:
    """Feed sampled frames in time order; :meth:`finish` returns the shots with keyframes."""

    out_dir: Path
    device: str = "cpu"
    threshold: float = CUT_THRESHOLD
    seconds_in_shots: float = 0.0  # time spent here (the ``shots_s`` timing)
    _pending: list[tuple[float, np.ndarray, np.ndarray]] = field(default_factory=list)
    _previous: Any = None
    _shots: list[Shot] = field(default_factory=list)
    _start: float | None = None
    _picker: _MiddlePicker = field(default_factory=_MiddlePicker)

    def add(self, t: float, small_rgb: np.ndarray, key_rgb: np.ndarray) -> None:
        """One sampled frame: 64×36 RGB for the cut test, the keyframe-size RGB."""
        self._pending.append((t, small_rgb, key_rgb))
        if len(self._pending) >= BATCH_FRAMES:
            self._flush()

    def finish(self, end_time: float) -> list[Shot]:
        """Close the last shot at ``end_time``; all shots, in order."""
        self._flush()
        if self._start is not None:
            self._close_shot(max(end_time, self._picker.last_t))
        return self._shots

    def _flush(self) -> None:
        if not self._pending:
            return
        began = time.perf_counter()
        for (t, _, key), is_cut in zip(self._pending, self._cut_flags(), strict=True):
            if self._start is None:
                self._start = 0.0  # the first shot starts with the video, not its first sample
            elif is_cut and t - self._start >= MIN_SHOT_SECONDS:
                self._close_shot(t)
                self._start = t
            self._picker.offer(t, key)
        self._pending.clear()
        self.seconds_in_shots += time.perf_counter() - began

    def _cut_flags(self) -> list[bool]:
        import torch

        batch = torch.from_numpy(np.stack([small for _, small, _ in self._pending]))
        hists = histograms(batch.to(self.device))
        distances = cut_distances(hists, self._previous)
        self._previous = hists[-1]
        return (distances > self.threshold).tolist()

    def _close_shot(self, end: float) -> None:
        t, frame = self._picker.middle()
        path = self.out_dir / f"shot_{len(self._shots):04d}.jpg"
        _write_jpeg(path, frame)
        self._shots.append(
            Shot(
                index=len(self._shots),
                start=self._start or 0.0,
                end=end,
                keyframe_path=str(path),
                keyframe_time=t,
            )
        )
        self._picker = _MiddlePicker()


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, format="JPEG", quality=KEYFRAME_JPEG_QUALITY)
