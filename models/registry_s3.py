"""The registry on object storage (``s3://bucket/prefix``): no lock, conditional writes only.

Layout under the prefix (the same names as a local registry where they can be)::

    versions/v0007/.claim            created with If-None-Match: the name is this writer's
    versions/v0007/model.keras ...   each file created with If-None-Match (written once)
    versions/v0007/metadata.json     last, If-None-Match: the version is complete
    production.json                  {"version": ...}, replaced with If-Match on its ETag
    history/00000001.json ...        one record each, created with If-None-Match

S3 has answered conditional writes (412 Precondition Failed) since 2024, as do MinIO and
moto's server; a store that ignored them would break these guarantees, so the conditions are
always sent, never emulated. Endpoint and credentials come from the standard AWS environment
variables (``AWS_ENDPOINT_URL``...), which boto3 reads itself.

Model files are fetched into a local cache keyed by the registry, the version and the model
file's SHA-256, and every file's hash is checked against the version's metadata each time
the folder is handed out, so a torn download or a tampered cache never gets loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from models.registry_store import METADATA_FILE, MODEL_FILE, RegistryError, file_sha256

ALIAS_KEY = "production.json"
CLAIM = ".claim"
CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def default_cache() -> Path:
    """Where fetched model files live when the caller names no cache (per user)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "posebatch" / "models"


class S3Store:
    """A registry under ``s3://bucket/prefix``; every change is a conditional PUT."""

    def __init__(self, uri: str, cache_dir: Path | None = None, client: Any = None):
        url = urlparse(uri)
        if url.scheme != "s3" or not url.netloc:
            raise RegistryError(f"{uri}: expected s3://bucket/prefix")
        self.uri = uri.rstrip("/")
        self.bucket = url.netloc
        self.prefix = url.path.strip("/")
        self.cache_dir = cache_dir or default_cache()
        self._client = client
        self._history: list[dict[str, Any]] = []  # records seen so far (immutable)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    # -- conditional primitives ----------------------------------------------------------

    def _put(self, key: str, data: bytes, **condition: str) -> str | None:
        """PUT with a condition; the new ETag, or None when the condition failed."""
        from botocore.exceptions import ClientError

        try:
            return self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                          **condition)["ETag"]
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            if err.get("Code") in CONFLICT or status in CONFLICT:
                return None
            raise self._unreachable(exc) from None
        except Exception as exc:
            raise self._unreachable(exc) from None

    def _get(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._unreachable(exc) from None
        except Exception as exc:
            raise self._unreachable(exc) from None
        return obj["Body"].read(), obj["ETag"]

    def _unreachable(self, exc: Exception) -> RegistryError:
        """Any other storage failure (no credentials, no endpoint, access denied, no such
        bucket) as one line naming the registry."""
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return RegistryError(f"registry {self.uri}: {first}")

    def _keys(self, under: str) -> list[str]:
        """Every key below ``under`` (relative to the registry prefix), sorted."""
        base = self._key(under) + "/"
        out: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=base):
                out.extend(o["Key"][len(self._key()) + 1 if self.prefix else 0:]
                           for o in page.get("Contents", []))
        except Exception as exc:
            raise self._unreachable(exc) from None
        return sorted(out)

    # -- versions ------------------------------------------------------------------------

    def version_names(self) -> list[str]:
        return sorted(k.split("/")[1] for k in self._keys("versions")
                      if k.endswith("/" + METADATA_FILE) and k.count("/") == 2)

    def claimed_count(self) -> int:
        return len({k.split("/")[1] for k in self._keys("versions") if k.count("/") == 2})

    def read_metadata(self, version: str) -> dict[str, Any] | None:
        got = self._get(self._key("versions", version, METADATA_FILE))
        return json.loads(got[0]) if got else None

    def claim_version(self, version: str) -> bool:
        return self._put(self._key("versions", version, CLAIM), b"", IfNoneMatch="*") \
            is not None

    def put_version(self, version: str, folder: Path, metadata: dict[str, Any]) -> None:
        for src in sorted(folder.iterdir()):
            if src.is_file():
                self._put_once(version, src.name, src.read_bytes())
        self._put_once(version, METADATA_FILE,
                       json.dumps(metadata, indent=2, sort_keys=True).encode())

    def attach(self, version: str, name: str, data: bytes) -> None:
        self._put_once(version, name, data)

    def _put_once(self, version: str, name: str, data: bytes) -> None:
        if self._put(self._key("versions", version, name), data, IfNoneMatch="*") is None:
            raise RegistryError(f"{self.uri}/versions/{version}/{name} already exists: "
                                "a version is written once")

    def read_file(self, version: str, name: str) -> bytes | None:
        got = self._get(self._key("versions", version, name))
        return got[0] if got else None

    def local_dir(self, version: str, metadata: dict[str, Any]) -> Path:
        """The version's files in the local cache, each verified against its SHA-256."""
        files: dict[str, str] = metadata.get("files") or {}
        if MODEL_FILE not in files:
            raise RegistryError(f"{self.uri} {version}: metadata lists no file hashes")
        where = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        folder = self.cache_dir / where / f"{version}-{files[MODEL_FILE][:16]}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, sha in sorted(files.items()):
            path = folder / name
            if not (path.is_file() and file_sha256(path) == sha):
                self._fetch(version, name, sha, path)
        return folder

    def _fetch(self, version: str, name: str, sha: str, path: Path) -> None:
        got = self._get(self._key("versions", version, name))
        if got is None:
            raise RegistryError(f"{self.uri}/versions/{version}/{name} is missing")
        if hashlib.sha256(got[0]).hexdigest() != sha:
            raise RegistryError(f"{self.uri}/versions/{version}/{name}: SHA-256 does not "
                                "match the version's metadata; refusing to load it")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(got[0])
        os.replace(tmp, path)

    # -- alias and history ---------------------------------------------------------------

    def read_alias(self) -> tuple[str | None, str | None]:
        got = self._get(self._key(ALIAS_KEY))
        return (json.loads(got[0])["version"], got[1]) if got else (None, None)

    def swap_alias(self, version: str, token: str | None) -> bool:
        # A fresh nonce each write: the ETag is the body's MD5, and a swap back to the same
        # version must not revive an older token (no ABA).
        data = json.dumps({"version": version, "write": uuid.uuid4().hex}).encode()
        cond = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        return self._put(self._key(ALIAS_KEY), data, **cond) is not None

    def records(self) -> list[dict[str, Any]]:
        """Records never change once written, so only the ones not seen yet are fetched
        (one LIST starting after the last known record, one GET per new record)."""
        start = self._key("history", f"{len(self._history):08d}.json") if self._history \
            else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key("history") + "/", StartAfter=start)
            keys = sorted(o["Key"] for page in pages for o in page.get("Contents", []))
        except Exception as exc:
            raise self._unreachable(exc) from None
        for key in keys:
            got = self._get(key)
            if got:
                self._history.append(json.loads(got[0]))
        return list(self._history)

    def add_record(self, number: int, record: dict[str, Any]) -> bool:
        key = self._key("history", f"{number:08d}.json")
        return self._put(key, json.dumps(record).encode(), IfNoneMatch="*") is not None

    def exclusive(self) -> Any:
        return nullcontext()  # no lock on object storage: the conditional writes decide
