"""Text that may leave the process: secrets masked, URL credentials removed, length capped.

Everything vidbrief writes where others read it — a job's ``error``, events, webhook bodies,
logs — may carry text that came from somewhere else: an LLM provider's error body that echoes
the API key, a Redis or S3 error that quotes a URL with ``user:password@``. :func:`redact` is
the one filter for such text; :func:`url_host` is what an error should name instead of a URL.

The patterns are a net, not a proof: the first rule is not to quote response bodies or URLs at
all (say the class, the status and the host), and to pass what is still quoted through here.

Pure standard library: the producer side imports it too.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["MASK", "REDACTED_MAX_CHARS", "error_summary", "redact", "strip_userinfo", "url_host"]

MASK = "***"
REDACTED_MAX_CHARS = 500  # longer text is cut: an error message, not a document
_ELLIPSIS = "…"

# scheme://user:password@host → scheme://***@host (Redis, S3, proxies, base URLs)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]*@")
# Tokens recognisable by their prefix: OpenAI-style keys (DeepSeek and DashScope use the same
# shape), Standard Webhooks secrets, Google API keys, AWS access key ids, GitHub and Slack
# tokens, JSON web tokens.
_PREFIXED = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{6,}"
    r"|whsec_[A-Za-z0-9+/=_-]{4,}"
    r"|AIza[0-9A-Za-z_-]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{12,}"
    r"|gh[pousr]_[A-Za-z0-9]{16,}"
    r"|xox[abprs]-[A-Za-z0-9-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
)
# Authorization: Bearer <token> / Basic <token>
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
# key=value, "key": "value", key: value — for names that hold secrets
_SECRET_FIELD = re.compile(
    r"(?i)([\"']?\b[a-z0-9_-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey"
    r"|access[_-]?key|credential|signature|authorization)[a-z0-9_-]*[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic)\s+)?)[^\s\"'&,;}]+"
)


def redact(text: object, *, max_chars: int = REDACTED_MAX_CHARS) -> str:
    """``text`` (anything: it is ``str()``-ed) with secrets masked, cut to ``max_chars``."""
    out = _USERINFO.sub(rf"\1{MASK}@", str(text))
    out = _PREFIXED.sub(MASK, out)
    out = _SECRET_FIELD.sub(rf"\1{MASK}", out)
    out = _AUTH_SCHEME.sub(rf"\1\2{MASK}", out)
    if len(out) > max_chars:
        out = out[: max_chars - len(_ELLIPSIS)] + _ELLIPSIS
    return out


def strip_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without ``user:password@``, and the (user, password) it carried, if any."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=hostport).geturl(), (user, password)


def url_host(url: str) -> str:
    """``host`` or ``host:port`` of ``url``: what an error may name (never the whole URL)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # an unparsable port or address: name nothing rather than quote it
        return "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host or "?"


def error_summary(exc: BaseException, *, max_chars: int = REDACTED_MAX_CHARS) -> str:
    """``ClassName: message`` of an exception, redacted: for errors from other libraries."""
    return redact(f"{type(exc).__name__}: {exc}", max_chars=max_chars)
