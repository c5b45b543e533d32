"""The job request (wire format, schema version 1) and the job state kept in the job hash."""

from __future__ import annotations

import json
import secrets
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest.errors import InvalidRequest

SCHEMA_VERSION = 1
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_URL_CHARS = 2048
MAX_INSTRUCTIONS_CHARS = 4000
MAX_ENTRY_BYTES = 64 * 1024  # a job request larger than this is refused before parsing
#: The request's priorities, highest first (the bridge serves them in this order).
PRIORITIES = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"
Priority = Literal["high", "normal", "low"]


#: Unicode categories refused in URLs and names: control characters (terminal escapes, NUL,
#: C1 codes) and invisible format characters (bidirectional overrides, zero-width spaces).
_CONTROL, _FORMAT = "Cc", "Cf"


def _check_text(value: str, *, allow: str = "", invisible: bool = False) -> str:
    """``value`` unless it holds a control character (but ``allow``), or, unless
    ``invisible``, a format character; the error names the first one found."""
    refused = (_CONTROL,) if invisible else (_CONTROL, _FORMAT)
    for c in value:
        if unicodedata.category(c) in refused and c not in allow:
            raise ValueError(f"must not contain control or invisible characters (found {c!a})")
    return value


def _check_http_url(value: str, field: str) -> str:
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace")
    _check_text(value)
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        shown = parts.scheme or "none"
        raise ValueError(f"scheme {shown!r} is not allowed; use http or https")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username or parts.password:
        raise ValueError("must not carry user:password credentials")
    return value


class JobRequest(BaseModel):
    """What a producer puts in the ``job`` field of a ``vidbrief:jobs`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="vidbrief job request")

    schema_version: Literal[1] = Field(1, description="Version of this schema.")
    url: str = Field(
        ...,
        max_length=MAX_URL_CHARS,
        description="The video to brief (http or https).",
        json_schema_extra={"format": "uri"},
    )
    job_id: str | None = Field(
        None,
        pattern=JOB_ID_PATTERN,
        description="Idempotency key; generated when absent. A known job id is not run twice.",
    )
    webhook_url: str | None = Field(
        None,
        max_length=MAX_URL_CHARS,
        description="Where the terminal CloudEvent is POSTed, signed (Standard Webhooks).",
        json_schema_extra={"format": "uri"},
    )
    instructions: str | None = Field(
        None, max_length=MAX_INSTRUCTIONS_CHARS, description="What the brief should focus on."
    )
    language: str | None = Field(
        None,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$",
        description="Language of the brief (BCP 47 tag, e.g. en, zh-CN).",
    )
    producer: str | None = Field(
        None,
        max_length=100,
        description="Who sent the request; jobs are shared fairly between producers.",
    )
    priority: Priority = Field(
        "normal",
        description="low, normal or high: a waiting job of a higher priority starts first; "
        "within one priority producers take turns.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value, "url")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, "webhook_url")

    @field_validator("producer")
    @classmethod
    def _producer(cls, value: str | None) -> str | None:
        return None if value is None else _check_text(value)

    @field_validator("instructions")
    @classmethod
    def _instructions(cls, value: str | None) -> str | None:
        # Free text: line breaks, tabs and joiners (emoji sequences) are fine; escapes are not.
        return None if value is None else _check_text(value, allow="\t\n\r", invisible=True)

    def with_job_id(self) -> JobRequest:
        """This request with a job id (a new one when absent)."""
        return self if self.job_id else self.model_copy(update={"job_id": new_job_id()})

    def to_json(self) -> str:
        """Compact JSON, absent fields left out (and the default priority)."""
        exclude = {"priority"} if self.priority == DEFAULT_PRIORITY else set()
        return self.model_dump_json(exclude_none=True, exclude=exclude)


def new_job_id() -> str:
    """A readable, time-sortable id: ``20261123-114501-3f9a2c1d``."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem: ``field: reason``."""
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "request"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (not in schema version 1)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "string_pattern_mismatch" and field == "job_id":
            msg = f"must match {JOB_ID_PATTERN} (letters, digits, . _ -; at most 64)"
        elif e["type"] == "string_pattern_mismatch" and field == "language":
            msg = (
                f"{str(e['input'])[:40]!r} is not a language tag: 2 or 3 letters, then "
                "optional subtags (en, de, pt-BR, zh-Hant)"
            )
        lines.append(f"{field}: {msg}")
    return "; ".join(lines)


def parse_request(raw: str | bytes | dict[str, Any]) -> JobRequest:
    """Parse and validate a request from JSON text or a dict; raise InvalidRequest with reasons."""
    if isinstance(raw, bytes | str) and len(raw) > MAX_ENTRY_BYTES:
        raise InvalidRequest(f"request: larger than {MAX_ENTRY_BYTES} bytes ({len(raw)})")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidRequest(f"request: not UTF-8 ({e.reason})") from e
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise InvalidRequest(f"request: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise InvalidRequest(f"request: must be a JSON object, got {type(raw).__name__}")
    try:
        return JobRequest.model_validate(raw)
    except ValidationError as e:
        raise InvalidRequest(describe_validation_error(e)) from e


def request_json_schema() -> dict[str, Any]:
    """The JSON Schema of the job request (the file ``ingest/job_request.schema.json``)."""
    schema = JobRequest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://vidbrief.dev/schemas/job-request/1.json"
    return schema


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def finished(self) -> bool:
        return self in (
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.REJECTED,
        )


class StepTiming(BaseModel):
    """When and where one step ran, and in which attempt of the job."""

    started: float | None = None
    ended: float | None = None
    node: str | None = None
    attempt: int | None = None
    #: Served by a kept output (the artefact store, or given at launch), not run for this job.
    reused: bool = False

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


class JobState(BaseModel):
    """The ``vidbrief:job:<job_id>`` hash, parsed.

    Flat hash fields: ``status``, ``url``, ``request`` (JSON), ``created_at``, ``updated_at``,
    ``started_at``, ``finished_at``, ``attempts``, ``stream_id``, ``cancel_requested``,
    ``step:<name>:started|ended|node|attempt|reused``, ``result`` (JSON), ``error`` (JSON).
    """

    job_id: str
    status: JobStatus
    url: str | None = None
    request: dict[str, Any] | None = None
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    stream_id: str | None = None
    cancel_requested: bool = False
    steps: dict[str, StepTiming] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    #: Webhook delivery summary (written by the webhook worker): pending, delivered, failed…
    webhook_status: str | None = None
    webhook_attempts: int = 0
    webhook_last: str | None = None

    @classmethod
    def from_hash(cls, job_id: str, fields: dict[str, str]) -> JobState:
        steps: dict[str, dict[str, Any]] = {}
        plain: dict[str, Any] = {"job_id": job_id}
        for key, value in fields.items():
            if key.startswith("step:"):
                _, step, what = key.split(":", 2)
                steps.setdefault(step, {})[what] = value
            elif key in ("request", "result", "error"):
                plain[key] = json.loads(value) if value else None
            elif key == "cancel_requested":
                plain[key] = value == "1"
            elif key in cls.model_fields:
                plain[key] = value
        plain["steps"] = {name: StepTiming(**v) for name, v in steps.items()}
        return cls.model_validate(plain)


def step_fields(step: str, **values: object) -> dict[str, str]:
    """Hash fields for one step's timing, e.g. ``step_fields("download", started=t)``."""
    return {f"step:{step}:{k}": str(v) for k, v in values.items() if v is not None}


def field_args(fields: Mapping[str, str]) -> list[str]:
    """A hash mapping as HSET's flat field/value arguments (what a Lua script's ARGV takes)."""
    return [x for kv in fields.items() for x in kv]


def hash_fields(**values: object) -> dict[str, str]:
    """Hash field mapping from Python values (dicts to JSON, None left out)."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            out[key] = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, bool):
            out[key] = "1" if value else "0"
        else:
            out[key] = str(value)
    return out


def now() -> float:
    """Wall-clock seconds since the epoch (what the job hash stores)."""
    return datetime.now(UTC).timestamp()
