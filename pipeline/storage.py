"""Bytes in and out of a location that is a local path or any fsspec URL.

The reports location (``VIDBRIEF_REPORTS_URL``) and the dataset (``VIDBRIEF_DATASET_URL``) are
either a plain path (``/srv/reports``, ``~/reports``, ``C:\\reports``, ``file:///srv/reports``)
or an fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``memory://…``). Writes never show a
reader half a file:

- local: a temporary name in the same folder, fsync, rename (``os.replace`` is atomic); the
  fsync can be left out where a file lost to a power cut costs only a recomputation;
- object stores (S3, GCS, Azure, memory): one PUT, or one completed multipart upload, is
  atomic per object, so the object is written in place;
- other filesystems (SFTP, SMB, HDFS …): a temporary name, then ``mv``, as atomic as the
  server's rename.

Options for the filesystem come from the caller (``storage_options``, passed to fsspec as they
are) or, when the caller gives none, from the environment: ``VIDBRIEF_S3_ENDPOINT_URL`` for
``s3://`` URLs on an S3-compatible server (MinIO, Ceph, moto). Credentials are the filesystem's
own business: s3fs (botocore) reads ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, instance roles … A remote
read or write that fails raises a StepError naming the class, status and host only
(storage_errors.py: a server's error text may echo the credentials).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ingest.errors import ConfigError
from pipeline.storage_errors import storage_errors

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from ingest.settings import Settings

FILE_MODE = 0o644  # rw-r--r--: mkstemp makes 0600, and readers of the reports need more
S3_ENDPOINT_ENV = "VIDBRIEF_S3_ENDPOINT_URL"
S3_PROTOCOLS = frozenset({"s3", "s3a"})
LOCAL_SCHEMES = frozenset({"", "file", "local"})
# Stores where writing an object is atomic (and "folders" need not be made first).
OBJECT_STORE_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "memory"}
)

StorageOptions = Mapping[str, Any]


# --- locations ------------------------------------------------------------------------------


def is_local(url: str) -> bool:
    """A plain path or a ``file://`` URL (a one-letter scheme is a Windows drive)."""
    scheme = urlsplit(url).scheme.lower()
    return scheme in LOCAL_SCHEMES or len(scheme) == 1


def local_path(url: str) -> Path:
    """The filesystem path of a local location."""
    parts = urlsplit(url)
    if parts.scheme.lower() in ("file", "local"):
        return Path(url2pathname(parts.path))
    return Path(url).expanduser()


def public_url(base_url: str, relpath: str) -> str:
    """Where ``relpath`` under ``base_url`` is: a local path, or ``<base_url>/<relpath>``."""
    _check_relpath(relpath)
    if is_local(base_url):
        return str(local_path(base_url) / relpath)
    return f"{base_url.rstrip('/')}/{relpath}"


def _check_relpath(relpath: str) -> None:
    # Job ids are validated already; this keeps any caller from writing outside base_url.
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"storage: {relpath!r} is not a plain relative path")


# --- filesystems ----------------------------------------------------------------------------


def protocol_of(url: str) -> str:
    """The URL's protocol as fsspec names it (``file`` for local locations)."""
    if is_local(url):
        return "file"
    return urlsplit(url.split("::")[-1]).scheme.lower()


def env_options(url: str) -> dict[str, Any]:
    """Filesystem options for ``url`` from the environment (``VIDBRIEF_S3_ENDPOINT_URL``)."""
    endpoint = os.environ.get(S3_ENDPOINT_ENV)
    return {"endpoint_url": endpoint} if endpoint and protocol_of(url) in S3_PROTOCOLS else {}


def settings_options(settings: Settings, url: str) -> dict[str, Any]:
    """Filesystem options for ``url`` from settings (for callers that hold them)."""
    endpoint = settings.s3_endpoint_url
    return {"endpoint_url": endpoint} if endpoint and protocol_of(url) in S3_PROTOCOLS else {}


def filesystem(
    url: str, storage_options: StorageOptions | None = None
) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the path on it; ConfigError for an unknown one."""
    import fsspec.core

    if is_local(url):
        return fsspec.filesystem("file"), str(local_path(url))
    options = env_options(url) if storage_options is None else dict(storage_options)
    try:
        return fsspec.core.url_to_fs(url, **options)
    except (ValueError, ImportError) as e:  # unknown protocol; its package not installed
        raise ConfigError(
            f"{url!r}: no filesystem for {protocol_of(url)}:// ({e}); use a local path, or "
            "install the fsspec implementation (s3fs is installed; gcsfs, adlfs …)"
        ) from e


def _is_object_store(fs: AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & OBJECT_STORE_PROTOCOLS)


# --- bytes ----------------------------------------------------------------------------------


def write_bytes(
    base_url: str, relpath: str, data: bytes, storage_options: StorageOptions | None = None
) -> str:
    """Write ``<base_url>/<relpath>`` so no reader sees a partial file; return its URL."""
    url = public_url(base_url, relpath)
    if is_local(base_url):
        write_local(Path(url), data)
        return url
    fs, path = filesystem(url, storage_options)
    with storage_errors("writing", url, _options_for(url, storage_options)):
        _write_remote(fs, path, data)
    return url


def read_bytes(url: str, storage_options: StorageOptions | None = None) -> bytes:
    """The whole content of a file at a path or fsspec URL."""
    if is_local(url):
        return local_path(url).read_bytes()
    fs, path = filesystem(url, storage_options)
    with storage_errors("reading", url, _options_for(url, storage_options)):
        return fs.cat_file(path)


def _options_for(url: str, storage_options: StorageOptions | None) -> StorageOptions:
    return env_options(url) if storage_options is None else storage_options


def write_local(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Temporary name in the same folder, rename: a reader sees the old file or the new one.

    ``durable`` (the default) also fsyncs before the rename, so the new content survives a
    power loss. Without it a crash may leave an empty or torn file under the final name: only
    for files whose readers treat that as absent (kept step outputs are computed again).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_remote(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    if _is_object_store(fs):
        # No makedirs: on s3fs it would create a missing bucket instead of failing.
        fs.pipe_file(path, data)
        return
    parent, name = posixpath.split(path)
    fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{name}.{uuid.uuid4().hex}.tmp")
    fs.pipe_file(tmp, data)
    try:
        fs.mv(tmp, path)
    except BaseException:
        fs.rm(tmp)
        raise
