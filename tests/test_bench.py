"""The benchmark's pure parts (bounds, duty, lanes, targets, jitter) and one smoke run.

No speed assertions anywhere: the targets live in the benchmark's own output (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.settings import Settings
from pipeline.chain import synthetic_duration
from vidbrief.bench.bounds import (
    Run,
    Span,
    assign_lanes,
    backlog_end,
    busy_seconds,
    class_bound,
    duty_interval,
    efficiency,
    gpu_duty,
    gpu_gaps,
    handoffs,
    list_schedule,
    longest_chain,
    lower_bound,
    percentile,
)
from vidbrief.bench.overhead import OverheadOptions, Rate, _document
from vidbrief.bench.targets import Target
from vidbrief.bench.workloads import ONE_NODE, SEED_EXAMPLE_S, THREE_NODES, Workload

ROOT = Path(__file__).resolve().parents[1]
SEED_JOB = {"download": 10.0, "analyse": 30.0, "brief": 6.0, "report": 1.0}


# -- the lower bound ------------------------------------------------------------------------


def test_seed_article_example_bound_is_the_137_s_the_article_states() -> None:
    jobs = [SEED_JOB] * 4
    one_of_each = {"download": 1, "analyse": 1}
    # GPU: first download 10 s + 4 × 30 s on one GPU + brief and report of the last 7 s.
    assert class_bound(jobs, "analyse", 1) == 137
    assert class_bound(jobs, "download", 1) == 0 + 40 + 37
    assert longest_chain(jobs) == 47
    assert lower_bound(jobs, one_of_each) == 137


def test_scaled_example_matches_the_figures_in_facts() -> None:
    jobs = [SEED_EXAMPLE_S] * 12
    assert lower_bound(jobs, ONE_NODE.servers()) == pytest.approx(37.7)
    assert lower_bound(jobs, THREE_NODES.servers()) == pytest.approx(13.7)


def test_a_lone_job_is_bounded_by_its_chain_and_more_servers_never_raise_the_bound() -> None:
    assert lower_bound([SEED_JOB], {"download": 1, "analyse": 1}) == 47
    jobs = [SEED_JOB] * 6
    bounds = [lower_bound(jobs, {"download": n, "analyse": n}) for n in (1, 2, 3, 6)]
    assert bounds == sorted(bounds, reverse=True)
    assert bounds[-1] == 47  # a slot and a GPU per job: only the chain is left


def test_bound_uses_the_shortest_head_and_tail_when_jobs_differ() -> None:
    jobs = [
        {"download": 2, "analyse": 5, "brief": 1, "report": 1},
        {"download": 1, "analyse": 4, "brief": 3, "report": 0},
    ]
    assert class_bound(jobs, "analyse", 1) == 1 + 9 + 2


def test_efficiency_of_a_schedule_that_meets_the_bound_is_one() -> None:
    jobs = [SEED_JOB] * 4
    # One download slot, one GPU: downloads back to back, GPU busy from 10 s without a gap.
    makespan = 10 + 4 * 30 + 6 + 1
    assert efficiency(lower_bound(jobs, {"download": 1, "analyse": 1}), makespan) == 1.0
    assert efficiency(137, 139) == pytest.approx(0.9856, abs=1e-4)  # the article's own run


def test_list_schedule_is_a_reachable_reference_at_or_above_the_bound() -> None:
    one_of_each = {"download": 1, "analyse": 1}
    assert list_schedule([SEED_JOB] * 4, one_of_each) == 137  # identical jobs: the bound
    mixed = [{"download": 1, "analyse": a, "brief": 0.5, "report": 0.1} for a in (3, 2, 2, 2, 2, 2)]
    three_gpus = {"download": 3, "analyse": 3}
    # GPUs: 1-4, 1-3, 1-3; then 3-5, 3-5; the last job waits for the first GPU: 4-6, + 0.6.
    assert list_schedule(mixed, three_gpus) == pytest.approx(6.6)
    # The bound splits the 13 GPU-seconds evenly, which indivisible jobs cannot do.
    assert lower_bound(mixed, three_gpus) == pytest.approx(1 + 13 / 3 + 0.6)


# -- GPU duty -------------------------------------------------------------------------------


def span(job: str, step: str, start: float, end: float, node: str = "n1") -> Span:
    return Span(job, step, start, end, node)


def test_backlog_end_is_when_only_a_window_of_jobs_is_left() -> None:
    completions = [float(t) for t in range(1, 11)]
    assert backlog_end(completions, 8) == 2.0  # after the 2nd of 10 completes, 8 remain
    assert backlog_end(completions, 10) is None


def test_gpu_duty_counts_idle_gpu_time_inside_the_backlog_interval() -> None:
    gpu = [span("a", "analyse", 1, 4), span("b", "analyse", 5, 8)]  # 1 s idle at 4..5
    completions = [9.0, 10.0, 11.0]
    assert duty_interval(gpu, completions, window=2) == (1, 9.0)
    assert busy_seconds(gpu, 1, 9) == 6
    assert gpu_duty(gpu, 1, completions, window=2) == pytest.approx(6 / 8)
    # Two GPUs: the interval holds twice the GPU-seconds.
    assert gpu_duty(gpu, 2, completions, window=2) == pytest.approx(6 / 16)


def test_gpu_duty_without_backlog_spans_the_gpu_activity() -> None:
    gpu = [span("a", "analyse", 1, 4), span("b", "analyse", 4, 7)]
    assert gpu_duty(gpu, 1, [8.0, 9.0], window=8) == 1.0


# -- lanes, gaps, hand-overs ----------------------------------------------------------------


def test_lanes_never_overlap_and_back_to_back_spans_share_one() -> None:
    spans = [
        span("a", "analyse", 0, 3),
        span("b", "analyse", 3, 6),
        span("c", "analyse", 1, 2),
        span("d", "analyse", 2.5, 4),
    ]
    lanes = assign_lanes(spans)
    assert lanes[0] == lanes[1]
    for i, a in enumerate(spans):
        for j, b in enumerate(spans[i + 1 :], i + 1):
            if lanes[i] == lanes[j]:
                assert a.end <= b.start + 1e-3 or b.end <= a.start + 1e-3
    assert len(set(lanes)) == 2


def one_gpu_run() -> Run:
    spans = []
    for n, (d0, a0) in enumerate([(0.0, 1.0), (1.0, 4.1), (2.0, 7.1)]):
        job = f"j{n}"
        spans += [
            span(job, "download", d0, d0 + 1),
            span(job, "analyse", a0, a0 + 3),
            span(job, "brief", a0 + 3.02, a0 + 3.62),
            span(job, "report", a0 + 3.63, a0 + 3.73),
        ]
    completions = {f"j{n}": end + 0.01 for n, end in enumerate([4.73, 7.83, 10.83])}
    return Run("ours", -0.05, 10.84, spans, completions)


def test_gpu_gaps_measure_from_when_the_gpu_and_the_download_were_both_ready() -> None:
    gaps = gpu_gaps(one_gpu_run())
    assert sorted(round(g, 6) for g in gaps) == [0.0, 0.0, 0.1]  # j1 started 0.1 s late


def test_handoffs_are_the_median_delays_between_steps() -> None:
    found = handoffs(one_gpu_run())
    assert found["submit_to_first_start_s"] == pytest.approx(0.05)
    assert found["analyse_to_brief_s"] == pytest.approx(0.02)
    assert found["brief_to_report_s"] == pytest.approx(0.01)
    assert found["report_to_done_s"] == pytest.approx(0.01)


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 0) == 1.0
    assert percentile(list(range(101)), 99) == 99


# -- targets and the bridge document --------------------------------------------------------


def test_targets_met_missed_and_by_how_much() -> None:
    assert Target("eff", 0.98, 0.97).met
    missed = Target("eff", 0.90, 0.97)
    assert not missed.met and missed.miss_by == pytest.approx(0.07)
    assert Target("p50 ms", 8, 10, at_most=True).met
    assert not Target("above seed", 0.9, 0.9, strict=True).met
    assert not Target("nan", float("nan"), 1).met


def test_bridge_document_has_the_keys_and_ratios() -> None:
    rates = {
        "bridge": [Rate(90, {}), Rate(110, {"total": 5})],
        "raw_ray": [Rate(200, {})],
        "rq": [Rate(50, {})],
        "rq_simple": [Rate(400, {})],
        "celery": [Rate(25, {})],
    }
    doc = _document(OverheadOptions(jobs=10, samples=3), rates, [5.0, 6.0, 40.0])
    assert doc["bridge_jobs_per_s"] == 100
    assert doc["bridge_vs_raw_ray"] == 0.5 and doc["bridge_vs_rq"] == 2.0
    assert doc["bridge_vs_celery"] == 4.0
    for key in ("raw_ray_jobs_per_s", "rq_jobs_per_s", "latency_ms_p50", "latency_ms_p99"):
        assert key in doc
    assert {t["name"]: t["met"] for t in doc["targets"]}["XADD → step.started p50 ms"]


# -- synthetic durations --------------------------------------------------------------------


def jittered(jitter: float) -> Settings:
    return Settings(_env_file=None, synthetic_seconds=SEED_EXAMPLE_S, synthetic_jitter=jitter)


def test_synthetic_duration_without_jitter_is_the_base() -> None:
    settings = jittered(0.0)
    assert synthetic_duration(settings, "job-1", "analyse") == 3.0
    assert synthetic_duration(settings, "job-1", "unknown-step") == 0.0


def test_synthetic_duration_is_deterministic_varied_and_in_range() -> None:
    settings = jittered(0.5)
    values = [synthetic_duration(settings, f"job-{n}", "analyse") for n in range(400)]
    assert values == [synthetic_duration(settings, f"job-{n}", "analyse") for n in range(400)]
    assert all(1.5 <= v <= 4.5 for v in values)
    assert len(set(values)) == len(values)
    assert sum(values) / len(values) == pytest.approx(3.0, rel=0.05)
    assert min(values) < 1.7 and max(values) > 4.3  # it uses the whole range
    draws = {
        step: synthetic_duration(settings, "job-1", step) / SEED_EXAMPLE_S[step]
        for step in ("download", "analyse", "brief")
    }
    assert len(set(draws.values())) == 3  # one draw per (job, step), not one per job


def test_synthetic_duration_is_the_same_in_another_process() -> None:
    """Ray workers are other processes (other hash seeds): the bound must see their numbers."""
    code = (
        "from ingest.settings import Settings; from pipeline.chain import synthetic_duration; "
        "s = Settings(_env_file=None, synthetic_seconds={'analyse': 3.0}, synthetic_jitter=0.5);"
        "print(repr(synthetic_duration(s, 'job-7', 'analyse')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    mine = synthetic_duration(jittered(0.5), "job-7", "analyse")
    assert float(out.stdout) == mine


def test_jitter_setting_is_validated() -> None:
    with pytest.raises(ValueError):
        jittered(1.5)


def test_workload_durations_are_the_bridge_durations() -> None:
    work = Workload("mix", 3, SEED_EXAMPLE_S, jitter=0.5, scale=0.1)
    durations = work.durations()
    settings = Settings(_env_file=None, **work.settings_fields())
    assert list(durations) == work.job_ids()
    for job, steps in durations.items():
        for step, seconds in steps.items():
            assert seconds == synthetic_duration(settings, job, step)


def test_importing_the_bench_app_loads_neither_ray_nor_matplotlib() -> None:
    code = (
        "import sys; import vidbrief.bench; "
        "print(sorted(m for m in ('ray', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- one smoke run --------------------------------------------------------------------------


SMOKE_TIMEOUT_S = 240


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_json_output_is_one_document_whatever_a_library_prints_meanwhile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ray's driver prints a raylet's error (a worker killed, as ``bench bridges`` does on
    purpose) on stdout; it goes to stderr, and stdout stays one JSON object."""
    import vidbrief.bench as bench

    bench._logging()
    print("(raylet) A worker died or was killed while executing a task")
    bench._emit({"bench": "bridges", "rows": []}, as_json=True, as_markdown=False)
    out, err = capsys.readouterr()
    assert json.loads(out) == {"bench": "bridges", "rows": []}
    assert "(raylet) A worker died" in err


def test_show_says_clearly_when_a_file_is_not_a_saved_document(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vidbrief.bench import bench_app

    broken = tmp_path / "bridges.json"
    broken.write_text("(raylet) A worker died\n{}")
    result = CliRunner().invoke(bench_app, ["show", str(broken)])
    assert result.exit_code == 2
    assert "not a saved --json document" in result.output


def test_schedule_quick_smoke_run_prints_the_documented_json(tmp_path: Path) -> None:
    """Both topologies, tiny durations, 4 jobs: the shape of the JSON, not its speed."""
    args = [
        sys.executable,
        "-m",
        "vidbrief.bench",
        "schedule",
        "--quick",
        "--json",
        "--jobs",
        "4",
        "--scale",
        "0.03",
        "--workload",
        "mix",
        "--gantt-dir",
        str(tmp_path),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDBRIEF_", "RAY_ADDRESS"))}
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SMOKE_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: the Ray nodes it started too
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    doc = json.loads(out)
    assert doc["bench"] == "schedule" and doc["quick"] is True
    rows = {row["name"]: row for row in doc["topologies"]}
    assert set(rows) == {"one-node", "three-nodes"}
    for row in rows.values():
        for key in (
            "efficiency",
            "seed_efficiency",
            "gpu_duty",
            "makespan_s",
            "bound_s",
            "workload",
            "jobs",
        ):
            assert key in row, key
        assert 0 < row["efficiency"] <= 1.0 + 1e-9
        assert row["pinned"] is True  # every analysis ran where its video was downloaded
        assert Path(row["gantt"]).is_file()
    assert "threadpool_efficiency" in rows["one-node"]
    assert "asyncio_efficiency" in rows["one-node"]
    assert all({"name", "met", "value", "goal"} <= set(t) for t in doc["targets"])
