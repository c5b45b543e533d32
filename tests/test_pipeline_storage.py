"""pipeline.storage: local paths, file:// and memory:// URLs, and real S3 (moto's server)."""

from __future__ import annotations

import traceback
import uuid
from pathlib import Path

import pytest
from s3_server import EchoingS3, S3Server

from ingest.errors import ConfigError, PermanentStepError, StepError
from ingest.settings import Settings
from pipeline import report, storage

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40  # binary, as a report is
RESULT = b'{"schema_version": 1}'


# --- local ----------------------------------------------------------------------------------


def test_plain_path_written_whole_and_readable(tmp_path: Path) -> None:
    url = storage.write_bytes(str(tmp_path / "reports"), "j1/report.pdf", PDF)
    assert url == str(tmp_path / "reports" / "j1" / "report.pdf")
    assert storage.read_bytes(url) == PDF
    assert Path(url).stat().st_mode & 0o777 == 0o644
    assert [p.name for p in Path(url).parent.iterdir()] == ["report.pdf"]  # no temporary left


def test_file_url_and_home_are_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = storage.write_bytes(tmp_path.as_uri(), "j1/result.json", RESULT)
    assert Path(url) == tmp_path / "j1" / "result.json"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert storage.public_url("~/r", "j1/x") == str(tmp_path / "r" / "j1" / "x")


def test_overwrite_replaces(tmp_path: Path) -> None:
    storage.write_bytes(str(tmp_path), "j1/result.json", b"old and longer")
    url = storage.write_bytes(str(tmp_path), "j1/result.json", RESULT)
    assert storage.read_bytes(url) == RESULT


def test_memory_url_goes_through_fsspec() -> None:
    base = f"memory://vidbrief-{uuid.uuid4().hex}/reports/"
    url = storage.write_bytes(base, "j1/report.pdf", PDF)
    assert url == f"{base.rstrip('/')}/j1/report.pdf"
    assert storage.read_bytes(url) == PDF


@pytest.mark.parametrize("relpath", ["", "/abs", "../out", "j1/../../x", "j1//x", "./j1"])
def test_relpath_must_stay_inside(relpath: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain relative path"):
        storage.write_bytes(str(tmp_path), relpath, b"x")


def test_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuch://"):
        storage.write_bytes("nosuch://bucket/reports", "j1/x", b"x")
    with pytest.raises(ConfigError, match="VIDBRIEF_REPORTS_URL"):
        report._write_output("nosuch://bucket/reports", "j1", "report.pdf", b"x")


def test_s3_options_only_for_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(storage.S3_ENDPOINT_ENV, "http://127.0.0.1:9000")
    assert storage.env_options("s3://b/p") == {"endpoint_url": "http://127.0.0.1:9000"}
    assert storage.env_options("memory://b/p") == {}
    assert storage.env_options("/srv/reports") == {}
    settings = Settings(s3_endpoint_url="http://minio:9000", _env_file=None)
    assert storage.settings_options(settings, "s3a://b") == {"endpoint_url": "http://minio:9000"}
    assert storage.settings_options(settings, "gs://b") == {}


def count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The file descriptors fsynced from now on (they are fsynced still)."""
    calls: list[int] = []
    real_fsync = storage.os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    return calls


def test_reports_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = count_fsyncs(monkeypatch)
    report._write_output(str(tmp_path), "j1", report.REPORT_NAME, PDF)
    report._write_output(str(tmp_path), "j1", report.RESULT_NAME, RESULT)
    assert len(fsyncs) == 2


def test_not_durable_is_still_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "new" / "folder" / "output.bin"
    fsyncs = count_fsyncs(monkeypatch)
    storage.write_local(path, b"first", durable=False)  # the folder is made on demand
    renames: list[tuple[str, str]] = []
    real_replace = storage.os.replace

    def replace(src: str, dst: Path) -> None:
        renames.append((src, str(dst)))
        raise OSError("interrupted")  # the rename never happens

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(OSError, match="interrupted"):
        storage.write_local(path, b"second, never seen", durable=False)
    monkeypatch.setattr(storage.os, "replace", real_replace)
    assert fsyncs == []
    assert [(Path(src).parent, dst) for src, dst in renames] == [(path.parent, str(path))]
    assert path.read_bytes() == b"first"  # old content whole, temporary removed
    assert [p.name for p in path.parent.iterdir()] == ["output.bin"]
    assert path.stat().st_mode & 0o777 == 0o644


# --- S3 (a real S3-compatible server on loopback) -------------------------------------------


@pytest.mark.integration
def test_report_and_result_to_s3(s3: S3Server, bucket: str) -> None:
    reports_url = f"s3://{bucket}/prefix"
    report_url = report._write_output(reports_url, "job-1", report.REPORT_NAME, PDF)
    result_url = report._write_output(reports_url, "job-1", report.RESULT_NAME, RESULT)
    assert report_url == f"s3://{bucket}/prefix/job-1/report.pdf"
    assert result_url == f"s3://{bucket}/prefix/job-1/result.json"
    assert storage.read_bytes(report_url) == PDF
    assert storage.read_bytes(result_url) == RESULT
    assert _keys(s3, bucket) == ["prefix/job-1/report.pdf", "prefix/job-1/result.json"]


@pytest.mark.integration
def test_explicit_options_win_over_env(
    s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(storage.S3_ENDPOINT_ENV, "http://127.0.0.1:9")  # nothing listens there
    options = {"endpoint_url": s3.endpoint_url}
    url = storage.write_bytes(f"s3://{bucket}", "j2/result.json", RESULT, options)
    assert storage.read_bytes(url, options) == RESULT


@pytest.mark.integration
def test_missing_bucket_is_not_created(s3: S3Server, bucket: str) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(PermanentStepError, match="HTTP 404 NoSuchBucket"):
        storage.write_bytes(f"s3://{missing}/reports", "j1/report.pdf", PDF)
    assert missing not in _buckets(s3)


@pytest.mark.integration
@pytest.mark.parametrize(("status", "retryable"), [(403, False), (500, True)])
def test_an_s3_error_echoing_the_credentials_says_only_class_status_and_host(
    status: int, retryable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, key_id = "s3-secret-marker-9d2e", "AKIAECHOMARKER012345"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    with EchoingS3(status, secret) as endpoint, pytest.raises(StepError) as err:
        options = {"endpoint_url": endpoint, "config_kwargs": {"retries": {"max_attempts": 1}}}
        storage.write_bytes("s3://reports/prefix", "j1/report.pdf", PDF, options)

    shown = "".join(traceback.format_exception(err.value))  # what Ray would print, causes too
    for leaked in (secret, key_id, "Signature=", "admin:"):
        assert leaked not in shown, leaked
    host = endpoint.removeprefix("http://")
    assert str(err.value) == (
        f"writing s3://reports/prefix/j1/report.pdf failed: PermissionError, "
        f"HTTP {status} AccessDenied, at {host}"
    )
    assert err.value.retryable is retryable


def _client(s3: S3Server):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=s3.endpoint_url)


def _keys(s3: S3Server, bucket: str) -> list[str]:
    """The bucket's keys, seen by a second client (boto3), not through s3fs's cache."""
    listing = _client(s3).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def _buckets(s3: S3Server) -> list[str]:
    return [b["Name"] for b in _client(s3).list_buckets()["Buckets"]]
