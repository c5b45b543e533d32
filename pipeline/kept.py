"""The artefact store: kept step outputs that any node can read (``VIDBRIEF_ARTEFACTS_URL``).

One entry per kept output, a folder named by its step and key (:mod:`pipeline.keys`)::

    <artefacts_url>/analyse/<digest>/output.json.zst   the output, zstd JSON, written last
                                    /shot_0000.jpg …    files the output names (keyframes)
                                    /used               rewritten on every reuse (eviction)

The store is a path or any fsspec URL (:mod:`pipeline.storage`: each file written whole or not
at all). An entry whose ``output.json.zst`` is missing is incomplete and never read; the output
is written after its files, so a reader that finds it finds them too. Outputs are small (an
analysis is its transcript, shot list and keyframes; a brief is text): the videos never come
here, they stay in the node-local work folders.

**Eviction** (:meth:`KeptStore.evict`, run by the bridge and after ``run-local``): entries
unused for ``VIDBRIEF_ARTEFACTS_MAX_AGE_SECONDS`` go; then, while the store is larger than
``VIDBRIEF_ARTEFACTS_MAX_MB``, the least recently used go — except entries used in the last
:data:`EVICT_MIN_IDLE_S`, which a running job may be reading.

A kept output is a cache: every failure to read one is a miss (logged when it is not simply
absent), every failure to write one a warning, never a failed job.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ingest.errors import ConfigError, StepError
from ingest.settings import Settings
from pipeline import artefacts, models, storage
from pipeline.keys import StepKey

log = logging.getLogger(__name__)

OUTPUT_FILE = "output.json.zst"
USED_FILE = "used"
#: An entry used this recently is never evicted for size: a job may be reading its files.
EVICT_MIN_IDLE_S = 600.0
MIB = 1024 * 1024
#: Output types a stored document may name: only the steps' own models are ever built.
MODELS_MODULE = models.__name__


# --- documents --------------------------------------------------------------------------------


def encode(key: StepKey, output: Any) -> dict[str, Any]:
    """A kept output as a JSON document: what produced it, its type, its value."""
    if isinstance(output, BaseModel):
        kind = f"{type(output).__module__}:{type(output).__qualname__}"
        value = output.model_dump(mode="json")
    else:
        kind, value = "json", output
    return {"key": dict(key.fields), "type": kind, "value": value}


def decode(doc: Any, key: StepKey) -> Any | None:
    """The output in ``doc`` if ``key`` produced it, else None."""
    if not isinstance(doc, dict) or doc.get("key") != dict(key.fields):
        return None
    kind, value = doc.get("type"), doc.get("value")
    if kind == "json":
        return value
    module, _, name = str(kind).partition(":")
    model = getattr(models, name, None) if module == MODELS_MODULE else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        log.warning("kept output of type %r ignored: not a step output", kind)
        return None
    return model.model_validate(value)


def to_bytes(doc: Mapping[str, Any]) -> bytes:
    return artefacts.compress(artefacts.to_json_bytes(dict(doc)))


def from_bytes(data: bytes) -> Any:
    if data.startswith(artefacts.ZSTD_MAGIC):
        data = artefacts.decompress(data)
    return json.loads(data)


# --- the store --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One kept output in the store, as eviction sees it."""

    path: str  # relative to the store: <step>/<digest>
    bytes: int
    used_at: float


@dataclass(frozen=True)
class KeptStore:
    """The artefact store at ``base_url`` (a path or an fsspec URL)."""

    base_url: str
    storage_options: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, settings: Settings) -> KeptStore:
        url = settings.artefacts_location
        return cls(url, storage.settings_options(settings, url) or None)

    # -- entries ----------------------------------------------------------------------------

    def load(self, key: StepKey) -> Any | None:
        """The kept output of ``key`` (its use recorded), or None."""
        data = self._read(f"{_entry(key)}/{OUTPUT_FILE}")
        if data is None:
            return None
        try:
            output = decode(from_bytes(data), key)
        except Exception as e:  # torn (zstd), corrupt (JSON), of a shape no longer valid
            log.warning("kept %s output %s unreadable, ignored: %s", key.step, key.digest, e)
            return None
        if output is not None:
            self.touch(key)
        return output

    def save(self, key: StepKey, output: Any, files: Mapping[str, Path] | None = None) -> bool:
        """Keep ``output`` and the files it names (by name in the entry); False if it failed."""
        entry = _entry(key)
        try:
            for name, path in (files or {}).items():
                self._write(f"{entry}/{_plain(name)}", Path(path).read_bytes())
            # Its own time is its first use (eviction): no `used` file until it is reused.
            self._write(f"{entry}/{OUTPUT_FILE}", to_bytes(encode(key, output)))
        except (OSError, ConfigError, StepError, ValueError) as e:
            log.warning("kept %s output %s not stored: %s", key.step, key.digest, e)
            return False
        return True

    def read_file(self, key: StepKey, name: str) -> bytes | None:
        """A file of ``key``'s entry (a keyframe), or None."""
        return self._read(f"{_entry(key)}/{_plain(name)}")

    def touch(self, key: StepKey) -> None:
        """Record a use of the entry now (eviction goes by it)."""
        try:
            self._write(f"{_entry(key)}/{USED_FILE}", b"")
        except (OSError, ConfigError, StepError) as e:
            log.warning("kept %s output %s: use not recorded: %s", key.step, key.digest, e)

    # -- eviction ---------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every entry, complete or not, with its size and last use."""
        fs, root = storage.filesystem(self.base_url, self.storage_options)
        try:
            listing = fs.find(root, detail=True)
        except FileNotFoundError:
            return []
        sizes: dict[str, int] = defaultdict(int)
        times: dict[str, list[float]] = defaultdict(list)
        used: dict[str, float] = {}
        root = root.rstrip("/")
        for path, info in listing.items():
            parts = posixpath.relpath(_posix(path), _posix(root)).split("/")
            if len(parts) < 3:
                continue  # not inside an entry
            entry, mtime = "/".join(parts[:2]), _mtime(info)
            sizes[entry] += int(info.get("size") or 0)
            times[entry].append(mtime)
            if parts[2] == USED_FILE:
                used[entry] = mtime
        return [Entry(e, sizes[e], used.get(e, max(times[e]))) for e in sizes]

    def evict(self, max_bytes: float, max_age_s: float, *, now: float | None = None) -> list[Entry]:
        """Remove entries unused for ``max_age_s``, then the least recently used while the
        store holds more than ``max_bytes`` (never one used in the last EVICT_MIN_IDLE_S)."""
        now = time.time() if now is None else now
        entries = sorted(self.entries(), key=lambda e: e.used_at)
        gone = [e for e in entries if now - e.used_at > max_age_s]
        total = sum(e.bytes for e in entries) - sum(e.bytes for e in gone)
        for entry in entries:
            if total <= max_bytes or now - entry.used_at < EVICT_MIN_IDLE_S:
                break
            if entry not in gone:
                gone.append(entry)
                total -= entry.bytes
        self._remove(e.path for e in gone)
        if gone:
            freed = sum(e.bytes for e in gone) / MIB
            log.info("artefact store: %d entries evicted (%.1f MiB)", len(gone), freed)
        return gone

    def evict_as_configured(self, settings: Settings) -> list[Entry]:
        return self.evict(settings.artefacts_max_mb * MIB, settings.artefacts_max_age_seconds)

    # -- bytes ------------------------------------------------------------------------------

    def _read(self, relpath: str) -> bytes | None:
        url = storage.public_url(self.base_url, relpath)
        try:
            return storage.read_bytes(url, self.storage_options)
        except FileNotFoundError:
            return None
        except (OSError, ConfigError, StepError) as e:  # unreachable: a miss, said once here
            log.warning("artefact store: %s not read: %s", relpath, e)
            return None

    def _write(self, relpath: str, data: bytes) -> None:
        if storage.is_local(self.base_url):
            # Not fsynced: a kept output is a cache; a torn one fails to load and is made again.
            path = Path(storage.public_url(self.base_url, relpath))
            storage.write_local(path, data, durable=False)
        else:
            storage.write_bytes(self.base_url, relpath, data, self.storage_options)

    def _remove(self, relpaths: Iterable[str]) -> None:
        fs, root = storage.filesystem(self.base_url, self.storage_options)
        for relpath in relpaths:
            try:
                fs.rm(posixpath.join(_posix(root), relpath), recursive=True)
            except FileNotFoundError:
                pass  # gone already (another evicting process)


def _entry(key: StepKey) -> str:
    return f"{key.step}/{key.digest}"


def _plain(name: str) -> str:
    """A file name inside an entry: no folders, nothing hidden."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"kept file name {name!r} is not a plain file name")
    return name


def _posix(path: str) -> str:
    return path.replace("\\", "/")


def _mtime(info: Mapping[str, Any]) -> float:
    """A listing entry's modification time, whatever the filesystem calls it."""
    for field in ("mtime", "LastModified", "last_modified", "created", "updated"):
        value = info.get(field)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                continue
    return 0.0
