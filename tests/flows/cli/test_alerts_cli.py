"""`posebatch alerts`: the one-line errors that need no server (the real server test is
tests/flows/runtime/test_alerts.py)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flows.cli import app


def test_apply_without_a_destination_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("POSEBATCH_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("POSEBATCH_ALERT_BLOCK", raising=False)
    res = CliRunner().invoke(app, ["alerts", "apply", "--data", str(tmp_path), "--json"])
    assert res.exit_code == 2
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert not out["ok"] and "POSEBATCH_ALERT_WEBHOOK_URL" in out["error"]
    assert res.stderr.count("\n") == 1


def test_apply_refuses_a_window_below_the_server_minimum(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEBATCH_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("POSEBATCH_ALERT_ABSENCE_HOURS", "0.001")   # 3.6 s
    res = CliRunner().invoke(app, ["alerts", "apply", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "minimum window of 10 s" in res.stderr


def test_list_without_a_server_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    res = CliRunner().invoke(app, ["alerts", "list", "--data", str(tmp_path)])
    assert res.exit_code == 2 and "no Prefect server" in res.stderr
