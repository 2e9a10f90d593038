"""Durable file operations on an output ``Location``: what makes a commit survive a crash.

Locally a rename is atomic but only durable once its folder is fsync'ed, and so is every
folder it created; on object storage a PUT or a copy appears whole or not at all, and there
is no folder to sync. These helpers hide that difference from the ledger.
"""

from __future__ import annotations

import contextlib
import os

import pyarrow.fs as pafs

from tasks.io.storage import Location


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
    if loc.is_remote:
        loc.fs.copy_file(loc.path(src), loc.path(dst))
        loc.delete(src)
        return
    makedirs_durable(loc, os.path.dirname(dst))
    os.replace(loc.path(src), loc.path(dst))
    _fsync_dir(loc, os.path.dirname(dst))


def remove_tree(loc: Location, rel: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        loc.fs.delete_dir(loc.path(rel))


def write_durable(loc: Location, rel: str, data: bytes) -> None:
    """Atomic write (``Location.write_bytes``) whose rename also survives a power loss."""
    makedirs_durable(loc, os.path.dirname(rel))
    loc.write_bytes(rel, data)
    _fsync_dir(loc, os.path.dirname(rel))
