"""Measure the brief's faithfulness and the offline brief's coverage (BENCHMARKS.md, last section).

    .venv/bin/python scripts/brief_quality.py [--out DIR]

1. Grounding rate on real generated talks: each talk is spoken by espeak-ng into an mp4
   (vidbrief.samples.make_sample_video) and analysed by the real analyse step (faster-whisper,
   the bundled tiny.en model, CPU). Every sentence of the talk's script is then located in the
   transcript, as a model quoting what was said would be (pipeline.grounding): rate = matched /
   checked. Sentences of the *other* talks are located too: any match is a false match.
2. Offline brief coverage on the 20-minute meeting of tests/talk_corpus.py (ten planted facts,
   recurring phrasing), over ten seeds: facts carried by summary + key points, and key points
   that nearly repeat another (rapidfuzz token_sort_ratio ≥ 75).
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

from ingest.settings import Settings  # noqa: E402
from pipeline.analyse import analyse_media  # noqa: E402
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


def grounding_rate(folder: Path) -> None:
    settings = Settings(work_dir=folder, _env_file=None)
    corpus = talks()
    checked = matched = foreign_checked = foreign_matched = 0
    started = time.perf_counter()
    for name, sentences in corpus:
        analysis = transcribe(name, sentences, folder, settings)
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
    args = parser.parse_args()
    offline_coverage()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        grounding_rate(args.out)
    else:
        with tempfile.TemporaryDirectory() as folder:
            grounding_rate(Path(folder))


if __name__ == "__main__":
    main()
