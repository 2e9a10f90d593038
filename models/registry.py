"""The versioned model registry: versions written once and an alias switched by
compare-and-swap, on a local folder or on object storage (``s3://bucket/prefix``).

A version is a set of files (``model.keras``, ``report.md``, ``confusion.png``, whatever a
caller adds) plus ``metadata.json``: class names, input layout, temperature, metrics, and
``files``, the SHA-256 of every file, so a copy fetched elsewhere can be verified before it is
loaded. Layout under the registry root::

    versions/v0001/model.keras      the saved Keras model (input (None,17,64,48), logits out)
    versions/v0001/metadata.json    written last: a version without it is incomplete, ignored
    production.json                 {"version": "v0001"}: the production alias
    history                         promotions and rollbacks, one chain (history.jsonl in a
                                    local folder; history/00000001.json... on S3)

The rules live here; the primitives live in a store (``models/registry_store.py``: the
interface and the local folder; ``models/registry_s3.py``: object storage). A change of the
alias (promote, rollback) reads the history and the alias, creates history record N+1 only
if absent, then swaps the alias only if it still carries the token it was read with. Two
writers racing for record N+1: one wins, the other re-reads and decides again, so the history
stays one chain (each record's ``from`` is the previous record's ``to``) whatever runs at
once, on any number of machines. Locally one ``flock`` around the change makes writers queue
instead. A writer that died between its record and the alias leaves the alias one change
behind the history: the next change first moves the alias to the history's last ``to``.

A caller that decided against a production version it read earlier (the retrain gate)
passes ``expected_production``: the change is refused with ``ProductionChanged`` when
production moved in between.
"""

from __future__ import annotations

import getpass
import os
import platform
import re
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

from models.registry_store import (
    ALIAS_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    METADATA_FILE,
    MODEL_FILE,
    LocalStore,
    RegistryError,
    RegistryStore,
    file_sha256,
)

__all__ = ["ALIAS_FILE", "ANY", "HISTORY_FILE", "LOCK_FILE", "METADATA_FILE", "MODEL_FILE",
           "ModelEntry", "ProductionChanged", "Registry", "RegistryError", "file_sha256",
           "library_versions", "load_model", "open_store"]

ANY = object()  # expected_production not given: no compare-and-swap
RETRIES = 50    # conditional writes lost to other writers before a change gives up


class ProductionChanged(RegistryError):
    """Production is no longer the version the caller decided against."""


class ModelEntry:
    """One complete version: its name, metadata, and (fetched on first use) its files."""

    def __init__(self, version: str, store: RegistryStore, metadata: dict[str, Any]):
        self.version = version
        self.metadata = metadata
        self._store = store
        self._path: Path | None = None

    def __repr__(self) -> str:
        return f"ModelEntry({self.version!r}, {self.uri!r})"

    @property
    def uri(self) -> str:
        """Where the version lives (an absolute folder or an s3:// prefix)."""
        return f"{self._store.uri}/versions/{self.version}"

    @property
    def path(self) -> Path:
        """A local folder with the version's files (object storage: the verified cache)."""
        if self._path is None:
            self._path = self._store.local_dir(self.version, self.metadata)
        return self._path

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
        known = (self.metadata.get("files") or {}).get(MODEL_FILE)
        return known or file_sha256(self.model_path)

    def read_file(self, name: str) -> bytes | None:
        """One file of the version (None if it has none), without fetching the rest: e.g.
        the inference artifact a later ``attach`` added (``models/onnx_artifact.py``)."""
        return self._store.read_file(self.version, name)


def open_store(root: Path | str, cache_dir: Path | None = None) -> RegistryStore:
    """The store for a registry location; a URL scheme without a backend is refused (never
    turned into a local folder named ``gs:``)."""
    text = str(root)
    if text.startswith("s3://"):
        from models.registry_s3 import S3Store

        return S3Store(text, cache_dir)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", text):  # also "s3:/b" left by Path("s3://b")
        raise RegistryError(f"registry {text}: use a local folder or s3://bucket/prefix")
    return LocalStore(Path(text))


class Registry:
    def __init__(self, root: Path | str, cache_dir: Path | None = None):
        self.store = open_store(root, cache_dir)
        self.root: Path | str = getattr(self.store, "root", self.store.uri)
        self.uri = self.store.uri

    def versions(self) -> list[str]:
        return self.store.version_names()

    def get(self, version: str) -> ModelEntry:
        meta = self.store.read_metadata(version)
        if meta is None:
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"no model version {version!r} in {self.uri} (known: {known})")
        return ModelEntry(version, self.store, meta)

    def production_version(self) -> str | None:
        return self.store.read_alias()[0]

    def resolve(self, version: str | None = None) -> ModelEntry:
        """``None`` or ``"production"`` means the production alias."""
        if version in (None, "production"):
            prod = self.production_version()
            if prod is None:
                raise RegistryError(
                    f"no production model in {self.uri}: run `posebatch retrain` "
                    "or `posebatch models import`")
            version = prod
        return self.get(version)

    def _claim(self) -> str:
        n = self.store.claimed_count() + 1
        while not self.store.claim_version(f"v{n:04d}"):  # two writers never get one name
            n += 1
        return f"v{n:04d}"

    def register(self, model: Any, metadata: dict[str, Any], report: str | None = None,
                 extra_files: dict[str, bytes] | None = None) -> ModelEntry:
        """Save a Keras model, its files and metadata as a new version (not promoted).

        The files are staged in a local folder first, hashed into ``metadata["files"]``,
        then written once to the store, metadata last."""
        with tempfile.TemporaryDirectory(prefix="posebatch-register-") as tmp:
            folder = Path(tmp)
            model.save(folder / MODEL_FILE)
            for name, data in (extra_files or {}).items():
                (folder / name).write_bytes(data)
            if report is not None:
                (folder / "report.md").write_text(report, encoding="utf-8")
            files = {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}
            version = self._claim()
            meta = {"version": version, "created_at": datetime.now(UTC).isoformat(),
                    **metadata, "files": files}
            self.store.put_version(version, folder, meta)
        return ModelEntry(version, self.store, meta)

    def read_file(self, version: str, name: str) -> bytes | None:
        """One file of a version (e.g. its report), None if it has none."""
        return self.store.read_file(version, name)

    def attach(self, version: str, name: str, data: bytes) -> None:
        """Add a file to a registered version once (the retrain report names its version)."""
        self.store.attach(version, name, data)

    def set_production(self, version: str, reason: str, action: str = "promote",
                       expected_production: Any = ANY) -> None:
        """Switch the alias and record the change in the history, as one change.
        With ``expected_production`` (a version or None), refuse when production is not it."""
        self._change(lambda current, _h: (version, expected_production), reason, action)

    def promote(self, version: str, reason: str, expected_production: Any = ANY) -> None:
        """Make ``version`` the production model (recorded as a promotion); with
        ``expected_production``, only if production is still that version."""
        def decide(current: str | None, _h: list[dict[str, Any]]) -> tuple[str, Any]:
            if version == current:  # a no-op record would break rollback
                raise RegistryError(f"{version} is already the production model")
            return version, expected_production

        self._change(decide, reason, "promote")

    def rollback(self, to: str | None = None, reason: str = "") -> tuple[str | None, str]:
        """Switch production back to ``to`` (default: the previous production version).

        Returns ``(from, to)``. Raises ``RegistryError`` when there is nothing to roll back to.
        The target is chosen from the same reading of the history the change is made on, so
        a concurrent promotion is either wholly before or wholly after it."""
        def decide(current: str | None, history: list[dict[str, Any]]) -> tuple[str, Any]:
            target = to or _rollback_target(current, history)
            if target is None:
                raise RegistryError(f"nothing to roll back to in {self.uri}: the history has "
                                    "no earlier production version (name one: rollback --to "
                                    "vNNNN)")
            if target == current:
                raise RegistryError(f"{target} is already the production model")
            return target, current

        previous, target = self._change(decide, reason, "rollback")
        return previous, target

    def _change(self, decide: Any, reason: str, action: str) -> tuple[str | None, str]:
        """Read, decide, create history record N+1 if absent, swap the alias if unchanged;
        start again whenever another writer got there first."""
        for _ in range(RETRIES):
            with self.store.exclusive():
                history = self.store.records()
                current, token = self.store.read_alias()
                if history and current != history[-1].get("to"):  # a writer died in between
                    self.store.swap_alias(history[-1]["to"], token)
                    continue
                target, expected = decide(current, history)
                if expected is not ANY and current != expected:
                    raise ProductionChanged(f"production changed from {expected or 'none'} "
                                            f"to {current or 'none'} since the decision")
                self.get(target)  # must exist
                why = reason or (f"rollback from {current}" if action == "rollback" else "")
                record = {"at": datetime.now(UTC).isoformat(), "who": _who(),
                          "action": action, "from": current, "to": target, "why": why}
                if not self.store.add_record(len(history) + 1, record):
                    continue  # another change took that number: decide again
                self.store.swap_alias(target, token)  # lost only to a repair to the same
                return current, target
        raise RegistryError(f"{self.uri}: gave up after {RETRIES} conflicting changes")

    def rollback_target(self) -> str | None:
        """The version that was production before the current one was promoted."""
        return _rollback_target(self.production_version(), self.history())

    def entries(self) -> list[ModelEntry]:
        """Every complete version, oldest first."""
        return [self.get(v) for v in self.versions()]

    def history(self) -> list[dict[str, Any]]:
        return self.store.records()


def _rollback_target(current: str | None, history: list[dict[str, Any]]) -> str | None:
    """Found from the latest promotion (not rollback) that made ``current`` production, so
    repeated rollbacks walk back down the promotion chain; None when ``current`` was the
    first production model (nothing to go back to)."""
    for record in reversed(history):
        if record.get("action") != "rollback" and record.get("to") == current:
            previous = record.get("from")
            return previous if previous != current else None
    return None


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
