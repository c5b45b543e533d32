"""What reaches the operator's terminal: values made safe to show, and the one-line error.

Job values come from producers (a URL, a job id, an error message, a dead letter's entry), so
the CLI never lets them act on the terminal: Rich markup in them is shown, not interpreted (a
``[/]`` in a URL once crashed ``status``), and control characters (escape sequences that move
the cursor, retitle the window or rewrite the line) are shown as ``\\x1b``-style escapes.
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.text import Text

#: C0 and C1 control characters and DEL; tab and newline are left to the caller's layout.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Characters that reorder or hide text (bidirectional overrides, zero-width): shown escaped.
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def clean(value: object, *, newlines: bool = False) -> str:
    """``value`` as text with every control character visible as an escape (``\\x1b``).

    ``newlines`` keeps line breaks (a multi-line block the caller lays out); by default they
    are escaped too, so one value stays on one line.
    """
    text = str(value)
    if not newlines:
        text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    text = _CONTROL.sub(_escape, text)
    return _INVISIBLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object, style: str = "") -> Text:
    """A Rich Text of ``value``: cleaned, and never parsed as markup."""
    return Text(clean(value), style=style)


def error_line(message: str) -> Text:
    """``error: <message>`` on one line, the message shown literally."""
    return Text.assemble(("error: ", "bold red"), clean(message))


def print_error(console: Console, message: str) -> None:
    console.print(error_line(message), highlight=False, soft_wrap=True)
