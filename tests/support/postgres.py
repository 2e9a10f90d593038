"""A real PostgreSQL on loopback for the tests that need one (Prefect's server on it).

Debian's PostgreSQL 15 binaries (``/usr/lib/postgresql/15/bin``; override with
``POSEBATCH_TEST_PG_BIN``) refuse to run as root, and CI runs as root: the cluster is
created in a temporary folder owned by the ``postgres`` user and every command runs as that
user (``runuser``). Without the binaries or the user the test is skipped, saying why. The
server listens on 127.0.0.1 only (trust authentication, a throwaway cluster) and is stopped
by ``pg_ctl stop`` at the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.runtime.processes import free_port

PG_BIN = Path(os.environ.get("POSEBATCH_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, **kw)
    assert res.returncode == 0, f"{args}: {res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res


def missing() -> str | None:
    """Why no PostgreSQL can be started here (None: it can)."""
    if not (PG_BIN / "initdb").is_file():
        return f"PostgreSQL binaries not found in {PG_BIN}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL"
    return None


@contextlib.contextmanager
def postgres(database: str = "prefect") -> Iterator[str]:
    """Start a throwaway cluster; yield an asyncpg SQLAlchemy URL to ``database``."""
    why = missing()
    if why:
        pytest.skip(why)
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="posebatch-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if owner is not None:
        for path in (root, sock):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    try:
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U",
                      "postgres", "-E", "UTF8"])
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"),
                      "-w", "-t", "60", "-o",
                      f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 "
                      "-c max_connections=100 -c fsync=off", "start"])
        _as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                      "postgres", database])
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}"
    finally:
        with contextlib.suppress(Exception):
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                          "stop"])
        shutil.rmtree(root, ignore_errors=True)


def flow_runs_in(url: str) -> list[tuple[str, str]]:
    """(flow name, state type) of every flow run stored in the Prefect database at ``url``:
    proof that the server kept its state there."""
    import asyncio

    import asyncpg

    async def query() -> list[tuple[str, str]]:
        con = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            rows = await con.fetch("select f.name, r.state_type from flow_run r "
                                   "join flow f on f.id = r.flow_id")
        finally:
            await con.close()
        return [(r[0], str(r[1])) for r in rows]

    return asyncio.run(query())
