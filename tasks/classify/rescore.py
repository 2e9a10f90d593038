"""Re-scoring: which classified files a model version scores again, where their inputs are
now, and how each file's outcome is judged (no Prefect; ``flows/rescore.py`` runs it).

A file is re-scored whole (every frame) and exactly once per (content, model version): the
ledger records each re-scored file as a ``rescored`` entry of its commit, whose
``model_version`` is the new model's, so a killed run resumes with what is left and a second
run finds nothing to do. The rows keep the file's original ``source_path`` and content hash,
so readers tell the versions of one frame apart by ``model_version`` alone.

Inputs are looked for where the ledger's path says: in the input folder, then in the
``--move-processed`` archive (under the same path, or a copy the archive renamed to keep
both). A file is only re-scored when the bytes found hash to the content the ledger
recorded: a missing or changed input is reported, never guessed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from models.registry import file_sha256
from tasks.classify.infer import ChunkResult
from tasks.classify.ledger import Ledger
from tasks.classify.outputs import SCORED, Judged
from tasks.classify.verify import sha_of
from tasks.io.storage import Location, is_remote


@dataclass(frozen=True)
class Target:
    """A classified file to score again: its ledger identity and where its bytes are now."""

    path: str            # the ledger's path: the rows' source_path
    sha256: str
    frames: int
    size: int
    mtime_ns: int
    base: str = ""       # the folder holding it now (input or archive); "" until located
    rel: str = ""        # its path below ``base``


def scored_by(entries: pa.Table, version: str) -> set[str]:
    """Contents (sha256) that ``version`` has rows for already (classified or re-scored)."""
    mine = entries.filter(pc.and_(pc.is_in(entries["status"], pa.array(list(SCORED))),
                                  pc.equal(entries["model_version"], version)))
    return set(mine["sha256"].to_pylist())


def plan(entries: pa.Table, version: str, *, since: str | None = None,
         until: str | None = None, batch: str | None = None, path: str | None = None,
         only: set[tuple[str, str]] | None = None,
         legacy_scored: bool = False) -> tuple[list[Target], int]:
    """The classified files matching every filter that ``version`` has not scored, in path
    order, and how many matching files it has scored already.

    ``since``/``until``: ``YYYY-MM-DD``, the UTC day the file was classified (inclusive);
    ``batch``: a top-level input folder; ``path``: a glob over the path (``*`` spans
    folders); ``only``: (path, sha256) pairs picked by a predictions filter (label,
    confidence). ``legacy_scored``: entries folded before the ledger recorded versions (null
    ``model_version``) count as scored by ``version`` (the caller found its rows in the
    data): a duplicate is worse than a file left unscored."""
    e = entries.filter(pc.equal(entries["status"], "classified"))
    done = scored_by(entries, version)
    if legacy_scored:
        done |= set(e.filter(pc.is_null(e["model_version"]))["sha256"].to_pylist())
    out: list[Target] = []
    already = 0
    cols = ("path", "sha256", "frames", "size", "mtime_ns", "committed_at")
    for p, sha, frames, size, mtime, at in zip(*(e[c].to_pylist() for c in cols), strict=True):
        day = (at or "")[:10]
        if (since and day < since) or (until and day > until) \
                or (batch and not p.startswith(batch.rstrip("/") + "/")) \
                or (path and not (p == path or fnmatchcase(p, path))) \
                or (only is not None and (p, sha) not in only):
            continue
        if sha in done:
            already += 1
            continue
        done.add(sha)   # a copy under another path is the same content: once
        out.append(Target(p, sha, int(frames or 0), int(size or 0), int(mtime or 0)))
    return sorted(out, key=lambda t: t.path), already


def locate(targets: list[Target], input_dir: str, archive: str | None = None
           ) -> tuple[list[Target], list[Target]]:
    """(found, missing): each target with the folder that holds it now. A file of the input
    or the archive under the ledger's path is taken as found (its content is checked when it
    is read, ``judge``) unless its size differs or another target claims the same path (a
    file rewritten in place, a camera restarting its numbering): then only a hash match
    counts, and an archived copy under a suffixed name is found by its hash."""
    inp = Location(input_dir)
    claims: dict[str, int] = {}
    for t in targets:
        claims[t.path] = claims.get(t.path, 0) + 1
    found, missing = [], []
    for t in targets:
        shared = claims[t.path] > 1
        if inp.exists(t.path) and _same_size(inp, t) and (
                not shared or sha_of(inp, t.path) == t.sha256):
            found.append(dataclasses.replace(t, base=input_dir, rel=t.path))
            continue
        where = _in_archive(t, archive, shared) if archive and not is_remote(archive) else None
        if where:
            found.append(dataclasses.replace(t, base=archive, rel=where))
        else:
            missing.append(t)
    return found, missing


def _same_size(loc: Location, t: Target) -> bool:
    """A local input of another size is another content (look in the archive instead); a
    remote one is taken and checked by hash when read."""
    return loc.is_remote or Path(loc.path(t.path)).stat().st_size == t.size


def _in_archive(t: Target, archive: str, shared: bool) -> str | None:
    dst = Path(archive, t.path)
    copies = sorted(dst.parent.glob(f"{dst.stem}.*{dst.suffix}"))
    for cand in ([dst] if dst.is_file() else []) + copies:
        if cand.stat().st_size != t.size:
            continue
        if (cand == dst and not copies and not shared) or file_sha256(cand) == t.sha256:
            return cand.relative_to(archive).as_posix()
    return None


def judge(result: ChunkResult, targets: dict[str, Target], ledger: Ledger,
          version: str) -> tuple[Judged, dict[str, list[str]]]:
    """Each read file's fate: ``rescored``, or left out (None) and reported as ``changed``
    (its bytes are not the recorded content), ``rejected`` (the validator refuses it now),
    ``unreadable`` or ``already`` (the version scored this content meanwhile).

    The outcomes get the ledger's path back (a file read from the archive keeps the path its
    rows always had)."""
    done = scored_by(ledger.entries, version)
    files, status = [], []
    report: dict[str, list[str]] = {"changed": [], "rejected": [], "unreadable": [],
                                    "already": []}
    for f in result.files:
        t = targets[f.path]
        f = dataclasses.replace(f, path=t.path)
        files.append(f)
        why = ("unreadable" if f.skipped else "changed" if f.sha256 != t.sha256
               else "rejected" if f.reason else "already" if t.sha256 in done else None)
        status.append(None if why else "rescored")
        if why:
            report[why].append(t.path)
        else:
            done.add(t.sha256)
    res = dataclasses.replace(result, files=files)
    return Judged(res, status, [None] * len(files)), report
