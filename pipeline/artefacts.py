"""Step artefacts (transcripts, analysis JSON) stored as zstd-compressed JSON, ``*.json.zst``.

Transcripts and shot lists are repetitive text: zstd at its default level 3 shrinks them several
times at hundreds of MB/s, so compressing costs far less than the disk and the transfer between
nodes it saves. Files are written to a temporary name and renamed (a retry never reads half a
file). :func:`load_json` also reads plain JSON, so outputs written before the switch still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from pipeline.storage import write_local

DEFAULT_LEVEL = 3  # zstd's own default: most of the gain of level 19 at a fraction of the time
SUFFIX = ".json.zst"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first four bytes of every zstd frame

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Sizes:
    """Bytes of an artefact as JSON and as stored."""

    raw_bytes: int
    compressed_bytes: int

    @property
    def ratio(self) -> float:
        """How many times smaller the stored file is."""
        return self.raw_bytes / self.compressed_bytes if self.compressed_bytes else 0.0


def to_json_bytes(model_or_obj: Any) -> bytes:
    """Compact UTF-8 JSON of a pydantic model or a JSON-able object."""
    if isinstance(model_or_obj, BaseModel):
        return model_or_obj.model_dump_json().encode()
    return json.dumps(model_or_obj, ensure_ascii=False, separators=(",", ":")).encode()


def compress(data: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """One zstd frame that records its content size (so readers can size their buffer)."""
    import zstandard

    return zstandard.ZstdCompressor(level=level).compress(data)


def decompress(data: bytes) -> bytes:
    """The content of zstd frames, also of frames that do not record their size."""
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def save_json(
    path: Path | str, model_or_obj: Any, level: int = DEFAULT_LEVEL, *, durable: bool = True
) -> Sizes:
    """Write ``model_or_obj`` as zstd-compressed JSON to ``path`` (``*.json.zst``).

    ``durable=False`` skips the fsync (:func:`pipeline.storage.write_local`): the write stays
    atomic, but a power cut may leave a torn file, which :func:`load_json` then fails to read.
    """
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise ValueError(f"artefacts: name {path.name!r} must end in {SUFFIX} (it is compressed)")
    raw = to_json_bytes(model_or_obj)
    data = compress(raw, level)
    write_local(path, data, durable=durable)
    return Sizes(len(raw), len(data))


def load_json(path: Path | str, model: type[M] | None = None) -> Any:
    """The object in a ``*.json.zst`` (or plain JSON) file, validated as ``model`` if given."""
    data = Path(path).read_bytes()
    if data.startswith(ZSTD_MAGIC):
        data = decompress(data)
    return model.model_validate_json(data) if model else json.loads(data)


def sizes(model_or_obj: Any, level: int = DEFAULT_LEVEL) -> Sizes:
    """Bytes of ``model_or_obj`` as JSON and as zstd at ``level``, nothing written."""
    raw = to_json_bytes(model_or_obj)
    return Sizes(len(raw), len(compress(raw, level)))
