"""Settings from secret files (Compose ``secrets:``, a Kubernetes Secret volume), never shown.

``vidbrief config`` runs as a user would run it: its own process, the secrets folder named by
``VIDBRIEF_SECRETS_DIR`` (the containers use the default, ``/run/secrets``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.settings import Settings

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://:s3cret-pw-7f1c@redis.internal:6379/0"
LLM_KEY = "sk-test-0123456789abcdef"
WEBHOOK_SECRET = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """A secrets folder as Compose and Kubernetes write it (a newline at the end of each)."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "vidbrief_redis_url").write_text(REDIS_URL + "\n")
    (folder / "vidbrief_llm_api_key").write_text(LLM_KEY + "\n")
    (folder / "vidbrief_webhook_secret").write_text(WEBHOOK_SECRET)
    (folder / "unrelated").write_text("not a setting")
    return folder


def vidbrief(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
    clean.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "vidbrief", *args],
        cwd=cwd,  # no stray .env from the repository
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secret_files_are_read_and_never_shown_by_vidbrief_config(
    secrets: Path, tmp_path: Path
) -> None:
    result = vidbrief("config", cwd=tmp_path, VIDBRIEF_SECRETS_DIR=str(secrets))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    for name in ("redis_url", "llm_api_key", "webhook_secret"):
        assert shown[name] == "**********", name  # set (masked), not unset (null)
    for secret in (REDIS_URL, "s3cret-pw-7f1c", LLM_KEY, WEBHOOK_SECRET):
        assert secret not in result.stdout + result.stderr


def test_secret_files_give_the_settings_their_values(secrets: Path) -> None:
    settings = Settings(secrets_dir=secrets, _env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url is not None and settings.redis_url.get_secret_value() == REDIS_URL
    assert settings.llm_api_key is not None and settings.llm_api_key.get_secret_value() == LLM_KEY
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == WEBHOOK_SECRET


def test_an_environment_variable_wins_over_a_secret_file(
    secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDBRIEF_REDIS_URL", "redis://elsewhere:6379/1")
    monkeypatch.setenv("VIDBRIEF_SECRETS_DIR", str(secrets))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://elsewhere:6379/1"
    assert settings.llm_api_key is not None  # the other files still count


def test_a_secret_file_is_validated_like_the_variable(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "vidbrief_webhook_secret").write_text("not-a-whsec-secret\n")
    result = vidbrief("config", cwd=tmp_path, VIDBRIEF_SECRETS_DIR=str(folder))
    assert result.returncode != 0
    assert "webhook_secret" in result.stderr.lower() and "whsec_" in result.stderr
    assert "not-a-whsec-secret" not in result.stderr


def test_a_secrets_folder_that_does_not_exist_is_an_error_not_ignored(tmp_path: Path) -> None:
    result = vidbrief("config", cwd=tmp_path, VIDBRIEF_SECRETS_DIR=str(tmp_path / "typo"))
    assert result.returncode != 0
    assert "secrets_dir" in result.stderr.lower() and "not a directory" in result.stderr
