"""pipeline.llm's errors and time limit, through the real openai client and tests/llm_server.py.

A provider's error body may echo the API key, and a base URL may carry ``user:password@``:
neither may reach an error, a log record or an exception's text. And a server that answers
a byte at a time must not stretch a call past its time limit.
"""

from __future__ import annotations

import base64
import logging
import time
import traceback
from pathlib import Path

import pytest
from llm_server import LLMServer, Reply
from pydantic import SecretStr

from ingest.errors import PermanentStepError, RetryableStepError
from ingest.settings import Settings
from pipeline.llm import LLMClient

API_KEY = "sk-test-Zq81LkdJ20vNfhSECRET"
USER, PASSWORD = "gateway", "pa55-w0rd-SECRET"
TIMEOUT_S = 2.0
DEADLINE_SLACK_S = 1.5  # a call ends within its time limit plus this
MESSAGES = [{"role": "user", "content": "[0.0s] Hello."}]


def client_for(server: LLMServer, tmp_path: Path, **overrides: object) -> LLMClient:
    base = server.base_url.replace("http://", f"http://{USER}:{PASSWORD}@")
    values: dict[str, object] = {
        "work_dir": tmp_path,
        "llm_provider": "custom",
        "llm_base_url": base,
        "llm_model": "m-1",
        "llm_api_key": SecretStr(API_KEY),
        "llm_timeout_seconds": TIMEOUT_S,
        "llm_max_retries": 0,
        "_env_file": None,
    }
    client = LLMClient.from_settings(Settings(**(values | overrides)), backoff_base_s=0.01)  # type: ignore[arg-type]
    assert client is not None
    return client


def everything_said(err: BaseException, records: list[logging.LogRecord]) -> str:
    """The error's text, dict, repr and traceback (with its chain), and every log record."""
    said = [str(err), repr(err), str(getattr(err, "to_dict", dict)())]
    said += traceback.format_exception(err)
    formatter = logging.Formatter()
    for record in records:
        said.append(record.getMessage())
        if record.exc_info:
            said.append(formatter.formatException(record.exc_info))
    return "\n".join(said)


@pytest.mark.integration
@pytest.mark.chaos
def test_a_401_that_echoes_the_key_leaks_it_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's own records too
    body = {
        "error": {
            "message": f"Incorrect API key provided: {API_KEY}. Authorization: Bearer {API_KEY}",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    with LLMServer() as server:
        server.script(Reply(status=401, body=body))
        with pytest.raises(PermanentStepError) as err:
            client_for(server, tmp_path).chat_json(MESSAGES)
    said = everything_said(err.value, caplog.records)
    assert API_KEY not in said and "sk-test" not in said
    assert PASSWORD not in said and f"{USER}:" not in said
    message = str(err.value)  # what it says instead: class, status, code, host
    assert "HTTP 401 (AuthenticationError, code invalid_api_key)" in message
    assert f"127.0.0.1:{server.port}" in message and "VIDBRIEF_LLM_API_KEY" in message
    assert err.value.__cause__ is None and err.value.__context__ is None
    # The credentials of the base URL still reach the server, as a header.
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert server.chat_requests[0].headers["authorization"] == f"Basic {basic}"


@pytest.mark.integration
@pytest.mark.chaos
def test_a_trickling_server_cannot_stretch_a_call_past_its_time_limit(tmp_path: Path):
    # A byte every 0.2 s never trips a 2 s read timeout; the whole answer would take ~60 s.
    with LLMServer() as server:
        server.script(Reply(content='{"title": "slow"}', trickle_s=0.2))
        client = client_for(server, tmp_path)
        started = time.monotonic()
        with pytest.raises(RetryableStepError) as err:
            client.chat_json(MESSAGES)
        elapsed = time.monotonic() - started
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + DEADLINE_SLACK_S
    assert "no whole answer within 2 s (VIDBRIEF_LLM_TIMEOUT_SECONDS)" in str(err.value)


@pytest.mark.integration
def test_each_attempt_gets_its_own_time_limit(tmp_path: Path):
    with LLMServer() as server:
        server.script(Reply(content='{"title": "slow"}', trickle_s=0.2))  # then a fast answer
        client = client_for(server, tmp_path, llm_max_retries=1)
        started = time.monotonic()
        reply = client.chat_json(MESSAGES)
        elapsed = time.monotonic() - started
    assert len(server.chat_requests) == 2 and '"title"' in reply.content
    assert elapsed < 2 * TIMEOUT_S + DEADLINE_SLACK_S
