"""A small OpenAI-compatible chat-completions server for tests (stdlib only, loopback).

    with LLMServer() as server:
        server.script(Reply(status=429, headers={"Retry-After": "1"}), Reply())
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
        server.requests      # every request: method, path, headers, JSON body
        server.max_in_flight # most chat requests handled at the same time

Scripted replies are used first, in order; when none is left the ``responder`` answers
(default: :func:`brief_from_prompt`, a valid BriefContent built from the transcript lines in the
prompt). Any other path or method is recorded and answered 404, so a test can assert that
nothing (a PDF renderer, say) fetched anything from it. ``Reply(trickle_s=…)`` sends its body
one byte at a time (a server that is slow but never silent for a whole read timeout).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
CHARS_PER_TOKEN = 4  # for the usage the server reports
IDLE_CONNECTION_TIMEOUT_S = 5  # keep-alive handler threads give up after this
SHUTDOWN_POLL_S = 0.02  # how quickly serve_forever notices shutdown()


@dataclass
class Reply:
    """One scripted answer. ``content`` → a normal completion; ``body`` → sent as is."""

    status: int = 200
    content: str | None = None
    body: Any = None  # dict → JSON; str/bytes → raw (for malformed bodies); None → completion
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    trickle_s: float = 0.0  # > 0: the body is sent one byte at a time, this many seconds apart


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any

    def messages_text(self) -> str:
        """All message contents of a chat request, joined."""
        messages = (self.json or {}).get("messages", [])
        return "\n".join(str(m.get("content", "")) for m in messages)


Responder = Callable[[dict[str, Any]], str]

_TIMED_LINE = re.compile(r"^\[(\d+(?:\.\d+)?)s[^\]]*\]\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r'^.*\| quote: "(.*)"$')


def brief_from_prompt(body: dict[str, Any]) -> str:
    """A valid BriefContent JSON from the ``[12.3s…] text`` lines in the last user message."""
    user = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = str(user[0]["content"]) if user else ""
    # A merge prompt's key point lines read `[12.3s] text | quote: "…"`: quote the quote.
    lines = [(float(t), _QUOTED.sub(r"\1", s).strip()) for t, s in _TIMED_LINE.findall(text)]
    if not lines:
        lines = [(0.0, "Nothing was said.")]
    first, last = lines[0][0], lines[-1][0]
    return json.dumps(
        {
            "title": f"Brief: {lines[0][1][:60]}",
            "summary": " ".join(s for _, s in lines[:3]),
            "key_points": [{"text": s[:200], "start": t, "quote": s[:200]} for t, s in lines[:3]],
            "chapters": [{"title": "All of it", "start": first, "end": last, "summary": ""}],
        }
    )


def completion(model: str, content: str, prompt_chars: int, n: int) -> dict[str, Any]:
    """A chat.completion body like the API's."""
    prompt_tokens = prompt_chars // CHARS_PER_TOKEN
    completion_tokens = len(content) // CHARS_PER_TOKEN
    return {
        "id": f"chatcmpl-test-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class LLMServer:
    """The server; a context manager that starts it on a free loopback port and stops it."""

    def __init__(
        self,
        responder: Responder = brief_from_prompt,
        delay_s: float = 0.0,
        *,
        models: tuple[str, ...] = (),
        api_key: str | None = None,
    ) -> None:
        self.responder = responder
        self.delay_s = delay_s  # added to every chat request (to make concurrency observable)
        self.models = models  # GET /v1/models lists these (none: that path is a 404 too)
        self.api_key = api_key  # set: any other bearer key is answered 401
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == CHAT_PATH]

    def script(self, *replies: Reply) -> None:
        """Queue replies; they are used first, in order, by chat requests."""
        with self._lock:
            self._script.extend(replies)

    def __enter__(self) -> LLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- used by the handler
    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def enter(self) -> Reply | None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return self._script.popleft() if self._script else None

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _handler_class(server: LLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind httpx's pool
        timeout = IDLE_CONNECTION_TIMEOUT_S

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet tests

        def do_GET(self) -> None:
            self._record(None)
            if self._refused():
                return
            if self.path == MODELS_PATH and server.models:
                listed = [{"id": m, "object": "model", "owned_by": "test"} for m in server.models]
                self._send(200, {"object": "list", "data": listed})
                return
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

        def _refused(self) -> bool:
            """A 401 (like the API's, naming no key) when a key is required and not this one."""
            sent = self.headers.get("Authorization", "")
            if server.api_key is None or sent == f"Bearer {server.api_key}":
                return False
            error = {"message": "Incorrect API key provided", "code": "invalid_api_key"}
            self._send(401, {"error": {**error, "type": "invalid_request_error"}})
            return True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = raw.decode("utf-8", "replace")
            self._record(body)
            if self._refused():
                return
            if self.path != CHAT_PATH:
                self._send(404, {"error": {"message": "not found"}})
                return
            reply = server.enter()
            try:
                self._answer(reply, body if isinstance(body, dict) else {}, len(raw))
            finally:
                server.leave()

        def _record(self, body: Any) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.record(Recorded(self.command, self.path, headers, body))

        def _answer(self, reply: Reply | None, body: dict[str, Any], prompt_chars: int) -> None:
            reply = reply or Reply()
            time.sleep(server.delay_s + reply.delay_s)
            payload = reply.body
            if payload is None and reply.status == 200:
                content = reply.content if reply.content is not None else server.responder(body)
                payload = completion(
                    body.get("model", "?"), content, prompt_chars, len(server.requests)
                )
            elif payload is None:
                payload = {"error": {"message": f"scripted {reply.status}", "type": "server_error"}}
            self._send(reply.status, payload, reply.headers, reply.trickle_s)

        def _send(
            self,
            status: int,
            payload: Any,
            headers: dict[str, str] | None = None,
            trickle_s: float = 0.0,
        ) -> None:
            data = payload if isinstance(payload, bytes) else None
            if data is None:
                data = (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            try:
                self.end_headers()
                self._write_body(data, trickle_s)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client timed out and left: expected in tests

        def _write_body(self, data: bytes, trickle_s: float) -> None:
            if trickle_s <= 0:
                self.wfile.write(data)
                return
            for i in range(len(data)):  # a slow server: each byte comes well within a timeout
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(trickle_s)

    return Handler


# --- an adversarial model: plausible JSON that does not stick to the transcript ----------------

INVENTED_QUOTE = "The chief executive resigned in a hurry last night."
OFF_TOPIC_SUMMARY = "Cats and dogs play together in a sunny garden."
_DURATION = re.compile(r"^Duration: (\d+(?:\.\d+)?) s", re.MULTILINE)


def _spoken_lines(body: dict[str, Any]) -> tuple[list[tuple[float, str]], float]:
    user = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = str(user[0]["content"]) if user else ""
    lines = [(float(t), s.strip()) for t, s in _TIMED_LINE.findall(text)]
    duration = _DURATION.search(text)
    return lines, float(duration.group(1)) if duration else (lines[-1][0] if lines else 0.0)


def _paraphrase_lightly(text: str) -> str:
    """A careless copy: lower case, no punctuation, one short word left out."""
    words = re.sub(r"[^\w\s%]", "", text.lower()).split()
    return " ".join(words[:2] + words[3:]) if len(words) > 4 else " ".join(words)


def adversarial_brief(body: dict[str, Any]) -> str:
    """A brief that tries every way of being unfaithful (needs at least 8 transcript lines).

    Key points: 0 a light paraphrase (close enough to be found), 1 a verbatim quote at a wrong
    time (0 s), 2 a quote from nowhere, 3 a heavy paraphrase (words reversed), 4 a quote across
    two segments. Chapters: out of order, overlapping, one past the end, one outside the video,
    one whose summary has nothing to do with its span. Asked to repair (the conversation holds
    its earlier reply), it quotes point 3 verbatim and keeps everything else as it was.
    """
    lines, duration = _spoken_lines(body)
    repairing = any(m.get("role") == "assistant" for m in body.get("messages", []))
    (t1, s1), (_, s3), (t4, s4), (t5, s5), (_, s6) = (lines[i] for i in (1, 3, 4, 5, 6))
    heavy = s4 if repairing else " ".join(reversed(s4.split()))
    across = " ".join([*s5.split()[-3:], *s6.split()[:3]])
    key_points = [
        {"text": "A lightly paraphrased point.", "start": t1, "quote": _paraphrase_lightly(s1)},
        {"text": "A point at the wrong time.", "start": 0.0, "quote": s3},
        {"text": "A point from nowhere.", "start": t4, "quote": INVENTED_QUOTE},
        {"text": "A heavily paraphrased point.", "start": t4, "quote": heavy},
        {"text": "A point across two segments.", "start": t5, "quote": across},
    ]
    said = {t: s for t, s in lines}

    def summary(start: float, end: float) -> str:
        return " ".join(s for t, s in said.items() if start <= t < end)[:500] or "Nothing."

    d = duration
    chapters = [
        {"title": "Ending", "start": 0.7 * d, "end": d + 50, "summary": summary(0.7 * d, d)},
        {"title": "Opening", "start": 0.0, "end": 0.5 * d, "summary": summary(0, 0.5 * d)},
        {"title": "Middle", "start": 0.3 * d, "end": 0.7 * d, "summary": OFF_TOPIC_SUMMARY},
        {"title": "Beyond the end", "start": d + 10, "end": d + 20, "summary": "Nothing."},
    ]
    return json.dumps(
        {
            "title": "Adversarial brief",
            "summary": summary(0, d),
            "key_points": key_points,
            "chapters": chapters,
        }
    )
