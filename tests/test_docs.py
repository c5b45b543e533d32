"""The README stays true: every setting documented, CI runs the README's test command."""

from __future__ import annotations

from pathlib import Path

from ingest.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`VIDBRIEF_{n.upper()}`" not in readme]
    assert missing == [], "run scripts/settings_table.py and update the README"


def test_ci_runs_the_readme_test_command():
    assert "./dev.sh test" in (ROOT / "README.md").read_text()
    assert "./dev.sh test" in (ROOT / ".ci" / "run").read_text()
