"""The whole service with real parts: a producer XADDs a job for a real video on loopback;
the bridge (real Ray) downloads it with yt-dlp, analyses it (PyAV, torch, faster-whisper),
briefs it through the real ``openai`` client against an OpenAI-compatible test server,
renders the PDF with WeasyPrint; the rq worker delivers the signed webhook; the dataset row
lands in Parquet."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import ray
from helpers import WEBHOOK_SECRET
from llm_server import LLMServer

from ingest.client import Client
from raybridge import start_bridge
from vidbrief.samples import DEMO_TALKS, ensure_demo_videos, serve_files
from webhooks.verify import verify_webhook

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

JOB_TIMEOUT_S = 240.0
LLM_KEY = "sk-e2e-marker-7f3a"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        resources={"vidbrief_download": 1, "vidbrief_report": 1},
    )
    yield
    ray.shutdown()


def test_a_job_goes_through_the_whole_service(
    local_ray,
    redis_server,
    redis_client,
    make_settings,
    tmp_path,
    receiver,
    start_worker,
):
    video = ensure_demo_videos(tmp_path / "media", count=1)[0]
    start_worker()
    with LLMServer() as llm, serve_files(video.parent) as base:
        settings = make_settings(
            llm_provider="custom",
            llm_base_url=llm.base_url,
            llm_model="e2e-model",
            llm_api_key=LLM_KEY,
            webhook_secret=WEBHOOK_SECRET,
            webhook_backoff_seconds=(0.2, 0.2),
            dataset_url=str(tmp_path / "dataset"),
            window=2,
        )
        handle = start_bridge(settings, redis_server.url)
        try:
            client = Client(redis_client, settings.names)
            since = client.last_event_id()
            client.submit(
                {
                    "url": f"{base}/{video.name}",
                    "job_id": "e2e-1",
                    "instructions": "Focus on the numbers.",
                    "webhook_url": receiver.url("/hook"),
                }
            )
            event = client.wait("e2e-1", timeout_s=JOB_TIMEOUT_S, since=since)
        finally:
            handle.stop(grace_s=10)

    state = client.status("e2e-1")
    assert event.type == "vidbrief.job.completed", state.error
    assert set(state.steps) == {"download", "analyse", "brief", "report"}
    assert state.steps["download"].node == state.steps["analyse"].node

    # The brief came from the LLM server, through the real client, with the job's instructions.
    chat = llm.chat_requests
    assert chat and chat[0].json["model"] == "e2e-model"
    assert chat[0].headers.get("authorization") == f"Bearer {LLM_KEY}"
    assert "Focus on the numbers." in chat[0].messages_text()
    assert "revenue" in chat[0].messages_text().lower()  # the transcript reached the LLM

    # The report and result files the completion event names.
    pdf = Path(event.data["report_url"])
    text = subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Brief:" in text and "lisbon" in text.lower()
    result = json.loads(Path(event.data["result_url"]).read_text())
    assert result["brief"]["model"] == "e2e-model"
    assert set(result["timings"]) >= {"download", "analyse", "brief"}  # from the job hash
    assert result["transcript"] and result["shots"]
    assert LLM_KEY not in text and LLM_KEY not in json.dumps(result)

    # The webhook: delivered once, signed, verifiable, carrying the terminal event.
    delivered = receiver.wait_for("/hook", 1, timeout_s=60)[0]
    body = verify_webhook(delivered.body, delivered.headers, WEBHOOK_SECRET)
    assert body["id"] == event.id and body["type"] == "vidbrief.job.completed"

    # The dataset row.
    from pipeline.dataset import read_dataset

    rows = read_dataset(str(tmp_path / "dataset")).to_pylist()
    assert [(r["job_id"], r["status"]) for r in rows] == [("e2e-1", "completed")]
    assert rows[0]["report_url"] == event.data["report_url"]
    assert DEMO_TALKS[0].text  # the words asserted above are spoken in this talk
