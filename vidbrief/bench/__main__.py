"""``python -m vidbrief.bench``: the bench commands before ``vidbrief bench`` is wired in."""

from __future__ import annotations

from vidbrief.bench import bench_app

if __name__ == "__main__":
    bench_app()
