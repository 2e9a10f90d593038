"""Where a registry keeps its objects: the small interface both backends implement, and the
local (POSIX folder) backend.

``models/registry.py`` holds the rules (what a version is, how promotion and rollback move the
alias, what the history says); a store only offers the primitives those rules need, each
with the semantics object storage gives natively:

- a version is a set of files plus ``metadata.json``, written once: ``claim_version`` creates
  the version's claim only if absent (two trainers never both get ``v0007``), metadata last;
- the production alias is read with a token (an ETag) and swapped only if the token still
  matches (compare-and-swap);
- the history is a chain of numbered records, record N created only if absent, so two
  writers racing for N: one wins, the other re-reads and retries.

``LocalStore`` adds one exclusive ``flock`` around a whole change (``exclusive``), so on one
machine changes queue instead of retrying; its files are the registry's historical layout
(``production.json``, ``history.jsonl``), so existing registries keep working.
``S3Store`` (``models/registry_s3.py``) has no lock: the conditional writes alone keep the
chain one line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
ALIAS_FILE = "production.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".registry.lock"


class RegistryError(Exception):
    """A registry problem the user can act on (no model, unknown version)."""


class RegistryStore(Protocol):
    """The primitives of a registry backend (local folder or object storage)."""

    uri: str  # where it lives, for messages: an absolute path or s3://bucket/prefix

    def version_names(self) -> list[str]:
        """Complete versions (their metadata exists), sorted."""
        ...

    def claimed_count(self) -> int:
        """How many version names were ever claimed (a start for the next number)."""
        ...

    def read_metadata(self, version: str) -> dict[str, Any] | None: ...

    def claim_version(self, version: str) -> bool:
        """Create the version's claim if absent; False when another writer has it."""
        ...

    def put_version(self, version: str, folder: Path, metadata: dict[str, Any]) -> None:
        """Write every file of ``folder`` once, then the metadata (the completeness mark)."""
        ...

    def attach(self, version: str, name: str, data: bytes) -> None:
        """Add a file to a complete version once (e.g. a report that names the version)."""
        ...

    def read_file(self, version: str, name: str) -> bytes | None:
        """One file of a version (None if absent), without fetching the rest."""
        ...

    def local_dir(self, version: str, metadata: dict[str, Any]) -> Path:
        """A local folder holding the version's files (object storage: a verified cache)."""
        ...

    def read_alias(self) -> tuple[str | None, str | None]:
        """(production version or None, the token a swap must present)."""
        ...

    def swap_alias(self, version: str, token: str | None) -> bool:
        """Point the alias at ``version`` if it is still at ``token`` (None: absent)."""
        ...

    def records(self) -> list[dict[str, Any]]:
        """The history, oldest first."""
        ...

    def add_record(self, number: int, record: dict[str, Any]) -> bool:
        """Create history record ``number`` (1-based) if absent; False if taken."""
        ...

    def exclusive(self) -> Any:
        """A context manager around one change: a lock where there is one, else nothing."""
        ...


def file_sha256(path: Path | str) -> str:
    """A file's SHA-256, read in 1 MiB blocks (model files, archived inputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class LocalStore:
    """A registry in a local (or shared POSIX) folder; changes serialised by ``flock``."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = str(root.resolve())

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def version_names(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if (p / METADATA_FILE).is_file())

    def claimed_count(self) -> int:
        return len(list(self.versions_dir.iterdir())) if self.versions_dir.is_dir() else 0

    def read_metadata(self, version: str) -> dict[str, Any] | None:
        meta = self.versions_dir / version / METADATA_FILE
        return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None

    def claim_version(self, version: str) -> bool:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        try:
            (self.versions_dir / version).mkdir()  # atomic: one writer gets the name
            return True
        except FileExistsError:
            return False

    def put_version(self, version: str, folder: Path, metadata: dict[str, Any]) -> None:
        target = self.versions_dir / version
        for src in sorted(folder.iterdir()):
            if src.is_file():
                shutil.copy2(src, target / src.name)
        # metadata.json last: a version without it is incomplete and ignored.
        atomic_write(target / METADATA_FILE,
                     json.dumps(metadata, indent=2, sort_keys=True).encode())

    def attach(self, version: str, name: str, data: bytes) -> None:
        atomic_write(self.versions_dir / version / name, data)

    def read_file(self, version: str, name: str) -> bytes | None:
        path = self.versions_dir / version / name
        return path.read_bytes() if path.is_file() else None

    def local_dir(self, version: str, metadata: dict[str, Any]) -> Path:
        return self.versions_dir / version

    def read_alias(self) -> tuple[str | None, str | None]:
        alias = self.root / ALIAS_FILE
        if not alias.is_file():
            return None, None
        text = alias.read_bytes()
        return json.loads(text)["version"], hashlib.sha256(text).hexdigest()

    def swap_alias(self, version: str, token: str | None) -> bool:
        if self.read_alias()[1] != token:  # the caller holds the lock: no race in between
            return False
        atomic_write(self.root / ALIAS_FILE, json.dumps({"version": version}).encode())
        return True

    def records(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # blank, or torn by a crash mid-append: skipped
                continue
        return records

    def add_record(self, number: int, record: dict[str, Any]) -> bool:
        if len(self.records()) != number - 1:
            return False
        path = self.root / HISTORY_FILE
        with open(path, "a+", encoding="utf-8") as fh:
            fh.seek(0, os.SEEK_END)
            torn = fh.tell() > 0 and not _ends_with_newline(path)
            # A line torn by a crash stays as it was (never rewritten); ours starts afresh.
            fh.write(("\n" if torn else "") + json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return True

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The registry's one exclusive lock (blocks until free; released on exit or death)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
