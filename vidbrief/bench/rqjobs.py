"""The rq side of ``bench bridge``: a no-op job, and a one-worker burst run as its own process.

    python -m vidbrief.bench.rqjobs REDIS_URL QUEUE fork|simple

rq's worker needs the main thread (it installs signal handlers), hence a process of its own.
``fork`` is ``rq.Worker`` (what ``rq worker`` runs: a forked work horse per job), ``simple`` is
``rq.SimpleWorker`` (jobs in the worker process itself).
"""

from __future__ import annotations

import sys

WORKER_KINDS = ("fork", "simple")


def noop() -> int:
    """The job: nothing, so the figure is rq's own cost per job."""
    return 0


def main(argv: list[str]) -> int:
    import redis
    from rq import Queue, SimpleWorker, Worker

    url, queue_name, kind = argv
    if kind not in WORKER_KINDS:
        raise SystemExit(f"worker kind must be one of {WORKER_KINDS}, got {kind!r}")
    connection = redis.Redis.from_url(url)
    worker_class = SimpleWorker if kind == "simple" else Worker
    worker = worker_class([Queue(queue_name, connection=connection)], connection=connection)
    worker.work(burst=True, logging_level="WARNING")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
