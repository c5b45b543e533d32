"""The media matrix: real files of every awkward kind, generated here, analysed for real.

Each clip is written with PyAV (tests/media.py: any mix of streams, dispositions, language tags,
subtitles, start times) and espeak-ng speech, then goes through ``analyse_media`` with the real
default model (multilingual Whisper base; loaded once per process). Each test asserts what a
user would notice: the words of the script in the transcript, the right audio track, the
warning or the refusal, times inside [0, duration].
"""

from __future__ import annotations

import re
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from ingest.errors import PermanentStepError
from ingest.settings import Settings
from pipeline.analyse import analyse_media
from pipeline.models import Analysis, Media

try:
    from tests.media import (
        AUDIO_RATE_HZ,
        AudioTrack,
        SubtitleTrack,
        patch_matroska_duration,
        serve_directory,
        speech_samples,
        write_media,
    )
except ImportError:  # tests/ is not a package: pytest put the folder itself on sys.path
    from media import (
        AUDIO_RATE_HZ,
        AudioTrack,
        SubtitleTrack,
        patch_matroska_duration,
        serve_directory,
        speech_samples,
        write_media,
    )

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng"),
]

SECONDS = 8.0
EN = "Welcome to the weekly project update. Our team finished the new search feature."
EN_WORDS = {"welcome", "weekly", "project", "team", "finished", "search", "feature"}
DE = "Guten Morgen und herzlich willkommen. Der Zug fährt um neun Uhr nach Hamburg."
DE_WORDS = {"guten", "morgen", "herzlich", "willkommen", "zug", "fährt", "hamburg"}
ES = "Buenos días y bienvenidos. El tren sale a las nueve para Madrid."
ES_WORDS = {"buenos", "días", "bienvenidos", "tren", "sale", "nueve", "madrid"}
CUES = [(0.5, 3.0, "Erste Zeile."), (3.0, 6.0, "Zweite Zeile."), (6.0, 7.8, "Dritte Zeile.")]
MKV = {"default_mode": "passthrough"}  # no default flag unless a test sets one


def words_found(analysis: Analysis, expected: set[str]) -> set[str]:
    text = " ".join(s.text for s in analysis.transcript).lower()
    return expected & set(re.findall(r"\w+", text))


def assert_times_inside(analysis: Analysis) -> None:
    d = analysis.duration_s
    for shot in analysis.shots:
        assert 0 <= shot.start <= shot.keyframe_time <= shot.end <= d + 1e-6
    for seg in analysis.transcript:
        assert 0 <= seg.start <= seg.end <= d + 1e-6
        assert all(0 <= w.start <= w.end <= d + 0.5 for w in seg.words or [])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("matrix")


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    return {
        "en": speech_samples(EN, SECONDS),
        "de": speech_samples(DE, SECONDS, voice="de"),
        "es": speech_samples(ES, SECONDS, voice="es"),
        "silence": np.zeros(int(SECONDS * AUDIO_RATE_HZ), np.float32),
    }


def analyse(path: Path, root: Path, language: str | None = None, **settings: object) -> Analysis:
    out = root / f"out-{path.stem}-{language}-{abs(hash(tuple(settings.items()))) % 10**6}"
    config = Settings(_env_file=None, device="cpu", work_dir=root / "work", **settings)  # type: ignore[call-arg]
    media = Media(source_url=f"http://example.com/{path.name}", path=str(path), size_bytes=1)
    return analyse_media(media, out, config, language=language)


def clip(root: Path, name: str, **kwargs: object) -> Path:
    path = root / name
    if not path.exists():
        kwargs.setdefault("seconds", SECONDS)
        kwargs.setdefault("cuts", (4.0,))
        write_media(path, **kwargs)  # type: ignore[arg-type]
    return path


# --------------------------------------------------------------------------- languages


@pytest.fixture(scope="module")
def german(root: Path, speech: dict[str, np.ndarray]) -> Path:
    return clip(root, "german.mp4", audio=(AudioTrack(speech["de"]),))


def test_german_speech_is_transcribed_in_german(german: Path, root: Path):
    analysis = analyse(german, root)
    found = words_found(analysis, DE_WORDS)
    print(f"German: {[s.text for s in analysis.transcript]}")
    assert len(found) >= 4, found
    assert analysis.language == "de" and analysis.language_probability > 0.5
    assert analysis.transcript_source == "faster-whisper" and analysis.asr_model == "base"
    assert all(
        s.avg_logprob is not None and s.no_speech_prob is not None for s in analysis.transcript
    )
    assert any(s.words for s in analysis.transcript), "word times are kept"
    assert_times_inside(analysis)


def test_spanish_speech_is_transcribed_in_spanish(root: Path, speech: dict[str, np.ndarray]):
    analysis = analyse(clip(root, "spanish.mp4", audio=(AudioTrack(speech["es"]),)), root)
    found = words_found(analysis, ES_WORDS)
    print(f"Spanish: {[s.text for s in analysis.transcript]}")
    assert len(found) >= 4, found
    assert analysis.language == "es"


def test_the_jobs_language_is_used_and_a_contradicting_one_is_reported(german: Path, root: Path):
    given = analyse(german, root, language="de-DE")
    assert given.language == "de"
    # Given and confirmed: detection agreed with the job, so its probability is kept (a
    # re-brief in another language may then reuse this transcript).
    assert given.language_probability is not None and given.language_probability >= 0.5
    assert not given.warnings
    assert len(words_found(given, DE_WORDS)) >= 4
    wrong = analyse(german, root, language="en")
    assert wrong.language == "de", "speech detected as German is not forced into English"
    assert [w.code for w in wrong.warnings] == ["language_mismatch"]
    assert len(words_found(wrong, DE_WORDS)) >= 4


def test_an_english_only_model_says_it_cannot_transcribe_german(german: Path, root: Path):
    guessed = analyse(german, root, asr_model="tiny.en")
    assert guessed.asr_model == "tiny.en"
    assert [w.code for w in guessed.warnings] == ["language_unsupported"]
    assert guessed.transcript == [], "no English nonsense passed off as a transcript"
    told = analyse(german, root, language="de", asr_model="tiny.en")
    assert [w.code for w in told.warnings] == ["language_unsupported"]
    assert "VIDBRIEF_ASR_MODEL" in told.warnings[0].message


def test_a_passage_in_a_second_language_is_transcribed_in_that_language(root, speech):
    """English, then German: Whisper base forced the German into made-up English ("The costs
    are fixed" for "Die Kosten sind gestiegen") with only a low_confidence warning."""
    both = np.concatenate([speech["en"], speech["de"]])
    analysis = analyse(clip(root, "en-de.mp4", seconds=16.0, audio=(AudioTrack(both),)), root)
    assert analysis.language == "en"
    german = [s for s in analysis.transcript if s.language == "de"]
    assert german and all(s.start >= SECONDS - 1.0 for s in german)
    assert len(DE_WORDS & set(re.findall(r"\w+", " ".join(s.text for s in german).lower()))) >= 4
    assert len(words_found(analysis, EN_WORDS)) >= 5  # the English left as it was
    # The English keeps the low score Whisper gave the whole 30 s window it shared with the
    # German, so low_confidence may stay beside the switch.
    assert {w.code for w in analysis.warnings} - {"low_confidence"} == {"language_switch"}
    assert_times_inside(analysis)


# --------------------------------------------------------------------------- audio tracks


def test_of_two_audio_tracks_the_default_one_is_transcribed(root, speech):
    tracks = (AudioTrack(speech["silence"]), AudioTrack(speech["en"], default=True))
    analysis = analyse(clip(root, "two-default.mkv", audio=tracks, options=MKV), root)
    assert (analysis.audio_stream, analysis.audio_stream_reason) == (2, "default")
    assert len(words_found(analysis, EN_WORDS)) >= 5


def test_without_a_default_track_the_one_with_speech_is_transcribed(root, speech):
    tracks = (AudioTrack(speech["silence"]), AudioTrack(speech["en"]))
    path = clip(root, "two-plain.mkv", audio=tracks, options=MKV)
    with av.open(str(path)) as container:
        assert not any(s.disposition & av.stream.Disposition.default for s in container.streams)
    analysis = analyse(path, root)
    assert (analysis.audio_stream, analysis.audio_stream_reason) == (2, "speech")
    assert len(words_found(analysis, EN_WORDS)) >= 5


def test_audio_only_is_transcribed_without_shots(root, speech):
    path = clip(root, "talk.m4a", video=False, audio=(AudioTrack(speech["en"]),), fmt="mp4")
    analysis = analyse(path, root)
    assert analysis.shots == [] and analysis.frames_sampled == 0
    assert len(words_found(analysis, EN_WORDS)) >= 5
    assert analysis.duration_s == pytest.approx(SECONDS, abs=0.2)


def test_video_without_audio_has_shots_and_no_transcript(root):
    analysis = analyse(clip(root, "mute.mp4", cuts=(3.0, 6.0)), root)
    assert analysis.transcript == [] and analysis.transcript_source == "none"
    assert [round(s.start) for s in analysis.shots] == [0, 3, 6]
    assert analysis.audio_stream is None and analysis.warnings == []


# --------------------------------------------------------------------------- subtitles


@pytest.mark.parametrize(
    ("name", "codec", "options"),
    [("movtext.mp4", "mov_text", None), ("webvtt.mkv", "webvtt", MKV)],
)
def test_subtitles_inside_the_file_are_the_transcript(root, speech, name, codec, options):
    cues = [
        (a, b, t.replace("Zweite", "<b>Zweite</b>") if codec == "webvtt" else t) for a, b, t in CUES
    ]
    path = clip(
        root,
        name,
        audio=(AudioTrack(speech["en"]),),
        subtitles=(SubtitleTrack(codec, cues, language="ger"),),
        options=options,
    )
    analysis = analyse(path, root, language="de")
    assert analysis.transcript_source == "subtitles" and analysis.language == "de"
    assert [(s.start, s.end, s.text) for s in analysis.transcript] == CUES
    assert analysis.subtitle_stream == 2
    # Subtitles in another language than the job's are not used: speech to text instead.
    other = analyse(path, root, language="en")
    assert other.transcript_source == "faster-whisper" and other.subtitle_stream is None
    assert len(words_found(other, EN_WORDS)) >= 5


def test_subtitles_that_cover_too_little_are_not_used(root, speech):
    path = clip(
        root,
        "sparse.mkv",
        audio=(AudioTrack(speech["en"]),),
        subtitles=(SubtitleTrack("subrip", [(0.5, 1.5, "Hallo.")], language="eng"),),
        options=MKV,
    )
    analysis = analyse(path, root)
    assert analysis.transcript_source == "faster-whisper"
    assert len(words_found(analysis, EN_WORDS)) >= 5


# --------------------------------------------------------------------------- honest failures


def test_a_truncated_file_is_briefed_with_a_warning(root, speech):
    long_speech = np.concatenate([speech["en"]] * 3)
    full = clip(
        root,
        "full.mp4",
        seconds=3 * SECONDS,
        cuts=(4.0, 12.0),
        audio=(AudioTrack(long_speech),),
        options={"movflags": "+faststart"},
    )
    cut = root / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    analysis = analyse(cut, root)
    assert analysis.declared_duration_s == pytest.approx(3 * SECONDS, abs=0.1)
    assert analysis.duration_s < 0.8 * analysis.declared_duration_s
    assert [w.code for w in analysis.warnings] == ["truncated"]
    assert analysis.shots[-1].end == analysis.duration_s
    assert_times_inside(analysis)


def test_a_header_that_understates_the_duration_does_not_pass_the_limit(root, speech):
    path = clip(
        root, "liar.mkv", seconds=30.0, audio=(AudioTrack(np.tile(speech["en"], 4)),), options=MKV
    )
    patch_matroska_duration(path, 5.0)
    with av.open(str(path)) as container:
        assert container.duration / 1e6 == pytest.approx(5.0)
    with pytest.raises(PermanentStepError, match="VIDBRIEF_MAX_DURATION_SECONDS"):
        analyse(path, root, max_duration_seconds=10)


def test_frames_over_8k_are_refused_before_decoding(root):
    path = clip(root, "huge.mkv", seconds=0.04, cuts=(), size=(7696, 4336), video_codec="mjpeg")
    out = root / "out-huge"
    with pytest.raises(PermanentStepError, match="VIDBRIEF_MAX_FRAME_PIXELS"):
        analyse(path, root)
    assert not list(out.glob("*.jpg"))


def test_an_mpeg_ts_starting_at_ten_minutes_has_times_from_zero(root, speech):
    path = clip(root, "late.ts", audio=(AudioTrack(speech["en"]),), fmt="mpegts", start_s=600.0)
    with av.open(str(path)) as container:
        assert container.start_time / 1e6 > 599
    analysis = analyse(path, root)
    assert analysis.duration_s == pytest.approx(SECONDS, abs=0.2)
    assert analysis.shots[0].start == 0.0
    assert 4.0 <= analysis.shots[1].start <= 4.0 + 0.5 + 0.1  # the planted cut, within a sample
    assert analysis.transcript[0].start < 1.0
    assert len(words_found(analysis, EN_WORDS)) >= 5
    assert_times_inside(analysis)


def test_an_hls_playlist_downloaded_by_the_step_has_times_from_zero(root, speech):
    """Two MPEG-TS segments starting at 1.4 s (as ffmpeg's HLS muxer writes), over loopback."""
    from ingest.models import JobRequest
    from pipeline.context import JobContext
    from pipeline.download import run as download_run

    site = root / "hls"
    site.mkdir()
    half = int(4 * AUDIO_RATE_HZ)
    for i, part in enumerate((speech["en"][:half], speech["en"][half:])):
        cuts = (2.0,) if i == 0 else ()
        write_media(
            site / f"seg{i}.ts", seconds=4.0, cuts=cuts, audio=(AudioTrack(part),),
            fmt="mpegts", start_s=1.4 + 4 * i,
        )  # fmt: skip
    (site / "talk.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXTINF:4.0,\nseg0.ts\n#EXTINF:4.0,\nseg1.ts\n#EXT-X-ENDLIST\n"
    )
    config = Settings(_env_file=None, work_dir=root / "hls-work", allow_private_urls=True)  # type: ignore[call-arg]
    with serve_directory(site) as url:
        ctx = JobContext("hls", JobRequest(url=f"{url}/talk.m3u8"), config)
        media = download_run(ctx)
    analysis = analyse(Path(media.path), root)
    assert analysis.duration_s == pytest.approx(SECONDS, abs=0.3)
    assert analysis.shots[0].start == 0.0
    assert 2.0 <= analysis.shots[1].start <= 2.0 + 0.5 + 0.1
    assert analysis.transcript[0].start < 1.0
    assert len(words_found(analysis, EN_WORDS)) >= 5
    assert_times_inside(analysis)


def test_portrait_60_fps_keeps_its_shape_and_cuts(root, speech):
    audio = (AudioTrack(speech["en"][: int(3 * AUDIO_RATE_HZ)]),)
    path = clip(
        root, "portrait.mp4", seconds=3.0, cuts=(1.5,), size=(720, 1280), fps=60, audio=audio
    )
    analysis = analyse(path, root)
    assert [round(s.start, 1) for s in analysis.shots] == [0.0, 1.5]
    with Image.open(analysis.shots[0].keyframe_path) as image:
        assert image.height > image.width
    assert_times_inside(analysis)


def phone_clip(path: Path, degrees: int, *, hflip: bool = False) -> Path:
    """Landscape frames (a white block in the stored top-left corner) and a display matrix."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip)
        for i in range(25):
            frame = np.zeros((720, 1280, 3), np.uint8)
            frame[:240, :400] = 255
            video_frame = av.VideoFrame.from_ndarray(frame, "rgb24")
            video_frame.pts, video_frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(video_frame))
        out.mux(stream.encode(None))
    return path


def brightest_corner(keyframe_path: str) -> tuple[tuple[int, int], str]:
    with Image.open(keyframe_path) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    h, w = pixels.shape
    corners = {
        "top-left": pixels[: h // 2, : w // 2].mean(),
        "top-right": pixels[: h // 2, w // 2 :].mean(),
        "bottom-left": pixels[h // 2 :, : w // 2].mean(),
        "bottom-right": pixels[h // 2 :, w // 2 :].mean(),
    }
    return (w, h), max(corners, key=corners.get)


@pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"), reason="PyAV < 15"
)
def test_a_phone_video_stored_on_its_side_has_upright_keyframes(root):
    """A phone records portrait as landscape frames and a display matrix that turns them:
    the keyframes are what a player shows, sized like a video stored upright (720×1280 →
    480×854). A matrix that mirrors is not turned (a turn alone would be upside down)."""
    left = analyse(phone_clip(root / "phone-ccw.mp4", 90), root)
    assert brightest_corner(left.shots[0].keyframe_path) == ((480, 854), "bottom-left")
    right = analyse(phone_clip(root / "phone-cw.mp4", -90), root)  # the usual phone tag
    assert brightest_corner(right.shots[0].keyframe_path) == ((480, 854), "top-right")
    mirrored = analyse(phone_clip(root / "mirrored.mp4", 0, hflip=True), root)
    assert brightest_corner(mirrored.shots[0].keyframe_path) == ((480, 270), "top-left")


def test_a_number_said_aloud_is_one_written_word(root):
    """Whisper writes "twelve thousand" as "12,000" but times it as " 12" + ",000": the words
    (what quotes and the offline brief are built from) must not read "12 ,000"."""
    said = speech_samples("The budget for repairs is 12,000 euros.", 5.0)
    analysis = analyse(clip(root, "budget.mp4", seconds=5.0, audio=(AudioTrack(said),)), root)
    words = [w.text for s in analysis.transcript for w in s.words or []]
    assert any(w.startswith("12,000") for w in words), words
    assert not any(w.startswith((",", ".")) for w in words), words


# --------------------------------------------------------------------------- confidence


def test_speech_drowned_in_noise_is_flagged_as_unreliable(root, speech):
    from vidbrief.bench.media import noisy

    drowned = noisy(speech["en"], "white", snr_db=0.0)
    analysis = analyse(clip(root, "noisy.mp4", audio=(AudioTrack(drowned),)), root)
    print(f"noisy: {[(s.text, s.avg_logprob) for s in analysis.transcript]}")
    assert analysis.transcript, "still transcribed"
    assert [w.code for w in analysis.warnings] == ["low_confidence"]
