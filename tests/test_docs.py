"""The docs stay true: the README's settings table is the generated one, CI runs the README's
test command, the docs it links to exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from ingest.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def generated_table() -> str:
    spec = importlib.util.spec_from_file_location(
        "settings_table", ROOT / "scripts/settings_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.table()


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`VIDBRIEF_{n.upper()}`" not in readme]
    assert missing == [], "run scripts/settings_table.py and update the README"


def test_ci_runs_the_readme_test_command():
    assert "./dev.sh test" in (ROOT / "README.md").read_text()
    assert "./dev.sh test" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_table_is_the_generated_one():
    assert generated_table() in (ROOT / "README.md").read_text(), (
        "run .venv/bin/python scripts/settings_table.py and paste its table into the README"
    )


def test_the_documents_the_readme_links_exist():
    links = re.findall(r"\]\(([^)#:]+)\)", (ROOT / "README.md").read_text())
    assert links and [link for link in links if not (ROOT / link).exists()] == []
