"""raybridge.failures: what a failed step leaves in the job's ``error`` (hash, event, webhook)."""

from __future__ import annotations

import ray.exceptions as rex

from ingest.errors import PermanentStepError
from raybridge.failures import classify
from raybridge.outcome import FailureKind

SECRETS = ("sk-live-0123456789abcdef", "pw-4f2a9c", "AKIAIOSFODNN7EXAMPLE")


def test_a_step_error_quoting_secrets_is_stored_masked() -> None:
    # A library's text as it comes: a key echoed by a server, a URL with credentials.
    text = (
        "upload refused: {'error': 'bad key sk-live-0123456789abcdef'} "
        "via http://admin:pw-4f2a9c@proxy.internal:3128/ (AKIAIOSFODNN7EXAMPLE)"
    )
    cause = PermanentStepError(text, step="report")
    failure = classify(rex.RayTaskError("run_recorded", "Traceback …", cause), "report")
    assert failure.kind is FailureKind.PERMANENT and failure.step == "report"
    stored = str(failure.to_dict())
    for secret in SECRETS:
        assert secret not in stored, secret
    assert "http://***@proxy.internal:3128/" in failure.message  # the host stays: where it went


def test_an_unknown_error_is_masked_too() -> None:
    failure = classify(OSError("connect to redis://:pw-4f2a9c@10.0.0.5:6379 failed"), "brief")
    assert "pw-4f2a9c" not in failure.message and failure.error_class == "OSError"
