"""Who may share a posebatch server on one Prefect home, and who is refused (``ephemeral``):
a real claim held by another process and a real HTTP health endpoint; only the export of the
URL into this test process's Prefect settings is recorded instead of done."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flows.runtime import ephemeral
from flows.runtime.claim import Busy, holder
from tests.support.processes import ROOT, wait_until


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


def _held_by(home: Path, command: str, api_url: str) -> subprocess.Popen[str]:
    """Another process holding ``home``'s claim for ``command`` with its server at
    ``api_url``, as serve or watch do."""
    script = ("import sys\nfrom pathlib import Path\nfrom flows.runtime.claim import claim\n"
              "c = claim(Path(sys.argv[1]), sys.argv[2])\nc.record(None, sys.argv[3])\n"
              "print('held', flush=True)\nsys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(home), command, api_url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize(("holder_cmd", "command", "shares"), [
    ("serve", None, True), ("watch", None, True),          # short commands share any
    ("serve", "watch", True), ("watch", "watch", False),   # watch only shares serve's
])
def test_who_shares_a_server(tmp_path: Path, api: str, monkeypatch: pytest.MonkeyPatch,
                             holder_cmd: str, command: str | None, shares: bool):
    exported: list[str] = []
    monkeypatch.setattr(ephemeral, "export_api_url", exported.append)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    other = _held_by(tmp_path, holder_cmd, api)
    try:
        if shares:
            assert ephemeral.start_early_server(True, command) is None   # none started
            assert exported == [api]
        else:
            with pytest.raises(Busy, match=rf"posebatch watch \(PID {other.pid}\)"):
                ephemeral.start_early_server(True, command)
            assert exported == []
    finally:
        other.kill()
        other.wait()
    assert wait_until(lambda: holder(tmp_path) is None, 5)
