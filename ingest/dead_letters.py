"""Dead letters: what one keeps of a refused entry, and putting one back on the jobs stream.

A dead letter copies the original entry's fields so that an operator can see and replay it.
An entry is refused for being too big among other things, so the copy keeps at most
``VIDBRIEF_DEAD_LETTER_FIELD_BYTES`` of each field (and the first MAX_FIELDS fields): a field
cut short is named in the letter's ``truncated`` field, and such a letter cannot be replayed.

Replay (``vidbrief dead replay``) puts the entry's ``job`` back, and clears the job hash only
when that hash belongs to the entry: a job hash is the entry's when its ``stream_id`` is the
letter's ``stream_id`` (the id the entry had on the jobs stream, written by the bridge).
A letter whose request names a job id that is not valid, or another entry's job, is refused:
clearing that hash would let anyone who can write the jobs stream erase a finished job.
Checked and done in one script, so nothing changes between the check and the replay.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import redis

from ingest.errors import NotReplayable, UnknownDeadLetter
from ingest.models import JOB_ID_PATTERN
from ingest.names import JOB_FIELD, STREAM_ID_FIELD, TRUNCATED_FIELD, RedisNames

__all__ = ["MAX_FIELDS", "cap_fields", "replay"]

#: Fields of an entry a dead letter copies at most (a job request has one).
MAX_FIELDS = 32
#: Bytes of each name the ``truncated`` list keeps (the names may be huge too).
MARKER_NAME_BYTES = 64
#: How a dead letter's text is measured and cut: the bridge reads entries with
#: ``surrogateescape``, so bytes that are not UTF-8 come back as they were sent.
_CODEC = ("utf-8", "surrogateescape")


def cap_fields(fields: Mapping[str, str], max_bytes: int) -> dict[str, str]:
    """``fields`` with each name and value cut to ``max_bytes`` and at most MAX_FIELDS of
    them; the fields cut are listed (JSON, names cut to MARKER_NAME_BYTES) as ``truncated``."""
    kept: dict[str, str] = {}
    cut: list[str] = []
    for index, (name, value) in enumerate(fields.items()):
        if index >= MAX_FIELDS:
            cut.append(f"{len(fields) - MAX_FIELDS} more fields")
            break
        short_name, short_value = _cut(name, max_bytes), _cut(value, max_bytes)
        if (short_name, short_value) != (name, value):
            cut.append(_cut(name, MARKER_NAME_BYTES))
        kept[short_name] = short_value
    if cut:
        kept[TRUNCATED_FIELD] = json.dumps(cut, ensure_ascii=False)
    return kept


def _cut(text: str, max_bytes: int) -> str:
    data = text.encode(*_CODEC)
    return text if len(data) <= max_bytes else data[:max_bytes].decode(*_CODEC)


def replay(client: redis.Redis, names: RedisNames, dead_id: str) -> str:
    """Put dead letter ``dead_id``'s job request back on the jobs stream; return the new id."""
    found = client.xrange(names.dead, dead_id, dead_id)
    if not found:
        raise UnknownDeadLetter(f"no dead letter {dead_id}")
    fields = found[0][1]
    job = fields.get(JOB_FIELD)
    if job is None:
        raise NotReplayable(f"dead letter {dead_id} has no '{JOB_FIELD}' field to replay")
    if TRUNCATED_FIELD in fields:
        raise NotReplayable(
            f"dead letter {dead_id} kept only part of the entry (fields cut to "
            "VIDBRIEF_DEAD_LETTER_FIELD_BYTES): there is no whole request to replay"
        )
    job_id = _job_id(dead_id, job)
    hash_key = names.job(job_id) if job_id else names.dead  # a key the script leaves alone
    args = [dead_id, JOB_FIELD, job, fields.get(STREAM_ID_FIELD, ""), "1" if job_id else "0"]
    status, value = client.eval(_REPLAY_LUA, 3, names.dead, names.jobs, hash_key, *args)
    status, value = _text(status), _text(value)
    if status == "gone":
        raise UnknownDeadLetter(f"no dead letter {dead_id} (replayed or removed meanwhile)")
    if status == "foreign":
        raise NotReplayable(
            f"dead letter {dead_id} names job {job_id!r}, whose job hash belongs to another "
            f"entry ({value or 'unknown'}): not replayed, that job is left alone; submit the "
            "request under a new job_id to run it"
        )
    return value


def _job_id(dead_id: str, job: str) -> str | None:
    """The request's job id: None when it has none (or is not JSON); refused when not valid."""
    try:
        doc = json.loads(job)
    except (ValueError, RecursionError):
        return None
    job_id = doc.get("job_id") if isinstance(doc, dict) else None
    if job_id is None:
        return None
    if not isinstance(job_id, str) or not re.fullmatch(JOB_ID_PATTERN, job_id):
        raise NotReplayable(
            f"dead letter {dead_id}: its job_id {str(job_id)[:80]!a} is not valid "
            f"({JOB_ID_PATTERN}); the request could never run"
        )
    return job_id


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# KEYS: dead stream, jobs stream, the job hash (the dead stream when the request names no job).
# ARGV: dead letter id, job field name, request JSON, the entry's stream id, "1" if a job hash.
_REPLAY_LUA = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {'gone', ''} end
if ARGV[5] == '1' then
  local owner = redis.call('HGET', KEYS[3], 'stream_id')
  if redis.call('EXISTS', KEYS[3]) == 1 then
    if owner ~= ARGV[4] or ARGV[4] == '' then return {'foreign', owner or ''} end
    redis.call('DEL', KEYS[3])
  end
end
local id = redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[1])
return {'ok', id}
"""
