"""Where data lives: a local folder or an object-store prefix (``s3://bucket/prefix``).

Dask workers on several machines must all see the same input and output, so every location a
flow takes may be a URI. This module turns one into a pyarrow filesystem plus a root inside it
(``Location``), with the few operations the flows need: list files with size and modification
time (for the readiness rule), open a file for the validator, write an object atomically, and
hand ``fs``/``path()`` to ``pyarrow.dataset`` for Parquet.

Endpoint and credentials come from the standard AWS environment variables, so a MinIO, Ceph
or moto server works the same as AWS: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``. Nothing here reads posebatch settings or imports Prefect.

Atomicity: locally a write goes to a temporary file in the same folder and is renamed into
place; on S3 a single PUT is atomic (an object appears whole or not at all), which is the
guarantee readers need. S3 has no atomic rename, so callers must never rely on renaming
remote objects.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3",)


@dataclass(frozen=True)
class FileInfo:
    """A file below a location: POSIX path relative to the root, size in bytes, mtime (epoch s)."""

    path: str
    size: int
    mtime: float


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for ``s3://...`` URIs, False for local paths (including ``file://``)."""
    return urlparse(str(location)).scheme in REMOTE_SCHEMES


def absolute(location: str | os.PathLike[str]) -> str:
    """A local path made absolute (a Dask worker resolves a relative one in its own working
    folder); a remote URI as given."""
    return str(location) if is_remote(location) else os.path.abspath(location)


def relative_inside(child: str | None, parent: str) -> str | None:
    """``child`` relative to ``parent`` (POSIX) when it lies strictly inside it; None otherwise
    and for remote locations. Used to keep an output or archive inside the input unscanned."""
    if not child or is_remote(parent) or is_remote(child):
        return None
    try:
        rel = Path(child).resolve().relative_to(Path(parent).resolve())
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


def s3_options(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The S3 connection settings present in ``env`` (default ``os.environ``), by role.

    Keys: ``endpoint_url``, ``region``, ``access_key``, ``secret_key``, ``session_token``;
    absent variables are left out so the libraries fall back to their own defaults.
    """
    env = os.environ if env is None else env
    picks = {
        "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
        "access_key": ("AWS_ACCESS_KEY_ID",),
        "secret_key": ("AWS_SECRET_ACCESS_KEY",),
        "session_token": ("AWS_SESSION_TOKEN",),
    }
    out: dict[str, str] = {}
    for role, names in picks.items():
        for name in names:
            if env.get(name):
                out[role] = env[name]
                break
    return out


def _arrow_s3(opts: Mapping[str, str]) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {}
    if "endpoint_url" in opts:
        url = urlparse(opts["endpoint_url"])
        if url.scheme and url.netloc:
            kwargs["endpoint_override"] = url.netloc
            kwargs["scheme"] = url.scheme
        else:  # "host:port" without a scheme
            kwargs["endpoint_override"] = opts["endpoint_url"]
    if "region" in opts:
        kwargs["region"] = opts["region"]
    if "access_key" in opts and "secret_key" in opts:
        kwargs["access_key"] = opts["access_key"]
        kwargs["secret_key"] = opts["secret_key"]
        if "session_token" in opts:
            kwargs["session_token"] = opts["session_token"]
    return pafs.S3FileSystem(**kwargs)


def arrow_filesystem(location: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it (``bucket/prefix`` for S3, absolute locally)."""
    text = str(location)
    url = urlparse(text)
    if url.scheme == "s3":
        if not url.netloc:
            raise ValueError(f"no bucket in {text!r}: expected s3://bucket/prefix")
        root = posixpath.join(url.netloc, url.path.strip("/")).rstrip("/")
        return _arrow_s3(s3_options()), root
    if url.scheme == "file":
        text = url.path
    elif url.scheme and len(url.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise ValueError(f"unsupported location {text!r}: use a local path or s3://bucket/prefix")
    return pafs.LocalFileSystem(), Path(text).expanduser().resolve().as_posix()


def fsspec_filesystem(location: str | os.PathLike[str]) -> tuple[Any, str]:
    """The same location as an fsspec filesystem (s3fs for S3), for libraries that want one."""
    import fsspec

    text = str(location)
    url = urlparse(text)
    if url.scheme == "s3":
        opts = s3_options()
        kwargs: dict[str, Any] = {}
        client_kwargs: dict[str, Any] = {}
        if "endpoint_url" in opts:
            client_kwargs["endpoint_url"] = opts["endpoint_url"]
        if "region" in opts:
            client_kwargs["region_name"] = opts["region"]
        if client_kwargs:
            kwargs["client_kwargs"] = client_kwargs
        if "access_key" in opts and "secret_key" in opts:
            kwargs["key"] = opts["access_key"]
            kwargs["secret"] = opts["secret_key"]
            if "session_token" in opts:
                kwargs["token"] = opts["session_token"]
        return fsspec.filesystem("s3", **kwargs), f"{url.netloc}{url.path}".rstrip("/")
    _, root = arrow_filesystem(location)
    return fsspec.filesystem("file"), root


class Location:
    """A root folder on some filesystem, addressed by POSIX paths relative to it."""

    def __init__(self, location: str | os.PathLike[str]):
        self.uri = str(location)
        self.fs, self.root = arrow_filesystem(location)
        self.is_remote = is_remote(location)

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def path(self, *parts: str) -> str:
        """The path of ``parts`` inside ``fs`` (what pyarrow APIs take with ``filesystem=fs``)."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def uri_of(self, *parts: str) -> str:
        """A URI (remote) or absolute path (local) for ``parts``: for messages and records."""
        path = self.path(*parts)
        return f"s3://{path}" if self.is_remote else path

    def exists(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel) if rel else self.root).type != \
            pafs.FileType.NotFound

    def list_files(self, suffix: str | None = None) -> list[FileInfo]:
        """Every file below the root (recursively), sorted by path; ``[]`` if the root is absent."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        prefix = self.root.rstrip("/") + "/"
        out: list[FileInfo] = []
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(prefix):] if info.path.startswith(prefix) else info.path
            if suffix is not None and not rel.endswith(suffix):
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            out.append(FileInfo(rel, int(info.size or 0), mtime))
        out.sort(key=lambda f: f.path)
        return out

    def open_input(self, rel: str) -> Any:
        """A seekable binary file object (pyarrow ``NativeFile``); use it as a context manager."""
        return self.fs.open_input_file(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        with self.open_input(rel) as fh:
            return fh.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write an object so that readers see either nothing or all of it."""
        target = self.path(rel)
        if self.is_remote:
            with self.fs.open_output_stream(target) as out:  # one PUT: atomic on S3
                out.write(data)
            return
        folder = posixpath.dirname(target)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{posixpath.basename(target)}.",
                                   suffix=f".{uuid.uuid4().hex[:8]}.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def delete(self, rel: str, missing_ok: bool = True) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            if not missing_ok:
                raise
        except OSError as exc:  # S3 reports a missing key as a generic OSError
            if not (missing_ok and not self.exists(rel)):
                raise exc

    def free_bytes(self) -> int | None:
        """Free space for a local root (walking up to an existing folder); None for S3."""
        if self.is_remote:
            return None
        probe = Path(self.root)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free
