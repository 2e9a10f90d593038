"""The versioned model registry: a folder per version and an atomically switched alias.

Layout under the registry root::

    versions/v0001/model.keras      the saved Keras model (input (None,17,64,48), logits out)
    versions/v0001/metadata.json    class names, input layout, temperature, metrics, ...
    versions/v0001/report.md        the training report (optional)
    production.json                 {"version": "v0001"}, replaced with os.replace
    history.jsonl                   append-only log of promotions and rollbacks

Plain files, no database: the registry can be copied, inspected and backed up with ``cp``.

Concurrency: every change of the alias (promote, rollback) takes one exclusive file lock
(``.registry.lock``, ``flock``) around reading the current production version, switching
the alias and appending the history record, so the history stays one chain (each record's
``from`` is the previous record's ``to``) whatever runs at once. A caller that decided
against a production version it read earlier (the retrain gate) passes
``expected_production``: the change is refused with ``ProductionChanged`` when production
moved in between (compare-and-swap). The lock is local: the registry lives on a local or
shared POSIX file system, not on object storage.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
ALIAS_FILE = "production.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".registry.lock"
ANY = object()  # expected_production not given: no compare-and-swap


class RegistryError(Exception):
    """A registry problem the user can act on (no model, unknown version)."""


class ProductionChanged(RegistryError):
    """Production is no longer the version the caller decided against."""


@dataclass(frozen=True)
class ModelEntry:
    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def temperature(self) -> float:
        return float(self.metadata.get("temperature", 1.0))

    def model_sha256(self) -> str:
        """The SHA-256 of the saved model file: which exact weights scored a row."""
        return file_sha256(self.model_path)


def file_sha256(path: Path | str) -> str:
    """A file's SHA-256, read in 1 MiB blocks (model files, archived inputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Registry:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if (p / METADATA_FILE).is_file())

    def get(self, version: str) -> ModelEntry:
        path = self.versions_dir / version
        meta = path / METADATA_FILE
        if not meta.is_file():
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"no model version {version!r} in {self.root} (known: {known})")
        return ModelEntry(version, path, json.loads(meta.read_text(encoding="utf-8")))

    def production_version(self) -> str | None:
        alias = self.root / ALIAS_FILE
        if not alias.is_file():
            return None
        return json.loads(alias.read_text(encoding="utf-8"))["version"]

    def resolve(self, version: str | None = None) -> ModelEntry:
        """``None`` or ``"production"`` means the production alias."""
        if version in (None, "production"):
            prod = self.production_version()
            if prod is None:
                raise RegistryError(
                    f"no production model in {self.root}: run `posebatch retrain` "
                    "or `posebatch models import`")
            version = prod
        return self.get(version)

    def _new_version_dir(self) -> tuple[str, Path]:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(self.versions_dir.iterdir())) + 1
        while True:
            version = f"v{n:04d}"
            path = self.versions_dir / version
            try:
                path.mkdir()  # atomic: two writers never get the same version
                return version, path
            except FileExistsError:
                n += 1

    def register(self, model: Any, metadata: dict[str, Any], report: str | None = None,
                 extra_files: dict[str, bytes] | None = None) -> ModelEntry:
        """Save a Keras model and its metadata as a new version (not promoted)."""
        version, path = self._new_version_dir()
        model.save(path / MODEL_FILE)
        for name, data in (extra_files or {}).items():
            (path / name).write_bytes(data)
        if report is not None:
            (path / "report.md").write_text(report, encoding="utf-8")
        meta = {"version": version, "created_at": datetime.now(UTC).isoformat(), **metadata}
        # metadata.json last: a version without it is incomplete and ignored by versions().
        _atomic_write(path / METADATA_FILE, json.dumps(meta, indent=2, sort_keys=True))
        return ModelEntry(version, path, meta)

    def attach(self, version: str, files: dict[str, bytes], metadata: dict[str, Any]
               ) -> ModelEntry:
        """Add files and metadata fields to an existing version (e.g. an inference artifact
        made after registration). Files first, then the metadata in one atomic replace, so
        a reader sees the old version or the new one, never metadata naming a missing file.
        A file that is no longer recorded is not removed here: a running classifier may
        still have it open."""
        entry = self.get(version)
        for name, data in files.items():
            if Path(name).name != name or name in (MODEL_FILE, METADATA_FILE):
                raise RegistryError(f"cannot attach {name!r} to {version}")
            _atomic_write_bytes(entry.path / name, data)
        meta = {**entry.metadata, **metadata}
        _atomic_write(entry.path / METADATA_FILE, json.dumps(meta, indent=2, sort_keys=True))
        return ModelEntry(version, entry.path, meta)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The registry's one exclusive lock (blocks until free; released on exit or death)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def set_production(self, version: str, reason: str, action: str = "promote",
                       expected_production: Any = ANY) -> None:
        """Switch the alias atomically and append the change to the history, under the lock.
        With ``expected_production`` (a version or None), refuse when production is not it."""
        with self._locked():
            self._switch(version, reason, action, expected_production)

    def _switch(self, version: str, reason: str, action: str, expected: Any) -> None:
        """The alias switch and its history record; the caller holds the lock."""
        self.get(version)  # must exist
        previous = self.production_version()
        if expected is not ANY and previous != expected:
            raise ProductionChanged(f"production changed from {expected or 'none'} to "
                                    f"{previous or 'none'} since the decision")
        _atomic_write(self.root / ALIAS_FILE, json.dumps({"version": version}))
        record = {"at": datetime.now(UTC).isoformat(), "who": _who(), "action": action,
                  "from": previous, "to": version, "why": reason}
        path = self.root / HISTORY_FILE
        with open(path, "a+", encoding="utf-8") as fh:
            fh.seek(0, os.SEEK_END)
            torn = fh.tell() > 0 and not _ends_with_newline(path)
            # A line torn by a crash stays as it was (never rewritten); ours starts afresh.
            fh.write(("\n" if torn else "") + json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def promote(self, version: str, reason: str, expected_production: Any = ANY) -> None:
        """Make ``version`` the production model (recorded as a promotion); with
        ``expected_production``, only if production is still that version."""
        with self._locked():
            if version == self.production_version():  # a no-op record would break rollback
                raise RegistryError(f"{version} is already the production model")
            self._switch(version, reason, "promote", expected_production)

    def rollback_target(self) -> str | None:
        """The version that was production before the current one was promoted.

        Found from the latest promotion (not rollback) that made the current version
        production, so repeated rollbacks walk back down the promotion chain; ``None`` when
        the current version was the first production model (nothing to go back to)."""
        current = self.production_version()
        for record in reversed(self.history()):
            if record.get("action") != "rollback" and record.get("to") == current:
                previous = record.get("from")
                return previous if previous != current else None
        return None

    def rollback(self, to: str | None = None, reason: str = "") -> tuple[str | None, str]:
        """Switch production back to ``to`` (default: the previous production version).

        Returns ``(from, to)``. Raises ``RegistryError`` when there is nothing to roll back to.
        The target is chosen and switched to under one lock, so a concurrent promotion is
        either wholly before or wholly after it."""
        with self._locked():
            current = self.production_version()
            target = to or self.rollback_target()
            if target is None:
                raise RegistryError(f"nothing to roll back to in {self.root}: the history has "
                                    "no earlier production version (name one: rollback --to "
                                    "vNNNN)")
            if target == current:
                raise RegistryError(f"{target} is already the production model")
            self._switch(target, reason or f"rollback from {current}", "rollback", current)
        return current, target

    def entries(self) -> list[ModelEntry]:
        """Every complete version, oldest first."""
        return [self.get(v) for v in self.versions()]

    def history(self) -> list[dict[str, Any]]:
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


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER", "unknown")


def load_model(entry: ModelEntry) -> Any:
    """Load the version's Keras model (imports Keras: call it where TensorFlow is wanted)."""
    import keras

    return keras.models.load_model(entry.model_path, compile=False)


def library_versions(dists: Iterable[str], with_platform: bool = False) -> dict[str, str]:
    """Python's version and each installed distribution's (missing ones left out).

    The one place that reads them, for a model's metadata (``library_versions``: what a
    version was trained or imported with) and for ``posebatch doctor``."""
    out = {"python": platform.python_version()}
    if with_platform:
        out["platform"] = platform.platform(terse=True)
    for dist in dists:
        try:
            out[dist] = dist_metadata.version(dist)
        except dist_metadata.PackageNotFoundError:
            continue
    return out
