"""Which model VIDBRIEF_ASR_MODEL names, and the bundled base model's integrity check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import asr_models
from pipeline.asr_models import (
    BASE_MODEL_BIN_SHA256,
    ModelIntegrityError,
    bundled_base_dir,
    resolve,
    transformers_model,
)


@pytest.fixture(autouse=True)
def _fresh_cache():
    bundled_base_dir.cache_clear()
    yield
    bundled_base_dir.cache_clear()


def test_the_default_is_the_bundled_multilingual_base_joined_once(tmp_path: Path):
    choice = resolve(None, tmp_path)
    assert (choice.name, choice.offline) == ("base", True)
    folder = Path(choice.source)
    assert folder.parent == tmp_path and BASE_MODEL_BIN_SHA256[:12] in folder.name
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]
    assert '"lang_ids"' in (folder / "config.json").read_text()  # multilingual
    stamp = (folder / "model.bin").stat().st_mtime_ns
    bundled_base_dir.cache_clear()
    assert resolve("base", tmp_path).source == choice.source
    assert (folder / "model.bin").stat().st_mtime_ns == stamp, "joined once, then reused"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".joining-")]


def test_other_names_and_paths(tmp_path: Path):
    tiny = resolve("tiny.en", tmp_path)
    assert tiny.name == "tiny.en" and (Path(tiny.source) / "model.bin").is_file()
    assert resolve(str(tmp_path), tmp_path).source == str(tmp_path.resolve())
    assert resolve("large-v3", tmp_path) == asr_models.ModelChoice("large-v3", "large-v3", False)
    assert transformers_model("small", tmp_path) == "openai/whisper-small"
    assert transformers_model("openai/whisper-large-v3", tmp_path) == "openai/whisper-large-v3"
    assert transformers_model(str(tmp_path), tmp_path) == str(tmp_path.resolve())


def test_parts_that_do_not_join_into_the_expected_file_are_refused(tmp_path: Path, monkeypatch):
    real1, _ = asr_models._part_dirs()
    fake1, fake2 = tmp_path / "p1", tmp_path / "p2"
    fake1.mkdir()
    fake2.mkdir()
    for name in asr_models.BASE_SIDE_FILES_SHA256:
        shutil.copyfile(real1 / name, fake1 / name)
    (fake1 / "model.bin.part1").write_bytes(b"not a model")
    (fake2 / "model.bin.part2").write_bytes(b"at all")
    monkeypatch.setattr(asr_models, "_part_dirs", lambda: (fake1, fake2))
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError, match="sha256"):
        resolve(None, cache)
    assert list(cache.iterdir()) == [], "nothing half-joined is left to load"


def test_a_cached_model_changed_after_joining_is_refused(tmp_path: Path):
    folder = Path(resolve(None, tmp_path).source)
    with open(folder / "model.bin", "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    bundled_base_dir.cache_clear()
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        resolve(None, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_the_torch_backend_runs_the_same_bundled_model_offline(tmp_path: Path):
    """The CTranslate2 base converted once to transformers: German detected and transcribed."""
    import numpy as np

    from ingest.settings import Settings
    from pipeline import speech

    try:
        from tests.media import speech_samples
    except ImportError:
        from media import speech_samples

    text = "Guten Morgen und herzlich willkommen. Der Zug fährt um neun Uhr nach Hamburg."
    said = speech_samples(text, 7.0, voice="de")
    audio = np.interp(np.arange(0, len(said), 22_050 / 16_000), np.arange(len(said)), said)
    settings = Settings(
        _env_file=None, device="cpu", asr_backend="transformers", model_cache_dir=tmp_path
    )  # type: ignore[call-arg]
    result = speech.transcribe(audio.astype(np.float32), settings, "cpu", threads=2)
    folder = Path(result.model)
    assert folder.parent == tmp_path and (folder / "model.safetensors").is_file()
    assert result.backend == "transformers" and result.language == "de"
    heard = " ".join(s.text for s in result.segments).lower()
    found = [w for w in ("guten", "morgen", "willkommen", "zug", "hamburg") if w in heard]
    assert len(found) >= 4, heard
    assert all(0 <= s.start <= s.end <= 7.0 for s in result.segments)
    again = transformers_model(None, tmp_path)
    assert again == str(folder), "converted once, then reused"
    speech._MODELS.pop(("transformers", str(folder), "cpu"), None)  # 300 MB of fp32 weights
