"""Every path option of every command refuses a location it cannot honour in one line (exit
2), before the command runs: nothing is created, nothing is reinterpreted. (Before, a
``Path`` option turned ``s3://b/r`` into the local folder ``s3:/b/r``.)"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer.main
from typer.models import ParameterInfo
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.common import local_path, location, registry_location

PARSERS = {local_path: "local", location: "location", registry_location: "registry"}
# Parameters that hold a place to read or write: every one typed Path, and these locations
# typed str (local or s3://). Each must go through one of PARSERS.
LOCATIONS = {"registry", "registry_dir", "input_dir", "output_dir", "output", "archive"}


def _commands() -> list[tuple[list[str], typing.Any]]:
    out = []

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])
        if not hasattr(cmd, "commands"):
            out.append((path, cmd))

    walk(typer.main.get_command(app), [])
    return out


def _path_params() -> list[tuple[list[str], typing.Any, str]]:
    """(command path, click parameter, parser kind) of every path-like parameter."""
    found = []
    for path, cmd in _commands():
        hints = typing.get_type_hints(cmd.callback, include_extras=True)
        for param in cmd.params:
            hint = hints.get(param.name)
            info = next((m for m in getattr(hint, "__metadata__", ())
                         if isinstance(m, ParameterInfo)), None)
            parser = getattr(info, "parser", None)
            pathlike = "Path" in str(hint) or (
                param.name in LOCATIONS and path != ["models", "import"])  # its --output: a mode
            if pathlike:
                assert parser in PARSERS, f"{' '.join(path)} {param.name}: no path parser"
            if parser in PARSERS:
                found.append((path, param, PARSERS[parser]))
    return found


PARAMS = _path_params()


def test_every_path_option_has_a_parser() -> None:
    kinds = {kind for _, _, kind in PARAMS}
    assert kinds == {"local", "location", "registry"}
    commands = {" ".join(p) for p, _, _ in PARAMS}
    assert {"retrain", "classify", "models list", "doctor", "report", "rescore"} <= commands
    assert len(PARAMS) > 40  # --data on every command, plus the rest


@pytest.mark.parametrize(("path", "param", "kind"), PARAMS,
                         ids=[f"{' '.join(p)}:{q.name}" for p, q, _ in PARAMS])
def test_a_url_a_path_option_cannot_honour_is_refused_in_one_line(
        path, param, kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = "gs://bkt/x" if kind in ("location", "registry") else "s3://bkt/x"
    args = [url] if not getattr(param, "opts", None) or not param.opts[0].startswith("-") \
        else [param.opts[0], url]
    res = CliRunner().invoke(app, [*path, *args])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0], lines
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:" or "gs:" was made


def test_a_data_root_url_from_the_environment_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POSEBATCH_DATA_ROOT", "s3://bkt/data")
    res = CliRunner().invoke(app, ["models", "list"])
    assert res.exit_code == 2 and res.stderr.strip().startswith("error: settings:")
    assert "s3://bkt/data" in res.stderr and list(tmp_path.iterdir()) == []
