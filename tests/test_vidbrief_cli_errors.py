"""Every failing command ends with one line that says what is wrong and what to do, an exit
status for its kind of trouble (vidbrief/exits.py), and no traceback unless --debug; values from
producers reach the terminal literally (no Rich markup, no control characters)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest
from helpers import cli_runner

from vidbrief.exits import (
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)

pytestmark = pytest.mark.integration

#: A command that cannot reach Redis must say so in about its connect timeout, not hang.
BOUNDED_S = 10.0


@pytest.fixture
def vidbrief(redis_server, tmp_path):
    return cli_runner(redis_server.url, tmp_path, strip=("VIDBRIEF_",))


def one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]


def test_replaying_something_that_is_not_a_dead_letter_id(vidbrief):
    one_line(vidbrief("dead", "replay", "garbage"), EXIT_USAGE, "garbage", "vidbrief dead list")
    one_line(vidbrief("dead", "replay", "1-0"), EXIT_NOT_FOUND, "no dead letter 1-0")


def test_listing_no_dead_letters_is_a_usage_error(vidbrief):
    one_line(vidbrief("dead", "list", "--count", "0"), EXIT_USAGE, "--count", "--help")


def test_verifying_a_body_file_that_does_not_exist(vidbrief):
    result = vidbrief("verify-webhook", "--body", "/nonexistent", "--secret", "whsec_c2VjcmV0")
    one_line(result, EXIT_USAGE, "/nonexistent", "No such file")


@pytest.mark.parametrize(
    "url", ["garbage-with-s3cret", "http://user:s3cret@example.com/", "redis//:s3cret@host"]
)
def test_a_redis_url_that_is_not_one_is_a_configuration_error(vidbrief, url):
    result = vidbrief("status", "x", VIDBRIEF_REDIS_URL=url)
    one_line(result, EXIT_CONFIG, "VIDBRIEF_REDIS_URL", "redis://")
    assert "s3cret" not in result.stderr


def test_tls_against_a_plain_redis_gives_up_in_bounded_time(vidbrief, redis_server):
    url = redis_server.url.replace("redis://", "rediss://")
    began = time.monotonic()
    result = vidbrief("status", "x", VIDBRIEF_REDIS_URL=url)
    assert time.monotonic() - began < BOUNDED_S
    one_line(result, EXIT_UNREACHABLE, "cannot reach Redis", "TLS")


def test_a_closed_port_says_where_and_what_to_check(vidbrief):
    result = vidbrief("events", VIDBRIEF_REDIS_URL="redis://:pw@127.0.0.1:1/0")
    one_line(result, EXIT_UNREACHABLE, "127.0.0.1:1", "VIDBRIEF_REDIS_URL")


def test_debug_shows_the_traceback(vidbrief, redis_client):
    redis_client.xadd("vidbrief:jobs", {"job": "{}"})
    redis_client.set("vidbrief:dead", "not a stream")  # a wrong type: Redis answers an error
    quiet = vidbrief("dead", "list")
    assert quiet.returncode != 0 and "Traceback" not in quiet.stderr
    loud = vidbrief("--debug", "dead", "list")
    assert loud.returncode != 0 and "Traceback" in loud.stderr


HOSTILE_URL = "https://example.com/[/]talk[bold]\x1b]0;owned\x07\x1b[2J.mp4"


def test_values_from_producers_are_shown_literally(vidbrief, redis_client):
    """A producer's `[/]` (Rich markup) once crashed `status` and `dead list`; its escape
    sequences reached the operator's terminal."""
    redis_client.hset(
        "vidbrief:job:evil",
        mapping={
            "status": "failed",
            "url": HOSTILE_URL,
            "attempts": "1",
            "error": json.dumps({"class": "X[/]", "message": "m\x1b[31m"}),
        },
    )
    redis_client.xadd(
        "vidbrief:dead", {"job": json.dumps({"url": HOSTILE_URL}), "reason": "bad [/] \x1b[2J"}
    )
    for args in (("status", "evil"), ("dead", "list"), ("events",)):
        result = vidbrief(*args)
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    shown = vidbrief("status", "evil").stdout
    assert "[/]talk[bold]" in shown.replace("\n", "") and "\\x1b" in shown
    assert "[/]" in vidbrief("dead", "list").stdout


def test_read_only_commands_do_not_start_the_embedded_redis(vidbrief, tmp_path):
    state = tmp_path / "state"
    for args in (("status", "x"), ("status", "--cluster"), ("events",), ("dead", "list")):
        result = vidbrief(*args, VIDBRIEF_REDIS_URL="")
        one_line(result, EXIT_UNREACHABLE, "embedded Redis is not running", "vidbrief submit")
    assert not (state / "redis" / "server.json").exists()
    assert not (state / "redis" / "redis.pid").exists()


def test_a_reader_that_goes_away_ends_the_command_quietly(redis_server):
    """`vidbrief status --help | head -12`: no 'unexpected BrokenPipeError' line, no traceback
    (the earlier code printed one in 5 of 6 runs). Whether the pipe breaks depends on timing,
    so the command runs five times; when it does not, the command simply succeeds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
    command = f"{shlex.quote(sys.executable)} -m vidbrief status --help | head -12 >/dev/null"
    for _ in range(5):
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            env={**env, "VIDBRIEF_REDIS_URL": redis_server.url},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.stderr == "" and result.returncode in (EXIT_OK, EXIT_BROKEN_PIPE)
