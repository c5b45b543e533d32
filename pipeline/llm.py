"""LLM providers and a retrying chat client for any OpenAI-compatible chat-completions API.

Retries are ours, not the SDK's: the ``openai`` client is built with ``max_retries=0`` so that a
single policy applies everywhere (tenacity: exponential backoff with full jitter, ``Retry-After``
honoured and capped, ``VIDBRIEF_LLM_MAX_RETRIES`` retries). What still fails after that becomes a
step error: transient trouble (429, 5xx, timeouts, connection errors) → ``RetryableStepError`` so
the bridge tries the step again later; everything else (401, 400, 404, …) →
``PermanentStepError``. The API key is a ``SecretStr`` until the client is built and is never
logged.

What leaves this module names the provider, the model, the host, the exception class, the HTTP
status and the provider's error code — never the response body (a 401 body may echo the key),
never the base URL's ``user:password@`` (it travels as a Basic auth header instead, so the SDK
and httpx never see it in a URL either), and never the SDK's exception as a cause. Each call has
a total time limit (``VIDBRIEF_LLM_TIMEOUT_SECONDS``), not only one per socket read: see
:mod:`pipeline.call_deadline`.
"""

from __future__ import annotations

import email.utils
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tenacity
from pydantic import SecretStr

from ingest.errors import ConfigError, PermanentStepError, RetryableStepError, StepError
from ingest.names import BRIEF_STEP
from ingest.redact import error_summary, redact, strip_userinfo, url_host
from ingest.settings import Settings
from pipeline.call_deadline import call_deadline

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

STEP = BRIEF_STEP
CUSTOM = "custom"
#: The SDK refuses an empty key and would otherwise fall back to ``OPENAI_API_KEY`` from the
#: environment, sending a real OpenAI key to a local server. Local servers ignore the value.
NO_KEY_PLACEHOLDER = "no-key"
BACKOFF_BASE_S = 1.0  # first jittered wait is uniform in [0, 1 s], then doubles
BACKOFF_MAX_S = 30.0  # no single jittered wait is longer
RETRY_AFTER_MAX_S = 60.0  # a server's Retry-After is honoured up to this
TRANSIENT_STATUS = frozenset({408, 409, 429})  # plus every 5xx
#: A provider's machine-readable error code (``invalid_api_key``, ``model_not_found``) is quoted
#: when it looks like one; the free-text message never is.
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Provider:
    """A named OpenAI-compatible endpoint with a sensible default model."""

    name: str
    base_url: str | None
    default_model: str | None
    key_required: bool = True
    #: Whether the endpoint takes ``response_format`` ``json_schema`` (structured outputs).
    json_schema: bool = True


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("openai", "https://api.openai.com/v1", "gpt-4o-mini"),
        Provider("deepseek", "https://api.deepseek.com", "deepseek-chat", json_schema=False),
        Provider(
            "qwen",
            "https://dashscope.aliyuncs.com/compatible-mode/v1",
            "qwen-plus",
            json_schema=False,
        ),
        Provider(
            "gemini", "https://generativelanguage.googleapis.com/v1beta/openai/", "gemini-2.5-flash"
        ),
        # vLLM, Ollama, llama.cpp, LM Studio…: base URL and model must be given, key optional.
        Provider(CUSTOM, None, None, key_required=False),
    )
}


@dataclass(frozen=True)
class LLMConfig:
    """The resolved endpoint. ``api_key`` stays a SecretStr so reprs and logs mask it."""

    provider: str
    base_url: str
    model: str
    api_key: SecretStr | None
    timeout_s: float
    max_retries: int
    concurrency: int
    context_tokens: int
    #: ``json_schema`` or ``json_object`` (see VIDBRIEF_LLM_RESPONSE_FORMAT).
    response_format: str = "json_object"
    max_output_tokens: int = 4096


def resolve_config(settings: Settings) -> LLMConfig | None:
    """The LLM endpoint from settings, or None when none is configured (offline brief).

    A base URL without a provider means ``custom``. A named cloud provider without a key counts
    as not configured. An unknown provider, or a custom one without base URL or model, is a
    ConfigError (misconfiguration should not silently degrade to the offline brief).
    """
    provider = _provider(settings)
    if provider is None:
        return None
    key = settings.llm_api_key
    if key is not None and not key.get_secret_value():
        key = None
    if provider.key_required and key is None:
        log.warning(
            "LLM provider %s has no API key (set VIDBRIEF_LLM_API_KEY): writing the offline "
            "extractive brief",
            provider.name,
        )
        return None
    return LLMConfig(
        provider=provider.name,
        base_url=_base_url(settings, provider),
        model=_model(settings, provider),
        api_key=key,
        timeout_s=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        concurrency=settings.llm_concurrency,
        context_tokens=settings.llm_context_tokens,
        response_format=_response_format(settings, provider),
        max_output_tokens=settings.llm_max_output_tokens,
    )


def _response_format(settings: Settings, provider: Provider) -> str:
    if settings.llm_response_format != "auto":
        return settings.llm_response_format
    return "json_schema" if provider.json_schema else "json_object"


def llm_configured(settings: Settings) -> bool:
    """Whether an LLM is configured; False means the offline extractive brief is written."""
    return resolve_config(settings) is not None


def _provider(settings: Settings) -> Provider | None:
    name = (settings.llm_provider or "").strip().lower()
    if not name:
        return PROVIDERS[CUSTOM] if settings.llm_base_url else None
    if name not in PROVIDERS:
        known = ", ".join(PROVIDERS)
        raise ConfigError(f"VIDBRIEF_LLM_PROVIDER={name!r} is unknown; set it to one of {known}")
    return PROVIDERS[name]


def _base_url(settings: Settings, provider: Provider) -> str:
    url = settings.llm_base_url or provider.base_url
    if not url:
        raise ConfigError(f"LLM provider {provider.name!r} needs VIDBRIEF_LLM_BASE_URL")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"VIDBRIEF_LLM_BASE_URL={redact(url)!r} must be an http or https URL")
    return url


def _model(settings: Settings, provider: Provider) -> str:
    model = settings.llm_model or provider.default_model
    if not model:
        raise ConfigError(f"LLM provider {provider.name!r} needs VIDBRIEF_LLM_MODEL")
    return model


def make_openai_client(config: LLMConfig) -> openai.OpenAI:
    """The SDK client: explicit timeout, SDK retries off (ours wrap every call).

    Its HTTP client bounds each call in total (:class:`DeadlineTransport`); credentials in the
    base URL become a Basic auth header, as httpx would have sent them.
    """
    import httpx2
    import openai

    from pipeline.call_deadline import DeadlineTransport, env_proxy

    key = config.api_key.get_secret_value() if config.api_key else NO_KEY_PLACEHOLDER
    base_url, userinfo = strip_userinfo(config.base_url)
    http_client = openai.DefaultHttpxClient(
        transport=DeadlineTransport(proxy=env_proxy(base_url)),
        auth=httpx2.BasicAuth(*userinfo) if userinfo else None,
    )
    return openai.OpenAI(
        base_url=base_url,
        api_key=key,
        timeout=config.timeout_s,
        max_retries=0,
        http_client=http_client,
    )


# --- retry policy -------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    return parse_retry_after(response.headers.get("retry-after"))


def is_transient(exc: BaseException) -> bool:
    """429, 408, 409, 5xx, timeouts and connection errors: worth another try."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in TRANSIENT_STATUS or exc.status_code >= 500
    return False


class _Wait(tenacity.wait.wait_base):
    """Retry-After when the server sent one (capped), else exponential backoff, full jitter."""

    def __init__(self, base_s: float, max_s: float, retry_after_max_s: float) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=base_s, max=max_s)
        self._retry_after_max_s = retry_after_max_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        server_says = _retry_after(outcome.exception() if outcome else None)
        if server_says is not None:
            return min(server_says, self._retry_after_max_s)
        return self._jitter(retry_state)


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
    # The exception's class and status only: bodies may echo request data, never log headers.
    log.warning(
        "LLM call failed (%s %s); retry %d in %.2f s",
        type(exc).__name__,
        getattr(exc, "status_code", ""),
        retry_state.attempt_number,
        wait,
    )


# --- the client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatReply:
    """The assistant's text and the tokens it cost."""

    content: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    finish_reason: str | None = None


class LLMClient:
    """Chat completions in JSON mode with our retry policy; thread-safe (map calls share it)."""

    def __init__(
        self,
        client: openai.OpenAI,
        config: LLMConfig,
        *,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        retry_after_max_s: float = RETRY_AFTER_MAX_S,
    ) -> None:
        self.client = client
        self.config = config
        self._wait = _Wait(backoff_base_s, backoff_max_s, retry_after_max_s)
        #: Turned off for this client's life when the server refuses json_schema.
        self._use_schema = config.response_format == "json_schema"

    @classmethod
    def from_settings(cls, settings: Settings, **policy: float) -> LLMClient | None:
        """A client for the configured endpoint, or None when no LLM is configured."""
        config = resolve_config(settings)
        if config is None:
            return None
        return cls(make_openai_client(config), config, **policy)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def chat_json(
        self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None
    ) -> ChatReply:
        """One chat completion asking for a JSON object (of ``schema``, where the server takes
        json_schema), retried on transient errors."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.config.max_retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception(is_transient),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            response = retrying(self._create_json, messages, schema)
        except Exception as e:
            error = self._step_error(e)
        else:
            return _reply(response)
        # Raised outside the handler: the SDK's exception (its text holds the response body)
        # must not travel along as the cause or context of ours.
        raise error

    def _create_json(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Any:
        """json_schema when asked for and possible; a server that refuses it (HTTP 400) is
        asked again at once with json_object, and is not asked for a schema again."""
        import openai

        if schema is None or not self._use_schema:
            return self._create(messages, {"type": "json_object"})
        try:
            return self._create(messages, _schema_format(schema))
        except openai.BadRequestError as e:
            log.warning(
                "LLM %s refused response_format json_schema (HTTP %s%s); asking for "
                "json_object from now on (VIDBRIEF_LLM_RESPONSE_FORMAT=json_object skips the try)",
                self.config.provider,
                e.status_code,
                _error_code(e),
            )
            self._use_schema = False
        return self._create(messages, {"type": "json_object"})

    def _create(self, messages: list[dict[str, str]], response_format: dict[str, Any]) -> Any:
        with call_deadline(self.config.timeout_s):
            return self.client.chat.completions.create(
                model=self.config.model,
                messages=messages,  # type: ignore[arg-type]
                # The schema is spelled out in the system prompt too and checked by pydantic:
                # json_object servers get it there. No temperature: some models (reasoning
                # ones) reject any value but the default.
                response_format=response_format,  # type: ignore[arg-type]
                **self._token_cap(),
            )

    def _token_cap(self) -> dict[str, int]:
        # OpenAI's reasoning models take only max_completion_tokens; the other providers and
        # local servers know max_tokens.
        key = "max_completion_tokens" if self.config.provider == "openai" else "max_tokens"
        return {key: self.config.max_output_tokens}

    def _step_error(self, exc: Exception) -> StepError:
        import openai

        where = f"{self.config.provider} ({self.config.model} at {url_host(self.config.base_url)})"
        attempts = self.config.max_retries + 1
        if isinstance(exc, openai.APIStatusError):
            message = f"LLM {where} answered HTTP {exc.status_code} ({type(exc).__name__}"
            message += _error_code(exc) + ")" + _hint(exc.status_code)
        elif isinstance(exc, openai.APITimeoutError):
            message = (
                f"LLM {where} could not be reached in time: no whole answer within "
                f"{self.config.timeout_s:g} s (VIDBRIEF_LLM_TIMEOUT_SECONDS)"
            )
        elif isinstance(exc, openai.APIConnectionError):
            message = f"LLM {where} could not be reached ({type(exc).__name__})"
        else:
            return PermanentStepError(
                f"LLM call to {where} failed: {error_summary(exc)}", step=STEP
            )
        if is_transient(exc):
            message += f" (gave up after {attempts} attempts; set VIDBRIEF_LLM_MAX_RETRIES)"
            return RetryableStepError(message, step=STEP)
        return PermanentStepError(message, step=STEP)


def _error_code(exc: Exception) -> str:
    """``, code invalid_api_key`` when the provider sent a code that looks like one."""
    code = getattr(exc, "code", None)
    return f", code {code}" if isinstance(code, str) and _ERROR_CODE.match(code) else ""


def _hint(status: int) -> str:
    if status in (401, 403):
        return " (check VIDBRIEF_LLM_API_KEY)"
    if status == 404:
        return " (check VIDBRIEF_LLM_MODEL and VIDBRIEF_LLM_BASE_URL)"
    return ""


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    # strict=False: OpenAI's strict mode wants every field required and no defaults; servers
    # that enforce a schema by grammar (llama.cpp, vLLM) do so either way.
    return {"type": "json_schema", "json_schema": {"name": "brief", "schema": schema}}


def _reply(response: Any) -> ChatReply:
    choices = getattr(response, "choices", None) or []
    message = choices[0].message if choices else None
    usage = getattr(response, "usage", None)
    return ChatReply(
        content=(message.content if message else None) or "",
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        total_tokens=getattr(usage, "total_tokens", 0) or 0,
        finish_reason=choices[0].finish_reason if choices else None,
    )


#: Time limit of the configuration check's one call (``vidbrief config --check``).
CHECK_TIMEOUT_S = 10.0


def check_endpoint(config: LLMConfig) -> str:
    """One cheap call to the endpoint (list its models); its answer in one line, or a
    StepError naming what is wrong (redacted like every LLM error: class, status, host)."""
    import openai

    client = make_openai_client(config).with_options(timeout=CHECK_TIMEOUT_S)
    try:
        listed = [m.id for m in client.models.list().data]
    except openai.OpenAIError as e:
        raise LLMClient(client, config)._step_error(e) from None
    missing = listed and config.model not in listed
    note = f", not {config.model}: check VIDBRIEF_LLM_MODEL" if missing else ""
    where = f"{config.provider} at {url_host(config.base_url)}"
    return f"{where} answered, listing {len(listed)} model(s){note}"
