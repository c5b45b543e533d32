"""What a failed read or write of a storage location (S3 and other fsspec URLs) says.

An object store's error carries the server's own text: s3fs turns botocore's ClientError into a
``PermissionError`` whose message is the ``<Message>`` of the XML error body, and a server (or
a proxy in front of it) may echo there what it was sent: the access key, the signature, a URL
with credentials. So the error that leaves names the class, the HTTP status, the S3 error code
and the host, never the server's text nor the URL's ``user:password@``; the original is not
chained either (Ray prints a task's whole traceback, causes included).

Retryable when trying again may help: HTTP 5xx and 429, connection trouble and timeouts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ingest.errors import ConfigError, PermanentStepError, RetryableStepError, StepError
from ingest.redact import redact, strip_userinfo, url_host

__all__ = ["describe", "storage_errors"]

#: S3 error codes are short words (AccessDenied, NoSuchBucket, SlowDown): anything else is not
#: a code but text, and is left out.
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9.]{0,63}$")
_TRANSIENT_WORDS = ("Timeout", "Connection", "Connect", "Throttl")


@contextlib.contextmanager
def storage_errors(
    action: str, url: str, options: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Turn any error of the block into :func:`describe`'s StepError (ours pass unchanged, and
    so does FileNotFoundError of a read: a missing object is an answer callers act on)."""
    try:
        yield
    except (StepError, ConfigError):
        raise
    except FileNotFoundError as e:
        if action != "reading":
            raise describe(e, action, url, options) from None
        raise
    except Exception as e:
        raise describe(e, action, url, options) from None


def describe(
    error: BaseException, action: str, url: str, options: Mapping[str, Any] | None = None
) -> StepError:
    """``<action> <url> failed: <Class>, HTTP <status> <code>, at <host>``, as a StepError."""
    status, code = _http_answer(error)
    parts = [type(error).__name__]
    if status is not None:
        parts.append(f"HTTP {status}" + (f" {code}" if code else ""))
    endpoint = (options or {}).get("endpoint_url")
    if endpoint:
        parts.append(f"at {url_host(str(endpoint))}")
    shown = redact(strip_userinfo(url)[0], max_chars=200)
    message = f"{action} {shown} failed: {', '.join(parts)}"
    if _retryable(error, status):
        return RetryableStepError(message)
    return PermanentStepError(message)


def _http_answer(error: BaseException) -> tuple[int | None, str | None]:
    """The HTTP status and the S3 error code of the first error in the chain that has them."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(response.get("Error", {}).get("Code", ""))
            return (int(status) if status else None), (code if _ERROR_CODE.match(code) else None)
        current = current.__cause__ or current.__context__
    return None, None


def _retryable(error: BaseException, status: int | None) -> bool:
    if status is not None:
        return status == 429 or status >= 500
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    names = [cls.__name__ for cls in type(error).__mro__]
    return any(word in name for name in names for word in _TRANSIENT_WORDS)
