"""Completion webhooks: a job's terminal CloudEvent, POSTed signed to its ``webhook_url``.

    bridge ─ enqueue_webhook() ─▶ rq queue <prefix>-webhooks ─▶ worker ─ deliver() ─▶ receiver

    verify.py    what a receiver needs: verify_webhook (only ``standardwebhooks``)
    enqueue.py   enqueue_webhook: the webhook-id, the claim, the jittered retry schedule
    deliver.py   the rq job (one attempt, retry or postpone) and rq's failure callbacks
    send.py      one signed POST through the address policy, and what its answer means
    records.py   the attempt log, the job hash's summary, dead letters (no Ray, no torch)
    worker.py    the rq worker tuned to notice a dead attempt in seconds; ``python -m webhooks``

Importing ``webhooks`` loads nothing else: each name loads its own module on first use, so
``from webhooks import verify_webhook`` costs a receiver neither rq, nor httpx, nor redis.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "WebhookRejected": "ingest.errors",
    "enqueue_webhook": "webhooks.enqueue",
    "webhook_id_for": "webhooks.enqueue",
    "run_worker": "webhooks.worker",
    "verify_webhook": "webhooks.verify",
    "verify_webhook_files": "webhooks.verify",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'webhooks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
