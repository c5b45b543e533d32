"""pipeline.brief and pipeline.llm: the real openai client against tests/llm_server.py."""

from __future__ import annotations

import json
import logging
import re
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from llm_server import LLMServer, Reply
from pydantic import SecretStr

from ingest.errors import ConfigError, PermanentStepError, RetryableStepError
from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline import brief as brief_step
from pipeline import offline_brief as offline_step
from pipeline import prompts
from pipeline.context import JobContext
from pipeline.llm import LLMClient, llm_configured, parse_retry_after, resolve_config
from pipeline.models import Analysis, BriefContent, Chapter, KeyPoint, Media, Segment, Shot

API_KEY = "sk-test-9f8e7d6c5b4a"
MODEL = "test-model-1"
SENTENCES = (
    "Welcome to this short tour of the solar panel factory.",
    "Every panel starts as a thin wafer of purified silicon.",
    "The silicon wafers are cut by diamond wire saws.",
    "Next, the wafers are doped so that they conduct electricity.",
    "Robots then solder the solar cells into long strings.",
    "The strings are laminated under glass to protect the cells.",
    "Each finished panel is tested with a flash of artificial sunlight.",
    "Panels that pass the test are packed and shipped to customers.",
)


# --- factories --------------------------------------------------------------------------------


def make_settings(tmp_path: Path, server: LLMServer | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "work_dir": tmp_path / "work",
        "reports_url": str(tmp_path / "reports"),
        "llm_timeout_seconds": 10,
        "llm_max_retries": 4,
        "_env_file": None,  # a developer's .env must not change the tests
    }
    if server is not None:
        values |= {
            "llm_provider": "custom",
            "llm_base_url": server.base_url,
            "llm_model": MODEL,
            "llm_api_key": SecretStr(API_KEY),
        }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


def make_ctx(settings: Settings, **request: object) -> JobContext:
    req = JobRequest(url="https://example.org/factory.mp4", job_id="job-1", **request)  # type: ignore[arg-type]
    return JobContext(job_id="job-1", request=req, settings=settings)


def make_analysis(sentences: tuple[str, ...] = SENTENCES, seconds_each: float = 5.0) -> Analysis:
    segments = [
        Segment(start=i * seconds_each, end=(i + 1) * seconds_each, text=s)
        for i, s in enumerate(sentences)
    ]
    duration = len(sentences) * seconds_each
    shots = [
        Shot(
            index=i,
            start=t,
            end=min(t + 4.0, duration),
            keyframe_path=f"kf{i}.jpg",
            keyframe_time=t + 1.0,
        )
        for i, t in enumerate(x * 4.0 for x in range(int(duration // 4)))
    ]
    return Analysis(
        duration_s=duration,
        frames_sampled=int(duration * 2),
        sample_fps=2.0,
        shots=shots,
        transcript=segments,
        transcript_source="faster-whisper",
        language="en",
    )


def make_media(title: str | None = "Inside a solar panel factory") -> Media:
    return Media(
        source_url="https://example.org/factory.mp4",
        path="/tmp/v.mp4",
        size_bytes=1,
        title=title,
        duration_s=40.0,
    )


def fast_client(settings: Settings) -> LLMClient:
    """The configured client with a tiny backoff, so retry tests take milliseconds."""
    client = LLMClient.from_settings(settings, backoff_base_s=0.01)
    assert client is not None
    return client


def valid_json(**changes: object) -> str:
    content = {
        "title": "Solar panels",
        "summary": "How a solar panel is made.",
        "key_points": [{"text": "Wafers", "start": 5.0, "quote": SENTENCES[1]}],
        "chapters": [{"title": "Making", "start": 0.0, "end": 40.0, "summary": ""}],
    }
    return json.dumps(content | changes)


# --- configuration ------------------------------------------------------------------------------


def test_llm_configured_truth_table(tmp_path: Path) -> None:
    s = lambda **kw: make_settings(tmp_path, **kw)  # noqa: E731
    assert not llm_configured(s())
    assert not llm_configured(s(llm_provider="openai"))  # no key: offline brief
    assert llm_configured(s(llm_provider="openai", llm_api_key=SecretStr("k")))
    assert llm_configured(s(llm_base_url="http://127.0.0.1:1/v1", llm_model="m"))  # custom, no key
    with pytest.raises(ConfigError, match="VIDBRIEF_LLM_PROVIDER"):
        llm_configured(s(llm_provider="nope"))
    with pytest.raises(ConfigError, match="VIDBRIEF_LLM_MODEL"):
        llm_configured(s(llm_provider="custom", llm_base_url="http://127.0.0.1:1/v1"))


def test_provider_defaults_and_key_masked(tmp_path: Path) -> None:
    cfg = resolve_config(
        make_settings(tmp_path, llm_provider="qwen", llm_api_key=SecretStr(API_KEY))
    )
    assert cfg is not None
    assert cfg.base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    assert cfg.model == "qwen-plus"
    assert API_KEY not in repr(cfg)


def test_parse_retry_after() -> None:
    now = 1_000_000_000.0
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_schema_sketch_names_every_field() -> None:
    named = set(re.findall(r'"(\w+)"', prompts.SCHEMA_SKETCH))
    fields = set(BriefContent.model_fields) | set(KeyPoint.model_fields) | set(Chapter.model_fields)
    assert named == fields


# --- through the real client and a real HTTP server -------------------------------------------


@pytest.mark.integration
def test_brief_success_request_is_checked(tmp_path: Path) -> None:
    with LLMServer() as server:
        ctx = make_ctx(
            make_settings(tmp_path, server), instructions="Focus on quality testing.", language="fr"
        )
        brief = brief_step.run(ctx, make_media(), make_analysis())

    assert (brief.provider, brief.model, brief.offline, brief.language) == (
        "custom",
        MODEL,
        False,
        "fr",
    )
    assert brief.content.key_points[0].quote == SENTENCES[0]
    assert brief.usage.calls == 1 and brief.usage.total_tokens > 0
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.json["model"] == MODEL
    assert request.json["response_format"]["type"] == "json_schema"  # custom: by default
    system, user = request.json["messages"]
    assert system["role"] == "system" and '"key_points"' in system["content"]
    assert "French (BCP 47 tag fr)" in system["content"]
    assert "Focus on quality testing." in user["content"]
    assert "[5.0s-10.0s] " + SENTENCES[1] in user["content"]
    assert "Inside a solar panel factory" in user["content"]


@pytest.mark.integration
def test_429_with_retry_after_then_200(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with LLMServer() as server:
        server.script(Reply(status=429, headers={"Retry-After": "1"}))
        ctx = make_ctx(make_settings(tmp_path, server))
        started = time.monotonic()
        brief = brief_step.write_brief(
            ctx, make_media(), make_analysis(), fast_client(ctx.settings)
        )
        elapsed = time.monotonic() - started

    assert len(server.chat_requests) == 2
    assert elapsed >= 0.9  # the server's Retry-After, not the 0.01 s backoff
    assert brief.usage.calls == 1
    assert "retry 1" in caplog.text
    assert API_KEY not in caplog.text


@pytest.mark.integration
def test_malformed_json_is_repaired_once(tmp_path: Path) -> None:
    with LLMServer() as server:
        server.script(Reply(content='{"title": "Solar", "summary": '))
        ctx = make_ctx(make_settings(tmp_path, server))
        brief = brief_step.run(ctx, make_media(), make_analysis())

    first, second = server.chat_requests
    repair = second.json["messages"]
    assert repair[:2] == first.json["messages"]
    assert repair[2] == {"role": "assistant", "content": '{"title": "Solar", "summary": '}
    assert "not valid JSON" in repair[3]["content"]
    assert brief.usage.calls == 2
    assert brief.content.title.startswith("Brief:")


@pytest.mark.integration
def test_key_point_outside_video_is_repaired(tmp_path: Path) -> None:
    bad = valid_json(key_points=[{"text": "Late", "start": 999.0, "quote": "x"}])
    with LLMServer() as server:
        server.script(Reply(content=bad), Reply(content=valid_json()))
        ctx = make_ctx(make_settings(tmp_path, server))
        brief = brief_step.run(ctx, make_media(), make_analysis())

    assert len(server.chat_requests) == 2
    assert "key_points.0.start: 999.0 is after the end" in server.chat_requests[1].messages_text()
    assert brief.content.key_points[0].start == 5.0


@pytest.mark.integration
def test_invalid_twice_is_permanent(tmp_path: Path) -> None:
    no_quote = valid_json(key_points=[{"text": "Wafers", "start": 5.0, "quote": " "}])
    with LLMServer() as server:
        server.script(Reply(content="not json at all"), Reply(content=no_quote))
        ctx = make_ctx(make_settings(tmp_path, server))
        with pytest.raises(PermanentStepError, match="invalid brief twice") as err:
            brief_step.write_brief(ctx, make_media(), make_analysis(), fast_client(ctx.settings))

    assert len(server.chat_requests) == 2
    assert "key_points.0.quote" in str(err.value)
    assert err.value.step == "brief" and not err.value.retryable


@pytest.mark.integration
def test_a_model_that_stays_unusable_gets_the_offline_brief_with_a_warning(
    tmp_path: Path,
) -> None:
    """A small local model that loops instead of answering: the job still gets a faithful
    brief (the extractive one), and the report says why."""
    looping = '{"title": "Brief", "summary": "' + "que é " * 400
    with LLMServer() as server:
        server.script(Reply(content=looping), Reply(content="not json at all"))
        ctx = make_ctx(make_settings(tmp_path, server))
        brief = brief_step.run(ctx, make_media(), make_analysis())

    assert len(server.chat_requests) == 2
    assert brief.offline and brief.provider == "offline"
    assert [w.code for w in brief.warnings] == ["llm_unusable"]
    assert "did not return a usable brief" in brief.warnings[0].message
    assert brief.usage.calls == 2  # the calls it cost are still counted
    assert "que é" not in brief.content.summary


@pytest.mark.integration
def test_the_schema_is_asked_for_and_a_server_that_refuses_it_gets_json_object(
    tmp_path: Path,
) -> None:
    with LLMServer() as server:
        server.script(Reply(status=400, body={"error": {"message": "bad response_format"}}))
        ctx = make_ctx(make_settings(tmp_path, server))
        llm = fast_client(ctx.settings)
        brief_step.write_brief(ctx, make_media(), make_analysis(), llm)
        brief_step.write_brief(ctx, make_media(), make_analysis(), llm)

    formats = [r.json["response_format"] for r in server.chat_requests]
    assert formats[0]["type"] == "json_schema"
    assert formats[0]["json_schema"]["schema"]["title"] == "BriefContent"
    assert [f["type"] for f in formats[1:]] == ["json_object", "json_object"]
    assert all(
        r.json["max_tokens"] == ctx.settings.llm_max_output_tokens for r in server.chat_requests
    )


@pytest.mark.integration
def test_500_five_times_is_retryable(tmp_path: Path) -> None:
    with LLMServer() as server:
        server.script(*[Reply(status=500)] * 5)
        ctx = make_ctx(make_settings(tmp_path, server, llm_max_retries=4))
        with pytest.raises(RetryableStepError, match="HTTP 500") as err:
            brief_step.write_brief(ctx, make_media(), make_analysis(), fast_client(ctx.settings))

    assert len(server.chat_requests) == 5
    assert err.value.retryable and err.value.to_dict()["class"] == "RetryableStepError"
    assert "gave up after 5 attempts" in str(err.value)


@pytest.mark.integration
def test_401_is_permanent_without_retry(tmp_path: Path) -> None:
    with LLMServer() as server:
        server.script(Reply(status=401, body={"error": {"message": "bad key"}}))
        ctx = make_ctx(make_settings(tmp_path, server))
        with pytest.raises(PermanentStepError, match="VIDBRIEF_LLM_API_KEY"):
            brief_step.write_brief(ctx, make_media(), make_analysis(), fast_client(ctx.settings))
    assert len(server.chat_requests) == 1


@pytest.mark.integration
def test_timeout_and_unreachable_are_retryable(tmp_path: Path) -> None:
    with LLMServer() as server:
        server.script(Reply(delay_s=1.0))
        ctx = make_ctx(make_settings(tmp_path, server, llm_timeout_seconds=0.2, llm_max_retries=0))
        with pytest.raises(RetryableStepError, match="could not be reached"):
            brief_step.write_brief(ctx, make_media(), make_analysis(), fast_client(ctx.settings))
    # The server is gone now: connection refused.
    ctx = make_ctx(make_settings(tmp_path, server, llm_max_retries=1))
    with pytest.raises(RetryableStepError, match="gave up after 2 attempts"):
        brief_step.write_brief(ctx, make_media(), make_analysis(), fast_client(ctx.settings))


def long_sentences(n: int) -> tuple[str, ...]:
    return tuple(
        f"Line {i}: the wafer batch number {i * 7} passes station {i % 13} of the line."
        for i in range(n)
    )


@pytest.mark.integration
def test_long_transcript_is_map_reduced_in_parallel(tmp_path: Path) -> None:
    analysis = make_analysis(long_sentences(240), seconds_each=3.0)
    concurrency = 3
    with LLMServer(delay_s=0.1) as server:
        settings = make_settings(
            tmp_path, server, llm_context_tokens=2000, llm_concurrency=concurrency
        )
        ctx = make_ctx(settings, instructions="Count the batches.", language="de")
        brief = brief_step.run(ctx, make_media(), analysis)

    requests = server.chat_requests
    maps = [r for r in requests if "You see only PART" in r.json["messages"][0]["content"]]
    reduces = [r for r in requests if "<parts>" in r.messages_text()]
    assert len(maps) >= 4 and len(reduces) >= 1
    assert len(maps) + len(reduces) == len(requests) == brief.usage.calls
    # Every transcript line went to exactly one map call.
    for segment in analysis.transcript:
        line = prompts.transcript_line(segment)
        assert sum(line in r.messages_text() for r in maps) == 1
    assert server.max_in_flight == concurrency  # parallel, and never more than the cap
    for r in requests:  # instructions and language travel with every call
        assert "Count the batches." in r.messages_text()
        assert "German (BCP 47 tag de)" in r.messages_text()
    assert brief.language == "de" and brief.usage.prompt_tokens > 0
    assert all(0 <= kp.start <= analysis.duration_s for kp in brief.content.key_points)


def test_chunks_respect_budget() -> None:
    segments = make_analysis(long_sentences(100)).transcript
    chunks = brief_step.chunk_segments(segments, budget_tokens=300)
    assert [s for c in chunks for s in c] == segments
    for c in chunks:
        assert sum(prompts.estimate_tokens(prompts.transcript_line(s)) + 1 for s in c) <= 300


def test_estimate_tokens_counts_cjk_per_character() -> None:
    assert prompts.estimate_tokens("abcd" * 10) == 10
    assert prompts.estimate_tokens("太阳能电池板") == 6


# --- offline extractive brief -------------------------------------------------------------------


def test_offline_brief_is_labelled_and_timed(tmp_path: Path) -> None:
    ctx = make_ctx(make_settings(tmp_path))  # no LLM configured
    analysis = make_analysis()
    brief = brief_step.run(ctx, make_media(), analysis)

    assert (brief.provider, brief.offline, brief.model) == ("offline", True, None)
    assert brief.content.title == "Inside a solar panel factory"
    assert brief.content.key_points
    for kp in brief.content.key_points:
        [segment] = [s for s in analysis.transcript if kp.quote in s.text]
        assert segment.start <= kp.start <= segment.end
    assert 1 <= len(brief.content.chapters) <= 8
    starts = [c.start for c in brief.content.chapters]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert brief == brief_step.run(ctx, make_media(), analysis)  # deterministic


def test_offline_sentence_times_are_interpolated() -> None:
    seg = Segment(start=10.0, end=20.0, text="First point here. Second point there.")
    first, second = offline_step.split_sentences([seg])
    assert (first.start, first.text) == (10.0, "First point here.")
    assert 14.0 <= second.start <= 15.0 and second.text == "Second point there."


def test_offline_title_falls_back_and_no_speech_is_said() -> None:
    brief = offline_step.offline_brief(make_media(title=None), make_analysis())
    assert brief.content.title == SENTENCES[0]
    silent = make_analysis(sentences=()).model_copy(update={"duration_s": 20.0})
    brief = offline_step.offline_brief(make_media(title=None), silent)
    assert brief.content.title == "Untitled video"
    assert "No speech" in brief.content.summary and brief.content.key_points == []


@pytest.mark.integration
def test_a_summary_that_invents_names_and_figures_is_flagged(tmp_path: Path) -> None:
    invented = valid_json(summary="Tracy Lions from Porto says output rose by 40% in 2019.")
    with LLMServer() as server:
        server.script(Reply(content=invented))
        ctx = make_ctx(make_settings(tmp_path, server))
        brief = brief_step.run(ctx, make_media(), make_analysis())

    [warning] = [w for w in brief.warnings if w.code == "unsupported_claims"]
    for term in ("Lions", "Porto", "40%", "2019"):
        assert term in warning.message


@pytest.mark.integration
def test_a_brief_without_key_points_says_so(tmp_path: Path) -> None:
    long_talk = make_analysis(SENTENCES * 2)  # 160 words
    with LLMServer() as server:
        server.script(Reply(content=valid_json(key_points=[])), Reply(content=valid_json()))
        ctx = make_ctx(make_settings(tmp_path, server))
        empty = brief_step.run(ctx, make_media(), long_talk)
        full = brief_step.run(ctx, make_media(), long_talk)
        short = make_analysis(SENTENCES[:2])  # 20 words: none is a fair answer
        server.script(Reply(content=valid_json(key_points=[])))
        brief_of_short = brief_step.run(ctx, make_media(), short)

    [warning] = [w for w in empty.warnings if w.code == "no_key_points"]
    assert "160 words" in warning.message
    assert "no_key_points" not in [w.code for w in full.warnings]
    assert "no_key_points" not in [w.code for w in brief_of_short.warnings]


@pytest.mark.integration
def test_a_made_up_title_is_flagged_an_abstractive_one_is_not(tmp_path: Path) -> None:
    titles = {
        "Breath of Life": True,  # no word of the talk: invented
        "Verse 12": True,
        "How Silicon Becomes Electricity": False,  # abstractive, but about what is said
        "Factory tour": False,  # "tour" and "factory" are said
    }
    with LLMServer() as server:
        for title in titles:
            server.script(Reply(content=valid_json(title=title)))
        ctx = make_ctx(make_settings(tmp_path, server))
        briefs = {t: brief_step.run(ctx, make_media(), make_analysis()) for t in titles}
        # Words of the video's own title count as known: the model is given it.
        server.script(*(Reply(content=valid_json(title="Sunrise Works Visit")),) * 2)
        from_source = brief_step.run(ctx, make_media(title="Sunrise Works visit"), make_analysis())
        untitled = brief_step.run(ctx, make_media(title=None), make_analysis())

    for title, invented in titles.items():
        codes = [w.code for w in briefs[title].warnings]
        assert ("unsupported_title" in codes) is invented, (title, codes)
    [notice] = [w for w in briefs["Breath of Life"].warnings if w.code == "unsupported_title"]
    assert "Breath of Life" in notice.message
    assert "unsupported_title" not in [w.code for w in from_source.warnings]
    assert "unsupported_title" in [w.code for w in untitled.warnings]
