"""pipeline.local (``vidbrief run-local``): each step within its time limit, as in the bridge."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from media import serve_directory

from ingest.errors import StepError
from ingest.settings import Settings
from pipeline.local import StepEvent, run_local

pytestmark = pytest.mark.integration

LIMIT_S = 2.0
SLACK_S = 2.0


def test_a_download_past_the_step_limit_ends_the_run_at_the_limit(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    # The page trickles a byte every half second: the download's own 30 s deadline is far off.
    settings = make_settings(
        download_timeout_seconds=30, step_timeout_seconds={"download": LIMIT_S}
    )
    seen: list[StepEvent] = []
    with serve_directory(tmp_path) as base:
        started = time.monotonic()
        with pytest.raises(StepError) as err:
            run_local(f"{base}/trickle?every=0.5", tmp_path / "out", settings, seen.append)
        elapsed = time.monotonic() - started
    assert elapsed < LIMIT_S + SLACK_S, f"{elapsed:.1f} s for a {LIMIT_S} s limit"
    assert type(err.value).__name__ == "StepTimeout"
    assert 'VIDBRIEF_STEP_TIMEOUT_SECONDS="download=' in str(err.value)
    assert err.value.step == "download" and err.value.retryable is False
    assert [(e.step, e.status) for e in seen] == [("download", "started"), ("download", "failed")]


def test_call_within_returns_the_value_or_raises_the_error_of_a_quick_call() -> None:
    from pipeline.local import call_within

    assert call_within(5, "brief", lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        call_within(5, "brief", lambda: 1 / 0)
