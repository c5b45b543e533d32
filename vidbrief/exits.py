"""How every ``vidbrief`` command ends when it cannot do what was asked: one line on stderr
(the cause, and what to do) and an exit status that says which kind of trouble it was.

    0   done
    1   done, and the answer is no: the job failed or was cancelled (``submit --wait``), the
        webhook is not verified, the job had finished already, the probe found it unhealthy;
        also, with nothing printed, when the reader of the output went away (``… | head``),
        as click itself ends then
    2   the command line or its input is wrong: a bad option value, a file that cannot be
        read, an id that is not one
    3   a service did not answer: Redis (also: the embedded Redis is not running), Ray
    4   the configuration is invalid: a VIDBRIEF_* value, a password Redis refuses
    5   not found: no such job or dead letter
    6   timed out waiting (``submit --wait --timeout``)
    70  a bug: an error nobody foresaw (``--debug`` shows its traceback; please report it)

The health probes (``vidbrief health …``) use the same 1, 3 and 4. No traceback is printed
unless ``--debug`` is given.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ValidationError

# Typer carries its own copy of click: its errors are these classes, not the click package's.
from typer._click.exceptions import ClickException, UsageError

from ingest import errors

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_CONFIG = 4
EXIT_NOT_FOUND = 5
EXIT_TIMEOUT = 6
EXIT_BUG = 70
#: The reader of stdout went away: click's own status for it (typer/core.py), kept for all.
EXIT_BROKEN_PIPE = 1

#: Settings' fields as the variables people set.
ENV_PREFIX = "VIDBRIEF_"


def settings_problem(error: ValidationError) -> str:
    """A settings ValidationError as one line that names the variables, never their values
    (a value may be a secret: pydantic's own message quotes the input)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        field = str(item["loc"][0]) if item.get("loc") else ""
        name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        parts.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    return "invalid configuration: " + "; ".join(parts)


def redis_where(url: str | None) -> str:
    """``host:port`` of a Redis URL, without its password (for messages)."""
    if not url:
        return "the embedded Redis"
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or '?'}:{parts.port or 6379}"
    except ValueError:
        return "VIDBRIEF_REDIS_URL"


def explain(error: BaseException) -> tuple[int, str]:
    """The exit status and the line for an error that reached the top of a command."""
    import redis

    if isinstance(error, UsageError):
        return EXIT_USAGE, _usage(error)
    if isinstance(error, ClickException):
        return EXIT_USAGE, error.format_message()
    if isinstance(error, ValidationError) and error.title == "Settings":
        return EXIT_CONFIG, settings_problem(error)
    if isinstance(error, redis.exceptions.AuthenticationError):
        return EXIT_CONFIG, f"Redis refused the credentials: {error} (check VIDBRIEF_REDIS_URL)"
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return EXIT_UNREACHABLE, f"lost Redis: {error} (check VIDBRIEF_REDIS_URL)"
    if isinstance(error, redis.exceptions.RedisError):
        return EXIT_NO, f"Redis answered with an error: {error}"
    if isinstance(error, errors.VidbriefError):
        return _vidbrief(error)
    if isinstance(error, OSError) and error.filename is not None:
        return EXIT_USAGE, f"cannot read {error.filename}: {error.strerror}"
    return EXIT_BUG, (
        f"unexpected {type(error).__name__}: {error} "
        "(run again with --debug for the traceback, and please report it)"
    )


def _vidbrief(error: errors.VidbriefError) -> tuple[int, str]:
    if isinstance(error, errors.InvalidRequest):
        return EXIT_USAGE, str(error)
    if isinstance(error, errors.ConfigError):
        return EXIT_CONFIG, str(error)
    if isinstance(error, errors.EmbeddedRedisError):
        return EXIT_UNREACHABLE, str(error)
    if isinstance(error, errors.JobTimeout):
        return EXIT_TIMEOUT, str(error)
    if isinstance(error, errors.UnknownDeadLetter):
        return EXIT_NOT_FOUND, str(error).strip("'\"")
    return EXIT_NO, str(error)


def _usage(error: UsageError) -> str:
    command = error.ctx.command_path if error.ctx is not None else "vidbrief"
    return f"{error.format_message()} (see `{command} --help`)"
