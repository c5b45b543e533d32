"""``vidbrief rebrief`` as a user meets it: a new job for the earlier job's video, with the new
instructions or language and the rest as before; one-line errors."""

from __future__ import annotations

import json

import pytest
from helpers import cli_runner

pytestmark = pytest.mark.integration


@pytest.fixture
def vidbrief(redis_server, tmp_path):
    return cli_runner(redis_server.url, tmp_path)


def request_of(vidbrief, job_id: str) -> dict[str, str]:
    result = vidbrief("status", job_id, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["request"]


def test_rebrief_submits_the_earlier_video_with_new_instructions(vidbrief, redis_client):
    first = vidbrief(
        "submit", "https://example.com/talk.mp4", "--job-id", "talk", "--language", "en",
        "--instructions", "costs", "--webhook-url", "https://hooks.example.com/a",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    redis_client.hset("vidbrief:job:talk", "status", "completed")  # a bridge ran it
    again = vidbrief("rebrief", "talk", "--instructions", "people", "--job-id", "talk-people")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "talk-people" and again.stderr == ""
    assert request_of(vidbrief, "talk-people") == {
        "schema_version": 1,
        "url": "https://example.com/talk.mp4",
        "job_id": "talk-people",
        "instructions": "people",
        "language": "en",  # as before
        "producer": "vidbrief-cli",  # and no webhook: that was the earlier producer's
    }
    generated = vidbrief("rebrief", "talk")
    new_id = generated.stdout.strip()
    assert generated.returncode == 0 and new_id not in ("talk", "talk-people")
    assert request_of(vidbrief, new_id)["instructions"] == "costs"
    assert redis_client.xlen("vidbrief:jobs") == 3


def test_another_language_is_the_new_brief_language(vidbrief):
    vidbrief("submit", "https://example.com/talk.mp4", "--job-id", "talk")
    result = vidbrief("rebrief", "talk", "--language", "de")
    assert result.returncode == 0, result.stderr
    assert request_of(vidbrief, result.stdout.strip())["language"] == "de"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("rebrief", "nope"), 1, "no job nope"),
        (("rebrief", "talk", "--job-id", "talk"), 2, "must name a new job"),
        (("rebrief", "talk", "--language", "not a tag"), 2, "language:"),
    ],
)
def test_rebrief_errors_are_one_line(vidbrief, args, code, message):
    vidbrief("submit", "https://example.com/talk.mp4", "--job-id", "talk")
    result = vidbrief(*args)
    assert result.returncode == code
    assert message in result.stderr and result.stderr.strip().count("\n") == 0
