"""Configuration: environment variables with prefix ``VIDBRIEF_`` (and a ``.env`` file).

pydantic-settings does the parsing; secrets are ``SecretStr`` so they never print. The table in
the README lists every variable; ``vidbrief config`` shows the effective values, secrets masked.
Any setting may also come from a file named like its variable (``vidbrief_redis_url``) in the
secrets folder: ``/run/secrets`` where it exists (Compose ``secrets:``, a Kubernetes Secret
volume), or ``VIDBRIEF_SECRETS_DIR``; so secrets need not be environment variables, which
``docker inspect`` and ``kubectl describe`` show. Environment variables win over files.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from ingest.names import (
    ANALYSE_STEP,
    BRIEF_STEP,
    DOWNLOAD_STEP,
    REPORT_STEP,
    STEP_NAMES,
    RedisNames,
)

__all__ = ["STEP_NAMES", "Settings", "get_settings"]

#: Where Docker, Compose and (by convention) Kubernetes put secret files.
DEFAULT_SECRETS_DIR = Path("/run/secrets")
SECRETS_DIR_VARIABLE = "VIDBRIEF_SECRETS_DIR"
# Derived step time limits (Settings.step_timeout): a step's own limit plus time for its
# set-up; analysis no slower than real time (measured: 0.09 × real time on 2 CPU cores);
# a report page in well under a second (537 pages took 83 s on 2 cores).
STEP_MARGIN_S = 60.0
MIN_ANALYSE_LIMIT_S = 600.0
REPORT_BASE_S, REPORT_PAGE_S = 120.0, 1.0

#: The URL schemes redis-py connects with.
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _state_dir() -> Path:
    return platformdirs.user_state_path("vidbrief")


def _data_dir() -> Path:
    return platformdirs.user_data_path("vidbrief")


def _secrets_folder(configured: object = None) -> Path | None:
    """The folder of secret files: as configured, else /run/secrets where it exists."""
    configured = configured or os.environ.get(SECRETS_DIR_VARIABLE)
    if configured:
        return Path(str(configured))
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


class Settings(BaseSettings):
    """All settings. Defaults run everything on one laptop with no configuration."""

    model_config = SettingsConfigDict(
        env_prefix="VIDBRIEF_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- Redis and names
    redis_url: SecretStr | None = Field(
        None, description="redis:// or rediss:// URL (may hold a password). Unset: embedded Redis."
    )
    redis_prefix: str = Field(
        "vidbrief", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="Prefix of every Redis key."
    )
    state_dir: Path = Field(default_factory=_state_dir, description="Embedded Redis data, pidfile.")
    secrets_dir: Path | None = Field(
        None,
        description="Folder of secret files, one per setting, named like its variable in lower "
        "case (vidbrief_redis_url, vidbrief_llm_api_key …); a variable that is set wins. "
        "Unset: /run/secrets where it exists (Compose secrets, a Kubernetes Secret volume). "
        "Environment only (not .env).",
    )

    # --- Ray and the bridge
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join (host:port or ray://…). Unset: Ray's own RAY_ADDRESS, "
        "else a private local Ray.",
    )
    bridge_name: str = Field(
        "bridge-1",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Consumer name in the group; unique per running bridge.",
    )
    window: int = Field(8, ge=1, le=10_000, description="Jobs in flight at most per bridge.")
    max_deliveries: int = Field(5, ge=1, description="Deliveries of one entry before dead letter.")
    step_retries: int = Field(3, ge=0, description="Retries of a retryable step failure.")
    retry_backoff_seconds: float = Field(
        1.0, ge=0, description="First retry delay of a failed step (doubles each time)."
    )
    claim_idle_ms: int = Field(
        60_000,
        ge=1,
        description="A bridge's own entry left pending (an outcome it could not store) is run "
        "again once idle this long. A stopped or dead bridge's entries are claimed as soon as "
        "its lease lapses (VIDBRIEF_LEASE_SECONDS), whatever their idle time.",
    )
    lease_seconds: float = Field(
        3.0,
        gt=0,
        description="A bridge's lease in Redis lives this long unless renewed (three times a "
        "period): a dead bridge's entries and node holds are taken over within about this long.",
    )
    events_maxlen: int = Field(100_000, ge=100, description="Events stream trimmed to ~this.")
    job_ttl_seconds: int = Field(7 * 24 * 3600, ge=1, description="Finished job hashes expire.")
    drain_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, wait this long for jobs in flight."
    )
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus port.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address the metrics server binds (0.0.0.0 to scrape remotely)."
    )
    # Placement (raybridge/placement.py explains the rule).
    download_lookahead: int | None = Field(
        None,
        ge=0,
        description="Jobs per node, beyond one per analyser, that may be downloading or "
        "downloaded and waiting for the node's GPU. Unset: measured per node, enough "
        "downloads under way to cover the download time (analysers × download s / analysis "
        "s), at least one per analyser.",
    )
    analysis_on: Literal["auto", "gpu", "cpu"] = Field(
        "auto", description="Analysis actors on GPUs, on CPUs, or GPUs when the cluster has any."
    )
    cpu_analysers_per_node: int = Field(
        1, ge=0, description="Analysis actors per node when analysis runs on CPUs."
    )
    placement_retries: int = Field(
        3, ge=0, description="Times a job is downloaded again elsewhere after its node is lost."
    )
    node_refresh_seconds: float = Field(2.0, gt=0, description="How often the bridge reads nodes.")
    heartbeat_seconds: float = Field(2.0, gt=0, description="How often the bridge heartbeat beats.")
    health_probe_seconds: float = Field(
        2.0,
        gt=0,
        description="A node that has not answered the bridge's health probe for this long gets "
        "no new download (a killed raylet, a lost network); probes go out twice as often.",
    )
    # Node health (raybridge/health.py): no new downloads on a node short of disk or memory.
    min_free_disk_mb: float = Field(
        1024,
        ge=0,
        description="A node gets no new download while the disk of work_dir there has less "
        "free than this or 2 × max_download_mb, whichever is more (resource "
        "vidbrief_min_free_disk_mb overrides it per node).",
    )
    min_free_memory_mb: float = Field(
        512,
        ge=0,
        description="A node gets no new download while less memory than this is available "
        "there (resource vidbrief_min_free_memory_mb overrides it per node).",
    )
    ship_code: bool = Field(
        True,
        description="With ray_address: send the vidbrief packages to the workers "
        "(runtime_env py_modules), so worker nodes need only Ray and the heavy libraries.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="The bridge's logs: lines for people, or json (one JSON document per line, "
        "Ray's context in each, for a log collector).",
    )
    # A local Ray (no ray_address): what `vidbrief bridge` starts.
    ray_num_cpus: int | None = Field(None, ge=1, description="Local Ray CPUs (unset: all cores).")
    ray_download_slots: int = Field(2, ge=1, description="Local Ray concurrent downloads.")

    # --- Steps
    step_mode: Literal["real", "synthetic"] = Field(
        "real", description="synthetic: steps sleep (tests, benchmarks); chain unchanged."
    )
    synthetic_seconds: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=lambda: {
            DOWNLOAD_STEP: 0.2,
            ANALYSE_STEP: 0.5,
            BRIEF_STEP: 0.1,
            REPORT_STEP: 0.05,
        },
        description="Synthetic step durations: download=0.2,analyse=0.5,brief=0.1,report=0.05",
    )
    synthetic_jitter: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Synthetic durations vary per job by up to this fraction (deterministic).",
    )
    synthetic_probe_error: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Synthetic mode: the duration probe is off by up to this fraction per job "
        "(deterministic), like a real video's metadata.",
    )
    work_dir: Path = Field(
        default_factory=lambda: _data_dir() / "work", description="Artefacts per job and step."
    )
    work_retention_seconds: float = Field(
        0,
        ge=0,
        description="How long a finished job's work folder (its video, audio, keyframes) stays "
        "on the nodes that ran it: 0 deletes it once the job's outcome is stored; more keeps "
        "it that many seconds (debugging). Cancelled and failed jobs too.",
    )
    reports_url: str = Field(
        default_factory=lambda: str(_data_dir() / "reports"),
        description="Where report.pdf and result.json go: a path or an fsspec URL.",
    )
    artefacts_url: str | None = Field(
        None,
        description="The artefact store: kept analyses (with keyframes) and briefs that later "
        "jobs of the same video reuse (a re-brief runs only brief and report), on any node: a "
        "path or an fsspec URL every node reaches (s3://…, a shared mount). Unset: a folder "
        "artefacts beside VIDBRIEF_WORK_DIR (enough for one host).",
    )
    artefacts_max_mb: float = Field(
        10_240,
        ge=0,
        description="Size of the artefact store beyond which the least recently used entries "
        "are evicted (entries used in the last 10 minutes are kept).",
    )
    artefacts_max_age_seconds: float = Field(
        30 * 24 * 3600,
        gt=0,
        description="Entries of the artefact store unused this long are evicted.",
    )
    dataset_url: str | None = Field(None, description="Parquet dataset of finished jobs.")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible server for s3:// URLs (MinIO, Ceph …). Unset: AWS."
    )
    allow_private_urls: bool = Field(
        False, description="Allow loopback/private video and webhook URLs (tests, the demo)."
    )
    max_download_mb: float = Field(2048, gt=0, description="Largest video downloaded.")
    max_duration_seconds: float = Field(4 * 3600, gt=0, description="Longest video accepted.")
    download_timeout_seconds: float = Field(1800, gt=0, description="Time limit of a download.")
    max_page_mb: float = Field(
        16, gt=0, description="Largest web page, manifest or API answer a download reads (each)."
    )
    max_subtitle_mb: float = Field(
        5, gt=0, description="Largest subtitle file; a larger one is ignored (speech to text)."
    )
    max_subtitle_cues_per_minute: int = Field(
        120,
        ge=1,
        description="Most subtitle cues per minute of video (under a minute counts as one); "
        "more and the subtitles are ignored (speech to text).",
    )
    step_timeout_seconds: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Time limit of each step once it runs, e.g. download=1900,analyse=7200; a "
        "step past it is stopped and the job fails (permanent). Unset steps: download = "
        "download_timeout_seconds + 60; analyse = max_duration_seconds (at least 600); brief = "
        "llm_timeout_seconds x (llm_max_retries + 1) x rounds of llm_concurrency calls in "
        "llm_max_calls, + 60; report = 120 + 1 s per page of max_report_pages.",
    )
    download_memory_mb: float = Field(
        1024,
        gt=0,
        description="Memory a download may use beyond what its process starts with (an "
        "address-space limit on the download's child process).",
    )

    # --- Analysis
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where analysis runs.")
    asr_backend: Literal["auto", "faster-whisper", "transformers"] = Field(
        "auto", description="Speech to text engine (auto: faster-whisper, torch where it fails)."
    )
    asr_model: str | None = Field(
        None,
        description="Speech model: unset or base (multilingual Whisper base, bundled, offline), "
        "tiny.en (bundled, English only, faster), a faster-whisper size name fetched from the "
        "hub (small, large-v3 …), or a path to a model folder.",
    )
    asr_word_timestamps: bool = Field(
        True, description="Word times in the transcript (faster-whisper; quotes use them)."
    )
    model_cache_dir: Path = Field(
        default_factory=lambda: platformdirs.user_cache_path("vidbrief") / "models",
        description="Where the bundled speech model is joined from its two packages (once).",
    )
    max_frame_pixels: int = Field(
        7680 * 4320,
        ge=1,
        description="Largest video frame (width × height) decoded; larger is refused (8K).",
    )
    frame_sample_fps: float = Field(2.0, gt=0, description="Frames per second sampled for shots.")
    threads: int = Field(0, ge=0, description="CPU threads for torch/CTranslate2 (0: all cores).")

    # --- LLM
    llm_provider: str | None = Field(None, description="openai, deepseek, qwen, gemini, custom.")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible base URL (custom).")
    llm_model: str | None = Field(None, description="Model name (default: per provider).")
    llm_api_key: SecretStr | None = Field(None, description="API key of the provider.")
    llm_timeout_seconds: float = Field(120, gt=0, description="Time limit of one LLM call.")
    llm_max_retries: int = Field(4, ge=0, description="Retries on 429/5xx (Retry-After honoured).")
    llm_context_tokens: int = Field(
        12_000, ge=1000, description="Prompt budget; longer transcripts are map-reduced."
    )
    llm_concurrency: int = Field(4, ge=1, description="Parallel chunk calls of one brief.")
    llm_response_format: Literal["auto", "json_schema", "json_object"] = Field(
        "auto",
        description="How the reply's JSON is asked for: json_schema (the brief's schema, which "
        "servers like llama.cpp and vLLM enforce by grammar) or json_object. auto: json_schema "
        "for openai, gemini and custom, json_object for deepseek and qwen; a server that "
        "refuses json_schema is asked again with json_object.",
    )
    llm_max_output_tokens: int = Field(
        4096,
        ge=256,
        description="Longest reply of one LLM call, in tokens: a model that loops stops here "
        "instead of filling its context.",
    )
    llm_max_calls: int = Field(
        40,
        ge=1,
        description="LLM calls one brief may make (map, reduce and repair calls together; "
        "retries of one call on 429/5xx not counted). A transcript that needs more is refused.",
    )
    max_transcript_chars: int = Field(
        400_000,
        ge=1000,
        description="Longest transcript briefed, in characters (four hours of speech is about "
        "220,000). A longer one is refused.",
    )
    max_report_pages: int = Field(
        400,
        ge=5,
        description="Most pages of one PDF report (estimated before rendering, checked after). "
        "A longer report is refused.",
    )

    # --- Webhooks
    webhook_secret: SecretStr | None = Field(None, description="whsec_… signing secret.")
    webhook_backoff_seconds: Annotated[tuple[float, ...], NoDecode] = Field(
        (1, 2, 4, 8, 16), description="Webhook retry schedule (jittered), e.g. 1,2,4."
    )
    webhook_timeout_seconds: float = Field(
        10, gt=0, description="Time limit of one delivery, connect to last header byte."
    )
    dead_letter_field_bytes: int = Field(
        65_536,
        ge=1024,
        description="Bytes of each field a dead letter keeps (an entry's own fields included); "
        "a longer field is cut and the letter marked, so it cannot be replayed.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources in its order, the secrets folder found at each call."""
        if getattr(file_secret_settings, "secrets_dir", None) is None:  # no _secrets_dir=
            passed = getattr(init_settings, "init_kwargs", {}).get("secrets_dir")
            folder = _secrets_folder(passed)
            if folder is not None and folder.is_dir():  # a missing one fails validation
                file_secret_settings = SecretsSettingsSource(settings_cls, secrets_dir=folder)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here, not at the first connect: a typo must not surface as a traceback from
        # deep inside redis-py, and the message must not quote the URL (it holds a password).
        if value is not None and not value.get_secret_value():
            return None  # set but empty (a Compose `VIDBRIEF_REDIS_URL:` line): the embedded one
        if value is not None and urlsplit(value.get_secret_value()).scheme not in REDIS_SCHEMES:
            raise ValueError(
                "must be a redis://, rediss:// (TLS) or unix:// URL, "
                "e.g. redis://:PASSWORD@host:6379/0"
            )
        return value

    @field_validator("secrets_dir")
    @classmethod
    def _check_secrets_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory (the folder of secret files)")
        return value

    @field_validator("synthetic_seconds", "step_timeout_seconds", mode="before")
    @classmethod
    def _parse_step_map(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        out: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, seconds = part.partition("=")
            if not sep or name.strip() not in STEP_NAMES:
                raise ValueError(
                    f"expected step=seconds pairs with steps {', '.join(STEP_NAMES)}, got {part!r}"
                )
            out[name.strip()] = float(seconds)
        return out

    @field_validator("step_timeout_seconds")
    @classmethod
    def _check_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(STEP_NAMES)
        if unknown or any(not seconds > 0 for seconds in value.values()):
            raise ValueError(f"expected positive seconds for steps {', '.join(STEP_NAMES)}")
        return value

    @field_validator("webhook_backoff_seconds", mode="before")
    @classmethod
    def _parse_backoff(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(p) for p in value.split(",") if p.strip())
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("must start with 'whsec_' (Standard Webhooks secret format)")
        return value

    @cached_property
    def names(self) -> RedisNames:
        """The Redis names under this configuration's prefix."""
        return RedisNames(self.redis_prefix)

    @property
    def artefacts_location(self) -> str:
        """The artefact store: ``artefacts_url``, else ``artefacts`` beside the work folder."""
        if self.artefacts_url:
            return self.artefacts_url
        return str(Path(self.work_dir).expanduser().absolute().parent / "artefacts")

    def step_seconds(self, step: str) -> float:
        """How long a synthetic step sleeps."""
        return float(self.synthetic_seconds.get(step, 0.0))

    def step_timeout(self, step: str) -> float:
        """The time limit of ``step`` once it runs: as set, else derived from the other limits."""
        if step in self.step_timeout_seconds:
            return self.step_timeout_seconds[step]
        rounds = math.ceil(self.llm_max_calls / self.llm_concurrency)
        derived = {
            DOWNLOAD_STEP: self.download_timeout_seconds + STEP_MARGIN_S,
            ANALYSE_STEP: max(self.max_duration_seconds, MIN_ANALYSE_LIMIT_S),
            BRIEF_STEP: self.llm_timeout_seconds * (self.llm_max_retries + 1) * rounds
            + STEP_MARGIN_S,
            REPORT_STEP: REPORT_BASE_S + self.max_report_pages * REPORT_PAGE_S,
        }
        return float(derived[step])

    def masked(self) -> dict[str, object]:
        """All values for display, secrets masked."""
        return self.model_dump(mode="json")


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (tests, CLI options)."""
    return Settings(**overrides)  # type: ignore[arg-type]
