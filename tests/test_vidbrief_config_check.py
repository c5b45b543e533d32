"""`vidbrief config --check` and the bridge's start catch a bad configuration before any job:
an unknown provider, a typo in a variable's name, a service that does not answer, a key the
LLM endpoint refuses; one line per check and an exit status per kind of trouble."""

from __future__ import annotations

import json
import time

import pytest
from helpers import cli_runner
from llm_server import LLMServer

from vidbrief.exits import EXIT_CONFIG, EXIT_OK, EXIT_UNREACHABLE

pytestmark = pytest.mark.integration


@pytest.fixture
def vidbrief(redis_server, tmp_path):
    return cli_runner(redis_server.url, tmp_path, strip=("VIDBRIEF_", "RAY_ADDR"), timeout_s=120)


def line(output: str, what: str) -> str:
    """The check's line: ``level  what  detail`` (what in a 12-character column)."""
    return next(x for x in output.splitlines() if x[6:18].strip() == what)


def test_a_good_configuration_passes(vidbrief) -> None:
    result = vidbrief("config", "--check")
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert line(result.stdout, "redis").startswith("ok") and "answers" in result.stdout
    assert "offline extractive brief" in line(result.stdout, "llm")
    assert "private local Ray" in line(result.stdout, "ray")


def test_an_unknown_provider_fails_the_check_and_the_bridge_start(vidbrief) -> None:
    result = vidbrief("config", "--check", VIDBRIEF_LLM_PROVIDER="opnai")
    assert result.returncode == EXIT_CONFIG
    assert line(result.stdout, "llm").startswith("fail") and "'opnai' is unknown" in result.stdout
    began = time.monotonic()
    bridge = vidbrief("bridge", VIDBRIEF_LLM_PROVIDER="opnai")
    assert bridge.returncode == EXIT_CONFIG and "'opnai' is unknown" in bridge.stderr
    assert "the bridge did not start" in bridge.stderr.splitlines()[-1]
    assert "Traceback" not in bridge.stderr and time.monotonic() - began < 30  # no Ray started


def test_with_json_logs_the_refused_start_is_json_too(vidbrief) -> None:
    bridge = vidbrief("bridge", VIDBRIEF_LLM_PROVIDER="opnai", VIDBRIEF_LOG_FORMAT="json")
    documents = [json.loads(x) for x in bridge.stderr.splitlines()]  # a collector parses each
    assert bridge.returncode == EXIT_CONFIG
    assert documents[0]["levelname"] == "ERROR" and "'opnai' is unknown" in documents[0]["message"]
    assert documents[-1]["exit_code"] == EXIT_CONFIG
    assert "the bridge did not start" in documents[-1]["message"]
    unreadable = vidbrief("bridge", VIDBRIEF_LOG_FORMAT="json", VIDBRIEF_WINDOW="many")
    [document] = [json.loads(x) for x in unreadable.stderr.splitlines()]
    assert unreadable.returncode == EXIT_CONFIG and "VIDBRIEF_WINDOW" in document["message"]


def test_a_misspelt_variable_is_named_with_the_nearest_setting(vidbrief, tmp_path) -> None:
    (tmp_path / ".env").write_text("VIDBRIEF_MAX_DOWNLOAD_MBS=10\n")
    result = vidbrief("config", "--check", VIDBRIEF_WINDOWS="3")
    assert result.returncode == EXIT_OK  # a warning: the value is ignored, nothing is invalid
    assert "VIDBRIEF_WINDOWS is not a setting; did you mean VIDBRIEF_WINDOW?" in result.stdout
    assert "did you mean VIDBRIEF_MAX_DOWNLOAD_MB?" in result.stdout  # from .env too
    plain = vidbrief("config", VIDBRIEF_WINDOWS="3")
    assert plain.returncode == EXIT_OK and "did you mean VIDBRIEF_WINDOW?" in plain.stderr


def test_services_that_do_not_answer(vidbrief) -> None:
    result = vidbrief("config", "--check", RAY_ADDRESS="127.0.0.1:1")
    assert result.returncode == EXIT_UNREACHABLE
    assert "cannot reach 127.0.0.1:1 (RAY_ADDRESS)" in line(result.stdout, "ray")
    result = vidbrief("config", "--check", VIDBRIEF_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == EXIT_UNREACHABLE
    assert line(result.stdout, "redis").startswith("fail")


def test_the_llm_endpoint_is_called_once_and_a_refused_key_is_invalid(vidbrief) -> None:
    with LLMServer(models=("brief-model",), api_key="sk-right") as server:
        llm = {
            "VIDBRIEF_LLM_PROVIDER": "custom",
            "VIDBRIEF_LLM_BASE_URL": server.base_url,
            "VIDBRIEF_LLM_MODEL": "brief-model",
        }
        good = vidbrief("config", "--check", **llm, VIDBRIEF_LLM_API_KEY="sk-right")
        assert good.returncode == EXIT_OK, good.stdout
        assert "answered, listing 1 model(s)" in line(good.stdout, "llm endpoint")
        assert [r.path for r in server.requests] == ["/v1/models"]

        bad = vidbrief("config", "--check", **llm, VIDBRIEF_LLM_API_KEY="sk-wrong-s3cret")
        assert bad.returncode == EXIT_CONFIG
        assert "HTTP 401" in bad.stdout and "VIDBRIEF_LLM_API_KEY" in bad.stdout
        assert "s3cret" not in bad.stdout + bad.stderr
    gone = vidbrief("config", "--check", **llm)
    assert gone.returncode == EXIT_UNREACHABLE and "could not be reached" in gone.stdout
