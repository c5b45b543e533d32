"""bench media's measuring parts: noise at a given SNR, WER normalisation, the tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidbrief.bench.media import media_rows, noisy, pink_noise, word_error_rate

ROOT = Path(__file__).resolve().parents[1]


def test_noise_is_mixed_at_the_asked_snr():
    rng = np.random.default_rng(1)
    speech = np.concatenate([0.1 * rng.standard_normal(16_000), np.zeros(16_000)])
    speech = speech.astype(np.float32)
    for kind in ("white", "pink"):
        mixed = noisy(speech, kind, snr_db=10.0)
        noise = mixed - speech
        snr = 10 * np.log10(np.mean(speech[:16_000] ** 2) / np.mean(noise**2))
        assert snr == pytest.approx(10.0, abs=0.3), kind
    assert noisy(speech, None, 10.0) is speech


def test_pink_noise_has_more_power_low_than_high():
    spectrum = np.abs(np.fft.rfft(pink_noise(2**16, np.random.default_rng(0)))) ** 2
    low, high = spectrum[10:100].mean(), spectrum[10_000:11_000].mean()
    assert low / high > 50  # 1/f: about 100 × over this span of frequencies


def test_wer_normalises_numbers_case_and_punctuation():
    ref = "Revenue grew by twelve percent, this quarter."
    assert word_error_rate(ref, "revenue grew by 12% this quarter", "en") == 0.0
    assert word_error_rate("Guten Morgen, Welt!", "guten morgen welt", "de") == 0.0
    assert word_error_rate(ref, "", "en") == 1.0


def test_rows_show_the_targets_and_warnings():
    doc = {
        "cases": [
            {
                "case": "german",
                "model": "base",
                "seconds": 40.0,
                "wer": 0.125,
                "target_wer": 0.2,
                "language": "de",
                "language_probability": 0.97,
                "cpu_s_per_min": 8.04,
                "peak_rss_mib": 600.0,
                "warnings": ["low_confidence"],
            }
        ]
    }
    assert media_rows(doc) == [
        ["german", "base", "40", "12.5%", "≤ 20%", "de (0.97)", "8.0", "600", "low_confidence"]
    ]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_a_small_bench_media_run_prints_the_documented_json():
    """One case and a 15 s run-local: the shape of the JSON and that each part ran."""
    args = [sys.executable, "-m", "vidbrief.bench", "media", "--json"]
    args += ["--case", "spanish", "--minutes", "0.25"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    (case,) = doc["cases"]
    assert (case["case"], case["language"], case["model"]) == ("spanish", "es", "base")
    assert 0 <= case["wer"] < 0.5 and case["cpu_s_per_min"] > 0 and case["peak_rss_mib"] > 100
    (length,) = doc["run_local"]
    assert length["exit_code"] == 0 and length["peak_rss_mib"] > 100
    assert length["analyse_peak_rss_mib"] > 100 and length["analyse_warnings"] == []
