"""pipeline.report: real Jinja2 + WeasyPrint rendering, the job-only URL fetcher, result.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from llm_server import LLMServer, Reply
from PIL import Image, ImageDraw
from pydantic import SecretStr
from pypdf import PdfReader
from pypdf.generic import StreamObject
from talk_corpus import meeting_talk

from ingest.errors import ConfigError
from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline import brief as brief_step
from pipeline import offline_brief as offline_step
from pipeline import report, report_view
from pipeline.context import JobContext
from pipeline.models import (
    Analysis,
    Brief,
    BriefContent,
    Chapter,
    KeyPoint,
    Media,
    Segment,
    Shot,
    TokenUsage,
)

SOURCE = "https://example.org/factory.mp4"
TITLE = "Inside a solar panel factory"
SENTENCES = (
    "Welcome to this short tour of the solar panel factory.",
    "Every panel starts as a thin wafer of purified silicon.",
    "The silicon wafers are cut by diamond wire saws.",
    "Next, the wafers are doped so that they conduct electricity.",
    "Robots then solder the solar cells into long strings.",
    "The strings are laminated under glass to protect the cells.",
    "Each finished panel is tested with a flash of artificial sunlight.",
    "Panels that pass the test are packed and shipped to customers.",
)
SEGMENT_S = 5.0
SHOT_S = 8.0
PASSWD_MARK = b"root:x:0:0"
RESULT_KEYS = {
    "schema_version", "metadata", "brief", "summary", "key_points", "chapters", "transcript",
    "shots", "token_usage", "timings", "analysis_timings", "report", "warnings", "grounding",
    "reused_steps",
}  # fmt: skip


@dataclass
class Job:
    ctx: JobContext
    media: Media
    analysis: Analysis


def write_keyframe(path: Path, hue: int) -> None:
    """A small frame-like JPEG: a sky gradient, ground and a sun, coloured per shot."""
    width, height = 320, 180
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=((hue + y) % 256, 120 + y // 3, 200 - y // 2))
    draw.rectangle([0, 120, width, height], fill=(40 + hue // 4, 90, 50))
    draw.ellipse([220, 25, 270, 75], fill=(250, 220, 90))
    image.save(path, "JPEG", quality=80)


def make_job(tmp_path: Path, server: LLMServer | None = None, **request: object) -> Job:
    llm = {}
    if server is not None:
        llm = {
            "llm_provider": "openai",  # a named provider pointed at the local server
            "llm_base_url": server.base_url,
            "llm_api_key": SecretStr("sk-test"),
        }
    settings = Settings(
        work_dir=tmp_path / "work", reports_url=str(tmp_path / "reports"), _env_file=None, **llm
    )  # type: ignore[arg-type]
    req = JobRequest(url=SOURCE, job_id="job-7", **request)  # type: ignore[arg-type]
    ctx = JobContext(job_id="job-7", request=req, settings=settings)
    frames = ctx.step_dir("analyse")
    duration = len(SENTENCES) * SEGMENT_S
    shots = []
    for i in range(int(duration // SHOT_S)):
        write_keyframe(frames / f"kf{i:03d}.jpg", hue=i * 50)
        start = i * SHOT_S
        shots.append(
            Shot(index=i, start=start, end=start + SHOT_S,
                 keyframe_path=str(frames / f"kf{i:03d}.jpg"), keyframe_time=start + 1.0)
        )  # fmt: skip
    transcript = [
        Segment(start=i * SEGMENT_S, end=(i + 1) * SEGMENT_S, text=s)
        for i, s in enumerate(SENTENCES)
    ]
    analysis = Analysis(
        duration_s=duration, frames_sampled=80, sample_fps=2.0, shots=shots,
        transcript=transcript, transcript_source="faster-whisper", language="en",
        asr_model="tiny.en", timings={"decode": 0.4},
    )  # fmt: skip
    media = Media(
        source_url=SOURCE, path=str(ctx.step_dir("download") / "v.mp4"), size_bytes=1000,
        title=TITLE, duration_s=duration,
    )  # fmt: skip
    return Job(ctx, media, analysis)


def llm_brief(**changes: object) -> Brief:
    content = BriefContent(
        title=TITLE,
        summary="A tour of how solar panels are made.\n\nFrom silicon wafers to shipping.",
        key_points=[
            KeyPoint(text="Panels start as silicon wafers.", start=5.0, quote=SENTENCES[1]),
            KeyPoint(text="Every panel is tested.", start=30.0, quote=SENTENCES[6]),
        ],
        chapters=[
            Chapter(title="Wafers", start=0.0, end=16.0, summary="Silicon and saws."),
            Chapter(title="Cells", start=16.0, end=32.0, summary="Doping and soldering."),
            Chapter(title="Panels", start=32.0, end=40.0, summary="Testing and shipping."),
        ],
    )
    values = {
        "content": content, "language": "en", "provider": "openai", "model": "gpt-4o-mini",
        "usage": TokenUsage(prompt_tokens=900, completion_tokens=300, total_tokens=1200, calls=1),
    }  # fmt: skip
    return Brief(**(values | changes))  # type: ignore[arg-type]


def pdf_text(path: str | Path) -> str:
    """The PDF's text with whitespace collapsed (poppler's pdftotext, like a reader's copy)."""
    out = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True)
    return " ".join(out.stdout.split())


def stream_bytes(reader: PdfReader) -> bytes:
    """Every stream in the PDF, decompressed (embedded files would be among them)."""
    chunks = []
    for number in range(1, int(reader.trailer["/Size"])):
        try:
            obj = reader.get_object(number)
        except Exception:  # free or missing object numbers
            continue
        if isinstance(obj, StreamObject):
            chunks.append(obj.get_data())
    return b"\n".join(chunks)


def image_count(reader: PdfReader) -> int:
    return sum(len(page.images) for page in reader.pages)


def annotation_subtypes(reader: PdfReader) -> set[str]:
    return {
        str(a.get_object().get("/Subtype")) for p in reader.pages for a in p.get("/Annots") or []
    }


def link_uris(reader: PdfReader) -> list[str]:
    uris = []
    for page in reader.pages:
        for annot in page.get("/Annots") or []:
            action = annot.get_object().get("/A")
            if action and "/URI" in action:
                uris.append(str(action["/URI"]))
    return uris


# --- the report -------------------------------------------------------------------------------


def test_report_has_text_links_keyframes_and_tags(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    files = report.run(job.ctx, job.media, job.analysis, llm_brief())

    reader = PdfReader(files.report_url)
    assert len(reader.pages) == files.pages >= 3
    text = pdf_text(files.report_url)
    assert TITLE in text and "gpt-4o-mini via OpenAI" in text
    assert "0:05" in text and "0:30" in text
    assert SENTENCES[3] in text  # the transcript appendix
    assert image_count(reader) >= 3  # a thumbnail per chapter (and the cover's)
    uris = link_uris(reader)
    assert f"{SOURCE}#t=5" in uris and f"{SOURCE}#t=30" in uris
    assert "/StructTreeRoot" in reader.trailer["/Root"]  # tagged (PDF/UA-1)
    assert not reader.attachments
    folder = Path(files.report_url).parent
    assert sorted(p.name for p in folder.iterdir()) == ["keyframes", "report.pdf", "result.json"]
    assert sorted(p.name for p in (folder / "keyframes").iterdir()) == [
        f"shot_{i:04d}.jpg" for i in range(len(job.analysis.shots))
    ]  # and no temp files


def test_result_json_is_complete(tmp_path: Path) -> None:
    job = make_job(tmp_path, instructions="Focus on testing.", language="en")
    timings = {"download": 1.5, "analyse": 3.0, "brief": 0.8}
    files = report.run(job.ctx, job.media, job.analysis, llm_brief(), timings=timings)

    result = json.loads(Path(files.result_url).read_text())
    assert set(result) == RESULT_KEYS
    meta = result["metadata"]
    assert (meta["job_id"], meta["url"], meta["title"], meta["duration_s"]) == (
        "job-7", SOURCE, TITLE, 40.0)  # fmt: skip
    assert meta["request"] == {"instructions": "Focus on testing.", "language": "en"}
    assert meta["created_at"].endswith("+00:00")
    assert result["brief"] == {"provider": "openai", "model": "gpt-4o-mini", "offline": False,
                               "language": "en"}  # fmt: skip
    assert len(result["transcript"]["segments"]) == len(SENTENCES)
    assert result["transcript"]["segments"][1] == {"start": 5.0, "end": 10.0, "text": SENTENCES[1]}
    # Keyframes are copied beside the report and named relative to result.json.
    assert result["shots"][0]["keyframe_path"] == "keyframes/shot_0000.jpg"
    pictures = [c["keyframe"] for c in result["chapters"]]
    assert pictures == [f"keyframes/shot_{i:04d}.jpg" for i in (0, 2, 4)]
    folder = Path(files.result_url).parent
    for shot in result["shots"]:
        copied = folder / shot["keyframe_path"]
        assert (
            copied.read_bytes()
            == Path(job.analysis.shots[shot["index"]].keyframe_path).read_bytes()
        )
    assert result["key_points"][0]["link"] == f"{SOURCE}#t=5"
    assert result["token_usage"]["total_tokens"] == 1200
    assert result["timings"] == timings | {"report": result["timings"]["report"]}
    assert 0 < result["timings"]["report"] < 60
    assert result["report"]["pages"] == files.pages and result["report"]["tagged"] is True


def test_offline_report_says_so(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    brief = offline_step.offline_brief(job.media, job.analysis)
    files = report.run(job.ctx, job.media, job.analysis, brief)

    text = pdf_text(files.report_url)
    assert "offline extractive brief" in text
    assert "no language model was configured" in text
    assert json.loads(Path(files.result_url).read_text())["brief"]["offline"] is True


def test_rerun_overwrites_atomically(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    first = report.run(job.ctx, job.media, job.analysis, llm_brief())
    second = report.run(job.ctx, job.media, job.analysis, llm_brief(model="other-model"))
    assert first == second.model_copy(update={"pages": first.pages})
    assert "other-model via OpenAI" in pdf_text(second.report_url)


def test_links_at_a_time() -> None:
    yt = report.link_at("https://www.youtube.com/watch?v=abc&t=3s", 65.7)
    assert yt == "https://www.youtube.com/watch?v=abc&t=65s"
    assert report.link_at("https://youtu.be/abc", 5) == "https://youtu.be/abc?t=5s"
    assert report.link_at("https://example.org/v.mp4#old", 5) == "https://example.org/v.mp4#t=5"
    assert report.link_at("ftp://example.org/v.mp4", 5) is None


def test_write_output_paths(tmp_path: Path) -> None:
    url = report._write_output(f"file://{tmp_path}", "j1", "result.json", b"{}")
    assert Path(url) == tmp_path / "j1" / "result.json" and Path(url).read_bytes() == b"{}"
    assert Path(url).stat().st_mode & 0o777 == 0o644
    with pytest.raises(ConfigError, match="VIDBRIEF_REPORTS_URL"):
        report._write_output("nosuch://bucket/reports", "j1", "result.json", b"{}")


# --- hostile content --------------------------------------------------------------------------


def hostile_content(port: int) -> dict[str, object]:
    img = f'<img src="http://127.0.0.1:{port}/x">'
    attach = '<a rel="attachment" href="file:///etc/passwd">passwd</a>'
    return {
        "title": "<script>alert(1)</script> Solar",
        "summary": f"Summary {img} and {attach}.",
        # A quote must be found in the transcript to be printed: the markup rides in the text.
        "key_points": [{"text": f"Point {img} {attach}", "start": 5.0, "quote": SENTENCES[1]}],
        "chapters": [{"title": attach, "start": 0.0, "end": 40.0, "summary": img}],
    }


@pytest.mark.integration
def test_llm_injection_is_shown_as_text_and_fetches_nothing(tmp_path: Path) -> None:
    with LLMServer() as server:
        server.script(Reply(content=json.dumps(hostile_content(server.port))))
        job = make_job(tmp_path, server)
        brief = brief_step.run(job.ctx, job.media, job.analysis)
        files = report.run(job.ctx, job.media, job.analysis, brief)

    assert [(r.method, r.path) for r in server.requests] == [("POST", "/v1/chat/completions")]
    text = pdf_text(files.report_url)
    assert "<script>alert(1)</script> Solar" in text
    assert f'<img src="http://127.0.0.1:{server.port}/x">' in text
    squeezed = text.replace(" ", "")  # a long line may wrap inside the markup
    assert '<arel="attachment"href="file:///etc/passwd">passwd</a>' in squeezed
    reader = PdfReader(files.report_url)
    assert not reader.attachments and "/FileAttachment" not in annotation_subtypes(reader)
    raw = Path(files.report_url).read_bytes()
    assert b"/EmbeddedFile" not in raw and b"/EmbeddedFile" not in stream_bytes(reader)
    assert PASSWD_MARK not in raw and PASSWD_MARK not in stream_bytes(reader)


@pytest.mark.integration
def test_fetcher_reads_only_the_job_folder(tmp_path: Path) -> None:
    """Raw HTML (as if escaping failed): only the job's own file gets in."""
    job = make_job(tmp_path)
    workdir = job.ctx.workdir
    (workdir / "notes.txt").write_text("allowed attachment")
    os.symlink("/etc/passwd", workdir / "sneaky")
    outside = tmp_path / "outside.txt"
    outside.write_text("root:x:0:0: not for the report")
    with LLMServer() as server:
        html = f"""<html><body><p>x</p>
          <img src="http://127.0.0.1:{server.port}/img.png">
          <link rel="stylesheet" href="http://127.0.0.1:{server.port}/style.css">
          <img src="file:///etc/passwd">
          <a rel="attachment" href="file:///etc/passwd">a</a>
          <a rel="attachment" href="sneaky">b</a>
          <a rel="attachment" href="../../outside.txt">c</a>
          <a rel="attachment" href="file://{outside}">d</a>
          <a rel="attachment" href="notes.txt">ok</a>
        </body></html>"""
        fetcher = report.job_file_fetcher([workdir])
        pdf, _ = report._weasyprint(html, workdir, fetcher, tagged=False)

    assert server.requests == []
    path = tmp_path / "raw.pdf"
    path.write_bytes(pdf)
    reader = PdfReader(path)
    everything = pdf + stream_bytes(reader)
    assert b"allowed attachment" in everything  # the fetcher does read the job's own files
    assert annotation_subtypes(reader) >= {"/FileAttachment"}
    assert PASSWD_MARK not in everything


def test_allowed_file_refuses_hosts_and_escapes(tmp_path: Path) -> None:
    inside = tmp_path / "job" / "a.jpg"
    inside.parent.mkdir()
    inside.write_bytes(b"x")
    roots = [tmp_path / "job"]
    assert report.allowed_file(inside.as_uri(), roots) == inside
    for url in (
        f"file://evil.example{inside}",
        f"file://{tmp_path}/job/../job/../other.jpg",
        "file:///etc/passwd",
        f"file://{tmp_path}/job",  # a folder, not a file
    ):
        with pytest.raises(PermissionError):
            report.allowed_file(url, roots)


def test_keyframes_outside_the_job_folder_are_not_shown(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    elsewhere = tmp_path / "elsewhere.jpg"
    shutil.copy(job.analysis.shots[0].keyframe_path, elsewhere)
    shots = [s.model_copy(update={"keyframe_path": str(elsewhere)}) for s in job.analysis.shots]
    analysis = job.analysis.model_copy(update={"shots": shots})
    files = report.run(job.ctx, job.media, analysis, llm_brief())
    assert image_count(PdfReader(files.report_url)) == 0
    assert re.search(r"no keyframe", pdf_text(files.report_url))


# --- layout -----------------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, tzinfo=UTC)
PAGE_MM = 297
MARGIN_TOP_MM, MARGIN_BOTTOM_MM = 22, 24  # report.css @page
INK_BELOW = 200  # a grey level darker than this is ink
MAX_BLANK_SHARE = 1 / 3


def blank_shares(pdf: str | Path, dpi: int = 30) -> list[float]:
    """Per page, the share of the text area left empty below its last ink (pdftoppm images)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(pdf), f"{folder}/p"],
                       check=True)  # fmt: skip
        shares = []
        for image in sorted(Path(folder).glob("p-*.png")):
            grey = np.asarray(Image.open(image).convert("L"))
            top = int(len(grey) * MARGIN_TOP_MM / PAGE_MM)
            bottom = int(len(grey) * (PAGE_MM - MARGIN_BOTTOM_MM) / PAGE_MM)
            rows = np.where((grey[top:bottom] < INK_BELOW).any(axis=1))[0]
            last = int(rows.max()) + 1 if len(rows) else 0
            shares.append(1 - last / (bottom - top))
    return shares


def long_brief(analysis: Analysis) -> Brief:
    """A brief as a talkative model writes it: long chapter summaries, wrapped key points."""
    said = " ".join(s.text for s in analysis.transcript)
    step = analysis.duration_s / 8
    chapters = [
        Chapter(title=f"Part {k + 1}: what was said about it", start=k * step,
                end=(k + 1) * step, summary=said[: 700 + 180 * k])
        for k in range(8)
    ]  # fmt: skip
    segments = analysis.transcript
    points = [
        KeyPoint(text="A point explained at some length, so that it wraps over two lines. " * 2,
                 start=segments[k * 7].start, quote=segments[k * 7].text)
        for k in range(10)
    ]  # fmt: skip
    content = BriefContent(title="A long meeting", summary=f"{said[:1500]}\n\n{said[1500:2600]}",
                           key_points=points, chapters=chapters)  # fmt: skip
    return Brief(content=content, provider="openai", model="gpt-4o-mini")


def test_pages_have_no_large_gaps(tmp_path: Path) -> None:
    """No page is more than a third empty before the next section, except the page before the
    transcript appendix (which starts on a new page) and the appendix's last page."""
    job = make_job(tmp_path)
    analysis = meeting_talk().analysis
    shots = [s.model_copy(update={"keyframe_path": job.analysis.shots[s.index % 5].keyframe_path})
             for s in analysis.shots]  # fmt: skip
    analysis = analysis.model_copy(update={"shots": shots})
    files = report.run(job.ctx, job.media, analysis, long_brief(analysis))

    reader = PdfReader(files.report_url)
    appendix = next(
        i for i, page in enumerate(reader.pages) if "Appendix: transcript" in page.extract_text()
    )
    view = report_view.build_view(job.ctx, job.media, analysis, long_brief(analysis), NOW)
    assert report_view.estimated_pages(view) <= files.pages  # the page bound never over-refuses
    shares = blank_shares(files.report_url)
    assert len(shares) == files.pages and appendix >= 4
    gaps = {page + 1: round(share, 2) for page, share in enumerate(shares[: appendix - 1])}
    assert all(share <= MAX_BLANK_SHARE for share in gaps.values()), gaps


def test_keyframes_go_beside_the_report_on_an_fsspec_location(tmp_path: Path) -> None:
    import fsspec

    job = make_job(tmp_path)
    reports = f"memory://reports-{tmp_path.name}"
    settings = job.ctx.settings.model_copy(update={"reports_url": reports})
    ctx = JobContext(job_id="job-7", request=job.ctx.request, settings=settings)
    files = report.run(ctx, job.media, job.analysis, llm_brief())

    fs = fsspec.filesystem("memory")
    result = json.loads(fs.cat_file(files.result_url))
    folder = files.result_url.rsplit("/", 1)[0]
    for shot in result["shots"]:
        copied = fs.cat_file(f"{folder}/{shot['keyframe_path']}")
        assert copied == Path(job.analysis.shots[shot["index"]].keyframe_path).read_bytes()
    assert {c["keyframe"] for c in result["chapters"]} <= {
        s["keyframe_path"] for s in result["shots"]
    }


def test_portrait_pictures_are_letterboxed_and_language_shown(tmp_path: Path) -> None:
    """A portrait keyframe is shown whole: bars beside it, not a cropped band across."""
    job = make_job(tmp_path)
    for shot in job.analysis.shots:  # portrait frames, bright yellow edge to edge
        Image.new("RGB", (180, 320), (250, 220, 40)).save(shot.keyframe_path, "JPEG")
    analysis = job.analysis.model_copy(update={"language": "de", "language_probability": 0.93})
    files = report.run(job.ctx, job.media, analysis, llm_brief())

    assert "language de (detected, 93% probability)" in pdf_text(files.report_url)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["pdftoppm", "-r", "40", "-f", "1", "-l", "1", "-png",
                        files.report_url, f"{folder}/p"], check=True)  # fmt: skip
        [image] = Path(folder).glob("p-*.png")
        page = Image.open(image).convert("RGB")
    width, height = page.size
    hero_row = [page.getpixel((x, int(height * 0.3))) for x in range(width)]
    yellow = [x for x, (r, g, b) in enumerate(hero_row) if r > 200 and g > 180 and b < 120]
    bars = [x for x, (r, g, b) in enumerate(hero_row) if max(r, g, b) < 70]
    assert yellow and bars
    # The picture sits in the middle of the box with bars on both sides, at its own aspect.
    assert min(bars) < min(yellow) and max(bars) > max(yellow)
    assert (max(yellow) - min(yellow)) < 0.45 * (max(bars) - min(bars))


def test_an_unfound_quote_is_never_printed(tmp_path: Path) -> None:
    """A brief that was not grounded (kept from before, say): the report checks again."""
    job = make_job(tmp_path)
    invented = "Every panel is hand-polished by our master craftsmen."
    brief = llm_brief()
    points = [*brief.content.key_points, KeyPoint(text="Craft.", start=12.0, quote=invented)]
    brief = brief.model_copy(
        update={"content": brief.content.model_copy(update={"key_points": points})}
    )
    text = pdf_text(report.run(job.ctx, job.media, job.analysis, brief).report_url)
    assert "hand-polished" not in text and "master craftsmen" not in text
    assert text.count("EVIDENCE") == 3  # two found, one "NO EVIDENCE"
    assert "NO EVIDENCE the quote given for this point is not in the transcript" in text
    assert SENTENCES[1] in text and SENTENCES[6] in text  # the found ones, as evidence
