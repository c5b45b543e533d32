"""The command line as a user meets it: exit codes, one-line errors, printed ids."""

from __future__ import annotations

import json

import pytest
from helpers import cli_runner

pytestmark = pytest.mark.integration


@pytest.fixture
def vidbrief(redis_server, tmp_path):
    return cli_runner(redis_server.url, tmp_path)


def test_submit_with_a_bad_scheme_fails_with_one_line(vidbrief):
    result = vidbrief("submit", "ftp://x")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "url: scheme 'ftp' is not allowed" in result.stderr


def test_submit_prints_the_job_id_and_status_shows_it(vidbrief, redis_client):
    result = vidbrief("submit", "https://example.com/v.mp4", "--job-id", "X")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "X"
    state = json.loads(vidbrief("status", "X", "--json").stdout)
    assert state["status"] == "queued" and state["url"] == "https://example.com/v.mp4"
    again = vidbrief("submit", "https://example.com/v.mp4", "--job-id", "X")
    assert again.stdout.strip() == "X" and "exists already" in again.stderr
    assert redis_client.xlen("vidbrief:jobs") == 1


def test_bad_input_to_submit_is_refused_before_anything_is_submitted(vidbrief, redis_client):
    cases = {
        ("--language", "klingon"): "'klingon' is not a language tag",
        ("--wait", "--timeout", "-3"): "Invalid value for '--timeout'",
        ("--timeout", "3"): "--timeout needs --wait",
    }
    for args, message in cases.items():
        result = vidbrief("submit", "https://example.com/v.mp4", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    metadata = vidbrief("submit", "http://169.254.169.254/latest/meta-data")
    assert metadata.returncode == 2 and "cloud metadata address" in metadata.stderr
    assert redis_client.xlen("vidbrief:jobs") == 0


def test_an_address_the_bridge_will_refuse_is_named_at_submit(vidbrief):
    hook = "http://127.0.0.1:9/hook"
    refused = vidbrief(
        "submit", "https://example.com/v.mp4", "--webhook-url", hook,
        VIDBRIEF_ALLOW_PRIVATE_URLS="false",
    )  # fmt: skip
    assert refused.returncode == 0 and refused.stdout.strip()  # submitted: settings may differ
    assert f"warning: webhook_url {hook} will be refused: loopback" in refused.stderr
    allowed = vidbrief(
        "submit", "https://example.com/v.mp4", "--webhook-url", hook,
        VIDBRIEF_ALLOW_PRIVATE_URLS="true",
    )  # fmt: skip
    assert allowed.returncode == 0 and "warning" not in allowed.stderr


def test_schema_prints_the_json_schema(vidbrief):
    schema = json.loads(vidbrief("schema").stdout)
    assert schema["required"] == ["url"] and schema["additionalProperties"] is False


def test_status_of_an_unknown_job_is_an_error(vidbrief):
    result = vidbrief("status", "nope")
    assert result.returncode == 5 and "no job nope" in result.stderr
