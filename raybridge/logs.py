"""The bridge's logs: lines for people, or JSON lines for a log collector
(``VIDBRIEF_LOG_FORMAT=json``), and one line per job outcome.

With ``json``, Ray's own ``LoggingConfig(encoding="JSON")`` formats the logs of the driver and of
every process of the job (the bridge actor, the analysis actors, the step tasks), adds Ray's
context to each line (node, actor, task) and forwards the workers' lines to the driver without
its ``(pid=…)`` prefix, so the bridge's output stays one JSON document per line. Only the few
lines the driver writes before Ray starts need a formatter of ours: ``JsonLines``, the same
keys in fifteen lines of the standard library, which is why no JSON-logging package is added.

Extra fields of a record (``log.info(..., extra={"job": …})``) become keys of its JSON line.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ingest.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Name of the driver's handler (found again to replace or remove it).
HANDLER_NAME = "vidbrief"
#: LogRecord attributes that are not extras (what ``logging`` itself sets on every record).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonLines(logging.Formatter):
    """One JSON document per record: Ray's keys (asctime, levelname, message, filename, lineno,
    process, exc_text) and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "message": record.getMessage(),
            "filename": record.filename,
            "lineno": record.lineno,
            "process": record.process,
            "name": record.name,
        }
        if record.exc_info:
            document["exc_text"] = self.formatException(record.exc_info)
        document.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        document["timestamp_ns"] = time.time_ns()
        return json.dumps(document, default=str)


def json_line(message: str, level: int = logging.ERROR, **fields: Any) -> str:
    """One JSON document the way ``JsonLines`` writes a record: for what a service says before
    its logging starts or after it ends (the configuration check, the error that stopped it),
    so that with JSON logs a collector can parse every line."""
    record = logging.makeLogRecord(
        {"name": "vidbrief", "levelname": logging.getLevelName(level), "levelno": level}
    )
    record.msg = message
    record.__dict__.update(fields)
    return JsonLines().format(record)


def configure(settings: Settings) -> None:
    """The driver's logging, before Ray starts: text lines, or JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLines() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(logging.INFO)


def ray_logging(settings: Settings) -> Any:
    """``ray.init``'s ``logging_config``: JSON for the whole job when asked, else Ray's default."""
    if settings.log_format != "json":
        return None
    import ray

    return ray.LoggingConfig(
        encoding="JSON", log_level="INFO", additional_log_standard_attrs=["name"]
    )


def hand_over_to_ray() -> None:
    """After ``ray.init`` with a logging config: Ray's handler formats the driver's lines from
    now on; ours would print each of them twice."""
    root = logging.getLogger()
    if len(root.handlers) > 1:
        root.handlers = [h for h in root.handlers if h.get_name() != HANDLER_NAME]
