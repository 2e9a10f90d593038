"""``--move-processed``: files out of the input once their rows are committed.

Never overwrites: an archive may receive many copies of one name (a camera that restarts its
numbering), and each is kept under a unique name.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from tasks.io.storage import Location, is_remote

ARCHIVE_NOTE = "_posebatch/archive.json"  # in the output: where --move-processed moved files


def free_name(dst: Path) -> Path:
    """``dst`` if no file has that name, else ``<stem>.<ns time>[.<n>]<suffix>`` that none has:
    an archive never overwrites, however many copies of a name arrive within one second."""
    if not dst.exists():
        return dst
    stamp = time.time_ns()
    for n in range(1_000_000):
        candidate = dst.with_name(f"{dst.stem}.{stamp}{f'.{n}' if n else ''}{dst.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free archive name for {dst}")


def archive_files(input_dir: str, dest_dir: str, good: list[str], bad: list[str]) -> int:
    """Move processed files (relative paths) under ``dest_dir``, rejected ones under
    ``_rejected/``; files already gone are skipped. Returns how many moved."""
    if is_remote(input_dir) or is_remote(dest_dir):
        raise ValueError("--move-processed works on local folders only")
    moved = 0
    for rels, sub in ((good, ""), (bad, "_rejected")):
        for rel in rels:
            src = Path(input_dir, rel)
            dst = Path(dest_dir, sub, rel) if sub else Path(dest_dir, rel)
            if not src.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst = free_name(dst)  # an older archived copy of the same name is kept too
            try:
                os.replace(src, dst)
            except OSError:  # another file system: copy then delete
                shutil.move(str(src), str(dst))
            moved += 1
    return moved


def remember_archive(output_dir: str, dest_dir: str) -> None:
    """Note in the output where its processed inputs went, so ``rescore`` finds them."""
    import json

    loc = Location(output_dir)
    if known_archive(output_dir) != dest_dir:
        loc.write_bytes(ARCHIVE_NOTE, json.dumps({"archive": dest_dir}).encode())


def known_archive(output_dir: str) -> str | None:
    """The last ``--move-processed`` folder used for this output (None: never)."""
    import json

    loc = Location(output_dir)
    if not loc.exists(ARCHIVE_NOTE):
        return None
    return json.loads(loc.read_bytes(ARCHIVE_NOTE)).get("archive")
