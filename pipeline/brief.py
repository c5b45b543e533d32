"""Step ``brief``: the written brief of one video, by an LLM or, with none configured, offline.

With an LLM (:mod:`pipeline.llm`): one chat call in JSON mode whose system prompt spells out the
:class:`BriefContent` schema (:mod:`pipeline.prompts`). The reply is validated with pydantic,
then grounded (:mod:`pipeline.grounding`): every key point's quote must be found in the
transcript, and is rewritten to the transcript's own words and time. Invalid output and quotes
that are not found go back in exactly one repair call that lists every problem; what is still
not found after it is dropped and counted (``Brief.grounding``, a ``Notice`` in
``Brief.warnings``). Output that is still invalid after the repair is a
:class:`PermanentStepError`. Chapters are then fitted to the video (clipped, ordered, not
overlapping, snapped to shot and transcript boundaries); chapters whose summary shares nothing
with what is said in them are flagged.

Long transcripts are map-reduced: the transcript is cut into chunks that fit
``VIDBRIEF_LLM_CONTEXT_TOKENS`` (tokens estimated), the chunks are briefed in parallel (at most
``VIDBRIEF_LLM_CONCURRENCY`` calls at once, each grounded in its own chunk), and the partial
briefs are merged by one more call (hierarchically when even they do not fit), grounded in the
whole transcript.

Bounds: a transcript longer than ``VIDBRIEF_MAX_TRANSCRIPT_CHARS`` is refused, and one brief
makes at most ``VIDBRIEF_LLM_MAX_CALLS`` calls (map, reduce and repair calls together; the
client's own retries of one call on 429/5xx are not counted): both refusals are permanent.

Without an LLM: the extractive brief of :mod:`pipeline.offline_brief`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ingest.errors import ConfigError, PermanentStepError, VidbriefError
from ingest.names import BRIEF_STEP
from ingest.settings import Settings
from pipeline.context import JobContext
from pipeline.grounding import (
    Grounded,
    TranscriptIndex,
    boundaries,
    failure_lines,
    fit_chapters,
    ground_key_points,
    unsupported_chapters,
    unsupported_specifics,
    unsupported_title,
)
from pipeline.llm import ChatReply, LLMClient, LLMConfig
from pipeline.models import (
    Analysis,
    Brief,
    BriefContent,
    Grounding,
    Media,
    Notice,
    Segment,
    TokenUsage,
)
from pipeline.offline_brief import offline_brief
from pipeline.prompts import (
    EXTRA_MAP,
    EXTRA_REDUCE,
    REPAIR,
    SYSTEM_BRIEF,
    PromptJob,
    estimate_messages,
    estimate_tokens,
    transcript_line,
)
from pipeline.text import language_of

STEP = BRIEF_STEP
RESPONSE_RESERVE_TOKENS = 2_000  # room left for the reply (at most a quarter of the context)
MIN_CHUNK_TOKENS = 200  # a chunk smaller than this cannot say anything useful
TIME_TOLERANCE_S = 1.0  # model times may overshoot the duration by rounding
MAX_REDUCE_DEPTH = 6  # hierarchical merging levels before giving up
#: Speech long enough (about 10 s) that a brief without a single key point says the model
#: failed at it.
MIN_WORDS_FOR_POINTS = 25

__all__ = ["STEP", "ask", "chunk_segments", "offline_brief", "run", "write_brief"]


def run(ctx: JobContext, media: Media, analysis: Analysis) -> Brief:
    """Write the brief: with the configured LLM, else the offline extractive brief.

    A model whose answer stays unusable after the repair call gets the offline brief written
    instead, with an ``llm_unusable`` warning on the report: download and analysis are not
    thrown away for a model that cannot follow the schema, and nothing it wrote is printed.
    """
    check_transcript_size(ctx.settings, analysis)
    llm = LLMClient.from_settings(ctx.settings)
    if llm is None:
        return offline_brief(media, analysis)
    with llm:
        try:
            return write_brief(ctx, media, analysis, llm)
        except UnusableBrief as e:
            return _offline_instead(media, analysis, e)


def _offline_instead(media: Media, analysis: Analysis, unusable: UnusableBrief) -> Brief:
    brief = offline_brief(media, analysis)
    notice = Notice(
        code="llm_unusable",
        message=f"The language model ({unusable.model_name}) did not return a usable brief "
        "(after one repair call), "
        "so this is the offline extractive brief: sentences picked from the transcript.",
    )
    return brief.model_copy(update={"warnings": [*brief.warnings, notice], "usage": unusable.usage})


def check_transcript_size(settings: Settings, analysis: Analysis) -> None:
    """Refuse a transcript over ``VIDBRIEF_MAX_TRANSCRIPT_CHARS`` (a permanent error)."""
    chars = sum(len(s.text) for s in analysis.transcript)
    if chars > settings.max_transcript_chars:
        raise PermanentStepError(
            f"the transcript has {chars:,} characters in {len(analysis.transcript):,} segments, "
            f"more than VIDBRIEF_MAX_TRANSCRIPT_CHARS={settings.max_transcript_chars:,}; raise "
            "it to brief this video",
            step=STEP,
        )


def write_brief(ctx: JobContext, media: Media, analysis: Analysis, llm: LLMClient) -> Brief:
    """The brief by ``llm`` (injected so tests can tune its retry policy)."""
    job = PromptJob.of(ctx, media, analysis)
    index = TranscriptIndex.of(analysis.transcript, language_of(analysis.language))
    caller = Caller(llm, ctx.settings.llm_max_calls)
    single = job.messages(SYSTEM_BRIEF, job.transcript_block(analysis.transcript))
    if estimate_messages(single) <= _input_budget(llm.config):
        answer = ask(caller, single, job.duration_s, index)
    else:
        answer = _map_reduce(job, analysis.transcript, caller, index)
    content, warnings = finish(answer, job, analysis, index, ctx.request.language)
    return Brief(
        content=content,
        language=job.language_tag,
        provider=llm.config.provider,
        model=llm.config.model,
        offline=False,
        usage=answer.usage,
        grounding=answer.grounding,
        warnings=warnings,
    )


def _input_budget(config: LLMConfig) -> int:
    return config.context_tokens - min(RESPONSE_RESERVE_TOKENS, config.context_tokens // 4)


# --- the calls of one brief, counted ---------------------------------------------------------


class Caller:
    """The LLM as one brief uses it: every call counted against ``VIDBRIEF_LLM_MAX_CALLS``."""

    def __init__(self, llm: LLMClient, max_calls: int) -> None:
        self.llm = llm
        self.max_calls = max_calls
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.llm.config.provider}, {self.llm.config.model}"

    def reserve(self) -> bool:
        """Take one call from the budget; False when it is spent."""
        with self._lock:
            if self.calls >= self.max_calls:
                return False
            self.calls += 1
            return True

    def chat(self, messages: list[dict[str, str]]) -> ChatReply:
        """One call that the brief cannot do without: refused when the budget is spent."""
        if not self.reserve():
            raise PermanentStepError(
                f"this brief needs more than VIDBRIEF_LLM_MAX_CALLS={self.max_calls} LLM calls; "
                "raise it, or VIDBRIEF_LLM_CONTEXT_TOKENS so that fewer chunks are needed",
                step=STEP,
            )
        return self.llm.chat_json(messages, BRIEF_SCHEMA)

    def check_plan(self, calls: int, chunks: int) -> None:
        if calls > self.max_calls:
            raise PermanentStepError(
                f"the transcript needs {chunks} chunks, at least {calls} LLM calls, more than "
                f"VIDBRIEF_LLM_MAX_CALLS={self.max_calls}; raise it, or "
                "VIDBRIEF_LLM_CONTEXT_TOKENS (a model with a larger context)",
                step=STEP,
            )


# --- one call with validation, grounding and one repair -------------------------------------


#: The schema the reply must follow, for servers that take response_format json_schema.
BRIEF_SCHEMA = BriefContent.model_json_schema()


class UnusableBrief(PermanentStepError):
    """The model's answer stayed unusable after the repair call (``run`` writes the offline
    brief instead; called directly, a permanent error)."""

    def __init__(self, message: str, model_name: str, usage: TokenUsage) -> None:
        super().__init__(message, step=STEP)
        self.model_name, self.usage = model_name, usage


class InvalidOutput(VidbriefError, ValueError):
    """The model's reply is not a usable BriefContent; ``problems`` says why, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_brief(text: str, duration_s: float) -> BriefContent:
    """Parse and check a model reply; raise InvalidOutput listing every problem."""
    try:
        data = json.loads(_strip_fences(text))
    except ValueError as e:
        raise InvalidOutput([f"not valid JSON: {e}"]) from e
    if not isinstance(data, dict):
        raise InvalidOutput([f"expected a JSON object, got {type(data).__name__}"])
    try:
        content = BriefContent.model_validate(data)
    except ValidationError as e:
        raise InvalidOutput([_describe(err) for err in e.errors()]) from e
    problems = check_times(content, duration_s)
    if problems:
        raise InvalidOutput(problems)
    return content


def _strip_fences(text: str) -> str:
    # Some local models wrap JSON in a Markdown fence even in JSON mode.
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, flags=re.DOTALL)
    return match.group(1) if match else text


def _describe(error: ErrorDetails) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "object"
    return f"{where}: {error['msg']}"


def check_times(content: BriefContent, duration_s: float) -> list[str]:
    """Key points inside the video and quoted (chapters are fitted afterwards, not refused)."""
    limit = duration_s + TIME_TOLERANCE_S
    problems = []
    for i, kp in enumerate(content.key_points):
        if kp.start > limit:
            problems.append(f"key_points.{i}.start: {kp.start} is after the end ({duration_s})")
        if not kp.quote.strip():
            problems.append(f"key_points.{i}.quote: must quote the transcript, got nothing")
    return problems


@dataclass(frozen=True)
class Answer:
    """A usable reply: grounded content, the tokens it cost, how its quotes fared."""

    content: BriefContent
    usage: TokenUsage
    grounding: Grounding


@dataclass(frozen=True)
class _Checked:
    """One reply, checked: its content (None when invalid), its grounding, every problem."""

    content: BriefContent | None
    grounded: Grounded | None
    problems: list[str]

    @classmethod
    def of(cls, text: str, duration_s: float, index: TranscriptIndex) -> _Checked:
        try:
            content = parse_brief(text, duration_s)
        except InvalidOutput as e:
            return cls(None, None, e.problems)
        grounded = ground_key_points(content.key_points, index)
        return cls(content, grounded, failure_lines(grounded.failed))

    @property
    def found(self) -> int:
        return len(self.content.key_points) - len(self.grounded.failed) if self.grounded else 0

    def answer(self, usage: TokenUsage, grounding: Grounding | None = None) -> Answer:
        assert self.content is not None and self.grounded is not None
        n = len(self.content.key_points)
        grounding = grounding or Grounding(checked=n, matched=self.found, dropped=n - self.found)
        content = self.content.model_copy(update={"key_points": self.grounded.kept})
        return Answer(content, usage, grounding)


def ask(
    caller: Caller, messages: list[dict[str, str]], duration_s: float, index: TranscriptIndex
) -> Answer:
    """One call; on invalid output or quotes not found, one repair call; then what holds."""
    reply = caller.chat(messages)
    usage = _usage(reply)
    first = _check(reply, duration_s, index)
    if not first.problems:
        return first.answer(usage)
    if not caller.reserve():  # no budget for a repair: keep what holds, if anything does
        return _unrepaired(first, usage, caller, None)
    repair = [
        *messages,
        {"role": "assistant", "content": reply.content},
        {"role": "user", "content": REPAIR.format(problems=_bullets(first.problems))},
    ]
    second_reply = caller.llm.chat_json(repair, BRIEF_SCHEMA)
    usage = add_usage(usage, _usage(second_reply))
    second = _check(second_reply, duration_s, index)
    if second.content is None:
        return _unrepaired(first, usage, caller, second.problems)
    return second.answer(usage, _repair_counts(first, second))


def _check(reply: ChatReply, duration_s: float, index: TranscriptIndex) -> _Checked:
    checked = _Checked.of(reply.content, duration_s, index)
    if checked.content is None and reply.finish_reason == "length":
        cut = "the reply was cut off at VIDBRIEF_LLM_MAX_OUTPUT_TOKENS: write less"
        return _Checked(None, None, [cut, *checked.problems])
    return checked


def _bullets(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def _unrepaired(
    first: _Checked, usage: TokenUsage, caller: Caller, repair_problems: list[str] | None
) -> Answer:
    """The first reply without its unfound quotes; UnusableBrief when it is invalid."""
    if first.content is not None:
        return first.answer(usage)
    if repair_problems is None:
        why = (
            f"the LLM ({caller.name}) returned an invalid brief and VIDBRIEF_LLM_MAX_CALLS="
            f"{caller.max_calls} leaves no call for a repair: {'; '.join(first.problems)}"
        )
    else:
        why = (
            f"the LLM ({caller.name}) returned an invalid brief twice (one repair attempt): "
            f"{'; '.join(repair_problems)}"
        )
    raise UnusableBrief(why, caller.name, usage)


def _repair_counts(first: _Checked, second: _Checked) -> Grounding:
    """Quotes found in the final reply: ``matched`` where the first reply had the same
    evidence, ``repaired`` where it did not; ``dropped`` the rest of those checked."""
    assert second.content is not None and second.grounded is not None
    n2, found = len(second.content.key_points), second.found
    if first.grounded is None:  # the first reply was unusable: only the second was checked
        return Grounding(checked=n2, matched=found, dropped=n2 - found)
    before = set(first.grounded.spans)
    matched = min(sum(1 for span in second.grounded.spans if span in before), first.found)
    checked = max(len(first.content.key_points) if first.content else 0, n2)
    return Grounding(
        checked=checked, matched=matched, repaired=found - matched, dropped=checked - found
    )


def _usage(reply: object) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=getattr(reply, "prompt_tokens", 0),
        completion_tokens=getattr(reply, "completion_tokens", 0),
        total_tokens=getattr(reply, "total_tokens", 0),
        calls=1,
    )


def add_usage(*usages: TokenUsage) -> TokenUsage:
    """Sum of token usages."""
    return TokenUsage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        total_tokens=sum(u.total_tokens for u in usages),
        calls=sum(u.calls for u in usages),
    )


# --- after the last call: chapters fitted, warnings ------------------------------------------


def finish(
    answer: Answer,
    job: PromptJob,
    analysis: Analysis,
    index: TranscriptIndex,
    requested_language: str | None,
) -> tuple[BriefContent, list[Notice]]:
    """Chapters fitted to the video; a Notice for dropped quotes, no key points at all, a
    made-up title, invented names or figures, and unsupported chapters."""
    marks = boundaries(analysis.shots, analysis.transcript, job.duration_s)
    chapters = fit_chapters(answer.content.chapters, job.duration_s, marks)
    content = answer.content.model_copy(update={"chapters": chapters})
    warnings = _key_point_notices(content, answer.grounding, analysis)
    if language_of(requested_language or analysis.language) == index.lang:
        # Words can only be compared with the transcript in the language it is in.
        warnings += _invention_notices(content, index, job.title)
    return content, warnings


def _key_point_notices(content: BriefContent, g: Grounding, analysis: Analysis) -> list[Notice]:
    """Key points left out for their quotes, or none given at all."""
    warnings = []
    if g.dropped:
        warnings.append(
            Notice(
                code="ungrounded_quotes",
                message=f"{g.dropped} of {g.checked} key points were left out: their quotes "
                "could not be found in the transcript.",
            )
        )
    spoken = _spoken_words(analysis)
    if not content.key_points and not g.dropped and spoken >= MIN_WORDS_FOR_POINTS:
        # A model that returns none is easy to miss on the page (the section is just absent).
        warnings.append(
            Notice(
                code="no_key_points",
                message=f"The language model gave no key points for the {spoken:,} words "
                "spoken: this brief has its summary only.",
            )
        )
    return warnings


def _invention_notices(
    content: BriefContent, index: TranscriptIndex, source_title: str | None
) -> list[Notice]:
    """Names or figures never said, a made-up title, chapter summaries off their chapter."""
    warnings = []
    invented = unsupported_specifics(_prose(content), index)
    if invented:
        warnings.append(
            Notice(
                code="unsupported_claims",
                message="The brief names things the video never says ("
                + ", ".join(invented)
                + "): read its summary and key points with care.",
            )
        )
    if unsupported_title(content.title, index, source_title):
        warnings.append(
            Notice(
                code="unsupported_title",
                message=f"The title “{content.title}” shares no word with what is said in the "
                "video: it was made up.",
            )
        )
    flagged = unsupported_chapters(content.chapters, index)
    if flagged:
        titles = ", ".join(f"“{c.title}”" for c in flagged)
        warnings.append(
            Notice(
                code="unsupported_chapter_summaries",
                message=f"The summaries of chapters {titles} share no words with what is said "
                "in them: read them with care.",
            )
        )
    return warnings


def _spoken_words(analysis: Analysis) -> int:
    return sum(len(s.text.split()) for s in analysis.transcript)


def _prose(content: BriefContent) -> list[str]:
    """What the model wrote in its own words (quotes are checked on their own)."""
    return [
        content.summary,
        *(kp.text for kp in content.key_points),
        *(ch.summary for ch in content.chapters),
    ]


# --- map-reduce ------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def _parallel(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``fn`` over ``items`` on at most ``workers`` threads, results in order."""
    if len(items) == 1:
        return [fn(items[0])]
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))))
    try:
        return list(pool.map(fn, items))
    finally:
        # On failure, do not start chunks nobody will use.
        pool.shutdown(wait=True, cancel_futures=True)


def chunk_segments(segments: Sequence[Segment], budget_tokens: int) -> list[list[Segment]]:
    """Consecutive segments in chunks of at most ``budget_tokens`` (a long segment alone)."""
    chunks: list[list[Segment]] = [[]]
    used = 0
    for segment in segments:
        cost = estimate_tokens(transcript_line(segment)) + 1
        if chunks[-1] and used + cost > budget_tokens:
            chunks.append([])
            used = 0
        chunks[-1].append(segment)
        used += cost
    return [c for c in chunks if c]


@dataclass(frozen=True)
class _Part:
    start: float
    end: float
    content: BriefContent


def _map_reduce(
    job: PromptJob, segments: Sequence[Segment], caller: Caller, index: TranscriptIndex
) -> Answer:
    config = caller.llm.config
    overhead = estimate_messages(job.messages(SYSTEM_BRIEF, job.transcript_block([]), EXTRA_MAP))
    budget = _input_budget(config) - overhead
    if budget < MIN_CHUNK_TOKENS:
        raise ConfigError(
            f"VIDBRIEF_LLM_CONTEXT_TOKENS={config.context_tokens} leaves {budget} tokens "
            f"for the transcript after the prompt; set it higher"
        )
    chunks = chunk_segments(segments, budget)
    caller.check_plan(len(chunks) + 1, len(chunks))

    def brief_chunk(item: tuple[int, list[Segment]]) -> tuple[_Part, TokenUsage]:
        i, chunk = item
        start, end = chunk[0].start, chunk[-1].end
        extra = EXTRA_MAP.format(
            part=i + 1, parts=len(chunks), start=f"{start:.1f}", end=f"{end:.1f}"
        )
        messages = job.messages(SYSTEM_BRIEF, job.transcript_block(chunk), extra, (start, end))
        answer = ask(caller, messages, job.duration_s, TranscriptIndex.of(chunk, index.lang))
        return _Part(start, end, answer.content), answer.usage

    mapped = _parallel(brief_chunk, list(enumerate(chunks)), config.concurrency)
    final = _reduce(job, [p for p, _ in mapped], caller, index, depth=0)
    return Answer(final.content, add_usage(*(u for _, u in mapped), final.usage), final.grounding)


def render_part(index: int, part: _Part) -> str:
    """A partial brief as text for the merge prompt (times kept as ``[12.3s]`` anchors)."""
    c = part.content
    lines = [f"Part {index} ({part.start:.1f}s-{part.end:.1f}s)", f"Title: {c.title}"]
    lines.append(f"Summary: {' '.join(c.summary.split())}")
    lines.append("Key points:")
    lines += [f'[{kp.start:.1f}s] {kp.text} | quote: "{kp.quote}"' for kp in c.key_points]
    lines.append("Chapters:")
    lines += [f"[{ch.start:.1f}s-{ch.end:.1f}s] {ch.title}: {ch.summary}" for ch in c.chapters]
    return "\n".join(lines)


def _reduce(
    job: PromptJob, parts: list[_Part], caller: Caller, index: TranscriptIndex, depth: int
) -> Answer:
    """Merge partial briefs in one call, or in groups first when they do not fit."""
    messages = _reduce_messages(job, parts)
    budget = _input_budget(caller.llm.config)
    if estimate_messages(messages) <= budget or len(parts) <= 2 or depth >= MAX_REDUCE_DEPTH:
        return ask(caller, messages, job.duration_s, index)
    groups = _group_parts(job, parts, budget)
    if len(groups) == len(parts):  # each part alone is too big: merging pairs makes progress
        groups = [parts[i : i + 2] for i in range(0, len(parts), 2)]

    def merge(group: list[_Part]) -> tuple[_Part, TokenUsage]:
        answer = _reduce(job, group, caller, index, depth + 1)
        return _Part(group[0].start, group[-1].end, answer.content), answer.usage

    merged = _parallel(merge, groups, caller.llm.config.concurrency)
    final = _reduce(job, [p for p, _ in merged], caller, index, depth + 1)
    return Answer(final.content, add_usage(*(u for _, u in merged), final.usage), final.grounding)


def _reduce_messages(job: PromptJob, parts: Sequence[_Part]) -> list[dict[str, str]]:
    body = "\n\n".join(render_part(i + 1, p) for i, p in enumerate(parts))
    span = (parts[0].start, parts[-1].end)
    return job.messages(SYSTEM_BRIEF, f"<parts>\n{body}\n</parts>", EXTRA_REDUCE, span)


def _group_parts(job: PromptJob, parts: list[_Part], budget: int) -> list[list[_Part]]:
    groups: list[list[_Part]] = [[]]
    for part in parts:
        if groups[-1] and estimate_messages(_reduce_messages(job, [*groups[-1], part])) > budget:
            groups.append([])
        groups[-1].append(part)
    return groups
