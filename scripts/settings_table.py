"""Print the README's configuration table from the Settings model (one source of truth).

.venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

from pydantic import SecretStr

from ingest.settings import Settings


def default_text(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "(per user, see below)" if name.endswith(("_dir", "_url")) else "(computed)"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    return f"`{value}`"


def table() -> str:
    """The markdown table, one row per setting."""
    rows = ["| variable | default | what |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        secret = "SecretStr" in str(field.annotation) or field.annotation is SecretStr
        what = (field.description or "").replace("|", "\\|") + (" *(secret)*" if secret else "")
        rows.append(f"| `VIDBRIEF_{name.upper()}` | {default_text(name)} | {what} |")
    return "\n".join(rows)


def main() -> None:
    print(table())


if __name__ == "__main__":
    main()
