"""ingest.redact: secrets masked, URL credentials removed, text kept readable and short."""

from __future__ import annotations

import pytest

from ingest.redact import (
    MASK,
    REDACTED_MAX_CHARS,
    error_summary,
    redact,
    strip_userinfo,
    url_host,
)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("Incorrect API key provided: sk-proj-AbC123xyz_987.", "AbC123xyz", "Incorrect API key"),
        ("redis://:hunter2@redis.internal:6379/0 refused", "hunter2", "redis.internal:6379/0"),
        ("rediss://default:hunter2@r:6380 timed out", "hunter2", "r:6380 timed out"),
        ("GET http://user:pa55@host:8/v1 failed", "pa55", "host:8/v1 failed"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJhbGci", "Bearer"),
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw is wrong", "MfKQ9r8", "is wrong"),
        ("postgres password=hunter2 host=db", "hunter2", "host=db"),
        ('{"api_key": "k-123456789", "model": "m"}', "k-123456789", '"model": "m"'),
        ("x-amz-signature=abcdef0123&x=1", "abcdef0123", "&x=1"),
        ("AccessKeyId AKIAIOSFODNN7EXAMPLE denied", "AKIAIOSFODNN7EXAMPLE", "denied"),
        ("key=AIzaSyA-1234567890abcdefghijklmnopqrs in url", "AIzaSyA-12345", "in url"),
    ],
)
def test_secrets_are_masked_and_the_rest_kept(text: str, secret: str, kept: str):
    out = redact(text)
    assert secret not in out and MASK in out
    assert kept in out


def test_ordinary_text_is_left_alone():
    text = "HTTP 404 from the video host: model m-1 not found (check VIDBRIEF_LLM_MODEL)"
    assert redact(text) == text


def test_long_text_is_cut():
    out = redact("x" * 10_000)
    assert len(out) == REDACTED_MAX_CHARS and out.endswith("…")
    assert len(redact("y" * 100, max_chars=20)) == 20


def test_strip_userinfo_returns_the_url_and_the_credentials():
    assert strip_userinfo("https://u:p%40ss@h.example:8443/v1?q=1") == (
        "https://h.example:8443/v1?q=1",
        ("u", "p%40ss"),
    )
    assert strip_userinfo("https://h.example/v1") == ("https://h.example/v1", None)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://u:p@api.example.com/v1", "api.example.com"),
        ("http://127.0.0.1:8080/x", "127.0.0.1:8080"),
        ("http://[::1]:9/x", "[::1]:9"),
        ("http://h:notaport/x", "?"),
        ("not a url", "?"),
    ],
)
def test_url_host_names_only_the_host(url: str, host: str):
    assert url_host(url) == host


def test_error_summary_is_class_and_redacted_message():
    err = ConnectionError("cannot reach redis://:hunter2@10.0.0.5:6379")
    assert error_summary(err) == f"ConnectionError: cannot reach redis://{MASK}@10.0.0.5:6379"
