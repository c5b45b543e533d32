"""Measure the brief's faithfulness and the offline brief's coverage (BENCHMARKS.md, last section).

    .venv/bin/python scripts/brief_quality.py [--out DIR]

1. Grounding rate on real generated talks: each talk is spoken by espeak-ng into an mp4
   (vidbrief.samples.make_sample_video) and analysed by the real analyse step (faster-whisper,
   the default model: bundled Whisper base, CPU). Every sentence of the talk's script is then
   located in the transcript, as a model quoting what was said would be (pipeline.grounding):
   rate = matched / checked. Sentences of the *other* talks are located too: any match is a
   false match.
2. Offline brief coverage on the 20-minute meeting of tests/talk_corpus.py (ten planted facts,
   recurring phrasing), over ten seeds: facts carried by summary + key points, and key points
   that nearly repeat another (rapidfuzz token_sort_ratio ≥ 75).
3. With ``--llm-url`` (an OpenAI-compatible server, e.g. llama.cpp's llama-server with a small
   model: BENCHMARKS.md says how to build one offline), each analysed talk is also briefed by
   the real brief step through the ``openai`` client: who wrote the brief (the model, or the
   offline brief after an unusable answer), key points, quotes checked / found in the
   transcript / dropped, and the notices the report shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from talk_corpus import meeting_talk  # noqa: E402
from test_pipeline_offline_brief import coverage, near_duplicates  # noqa: E402

from ingest.errors import StepError  # noqa: E402
from ingest.models import JobRequest  # noqa: E402
from ingest.settings import Settings  # noqa: E402
from pipeline import brief as brief_step  # noqa: E402
from pipeline.analyse import analyse_media  # noqa: E402
from pipeline.context import JobContext  # noqa: E402
from pipeline.grounding import MATCH_THRESHOLD, TranscriptIndex  # noqa: E402
from pipeline.models import Media  # noqa: E402
from pipeline.offline_brief import offline_brief  # noqa: E402
from pipeline.text import language_of  # noqa: E402
from vidbrief.samples import DEMO_TALKS, make_sample_video  # noqa: E402

#: Talks beyond the demo's, with the numbers, names and percentages briefs quote.
MORE_TALKS = (
    "The budget for marketing grows by 12% next year. We hired 35 engineers in 2024. "
    "The Lisbon office moves to a larger building in May. Sales in Germany rose by 8 percent. "
    "Our app now has two million users.",
    "Today we look at the new warehouse in Rotterdam. It stores 40,000 pallets on six levels. "
    "Robots move the pallets at night. The energy comes from solar panels on the roof. "
    "The first customer was a chain of bakeries.",
    "Welcome to the safety briefing. Please wear a helmet at all times on the site. "
    "The first aid kit is next to the main door. In case of fire, meet at the car park. "
    "Thank you and stay safe.",
)
SECONDS_PER_WORD = 0.45  # espeak-ng at 150 words a minute, with pauses


def split(text: str) -> list[str]:
    return [s.strip() + "." for s in text.split(".") if s.strip()]


def talks() -> list[tuple[str, list[str]]]:
    scripts = [t.text for t in DEMO_TALKS] + list(MORE_TALKS)
    return [(f"talk-{i + 1}", split(text)) for i, text in enumerate(scripts)]


def transcribe(name: str, sentences: list[str], folder: Path, settings: Settings):
    text = " ".join(sentences)
    seconds = round(len(text.split()) * SECONDS_PER_WORD + 3, 1)
    path = make_sample_video(folder / f"{name}.mp4", seconds=seconds, cuts=[seconds / 2], text=text)
    media = Media(source_url=f"http://127.0.0.1/{name}.mp4", path=str(path), size_bytes=1)
    return analyse_media(media, folder / name, settings)


def llm_settings(folder: Path, url: str, model: str) -> Settings:
    return Settings(
        work_dir=folder,
        llm_provider="custom",
        llm_base_url=url,
        llm_model=model,
        llm_api_key="none",
        llm_max_retries=0,
        # A small model on a busy CPU may take minutes to reach the output cap when it loops.
        llm_timeout_seconds=900,
        _env_file=None,
    )


def brief_by_model(name: str, analysis, settings: Settings) -> dict[str, object]:
    """Brief one analysed talk with the configured model; what the reader would get."""
    request = JobRequest(url=f"http://127.0.0.1/{name}.mp4", job_id=name)
    ctx = JobContext(name, request, settings)
    media = Media(source_url=request.url, path="/dev/null", size_bytes=1)
    started = time.perf_counter()
    try:
        brief = brief_step.run(ctx, media, analysis)
    except StepError as e:  # what the job would fail with (retryable or not)
        return {"talk": name, "error": str(e), "seconds": round(time.perf_counter() - started)}
    g = brief.grounding
    return {
        "talk": name,
        "written_by": "offline (fallback)" if brief.offline else brief.model,
        "key_points": len(brief.content.key_points),
        "quotes": f"{g.checked} checked, {g.matched} in the transcript, {g.dropped} dropped",
        "notices": [w.code for w in brief.warnings],
        "title": brief.content.title,
        "seconds": round(time.perf_counter() - started, 1),
    }


def grounding_rate(folder: Path, llm: Settings | None = None) -> None:
    settings = Settings(work_dir=folder, _env_file=None)
    corpus = talks()
    checked = matched = foreign_checked = foreign_matched = 0
    started = time.perf_counter()
    briefs = []
    for name, sentences in corpus:
        analysis = transcribe(name, sentences, folder, settings)
        if llm is not None:
            briefs.append(brief_by_model(name, analysis, llm))
        index = TranscriptIndex.of(analysis.transcript, language_of(analysis.language))
        found = [index.locate(s) for s in sentences]
        checked += len(sentences)
        matched += sum(m is not None for m in found)
        for sentence, match in zip(sentences, found, strict=True):
            if match is None:
                print(f"  {name}: not found: {sentence!r}")
        others = [s for other, ss in corpus if other != name for s in ss]
        foreign_checked += len(others)
        foreign_matched += sum(index.locate(s) is not None for s in others)
        print(f"  {name}: {sum(m is not None for m in found)}/{len(sentences)} sentences found; "
              f"transcript: {' '.join(s.text for s in analysis.transcript)!r}")  # fmt: skip
    print(
        f"grounding rate (threshold {MATCH_THRESHOLD:g}): {matched}/{checked} = "
        f"{matched / checked:.1%} of spoken sentences found in the faster-whisper transcript; "
        f"false matches: {foreign_matched}/{foreign_checked} sentences of other talks "
        f"({len(corpus)} talks, {time.perf_counter() - started:.0f} s)"
    )
    for row in briefs:
        print("  brief:", row)


def offline_coverage() -> None:
    media = Media(source_url="https://example.org/meeting.mp4", path="/tmp/m.mp4", size_bytes=1)
    covered, repeats, seconds = [], [], []
    for seed in range(10):
        talk = meeting_talk(seed)
        started = time.perf_counter()
        brief = offline_brief(media, talk.analysis)
        seconds.append(time.perf_counter() - started)
        covered.append(coverage(brief, talk.facts))
        repeats.append(near_duplicates([kp.text for kp in brief.content.key_points]))
    print(
        f"offline coverage of 10 planted facts, 20-minute meeting, seeds 0-9: mean "
        f"{statistics.mean(covered):.0%}, min {min(covered):.0%}; near-duplicate key points: "
        f"max {max(repeats)} (of 8); offline brief {statistics.median(seconds) * 1000:.0f} ms "
        "median"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the generated talks here")
    parser.add_argument("--llm-url", help="brief each talk with this OpenAI-compatible server")
    parser.add_argument("--llm-model", default="local", help="the served model's name")
    args = parser.parse_args()
    offline_coverage()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.out or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        llm = llm_settings(folder, args.llm_url, args.llm_model) if args.llm_url else None
        grounding_rate(folder, llm)


if __name__ == "__main__":
    main()
