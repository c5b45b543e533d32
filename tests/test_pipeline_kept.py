"""pipeline.kept: the artefact store on a local path and on a real S3 server (moto): outputs with
their files, what produced them checked on load, only step outputs built, eviction by age and
by size (least recently used first, never what a job may be reading)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from s3_server import S3Server

from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline.kept import EVICT_MIN_IDLE_S, MIB, KeptStore, encode
from pipeline.keys import StepKey
from pipeline.models import Analysis, Shot

DAY_S = 24 * 3600.0
FILE_BYTES = 100_000


def key(name: str, step: str = "analyse") -> StepKey:
    return StepKey(step, {"step": step, "name": name})


def analysis(n_shots: int = 2) -> Analysis:
    shots = [
        Shot(index=i, start=i, end=i + 1, keyframe_path=f"shot_{i:04d}.jpg", keyframe_time=i)
        for i in range(n_shots)
    ]
    return Analysis(
        duration_s=2, frames_sampled=4, sample_fps=2, shots=shots, transcript=[],
        transcript_source="none",
    )  # fmt: skip


def keyframes(tmp_path: Path, n: int = 2) -> dict[str, Path]:
    files = {}
    for i in range(n):
        path = tmp_path / "frames" / f"shot_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * FILE_BYTES)
        files[path.name] = path
    return files


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> KeptStore:
    if request.param == "local":
        return KeptStore(str(tmp_path / "artefacts"))
    request.getfixturevalue("s3")
    bucket = request.getfixturevalue("bucket")
    return KeptStore(f"s3://{bucket}/artefacts")


@pytest.mark.integration
def test_an_output_and_its_files_round_trip(store: KeptStore, tmp_path: Path) -> None:
    assert store.load(key("one")) is None
    assert store.save(key("one"), analysis(), keyframes(tmp_path))
    assert store.load(key("one")) == analysis()
    assert store.read_file(key("one"), "shot_0001.jpg") == bytes([1]) * FILE_BYTES
    assert store.read_file(key("one"), "shot_0009.jpg") is None
    assert store.load(key("two")) is None
    assert store.save(key("json", "brief"), {"synthetic": True})
    assert store.load(key("json", "brief")) == {"synthetic": True}


def test_a_document_of_other_fields_or_another_type_is_a_miss(tmp_path: Path) -> None:
    store = KeptStore(str(tmp_path / "artefacts"))
    store.save(key("one"), analysis())
    entry = tmp_path / "artefacts" / "analyse" / key("one").digest / "output.json.zst"
    other = StepKey("analyse", {"step": "analyse", "name": "another"})
    forged = encode(other, analysis())
    assert store.load(other) is None
    # A stored document may only name the steps' own models: nothing else is imported.
    from pipeline.kept import to_bytes

    for kind in ("os:system", "ingest.models:JobRequest", "pipeline.models:Notice2"):
        entry.write_bytes(to_bytes({**forged, "key": dict(key("one").fields), "type": kind}))
        assert store.load(key("one")) is None
    assert JobRequest  # the type a forged document named is a real one, and still refused


def test_an_unreachable_store_is_a_miss_and_a_failed_save_a_warning(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    store = KeptStore(str(blocked))
    assert store.load(key("one")) is None
    assert store.save(key("one"), analysis()) is False


def local_entry_used(store: KeptStore, k: StepKey, at: float) -> None:
    """As if the entry was written (a first use) or last reused at ``at``."""
    for path in (Path(store.base_url) / k.step / k.digest).iterdir():
        os.utime(path, (at, at))


def test_eviction_by_age_then_least_recently_used_past_the_size(tmp_path: Path) -> None:
    store = KeptStore(str(tmp_path / "artefacts"))
    now = time.time()
    last_used = {"fresh": now - 60, "week": now - 7 * DAY_S, "old": now - 40 * DAY_S}
    last_used |= {"day": now - DAY_S, "hour": now - 3600}
    for name, t in last_used.items():
        store.save(key(name), analysis(), keyframes(tmp_path / name))
        local_entry_used(store, key(name), t)
    size = sum(e.bytes for e in store.entries()) / len(last_used)

    # Older than 30 days: gone whatever the size.
    gone = store.evict(max_bytes=100 * MIB, max_age_s=30 * DAY_S, now=now)
    assert [e.path for e in gone] == [f"analyse/{key('old').digest}"]
    # Room for two and a half: the least recently used go first; "fresh" (1 minute) would be
    # kept even if the size asked for more.
    gone = store.evict(max_bytes=2.5 * size, max_age_s=30 * DAY_S, now=now)
    assert [e.path for e in gone] == [f"analyse/{key(n).digest}" for n in ("week", "day")]
    assert [store.load(key(n)) is not None for n in ("hour", "fresh")] == [True, True]
    gone = store.evict(max_bytes=0, max_age_s=30 * DAY_S, now=time.time())
    assert [e.path for e in gone] == []  # both used within EVICT_MIN_IDLE_S (the loads above)
    later = time.time() + EVICT_MIN_IDLE_S + 1
    assert len(store.evict(max_bytes=0, max_age_s=30 * DAY_S, now=later)) == 2
    assert store.entries() == []


def test_a_use_keeps_an_entry(tmp_path: Path) -> None:
    store = KeptStore(str(tmp_path / "artefacts"))
    now = time.time()
    for name in ("a", "b"):
        store.save(key(name), analysis())
        local_entry_used(store, key(name), now - 2 * DAY_S)
    assert store.load(key("a")) is not None  # a re-brief used it just now
    gone = store.evict(max_bytes=100 * MIB, max_age_s=DAY_S)
    assert [e.path for e in gone] == [f"analyse/{key('b').digest}"]


def test_an_incomplete_entry_is_evicted_by_its_files_age(tmp_path: Path) -> None:
    store = KeptStore(str(tmp_path / "artefacts"))
    folder = tmp_path / "artefacts" / "analyse" / "deadbeef"
    folder.mkdir(parents=True)
    (folder / "shot_0000.jpg").write_bytes(b"x" * 10)  # its writer died before the output
    old = time.time() - 2 * DAY_S
    os.utime(folder / "shot_0000.jpg", (old, old))
    assert [e.path for e in store.evict(100 * MIB, DAY_S)] == ["analyse/deadbeef"]
    assert not folder.exists()


@pytest.mark.integration
def test_eviction_on_s3(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    store = KeptStore(f"s3://{bucket}/artefacts")
    store.save(key("older"), analysis(), keyframes(tmp_path / "older"))
    time.sleep(1.1)  # S3 times have a second's resolution
    store.save(key("newer"), analysis(), keyframes(tmp_path / "newer"))
    entries = {e.path: e for e in store.entries()}
    assert len(entries) == 2 and all(e.bytes > 2 * FILE_BYTES for e in entries.values())
    later = time.time() + EVICT_MIN_IDLE_S + 5
    one = max(e.bytes for e in entries.values())
    gone = store.evict(max_bytes=one, max_age_s=30 * DAY_S, now=later)
    assert [e.path for e in gone] == [f"analyse/{key('older').digest}"]
    assert store.load(key("older")) is None and store.load(key("newer")) == analysis()
    assert len(store.evict(max_bytes=100 * MIB, max_age_s=60, now=later + 3600)) == 1
    assert store.entries() == []


def test_the_default_store_lies_beside_the_work_folder(tmp_path: Path) -> None:
    settings = Settings(work_dir=tmp_path / "work", _env_file=None)  # type: ignore[call-arg]
    assert settings.artefacts_location == str(tmp_path / "artefacts")
    other = settings.model_copy(update={"artefacts_url": "s3://b/kept"})
    assert other.artefacts_location == "s3://b/kept"
