"""A 20-minute meeting transcript with planted facts and recurring phrasing, built directly.

No audio: the transcript is made the way speech to text hands it over, so the offline brief can
be measured on a long talk in milliseconds. Eight sections (one topic each) of about two and a
half minutes; in each, one or two *planted facts* (specific sentences a brief must carry), talk
around the topic that repeats its words, the *recurring template* "Sales in <region> grew by
<n> percent compared with last year." and the filler every meeting has. The words run at 2.5 per
second and are cut into segments of 7 to 16 words *regardless of sentence ends* (as Whisper cuts
them); there are silent pauses of 25 to 40 s between some sections, and a slide change (a shot)
every 40 to 90 s. Deterministic (a seeded random.Random).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.models import Analysis, Segment, Shot

SECONDS_PER_WORD = 0.4
SEED = 15

#: (fact sentence, the words that show the fact was carried), per section.
FACTS = (
    ("The Rotterdam warehouse will be built next year and will employ 120 people.", "Rotterdam"),
    ("Our delivery time in Belgium dropped from five days to two days.", "Belgium"),
    ("The board approved a training budget of 4 million euros for the warehouse staff.",
     "4 million"),
    ("We will hire 35 new drivers for the Antwerp depot before the summer.", "Antwerp"),
    ("The new routing software cut fuel use by 18% in the pilot.", "routing software"),
    ("Complaints about damaged parcels fell by half after we changed the packaging supplier.",
     "packaging supplier"),
    ("Two forklift accidents last quarter led to a new safety course for every shift.", "forklift"),
    ("All trucks in Utrecht will run on electricity by 2027.", "Utrecht"),
    ("The contract with Nordic Freight ends in October and will not be renewed.", "Nordic Freight"),
    ("Our biggest customer, Helios Retail, doubled its orders in the spring.", "Helios"),
)  # fmt: skip
#: Which facts each section carries, and the words its talk keeps coming back to.
SECTIONS = (
    ((0,), ("warehouse", "storage space")),
    ((1,), ("delivery", "customers")),
    ((2, 3), ("budget", "staff")),
    ((4,), ("software", "routes")),
    ((5,), ("parcels", "quality")),
    ((6,), ("safety", "shifts")),
    ((7, 8), ("trucks", "contracts")),
    ((9,), ("customers", "orders")),
)
TALK = (
    "We talked a lot about the {a} in the last few weeks.",
    "The {a} question is still open for some of us.",
    "I want to say a few more words about the {a} and the {b}.",
    "There were many ideas about the {b} from the team.",
    "We will come back to the {a} at the next meeting.",
    "Some people asked how the {b} fits into the plan.",
    "Let me give you a short update on the {a}.",
    "The {b} has been on our minds since the spring.",
)
TEMPLATE = "Sales in {region} grew by {n} percent compared with last year."
REGIONS = ("Germany", "France", "Spain", "Italy", "Poland", "Austria", "Sweden", "Denmark")
FILLER = (
    "Okay, let me move on to the next slide.",
    "Does anyone have a question about this?",
    "As I said before, this matters for all of us.",
    "Let's keep that in mind for later.",
    "Thank you, that was a good question.",
)
SECTION_WORDS = 360  # about two and a half minutes at 2.5 words a second


@dataclass(frozen=True)
class Talk:
    analysis: Analysis
    facts: tuple[tuple[str, str], ...]
    sentences: tuple[str, ...]


def _section(rng: random.Random, facts: tuple[int, ...], topic: tuple[str, str]) -> list[str]:
    out = [FACTS[f][0] for f in facts]
    while sum(len(s.split()) for s in out) < SECTION_WORDS:
        kind = rng.random()
        if kind < 0.45:
            out.append(rng.choice(TALK).format(a=topic[0], b=topic[1]))
        elif kind < 0.75:
            region, n = rng.choice(REGIONS), rng.randint(2, 19)
            out.append(TEMPLATE.format(region=region, n=n))
        else:
            out.append(rng.choice(FILLER))
    first, rest = out[: len(facts)], out[len(facts) :]
    rng.shuffle(rest)
    # Facts somewhere inside the section, not first: a summariser cannot just take openings.
    for fact in first:
        rest.insert(rng.randint(2, len(rest) - 2), fact)
    return rest


def _segments(words: list[tuple[float, str]], rng: random.Random) -> list[Segment]:
    segments, i = [], 0
    while i < len(words):
        n = rng.randint(7, 16)
        chunk = words[i : i + n]
        # A pause splits a segment, as voice activity detection would.
        for j in range(1, len(chunk)):
            if chunk[j][0] - chunk[j - 1][0] > 2 * SECONDS_PER_WORD:
                chunk = chunk[:j]
                break
        start, end = chunk[0][0], chunk[-1][0] + SECONDS_PER_WORD
        segments.append(
            Segment(start=round(start, 2), end=round(end, 2), text=" ".join(w for _, w in chunk))
        )
        i += len(chunk)
    return segments


def meeting_talk(seed: int = SEED) -> Talk:
    """The 20-minute meeting (see the module docstring)."""
    rng = random.Random(seed)
    t, words, sentences = 0.0, [], []
    for k, (facts, topic) in enumerate(SECTIONS):
        if k in (3, 6):
            t += rng.uniform(25, 40)  # a silent pause (a break, a video without sound …)
        for sentence in _section(rng, facts, topic):
            sentences.append(sentence)
            for word in sentence.split():
                words.append((round(t, 2), word))
                t += SECONDS_PER_WORD
    duration = round(t + 2.0, 2)
    segments = _segments(words, rng)
    cuts, c = [0.0], 0.0
    while c + 90 < duration:
        c += rng.uniform(40, 90)
        cuts.append(round(c, 2))
    shots = [
        Shot(index=i, start=a, end=b, keyframe_path=f"analyse/shot_{i:04d}.jpg",
             keyframe_time=round((a + b) / 2, 2))
        for i, (a, b) in enumerate(zip(cuts, [*cuts[1:], duration], strict=True))
    ]  # fmt: skip
    analysis = Analysis(
        duration_s=duration, frames_sampled=int(duration * 2), sample_fps=2.0, shots=shots,
        transcript=segments, transcript_source="faster-whisper", language="en",
    )  # fmt: skip
    return Talk(analysis, FACTS, tuple(sentences))
