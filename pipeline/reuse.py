"""Which kept output serves a step, and keeping what a step made.

    download   the video stays on its node: <work_dir>/<job>/download/output.json.zst holds its
               Media under the download's key (pipeline.keys). The same Media (title, size,
               sha256 …) also goes to the artefact store as the source record a later job of
               the same URL looks up.
    analyse    the artefact store (pipeline.kept), with its keyframes, under the analysis's key
    brief      the artefact store, under the brief's key
    report     never kept

A kept download is used only after the job's URL passes the address policy again (a policy or
a DNS answer may have changed since). A folder of a step that is computed is emptied first, so
files of another request (a job_id used again with another URL) are never picked up.

:func:`find_analysed` is the look-up before a job starts (the bridge at launch, ``run-local``):
the source record of the job's URL, then the analysis of that media with the job's analysis
settings; failing that, the latest analysis of the URL with these models in another language,
when that language could not have changed its transcript (:func:`serves_language`). When one
is kept (and the URL still passes), the job runs only brief and report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.errors import PermanentStepError, RetryableStepError, UnsafeURL
from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP
from ingest.settings import Settings
from ingest.urlsafety import AddressPolicy, UnresolvableHost
from pipeline import artefacts, storage
from pipeline.context import JobContext
from pipeline.kept import KeptStore, decode, encode
from pipeline.keyframes import keyframe_file
from pipeline.keys import StepKey, analysis_key, analysis_source_key, brief_key, download_key
from pipeline.languages import LANGUAGE_OVERRIDE_PROBABILITY, primary
from pipeline.models import Analysis, Media

log = logging.getLogger(__name__)

#: The kept download's document in its step folder (zstd JSON, pipeline.artefacts).
OUTPUT_FILE = "output.json.zst"
#: Steps whose folder in the work folder holds files of their own (emptied before they run).
LOCAL_STEPS = frozenset({DOWNLOAD_STEP, ANALYSE_STEP})
#: Where the report step puts keyframes fetched from the store (removed when it is done, so
#: only the nodes that downloaded a job hold files of it).
FETCHED_KEYFRAMES = "keyframes-fetched"


@dataclass(frozen=True)
class Found:
    """A step's output and where it came from."""

    output: Any
    #: Taken from the artefact store (another job's work, or an earlier attempt's), not made
    #: in this run; a download kept in the job's own folder does not count.
    reused: bool


# --- the address policy -----------------------------------------------------------------------


def check_source(url: str, settings: Settings) -> None:
    """The address policy on the job's URL, as the download step's error. Synthetic steps fetch
    nothing, so there a host that does not resolve (a test's) is no refusal."""
    try:
        AddressPolicy.create(allow_private=settings.allow_private_urls).check_url(url)
    except UnresolvableHost as e:
        if settings.step_mode == "synthetic":
            return
        cls = RetryableStepError if e.temporary else PermanentStepError
        raise cls(f"refused URL: {e}", step=DOWNLOAD_STEP) from e
    except UnsafeURL as e:
        raise PermanentStepError(f"refused URL: {e}", step=DOWNLOAD_STEP) from e


# --- keys of a job's steps --------------------------------------------------------------------


def key_of(step: str, ctx: JobContext, *earlier: Any) -> StepKey | None:
    """The key of ``step``'s output for this job, given the earlier steps' outputs."""
    request, settings = ctx.request, ctx.settings
    if step == DOWNLOAD_STEP:
        return download_key(request, settings)
    if step == ANALYSE_STEP:
        return analysis_key(request, settings, earlier[0])
    if step == BRIEF_STEP:
        return brief_key(request, settings, analysis_key(request, settings, earlier[0]))
    return None


# --- finding ----------------------------------------------------------------------------------


def find_kept(step: str, ctx: JobContext, *earlier: Any) -> Found | None:
    """The kept output that serves ``step`` for this job, or None (the step must run)."""
    key = key_of(step, ctx, *earlier)
    if key is None:
        return None
    if step == DOWNLOAD_STEP:
        output = load_local(ctx, key)
        if output is not None and ctx.settings.step_mode == "real":
            check_source(ctx.request.url, ctx.settings)
        return None if output is None else Found(output, reused=False)
    output = KeptStore.of(ctx.settings).load(key)
    return None if output is None else Found(output, reused=True)


def find_analysed(ctx: JobContext) -> dict[str, Any] | None:
    """The kept download record and analysis for this job's video, if both are kept.

    The URL is checked before anything is returned: a refusal raises PermanentStepError; a
    name that does not resolve just now returns None (the download will say so itself).
    """
    found = _exact_analysis(ctx) or _analysis_in_another_language(ctx)
    if found is None:
        return None
    try:
        check_source(ctx.request.url, ctx.settings)
    except RetryableStepError as e:
        log.info("job %s: kept analysis not used: %s", ctx.job_id, e)
        return None
    return found


def _exact_analysis(ctx: JobContext) -> dict[str, Any] | None:
    store = KeptStore.of(ctx.settings)
    media = store.load(download_key(ctx.request, ctx.settings))
    if media is None:
        return None
    analysis = store.load(analysis_key(ctx.request, ctx.settings, media))
    return None if analysis is None else {DOWNLOAD_STEP: media, ANALYSE_STEP: analysis}


def _analysis_in_another_language(ctx: JobContext) -> dict[str, Any] | None:
    store = KeptStore.of(ctx.settings)
    record = store.load(analysis_source_key(ctx.request, ctx.settings))
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
        return None
    analysis = store.load(StepKey(ANALYSE_STEP, record["key"]))
    if not isinstance(analysis, Analysis) or not serves_language(analysis, ctx.request.language):
        return None
    return {DOWNLOAD_STEP: Media.model_validate(record["media"]), ANALYSE_STEP: analysis}


def serves_language(analysis: Analysis, language: str | None) -> bool:
    """Whether analysing again with ``language`` as the spoken-language hint would give this
    transcript: its language is that one, or it was detected so surely that any hint would
    have been overruled (speech to text overrides a hint at LANGUAGE_OVERRIDE_PROBABILITY)."""
    if not analysis.transcript:
        return analysis.transcript_source == "none"  # no audio: the hint changes nothing
    if language is not None and primary(language) == primary(analysis.language):
        return True
    speech = analysis.transcript_source != "subtitles"  # subtitles are chosen by language
    sure = (analysis.language_probability or 0.0) >= LANGUAGE_OVERRIDE_PROBABILITY
    return speech and sure


# --- keeping ----------------------------------------------------------------------------------


def keep(step: str, ctx: JobContext, output: Any, *earlier: Any) -> None:
    """Keep what ``step`` made (best effort: a cache that fails to write is a warning)."""
    key = key_of(step, ctx, *earlier)
    if key is None:
        return
    store = KeptStore.of(ctx.settings)
    if step == DOWNLOAD_STEP:
        save_local(ctx, key, output)
        store.save(key, output)  # the source record: found by the URL, read on any node
    elif step == ANALYSE_STEP and isinstance(output, Analysis):
        stored, files = portable(output, ctx.workdir)
        if store.save(key, stored, files) and isinstance(earlier[0], Media):
            # Found by URL too, for a job in another language (_analysis_in_another_language).
            record = {"key": dict(key.fields), "media": earlier[0].model_dump(mode="json")}
            store.save(analysis_source_key(ctx.request, ctx.settings), record)
    else:
        store.save(key, output)


def portable(analysis: Analysis, workdir: Path) -> tuple[Analysis, dict[str, Path]]:
    """The analysis with keyframes named relative to its store entry, and the files to copy."""
    files: dict[str, Path] = {}
    shots = []
    for shot in analysis.shots:
        source = keyframe_file(shot, workdir)
        if source is not None:
            files[source.name] = source
        shots.append(shot.model_copy(update={"keyframe_path": Path(shot.keyframe_path).name}))
    return analysis.model_copy(update={"shots": shots}), files


def clear_step_folder(step: str, ctx: JobContext) -> None:
    """Empty a step's folder before it runs: nothing of an earlier request is picked up."""
    if step in LOCAL_STEPS:
        shutil.rmtree(ctx.workdir / step, ignore_errors=True)


def drop_fetched(step: str, ctx: JobContext) -> None:
    """After the report: the keyframes it fetched go (and the job's folder, if that was all)."""
    if step == REPORT_STEP:
        shutil.rmtree(ctx.workdir / FETCHED_KEYFRAMES, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: the job's own files live here
            ctx.workdir.rmdir()


# --- the report's inputs ----------------------------------------------------------------------


def local_inputs(step: str, ctx: JobContext, earlier: tuple[Any, ...]) -> tuple[Any, ...]:
    """The report reads keyframes from the job's folder: fetch the ones only the store has."""
    if step != REPORT_STEP or len(earlier) < 2 or not isinstance(earlier[1], Analysis):
        return earlier
    media, analysis, *rest = earlier
    return (media, local_keyframes(ctx, media, analysis), *rest)


def local_keyframes(ctx: JobContext, media: Any, analysis: Analysis) -> Analysis:
    """The analysis with every keyframe in this job's folder on this node (copied from its
    store entry, into :data:`FETCHED_KEYFRAMES`, where the analysis ran elsewhere); a keyframe
    found nowhere stays missing."""
    missing = [s for s in analysis.shots if keyframe_file(s, ctx.workdir) is None]
    if not missing:
        return analysis
    key = analysis_key(ctx.request, ctx.settings, media)
    store, folder = KeptStore.of(ctx.settings), ctx.workdir / FETCHED_KEYFRAMES
    fetched = {}
    for shot in missing:
        name = Path(shot.keyframe_path).name
        data = store.read_file(key, name) if name else None
        if data is not None:
            storage.write_local(folder / name, data, durable=False)
            fetched[shot.index] = str(folder / name)
    shots = [
        s.model_copy(update={"keyframe_path": fetched[s.index]}) if s.index in fetched else s
        for s in analysis.shots
    ]
    return analysis.model_copy(update={"shots": shots})


# --- the download's own document --------------------------------------------------------------


def _local_path(ctx: JobContext) -> Path:
    return ctx.workdir / DOWNLOAD_STEP / OUTPUT_FILE


def save_local(ctx: JobContext, key: StepKey, output: Any) -> None:
    """Keep the download's output in its folder (written whole or not at all, not fsynced:
    after a power cut a torn file fails to load and the video is downloaded again)."""
    artefacts.save_json(_local_path(ctx), encode(key, output), durable=False)


def load_local(ctx: JobContext, key: StepKey) -> Any | None:
    """The download kept in this job's folder for this key, if the files it names exist."""
    try:
        doc = artefacts.load_json(_local_path(ctx))
    except Exception:  # missing, truncated or corrupt: download again
        return None
    if isinstance(doc, dict) and _missing_files(doc.get("value")):
        return None
    try:
        return decode(doc, key)
    except ValueError:
        return None


def _missing_files(value: Any) -> bool:
    """True when an output names a local file (a ``*path`` field) that is gone."""
    if isinstance(value, dict):
        for name, item in value.items():
            gone = isinstance(item, str) and name.endswith("path") and os.path.isabs(item)
            if (gone and not Path(item).exists()) or _missing_files(item):
                return True
    elif isinstance(value, list):
        return any(_missing_files(item) for item in value)
    return False
