"""Discovery: which ``.npy`` files of the input are complete, and which of those are new.

Readiness rule (what "a file still being written is not taken" means):

- A *batch* is a top-level folder of the input. It is ready when it holds a ``_SUCCESS``
  file at its top level, or when nothing in it has changed for ``quiet_seconds``: the newest
  modification time of any file or sub-folder in it (a folder's own time changes when files
  are created, renamed or deleted in it) is at least that old.
- A ``.npy`` file directly in the input root is its own batch: ready once its own
  modification time is ``quiet_seconds`` old.
- Only ``*.npy`` files are inputs. Names starting with ``.`` or ``_`` (hidden files, the
  temporary files of writers, markers, ``_tmp`` folders) are ignored, at any depth.

New means: the identity (relative POSIX path, SHA-256 of the content) has not been processed
before. Hashing every file on every run would read the whole input each night, so a file
whose path, size and modification time equal a ledger entry is known without reading it; any
other file is read, hashed and then judged by its identity when its results are committed.
Order is deterministic: by relative path.

Pure functions plus one listing call; no Prefect, no TensorFlow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from tasks.io.storage import Location, relative_inside

MARKER = "_SUCCESS"
SUFFIX = ".npy"


@dataclass(frozen=True)
class Candidate:
    """An input file: relative POSIX path, its batch ("" for root files), size, mtime (ns)."""

    path: str
    batch: str
    size: int
    mtime_ns: int


@dataclass
class Scan:
    """What a scan of the input found, each list sorted by path."""

    ready: list[Candidate] = field(default_factory=list)
    waiting: list[Candidate] = field(default_factory=list)
    waiting_batches: list[str] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return len(self.ready) + len(self.waiting)


@dataclass(frozen=True)
class Listed:
    """One listing entry (file or folder) below the input root."""

    path: str
    size: int
    mtime_ns: int
    is_dir: bool = False


def batch_of(path: str) -> str:
    """The batch of a relative path: its top-level folder, or "" for a file in the root."""
    return path.split("/", 1)[0] if "/" in path else ""


def _ignored(path: str) -> bool:
    return any(part.startswith((".", "_")) for part in path.split("/"))


def _excluded(path: str, exclude: tuple[str, ...]) -> bool:
    return any(path == e or path.startswith(e + "/") for e in exclude)


def readiness(entries: list[Listed], quiet_seconds: float, now: float,
              exclude: tuple[str, ...] = ()) -> Scan:
    """Apply the readiness rule (module docstring) to a listing; pure, so testable by time."""
    quiet_ns = int(quiet_seconds * 1e9)
    now_ns = int(now * 1e9)
    files: dict[str, list[Candidate]] = {}
    newest: dict[str, int] = {}
    marked: set[str] = set()
    for e in entries:
        if _excluded(e.path, exclude):
            continue
        batch = batch_of(e.path)
        if e.path.count("/") == 1 and e.path.endswith("/" + MARKER) and not e.is_dir:
            marked.add(batch)
            continue
        if batch and "/" in e.path:  # any entry in a batch counts as activity, even a
            newest[batch] = max(newest.get(batch, 0), e.mtime_ns)  # writer's hidden temp
        if _ignored(e.path):
            continue
        if not e.is_dir and e.path.endswith(SUFFIX):
            files.setdefault(batch, []).append(Candidate(e.path, batch, e.size, e.mtime_ns))
    for e in entries:  # the batch folder's own time: files created/removed directly in it
        if e.is_dir and "/" not in e.path and e.path in newest:
            newest[e.path] = max(newest[e.path], e.mtime_ns)
    scan = Scan()
    for batch in sorted(files):
        group = sorted(files[batch], key=lambda c: c.path)
        if batch == "":
            for c in group:
                (scan.ready if now_ns - c.mtime_ns >= quiet_ns else scan.waiting).append(c)
        elif batch in marked or now_ns - newest.get(batch, 0) >= quiet_ns:
            scan.ready.extend(group)
        else:
            scan.waiting.extend(group)
            scan.waiting_batches.append(batch)
    scan.ready.sort(key=lambda c: c.path)
    scan.waiting.sort(key=lambda c: c.path)
    if any(c.batch == "" for c in scan.waiting):
        scan.waiting_batches.insert(0, "")
    return scan


def list_input(location: Location) -> list[Listed]:
    """Every file and folder below the input root, with size and mtime (ns)."""
    selector = pafs.FileSelector(location.root, recursive=True, allow_not_found=True)
    prefix = location.root.rstrip("/") + "/"
    out: list[Listed] = []
    for info in location.fs.get_file_info(selector):
        if info.type not in (pafs.FileType.File, pafs.FileType.Directory):
            continue
        rel = info.path[len(prefix):] if info.path.startswith(prefix) else info.path
        mtime = info.mtime_ns if info.mtime_ns is not None else 0
        out.append(Listed(rel, int(info.size or 0), int(mtime),
                          info.type == pafs.FileType.Directory))
    return out


def scan_input(input_dir: str, quiet_seconds: float, now: float | None = None,
               exclude: tuple[str, ...] = ()) -> Scan:
    """List the input and apply the readiness rule. ``exclude``: relative folders to skip
    (an output or move-to folder that lives inside the input)."""
    location = Location(input_dir)
    entries = list_input(location)
    return readiness(entries, quiet_seconds, time.time() if now is None else now, exclude)


def candidates_table(cands: list[Candidate]) -> pa.Table:
    return pa.table({
        "path": pa.array([c.path for c in cands], pa.string()),
        "size": pa.array([c.size for c in cands], pa.int64()),
        "mtime_ns": pa.array([c.mtime_ns for c in cands], pa.int64()),
        "i": pa.array(range(len(cands)), pa.int64()),
    })


def unseen(ready: list[Candidate], known: pa.Table) -> tuple[list[Candidate], list[Candidate]]:
    """Split ready files into (to process, already known by path+size+mtime).

    ``known`` has columns ``path``, ``size``, ``mtime_ns`` (the ledger's entries); the match
    is a vectorised join, so a ledger of millions of entries stays fast.
    """
    if not ready:
        return [], []
    if known.num_rows == 0:
        return list(ready), []
    cand = candidates_table(ready)
    stats = known.select(["path", "size", "mtime_ns"]).group_by(
        ["path", "size", "mtime_ns"]).aggregate([])
    hit = cand.join(stats, keys=["path", "size", "mtime_ns"], join_type="left semi")
    hit_idx = set(hit.column("i").to_pylist())
    fresh = [c for i, c in enumerate(ready) if i not in hit_idx]
    old = [c for i, c in enumerate(ready) if i in hit_idx]
    return fresh, old


def plan_chunks(files: list[Candidate], max_files: int, max_bytes: int) -> list[list[Candidate]]:
    """Consecutive runs of ``files`` of at most ``max_files`` files and ``max_bytes`` bytes
    (a single larger file makes a chunk of its own): one ``classify-chunk`` task each."""
    out: list[list[Candidate]] = []
    cur: list[Candidate] = []
    size = 0
    for c in files:
        if cur and (len(cur) >= max_files or size + c.size > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(c)
        size += c.size
    if cur:
        out.append(cur)
    return out


def oldest_first(files: list[Candidate]) -> list[Candidate]:
    """Batches in the order they became complete (a batch's newest file time), each batch's
    files in path order: after an outage the oldest nights are caught up first."""
    done_at: dict[str, int] = {}
    for c in files:
        done_at[c.batch] = max(done_at.get(c.batch, 0), c.mtime_ns)
    return sorted(files, key=lambda c: (done_at[c.batch], c.batch, c.path))


def take(files: list[Candidate], max_files: int | None, max_bytes: int | None
         ) -> tuple[list[Candidate], list[Candidate]]:
    """(this run's share, the backlog): the oldest files first, at most ``max_files`` files
    and ``max_bytes`` bytes (always at least one file, so a large file cannot stall)."""
    ordered = oldest_first(files)
    n = len(ordered) if max_files is None else min(len(ordered), max(0, max_files))
    if max_bytes is not None:
        total = 0
        for i, c in enumerate(ordered[:n]):
            total += c.size
            if total > max_bytes and i > 0:
                n = i
                break
    return ordered[:n], ordered[n:]


def backlog(left: list[Candidate], now: float | None = None) -> dict[str, object]:
    """What a run left for the next: files, bytes, and the oldest waiting batch with its age
    (since its newest file was written)."""
    if not left:
        return {"files": 0, "bytes": 0, "oldest_batch": None, "oldest_age_hours": None}
    oldest = oldest_first(left)[0]
    age = max(c.mtime_ns for c in left if c.batch == oldest.batch) / 1e9
    return {"files": len(left), "bytes": sum(c.size for c in left),
            "oldest_batch": oldest.batch or oldest.path,
            "oldest_age_hours": round(((time.time() if now is None else now) - age) / 3600, 2)}


def excluded_folders(input_dir: str, *folders: str | None) -> tuple[str, ...]:
    """The given folders (output, archive) that lie inside the input, relative to it: never
    scanned as input."""
    return tuple(x for x in (relative_inside(f, input_dir) for f in folders) if x)
