"""pipeline.artefacts: zstd-compressed JSON of step outputs, real zstandard, sizes printed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import zstandard

from pipeline import artefacts
from pipeline.models import Analysis, Segment, Shot

VOCABULARY = (
    "the a of and to in is that it for on with as this we was are you they be at have from "
    "panel solar silicon wafer cell cells factory robot robots glass string strings test light "
    "temperature voltage current module line worker workers quality machine saw wire diamond "
    "each every then next after before first second finally here now so but not only also very "
    "cut cuts doped solder laminate frame pack ship customer customers energy power efficiency "
    "percent hour hours minute minutes thousand hundred small large thin thick clean room air"
)
SEGMENTS = 400  # about twenty minutes of speech
SEGMENT_S = 3.0


def transcript_like(seed: int = 7) -> Analysis:
    """An analysis as the step writes it: hundreds of timed segments of plain speech."""
    rng = random.Random(seed)
    words = VOCABULARY.split()
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf-like, as speech is
    segments = [
        Segment(
            start=round(i * SEGMENT_S + rng.random(), 3),
            end=round((i + 1) * SEGMENT_S + rng.random(), 3),
            text=" ".join(rng.choices(words, weights, k=rng.randint(6, 16))).capitalize() + ".",
        )
        for i in range(SEGMENTS)
    ]
    shots = [
        Shot(index=i, start=i * 20.0, end=(i + 1) * 20.0, keyframe_path=f"shots/{i:04d}.jpg",
             keyframe_time=i * 20.0 + 10)
        for i in range(SEGMENTS * 3 // 20)
    ]  # fmt: skip
    return Analysis(
        duration_s=SEGMENTS * SEGMENT_S,
        frames_sampled=2400,
        sample_fps=2.0,
        shots=shots,
        transcript=segments,
        transcript_source="faster-whisper",
        language="en",
        asr_model="tiny.en",
    )


def test_model_round_trip_is_real_zstd_and_smaller(tmp_path: Path) -> None:
    analysis = transcript_like()
    path = tmp_path / "analyse" / "output.json.zst"
    sizes = artefacts.save_json(path, analysis)
    stored = path.read_bytes()
    assert stored.startswith(artefacts.ZSTD_MAGIC)
    params = zstandard.get_frame_parameters(stored)
    assert params.content_size == sizes.raw_bytes == len(analysis.model_dump_json().encode())
    assert sizes.compressed_bytes == len(stored) < sizes.raw_bytes / 2
    assert artefacts.load_json(path, Analysis) == analysis
    print(
        f"\ntranscript-like analysis JSON: {sizes.raw_bytes} B raw -> {sizes.compressed_bytes} B "
        f"zstd level {artefacts.DEFAULT_LEVEL} ({sizes.ratio:.1f}x smaller)"
    )


def test_plain_objects_and_unicode(tmp_path: Path) -> None:
    obj = {"summary": "工厂参观 — résumé", "points": [1, 2.5, None, True], "n": {"x": []}}
    path = tmp_path / "brief.json.zst"
    artefacts.save_json(path, obj)
    assert artefacts.load_json(path) == obj
    assert zstandard.ZstdDecompressor().decompress(path.read_bytes()).decode() == json.dumps(
        obj, ensure_ascii=False, separators=(",", ":")
    )


def test_reads_frames_without_size_and_plain_json(tmp_path: Path) -> None:
    # Written by a streaming compressor (the zstd CLI in a pipe): no content size in the header.
    streamed = tmp_path / "streamed.json.zst"
    with streamed.open("wb") as f, zstandard.ZstdCompressor().stream_writer(f) as w:
        w.write(b'{"ok": true}')
    assert artefacts.load_json(streamed) == {"ok": True}
    legacy = tmp_path / "output.json"  # outputs written before the switch to zstd
    legacy.write_text('{"ok": 1}')
    assert artefacts.load_json(legacy) == {"ok": 1}


def test_name_must_say_compressed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.json\.zst"):
        artefacts.save_json(tmp_path / "output.json", {"a": 1})


def test_sizes_by_level() -> None:
    analysis = transcript_like()
    by_level = {level: artefacts.sizes(analysis, level) for level in (1, 3, 19)}
    assert len({s.raw_bytes for s in by_level.values()}) == 1
    assert by_level[19].compressed_bytes <= by_level[3].compressed_bytes
    assert all(s.compressed_bytes < s.raw_bytes for s in by_level.values())
    for level, s in by_level.items():
        print(f"\nlevel {level:2d}: {s.raw_bytes} B -> {s.compressed_bytes} B ({s.ratio:.1f}x)")
