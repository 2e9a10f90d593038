"""Does the output still hold what the ledger says? And forgetting files on purpose or by loss.

The ledger records, for every file, the committed part holding its rows (``part``; moved by
compaction and by forgetting). ``verify`` checks each such part: it exists, its footer is
readable, it holds as many rows as the ledger's entries say, and (``deep``) the same rows per
(source_path, content_sha256). A deleted or damaged part would otherwise be silent: the
ledger would still say "processed" and no run would ever classify those frames again.

``forget`` makes files new again through one commit record (``kind="forget"``): ``forgotten``
entries cancel the files' entries, the parts that hold their rows are rewritten without them
(the remaining rows move to a new part, the ``moves`` of the record) and an unreadable part is
moved to ``_posebatch/quarantine/``. The record is the commit point, as for a classification
chunk: a process killed midway leaves either no trace or a commit the next run completes.
(As with compaction, between the rename of a rewritten part and the removal of the part it
replaces, a reader listing the folder can see those rows twice for a moment.)

``recover_lost`` is what a classification run does at start: forget the files of missing or
unreadable parts and say which of them the input can restore. A lost part of re-scored rows
is forgotten for its model version only (the files' classified rows stay). A storage error
(network, permissions) is raised, never taken for a damaged part. Pure: no Prefect.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.classify.ledger import (
    FORGOTTEN,
    QUARANTINE,
    CommitRecord,
    Ledger,
    Part,
    new_commit_id,
    staging_dir,
    write_durable,
)
from tasks.classify.outputs import list_parts, parquet_bytes
from tasks.io.schema import PREDICTIONS, REJECTIONS
from tasks.io.storage import Location

KEY = ("source_path", "content_sha256")


@dataclass
class Verdict:
    """What ``verify`` found: parts checked and one line per problem."""

    parts: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> list[str]:
        """Parts whose rows are gone: missing or unreadable."""
        return self.missing + self.unreadable

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.problems, "parts_checked": self.parts, "missing": self.missing,
                "unreadable": self.unreadable, "mismatched": self.mismatched,
                "unrecorded": self.unrecorded, "problems": self.problems}


def expected_rows(entries: pa.Table) -> pa.Table:
    """Rows each part must hold by the ledger: a classified file's frames, a rejected file's
    one row; columns part, path, sha256, rows (vectorised: ledgers hold millions)."""
    has = entries.filter(pc.is_valid(entries["part"]))
    status = has["status"]
    rows = pc.if_else(pc.is_in(status, pa.array(["classified", "rescored"])),
                      pc.cast(has["frames"], pa.int64()),
                      pc.if_else(pc.equal(status, "rejected"), 1, 0))
    t = pa.table({"part": has["part"], "path": has["path"], "sha256": has["sha256"],
                  "rows": rows})
    return t.filter(pc.greater(t["rows"], 0))


def _want_of(expected: pa.Table, part: str) -> Counter[tuple[str, str]]:
    mine = expected.filter(pc.equal(expected["part"], part))
    want: Counter[tuple[str, str]] = Counter()
    for p, s, n in zip(*(mine[c].to_pylist() for c in ("path", "sha256", "rows")), strict=True):
        want[(p, s)] += n
    return want


def _held_rows(loc: Location, part: str) -> Counter[tuple[str, str]]:
    table = pq.read_table(loc.path(part), filesystem=loc.fs, columns=list(KEY),
                          partitioning=None)
    return Counter(zip(table["source_path"].to_pylist(), table["content_sha256"].to_pylist(),
                       strict=True))


def _check_part(loc: Location, part: str, total: int, files: int,
                want: Counter[tuple[str, str]] | None, verdict: Verdict) -> None:
    """One part against the ledger: ``total`` rows of ``files`` files; ``want`` (deep) the
    rows per (path, sha256)."""
    if not loc.exists(part):
        verdict.missing.append(part)
        verdict.problems.append(f"missing part {part}: {total} row(s) of {files} file(s) the "
                                "ledger records there are gone")
        return
    try:
        rows = pq.read_metadata(loc.path(part), filesystem=loc.fs).num_rows
        held = _held_rows(loc, part) if want is not None else None
    except OSError:  # the storage failed (network, permissions), not the part: never
        raise        # forget the rows of a part that may be intact
    except Exception as exc:  # noqa: BLE001 - anything else: the part is unusable
        verdict.unreadable.append(part)
        verdict.problems.append(f"unreadable part {part}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}")
        return
    if rows != total or (held is not None and held != want):
        verdict.mismatched.append(part)
        verdict.problems.append(f"part {part} holds {rows} row(s), the ledger expects "
                                f"{total} of {files} file(s)")


def verify(ledger: Ledger, deep: bool = True) -> Verdict:
    """Check every part the ledger's entries point at (see the module docstring), and that no
    committed part holds rows the ledger does not know (they would read as duplicates)."""
    verdict = Verdict()
    expected = expected_rows(ledger.entries)
    per_part = expected.group_by("part").aggregate([("rows", "sum"), ("path", "count")])
    known = set(per_part["part"].to_pylist())
    for part, total, files in sorted(zip(*(per_part[c].to_pylist() for c in
                                            ("part", "rows_sum", "path_count")), strict=True)):
        verdict.parts += 1
        _check_part(ledger.loc, part, total, files,
                    _want_of(expected, part) if deep else None, verdict)
    e = ledger.entries
    untracked = e.filter(pc.and_(pc.is_in(e["status"], pa.array(["classified", "rejected"])),
                                 pc.is_null(e["part"]))).num_rows
    if untracked == 0:  # a ledger older than per-file parts cannot say which parts it owns
        for dataset in (PREDICTIONS, REJECTIONS):
            for parts in list_parts(ledger.loc, dataset).values():
                for rel in parts:
                    if rel not in known:
                        verdict.unrecorded.append(rel)
                        verdict.problems.append(f"part {rel} is not in the ledger: its rows "
                                                "are not accounted for")
    return verdict


# -- forgetting ----------------------------------------------------------------------------------
def select(entries: pa.Table, pattern: str | None = None, batch: str | None = None) -> pa.Table:
    """Entries whose path equals or glob-matches ``pattern`` (``*`` spans folders), or that
    lie in ``batch`` (a top-level folder of the input)."""
    paths = entries["path"].to_pylist()
    from fnmatch import fnmatchcase

    if batch is not None:
        hit = [p.startswith(batch.rstrip("/") + "/") for p in paths]
    else:
        hit = [p == pattern or fnmatchcase(p, pattern or "") for p in paths]
    return entries.filter(pa.array(hit, pa.bool_()))


def _same_files(entries: pa.Table, chosen: pa.Table) -> pa.Table:
    """Every entry of the files (path, sha256) of ``chosen``: a file re-scored by other model
    versions has rows in several parts, and forgetting it must remove them all."""
    keys = set(zip(chosen["path"].to_pylist(), chosen["sha256"].to_pylist(), strict=True))
    hit = [(p, s) in keys for p, s in zip(entries["path"].to_pylist(),
                                          entries["sha256"].to_pylist(), strict=True)]
    return entries.filter(pa.array(hit, pa.bool_()))


def _with_copies(entries: pa.Table, chosen: pa.Table) -> pa.Table:
    """``chosen`` plus the duplicate entries of the same content: a copy recognised as a
    duplicate has no rows of its own, it relies on the original's, so it goes too."""
    own = chosen.filter(pc.is_in(chosen["status"], pa.array(["classified", "rejected"])))
    copies = entries.filter(pc.and_(pc.equal(entries["status"], "duplicate"),
                                    pc.is_in(entries["sha256"],
                                             own["sha256"].combine_chunks())))
    return pa.concat_tables([chosen, copies])


def _rewrite(ledger: Ledger, commit_id: str, parts: set[str], keys: set[tuple[str, str]],
             stamp: str) -> tuple[list[Part], list[str], dict[str, str], int]:
    """Parts without the forgotten rows: (new parts, parts removed, moves, rows removed).
    A missing part needs nothing; an unreadable one is quarantined."""
    loc = ledger.loc
    new_parts: list[Part] = []
    removes: list[str] = []
    moves: dict[str, str] = {}
    dropped = 0
    for k, rel in enumerate(sorted(parts)):
        if not loc.exists(rel):
            continue
        try:
            table = pq.read_table(loc.path(rel), filesystem=loc.fs, partitioning=None)
        except OSError:  # the storage failed, not the part: change nothing
            raise
        except Exception:  # noqa: BLE001 - unreadable: keep it aside, out of the dataset
            new_parts.append(Part(rel, f"{QUARANTINE}/{posixpath.basename(rel)}"))
            continue
        gone = [(p, s) in keys for p, s in zip(table["source_path"].to_pylist(),
                                                table["content_sha256"].to_pylist(), strict=True)]
        if not any(gone):  # nothing of these files here: the part stays as it is
            continue
        kept = table.filter(pc.invert(pa.array(gone, pa.bool_())))
        dropped += table.num_rows - kept.num_rows
        removes.append(rel)
        if kept.num_rows:
            staged = f"{staging_dir(commit_id)}/forget-{k}.parquet"
            write_durable(loc, staged, parquet_bytes(kept))
            final = f"{posixpath.dirname(rel)}/part-{stamp}-{commit_id}-f{k}.parquet"
            new_parts.append(Part(staged, final))
            moves[rel] = final
    return new_parts, removes, moves, dropped


def forget(ledger: Ledger, chosen: pa.Table, reason: str,
           flow_run_id: str | None = None, version: str | None = None) -> dict[str, Any]:
    """Make the files of ``chosen`` (ledger entries) new again and remove their rows from the
    output, in one commit (see the module docstring). Hold the output lock.

    ``version``: forget only that model version's re-scored rows of the files (their other
    rows and entries stay; ``posebatch rescore --model version`` scores them again)."""
    if version is None:
        chosen = _with_copies(ledger.entries, _same_files(ledger.entries, chosen))
    keys = set(zip(chosen["path"].to_pylist(), chosen["sha256"].to_pylist(), strict=True))
    parts = {p for p in chosen["part"].to_pylist() if p}
    owned = pc.is_in(chosen["status"], pa.array(["classified", "rejected", "rescored"]))
    if pc.any(pc.and_(owned, pc.is_null(chosen["part"]))).as_py():
        # Entries folded before parts were recorded per file: look in every part.
        parts |= {rel for ds in (PREDICTIONS, REJECTIONS)
                  for rels in list_parts(ledger.loc, ds).values() for rel in rels}
    commit_id = new_commit_id()
    at = datetime.now(UTC)
    new_parts, removes, moves, dropped = _rewrite(ledger, commit_id, parts, keys,
                                                  at.strftime("%Y%m%dT%H%M%S"))
    frames = dict(zip(zip(chosen["path"].to_pylist(), chosen["sha256"].to_pylist(),
                          strict=True), chosen["frames"].to_pylist(), strict=True))
    entries = [{"path": p, "sha256": s, "size": 0, "mtime_ns": 0, "status": FORGOTTEN,
                "reason": reason, "detail": None, "frames": frames.get((p, s)) or 0}
               for p, s in sorted(keys)]
    if entries:
        ledger.commit(CommitRecord(seq=0, commit_id=commit_id, kind="forget",
                                   created_at=at.isoformat(), flow_run_id=flow_run_id,
                                   model_version=version,
                                   entries=entries, parts=new_parts, removes=removes,
                                   moves=moves))
    return {"files": len(entries), "rows_removed": dropped, "parts_rewritten": len(moves),
            "parts_removed": len(removes), "parts_quarantined":
                sum(1 for p in new_parts if p.final.startswith(QUARANTINE))}


# -- recovery at the start of a run -----------------------------------------------------------
def sha_of(loc: Location, rel: str) -> str | None:
    """The SHA-256 of a file below ``loc``; None when it cannot be read."""
    try:
        return hashlib.sha256(loc.read_bytes(rel)).hexdigest()
    except (FileNotFoundError, OSError):
        return None


def _archived(archive: str | None, rel: str) -> bool:
    """Is ``rel`` in the --move-processed archive (under its name or a suffixed copy)?"""
    if not archive:
        return False
    dst = Path(archive, rel)
    return dst.exists() or any(dst.parent.glob(f"{dst.stem}.*{dst.suffix}"))


def recover_lost(ledger: Ledger, input_dir: str, archive: str | None = None,
                 flow_run_id: str | None = None) -> dict[str, Any]:
    """Forget the files whose parts are missing or unreadable (the next steps of the run
    classify them again) and tell which the input can restore. Hold the output lock.

    A lost file is restorable when the input still holds its content (under its path or a
    copy's); otherwise its frames cannot be restored, and ``message`` says so in one line
    (naming the --move-processed archive when the file is there)."""
    verdict = verify(ledger, deep=False)
    out: dict[str, Any] = {"lost_parts": len(verdict.lost), "restorable": 0, "unrestorable": 0,
                           "unrestorable_frames": 0, "in_archive": 0, "message": ""}
    if not verdict.lost:
        return out
    e = ledger.entries
    lost = e.filter(pc.is_in(e["part"], pa.array(verdict.lost, pa.string())))
    rescored = lost.filter(pc.equal(lost["status"], "rescored"))
    for version in sorted(set(rescored["model_version"].to_pylist()) - {None}):
        # Derived rows: only that version's are forgotten (the rescore can redo them); the
        # files' classified rows, intact in their own parts, stay.
        forget(ledger, rescored.filter(pc.equal(rescored["model_version"], version)),
               "lost_part", flow_run_id, version=version)
        out["rescored_lost"] = out.get("rescored_lost", 0) + rescored.num_rows
    lost = lost.filter(pc.invert(pc.fill_null(pc.equal(lost["status"], "rescored"), False)))
    if lost.num_rows == 0:
        return out
    chosen = _with_copies(e, _same_files(e, lost))
    forget(ledger, chosen, "lost_part", flow_run_id)
    inp = Location(input_dir)
    here = {sha for p, sha in zip(chosen["path"].to_pylist(), chosen["sha256"].to_pylist(),
                                  strict=True) if sha_of(inp, p) == sha}
    bad = [(p, f) for p, s, st, f in zip(*(chosen[c].to_pylist() for c in
                                            ("path", "sha256", "status", "frames")), strict=True)
           if st in ("classified", "rejected") and s not in here]
    owned = sum(1 for st in chosen["status"].to_pylist() if st in ("classified", "rejected"))
    out.update(restorable=owned - len(bad), unrestorable=len(bad),
               unrestorable_frames=sum(f or 0 for _, f in bad),
               in_archive=sum(1 for p, _ in bad if _archived(archive, p)))
    if bad:
        where = (f"; {out['in_archive']} of them are in the archive {archive}: move them back "
                 "into the input to classify them again" if out["in_archive"] else "")
        out["message"] = (f"{len(bad)} file(s) ({out['unrestorable_frames']} frame(s)) of "
                          f"{len(verdict.lost)} lost output part(s) ({verdict.lost[0]}) cannot "
                          f"be restored from {input_dir}, e.g. {bad[0][0]}{where}")
    return out
