"""The job request contract: what is accepted, what is refused and how the refusal reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.errors import InvalidRequest
from ingest.events import EventType, build_event, parse_event
from ingest.models import JobRequest, JobState, parse_request, request_json_schema

SCHEMA_FILE = Path(__file__).parents[1] / "ingest" / "job_request.schema.json"


def test_committed_schema_matches_the_model():
    assert json.loads(SCHEMA_FILE.read_text()) == request_json_schema()


def test_schema_requires_url_and_forbids_other_fields():
    schema = request_json_schema()
    assert schema["required"] == ["url"]
    assert schema["additionalProperties"] is False


def test_a_full_request_round_trips():
    raw = {
        "url": "https://example.com/v.mp4",
        "job_id": "a.b_c-1",
        "webhook_url": "https://hooks.example.com/x",
        "instructions": "focus on costs",
        "language": "zh-CN",
        "producer": "billing",
        "priority": "high",
    }
    request = parse_request(json.dumps(raw))
    assert json.loads(request.to_json()) == {**raw, "schema_version": 1}


def test_priority_is_optional_normal_by_default_and_one_of_three():
    request = parse_request({"url": "http://e.com/v"})
    assert request.priority == "normal"
    assert "priority" not in json.loads(request.to_json())  # requests as before stay as before
    schema = request_json_schema()["properties"]["priority"]
    assert schema["enum"] == ["high", "normal", "low"] and schema["default"] == "normal"
    with pytest.raises(InvalidRequest, match=r"^priority:"):
        parse_request({"url": "http://e.com/v", "priority": "urgent"})


def test_a_missing_job_id_is_generated_and_valid():
    request = parse_request({"url": "http://example.com/v"}).with_job_id()
    assert request.job_id and JobRequest.model_validate(request.model_dump()).job_id


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ({"url": "ftp://example.com/v"}, "url", "scheme 'ftp' is not allowed"),
        ({"url": "file:///etc/passwd"}, "url", "scheme 'file' is not allowed"),
        ({"url": "http:///nohost"}, "url", "no host"),
        ({"url": "http://user:pw@example.com/"}, "url", "credentials"),
        ({}, "url", "required field is missing"),
        ({"job_id": "x"}, "url", "required"),
        ({"url": "http://e.com/v", "colour": "red"}, "colour", "unknown field"),
        ({"url": "http://e.com/v", "job_id": "../etc"}, "job_id", "must match"),
        ({"url": "http://e.com/v", "job_id": "x" * 65}, "job_id", "must match"),
        ({"url": "http://e.com/v", "instructions": "x" * 4001}, "instructions", "at most 4000"),
        ({"url": "http://e.com/v", "webhook_url": "gopher://x"}, "webhook_url", "scheme"),
        ({"url": "http://e.com/v", "language": "english please"}, "language", "not a language tag"),
        ({"url": "http://e.com/v", "schema_version": 2}, "schema_version", "1"),
        ({"url": 42}, "url", "string"),
    ],
)
def test_invalid_requests_say_which_field_and_why(raw, field, reason):
    with pytest.raises(InvalidRequest) as info:
        parse_request(raw)
    message = str(info.value)
    assert message.startswith(f"{field}:"), message
    assert reason in message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        ("{" * 100_000, "larger than"),
    ],
)
def test_malformed_documents_are_refused(raw, reason):
    with pytest.raises(InvalidRequest, match=reason):
        parse_request(raw)


def test_job_state_parses_the_flat_hash():
    fields = {
        "status": "completed",
        "url": "http://e/v",
        "attempts": "2",
        "step:download:started": "10.0",
        "step:download:ended": "12.5",
        "step:download:node": "abc",
        "result": '{"report_url": "file:///r.pdf"}',
        "cancel_requested": "0",
    }
    state = JobState.from_hash("j1", fields)
    assert state.status.finished and state.attempts == 2
    assert state.steps["download"].seconds == pytest.approx(2.5)
    assert state.result == {"report_url": "file:///r.pdf"}


def test_events_have_stable_ids_and_parse_back():
    one = parse_event(build_event(EventType.COMPLETED, "j1", "vidbrief/b", "completed", {"a": 1}))
    two = parse_event(build_event(EventType.COMPLETED, "j1", "vidbrief/b", "completed", {"a": 1}))
    assert one.id == two.id == "j1/completed"
    assert one.type == "vidbrief.job.completed" and one.terminal and one.data == {"a": 1}
    assert one.job_id == "j1" and one.source == "vidbrief/b"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "https://example.com/v\x1b]8;;https://evil.example\x1b\\.mp4"),  # escape
        ("url", "https://example.com/\x00.mp4"),  # NUL
        ("url", "https://example.com/\x9b31m.mp4"),  # C1 control (CSI)
        ("url", "https://example.com/\u202egpm.exe"),  # right-to-left override
        ("url", "https://exa\u200bmple.com/v.mp4"),  # zero-width space
        ("webhook_url", "https://hooks.example.com/\x07"),
        ("producer", "team-a\x1b[2J"),
        ("producer", "team\u2066-a"),
        ("instructions", "Summarise.\x1b[31m red \x1b[0m"),
    ],
)
def test_control_and_invisible_characters_are_refused(field, value):
    raw = {"url": "https://example.com/v.mp4", field: value}
    with pytest.raises(InvalidRequest, match=f"{field}: .*control or invisible characters"):
        parse_request(raw)


def test_instructions_keep_line_breaks_tabs_and_emoji_joiners():
    text = "Focus on:\n\t- costs\r\n- the team \U0001f469\u200d\U0001f4bb"
    assert parse_request({"url": "https://e.com/v", "instructions": text}).instructions == text
