"""The one declaration of the chain: step names, functions, default Ray resources.

Each step function has the form ``fn(ctx, *earlier_outputs) -> output``: it receives the
outputs of all earlier steps in order (download gets none, report gets media, analysis and
brief). Outputs are small pydantic models (paths and metadata, never blobs).

The bridge reads :data:`CHAIN` and calls :func:`run_step`; it never imports a step module.
``VIDBRIEF_STEP_MODE=synthetic`` swaps only the bodies (a sleep that holds the same
resources), so the chain, its resources and its placement stay exactly the same.

Outputs are kept by what produced them (:mod:`pipeline.keys`, :mod:`pipeline.reuse`): the
download in the job's folder on its node, the analysis and the brief in the artefact store that
every node reads (:mod:`pipeline.kept`). A step asked again — a retry, a restarted bridge, another
job of the same video — returns the kept output instead of running. The report is never kept.
Bump a step's version (``pipeline.keys.STEP_VERSIONS``) when its output changes meaning.

Synthetic failures, for tests and benchmarks only: a job URL whose fragment holds
``vidbrief-fail=<step>:permanent`` fails that step every time; ``vidbrief-fail=<step>:retryable:N``
fails it with a retryable error on attempts 1..N (default N=1), then succeeds.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ingest.errors import PermanentStepError, RetryableStepError
from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP
from ingest.settings import Settings
from pipeline import reuse
from pipeline.context import JobContext
from pipeline.keys import STEP_VERSIONS
from pipeline.reuse import Found, find_kept

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
    #: Part of the key of the step's output (pipeline.keys.STEP_VERSIONS).
    version: int = 1

    def function(self) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


CHAIN: tuple[StepSpec, ...] = (
    StepSpec(
        DOWNLOAD_STEP,
        "pipeline.download:run",
        num_cpus=0.25,
        resources={DOWNLOAD_SLOT: 1},
        version=STEP_VERSIONS[DOWNLOAD_STEP],
    ),
    # num_gpus is set by the bridge: 1 where the cluster has GPUs, else CPU only.
    StepSpec(
        ANALYSE_STEP,
        "pipeline.analyse:run",
        num_cpus=1,
        pinned_to_download=True,
        version=STEP_VERSIONS[ANALYSE_STEP],
    ),
    StepSpec(BRIEF_STEP, "pipeline.brief:run", num_cpus=0.1, version=STEP_VERSIONS[BRIEF_STEP]),
    StepSpec(
        REPORT_STEP,
        "pipeline.report:run",
        num_cpus=1,
        resources={REPORT_NODE: 0.01},
        version=STEP_VERSIONS[REPORT_STEP],
    ),
)
STEPS: dict[str, StepSpec] = {s.name: s for s in CHAIN}


def chain_through(step: str | None) -> tuple[StepSpec, ...]:
    """The chain's steps up to and including ``step`` (None: the whole chain)."""
    if step is None:
        return CHAIN
    return CHAIN[: [s.name for s in CHAIN].index(step) + 1]


OUTPUT_FILE = reuse.OUTPUT_FILE  # the download's kept output in its folder (zstd JSON)
#: Key in a job URL's fragment that injects a synthetic failure (synthetic mode only).
FAIL_MARKER = "vidbrief-fail"
#: What a synthetic download leaves in the job's folder, standing in for the video: the work
#: folder's life cycle (deleted once the job's outcome is stored) is exercised by benchmarks too.
SYNTHETIC_MEDIA = "media.synthetic"
SYNTHETIC_MEDIA_BYTES = 64 * 1024


def synthetic_output(step: str, ctx: JobContext) -> dict[str, Any]:
    """What a synthetic step returns: enough for the next steps and the result."""
    return {"synthetic": True, "step": step, "job_id": ctx.job_id}


def run_step(step: str, ctx: JobContext, *earlier: Any) -> Any:
    """Run one step for one job: its kept output, else the real function (or a sleep)."""
    return execute(step, ctx, *earlier).output


def execute(step: str, ctx: JobContext, *earlier: Any) -> Found:
    """:func:`run_step`, saying whether the output was reused from the artefact store."""
    found = find_kept(step, ctx, *earlier)
    return found if found is not None else Found(compute_step(step, ctx, *earlier), False)


def compute_step(step: str, ctx: JobContext, *earlier: Any) -> Any:
    """Run one step for one job and keep its output (the caller checked for a kept one)."""
    reuse.clear_step_folder(step, ctx)
    try:
        output = _compute(step, ctx, *reuse.local_inputs(step, ctx, earlier))
    finally:
        reuse.drop_fetched(step, ctx)
    reuse.keep(step, ctx, output, *earlier)
    return output


def _compute(step: str, ctx: JobContext, *earlier: Any) -> Any:
    if ctx.settings.step_mode == "synthetic":
        _inject_failure(step, ctx)
        time.sleep(synthetic_duration(ctx.settings, ctx.job_id, step))
        if step == DOWNLOAD_STEP:
            (ctx.step_dir(step) / SYNTHETIC_MEDIA).write_bytes(bytes(SYNTHETIC_MEDIA_BYTES))
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


def save_output(step: str, ctx: JobContext, output: Any, *earlier: Any) -> None:
    """Keep a step's output as the step itself would (``earlier``: the earlier outputs)."""
    reuse.keep(step, ctx, output, *earlier)


def load_output(step: str, ctx: JobContext, *earlier: Any) -> Any | None:
    """The kept output that would serve this step now, or None."""
    found = find_kept(step, ctx, *earlier)
    return None if found is None else found.output
