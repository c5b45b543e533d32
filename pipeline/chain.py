"""The one declaration of the chain: step names, functions, default Ray resources.

Each step function has the form ``fn(ctx, *earlier_outputs) -> output``: it receives the
outputs of all earlier steps in order (download gets none, report gets media, analysis and
brief). Outputs are small pydantic models (paths and metadata, never blobs).

The bridge reads :data:`CHAIN` and calls :func:`run_step`; it never imports a step module.
``VIDBRIEF_STEP_MODE=synthetic`` swaps only the bodies (a sleep that holds the same
resources), so the chain, its resources and its placement stay exactly the same.

Outputs are kept by (job, step, version) in ``<work_dir>/<job_id>/<step>/output.json.zst``: a step
asked again (a retry, a restarted bridge) returns the kept output instead of running, as long as
the files it names still exist. Bump a step's ``version`` when its output changes meaning.

Synthetic failures, for tests and benchmarks only: a job URL whose fragment holds
``vidbrief-fail=<step>:permanent`` fails that step every time; ``vidbrief-fail=<step>:retryable:N``
fails it with a retryable error on attempts 1..N (default N=1), then succeeds.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel

from ingest.errors import PermanentStepError, RetryableStepError
from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP
from ingest.settings import Settings
from pipeline import artefacts
from pipeline.context import JobContext

#: Custom Ray resource a node offers per concurrent download (``ray start --resources``).
DOWNLOAD_SLOT = "vidbrief_download"
#: Custom Ray resource marking nodes that can write the reports location.
REPORT_NODE = "vidbrief_report"


@dataclass(frozen=True)
class StepSpec:
    """One step of the chain."""

    name: str
    target: str  # "module:function", imported lazily where the step runs
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    #: Must run on the node that ran ``download`` (the video lives on its disk).
    pinned_to_download: bool = False
    #: Part of the cache key of the step's output: bump it when the output changes meaning.
    version: int = 1

    def function(self) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


CHAIN: tuple[StepSpec, ...] = (
    StepSpec(DOWNLOAD_STEP, "pipeline.download:run", num_cpus=0.25, resources={DOWNLOAD_SLOT: 1}),
    # num_gpus is set by the bridge: 1 where the cluster has GPUs, else CPU only.
    StepSpec(ANALYSE_STEP, "pipeline.analyse:run", num_cpus=1, pinned_to_download=True),
    StepSpec(BRIEF_STEP, "pipeline.brief:run", num_cpus=0.1),
    StepSpec(REPORT_STEP, "pipeline.report:run", num_cpus=1, resources={REPORT_NODE: 0.01}),
)
STEPS: dict[str, StepSpec] = {s.name: s for s in CHAIN}


OUTPUT_FILE = "output.json.zst"  # zstd-compressed JSON (pipeline.artefacts)
#: Key in a job URL's fragment that injects a synthetic failure (synthetic mode only).
FAIL_MARKER = "vidbrief-fail"


def synthetic_output(step: str, ctx: JobContext) -> dict[str, Any]:
    """What a synthetic step returns: enough for the next steps and the result."""
    return {"synthetic": True, "step": step, "job_id": ctx.job_id}


def run_step(step: str, ctx: JobContext, *earlier: Any) -> Any:
    """Run one step for one job: its kept output, else the real function (or a sleep)."""
    kept = load_output(step, ctx)
    return kept if kept is not None else compute_step(step, ctx, *earlier)


def compute_step(step: str, ctx: JobContext, *earlier: Any) -> Any:
    """Run one step for one job and keep its output (the caller checked for a kept one)."""
    output = _compute(step, ctx, *earlier)
    save_output(step, ctx, output)
    return output


def _compute(step: str, ctx: JobContext, *earlier: Any) -> Any:
    if ctx.settings.step_mode == "synthetic":
        _inject_failure(step, ctx)
        time.sleep(synthetic_duration(ctx.settings, ctx.job_id, step))
        return synthetic_output(step, ctx)
    return STEPS[step].function()(ctx, *earlier)


#: Bits of the (job, step) digest that make the jitter draw.
_JITTER_BITS = 64


def synthetic_duration(settings: Settings, job_id: str, step: str) -> float:
    """How long a synthetic step sleeps: base × (1 + jitter × u), u in [-1, 1] from (job, step).

    A digest, not ``hash()`` (salted per process), so every worker and the benchmark's lower
    bound get the same duration for the same job.
    """
    base, jitter = settings.step_seconds(step), settings.synthetic_jitter
    if not jitter or not base:
        return base
    digest = hashlib.blake2b(f"{job_id}\x00{step}".encode(), digest_size=_JITTER_BITS // 8)
    u = 2 * int.from_bytes(digest.digest(), "big") / (2**_JITTER_BITS - 1) - 1
    return max(0.0, base * (1 + jitter * u))


def _inject_failure(step: str, ctx: JobContext) -> None:
    for marker in parse_qs(urlsplit(ctx.request.url).fragment).get(FAIL_MARKER, []):
        name, _, rest = marker.partition(":")
        kind, _, times = rest.partition(":")
        if name != step:
            continue
        if kind == "permanent":
            raise PermanentStepError(f"synthetic permanent failure of {step}", step=step)
        if kind == "retryable" and ctx.attempt <= int(times or 1):
            raise RetryableStepError(
                f"synthetic retryable failure of {step} (attempt {ctx.attempt})", step=step
            )


# --- kept outputs -------------------------------------------------------------------------


def _output_key(step: str, ctx: JobContext) -> dict[str, Any]:
    return {
        "job_id": ctx.job_id,
        "step": step,
        "version": STEPS[step].version,
        "mode": ctx.settings.step_mode,
    }


def save_output(step: str, ctx: JobContext, output: Any) -> None:
    """Keep a step's output next to its artefacts (written atomically: whole or absent)."""
    if isinstance(output, BaseModel):
        kind = f"{type(output).__module__}:{type(output).__qualname__}"
        value = output.model_dump(mode="json")
    else:
        kind, value = "json", output
    doc = {"key": _output_key(step, ctx), "type": kind, "value": value}
    # Not fsynced: a kept output is a cache. After a power cut a torn or empty file fails to
    # load, and the step runs again; an fsync per step would cost more than that rare rerun.
    # The path, not ctx.step_dir: the write makes the folder, one mkdir instead of two.
    artefacts.save_json(_output_path(step, ctx), doc, durable=False)


def _output_path(step: str, ctx: JobContext) -> Path:
    return ctx.workdir / step / OUTPUT_FILE


def load_output(step: str, ctx: JobContext) -> Any | None:
    """A kept output of this (job, step, version) whose files still exist, else None."""
    try:
        doc = artefacts.load_json(_output_path(step, ctx))
    except Exception:  # missing, truncated or corrupt: compute the step again
        return None
    if doc.get("key") != _output_key(step, ctx) or _missing_files(doc.get("value")):
        return None
    kind, value = doc.get("type"), doc.get("value")
    if kind == "json":
        return value
    module, _, name = str(kind).partition(":")
    return getattr(importlib.import_module(module), name).model_validate(value)


def _missing_files(value: Any) -> bool:
    """True when an output names a local file (a ``*path`` field) that is gone."""
    if isinstance(value, dict):
        for key, item in value.items():
            gone = isinstance(item, str) and key.endswith("path") and Path(item).is_absolute()
            if (gone and not Path(item).exists()) or _missing_files(item):
                return True
    elif isinstance(value, list):
        return any(_missing_files(item) for item in value)
    return False
