"""Durable file operations on an output ``Location``: what makes a commit survive a crash.

Locally a rename is atomic but only durable once its folder is fsync'ed, and so is every
folder it created; on object storage a PUT or a copy appears whole or not at all, and there
is no folder to sync. These helpers hide that difference from the ledger.

On object storage they speak S3 directly (boto3, configured from the same ``AWS_*``
variables as pyarrow's filesystem): one PUT for a write where pyarrow's output stream makes
three (a multipart upload), a copy and a delete for a move without pyarrow's existence
checks and the folder markers it re-creates after a delete. A commit on ``s3://`` went
from 14 requests in the flow to 4 (bench/bench_flow_commit.py --s3).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import pyarrow.fs as pafs

from tasks.io.storage import Location, s3_options

_CLIENT: dict[str, Any] = {}
_CLIENT_LOCK = threading.Lock()


def _s3(loc: Location, rel: str) -> tuple[Any, str, str]:
    """A boto3 S3 client (one per connection settings, thread-safe once made), and the
    bucket and key of ``rel``."""
    settings = repr(sorted(s3_options().items()))
    with _CLIENT_LOCK:
        if settings not in _CLIENT:
            import boto3

            _CLIENT[settings] = boto3.client("s3")
    bucket, _, key = loc.path(rel).partition("/")
    return _CLIENT[settings], bucket, key


def _missing(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code in ("NoSuchKey", "404", "NotFound")


def _fsync_dir(loc: Location, rel: str) -> None:
    if loc.is_remote:
        return
    fd = os.open(loc.path(rel), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(loc: Location, rel: str) -> None:
    """Create folder ``rel`` and fsync every folder it adds, and the parent of each: a new
    ``date=...`` partition (or staging folder) survives a power loss with the file in it,
    not only the leaf entry."""
    if loc.is_remote:
        return
    created = []
    folder = rel.strip("/")
    while folder and not os.path.isdir(loc.path(folder)):
        created.append(folder)
        folder = os.path.dirname(folder)
    if not created:
        return
    os.makedirs(loc.path(rel), exist_ok=True)
    for new in reversed(created):        # top-most first, then down to ``rel``
        _fsync_dir(loc, os.path.dirname(new))
        _fsync_dir(loc, new)


def listdir(loc: Location, rel: str) -> list[tuple[str, bool]]:
    """(name, is_dir) directly inside ``rel``; empty if it does not exist."""
    sel = pafs.FileSelector(loc.path(rel), recursive=False, allow_not_found=True)
    out = []
    for info in loc.fs.get_file_info(sel):
        out.append((info.base_name, info.type == pafs.FileType.Directory))
    return sorted(out)


def move(loc: Location, src: str, dst: str) -> None:
    """Put a finished file at ``dst``: rename locally (then fsync the folder), copy+delete on
    object stores (the copy appears whole or not at all)."""
    if not move_if_present(loc, src, dst):
        raise FileNotFoundError(loc.uri_of(src))


def move_if_present(loc: Location, src: str, dst: str) -> bool:
    """``move`` if ``src`` exists (False if not: moved already, say by a finished commit)."""
    if loc.is_remote:
        if not copy_if_present(loc, src, dst):
            return False
        client, bucket, key = _s3(loc, src)
        client.delete_object(Bucket=bucket, Key=key)
        return True
    if not loc.exists(src):
        return False
    makedirs_durable(loc, os.path.dirname(dst))
    os.replace(loc.path(src), loc.path(dst))
    _fsync_dir(loc, os.path.dirname(dst))
    return True


def copy_if_present(loc: Location, src: str, dst: str) -> bool:
    """Object storage: copy ``src`` to ``dst`` in one request, if ``src`` exists (False if
    not). The source stays: a commit deletes its whole staging folder at once after."""
    from botocore.exceptions import ClientError

    client, bucket, key = _s3(loc, src)
    try:
        client.copy_object(Bucket=bucket, Key=_s3(loc, dst)[2],
                           CopySource={"Bucket": bucket, "Key": key})
    except ClientError as exc:
        if _missing(exc):
            return False
        raise
    return True


def remove_tree(loc: Location, rel: str) -> None:
    """Delete folder ``rel`` and everything in it; nothing if it is not there."""
    if loc.is_remote:
        client, bucket, key = _s3(loc, rel.rstrip("/") + "/")
        listed = client.list_objects_v2(Bucket=bucket, Prefix=key)   # one page: staging
        keys = [{"Key": o["Key"]} for o in listed.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        if not listed.get("IsTruncated"):
            return
    with contextlib.suppress(FileNotFoundError):
        loc.fs.delete_dir(loc.path(rel))


def write_durable(loc: Location, rel: str, data: bytes) -> None:
    """Atomic write (``Location.write_bytes``) whose rename also survives a power loss; on
    object storage one PUT."""
    if loc.is_remote:
        client, bucket, key = _s3(loc, rel)
        client.put_object(Bucket=bucket, Key=key, Body=data)
        return
    makedirs_durable(loc, os.path.dirname(rel))
    loc.write_bytes(rel, data)
    _fsync_dir(loc, os.path.dirname(rel))
