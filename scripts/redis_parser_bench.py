#!/usr/bin/env python
"""CPU per Redis command with redis-py's pure-Python reply parser and with hiredis.

Why the project depends on hiredis: every step records its progress with a sync client and the
bridge's event loop talks to Redis through ``redis.asyncio``; both parse every reply. Starts a
private redis-server (stopped by PID at the end) and prints one line per client and parser.

    python scripts/redis_parser_bench.py [--n 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis
from redis._parsers import (
    _AsyncHiredisParser,
    _AsyncRESP2Parser,
    _HiredisParser,
    _RESP2Parser,
)

from ingest.redis_server import start_redis_server

#: A job hash of about the size the bridge reads (30 fields).
JOB_HASH = {f"field{i}": "x" * 20 for i in range(30)}


def _sync(url: str, n: int) -> None:
    for name, parser in (("python", _RESP2Parser), ("hiredis", _HiredisParser)):
        client = redis.Redis.from_url(url, decode_responses=True, parser_class=parser)
        hgetall = _per_call_us(n, lambda c=client: c.hgetall("job"))
        hset = _per_call_us(n, lambda c=client: c.hset("other", "a", "1"))
        print(f"sync    {name:8} HGETALL {hgetall:6.0f} µs   HSET {hset:6.0f} µs  (CPU per call)")
        client.close()


async def _async(url: str, n: int) -> None:
    for name, parser in (("python", _AsyncRESP2Parser), ("hiredis", _AsyncHiredisParser)):
        client = aioredis.from_url(url, decode_responses=True, parser_class=parser)
        await client.ping()
        started = time.process_time()
        for _ in range(n):
            await client.hgetall("job")
        hgetall = (time.process_time() - started) / n * 1e6
        started = time.process_time()
        for _ in range(n):
            await client.hset("other", "a", "1")
        hset = (time.process_time() - started) / n * 1e6
        print(f"asyncio {name:8} HGETALL {hgetall:6.0f} µs   HSET {hset:6.0f} µs  (CPU per call)")
        await client.aclose()


def _per_call_us(n: int, call: object) -> float:
    started = time.process_time()
    for _ in range(n):
        call()  # type: ignore[operator]
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="calls per measurement")
    args = parser.parse_args()
    server = start_redis_server(Path(tempfile.mkdtemp(prefix="vidbrief-parser-")), daemonize=False)
    try:
        server.client().hset("job", mapping=JOB_HASH)
        _sync(server.url, args.n)
        asyncio.run(_async(server.url, args.n))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
