"""``posebatch doctor``: what a user needs to see when something is off, in one screen.

Versions, the data root, the production model and its age, the last classification run and
its outcome, pending input, disk space, and the Prefect setup. It must answer fast and never
make things worse, so it only reads: the output's ledger (the authoritative record of what was
processed), the registry's files, a listing of the input, and the last flow run from the
Prefect API when one is known (``PREFECT_API_URL`` or a running ``posebatch serve``) or else
read-only from the local Prefect database under the data root. It imports neither TensorFlow
nor the Prefect client, and starts no server.

Each check that finds a problem adds a one-line entry to ``problems``; ``ok`` is their absence.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.settings import Settings
from tasks.io.storage import absolute

CLASSIFY_FLOW = "classify"
PACKAGES = ("posebatch", "prefect", "prefect-dask", "dask", "distributed", "tensorflow-cpu",
            "tensorflow", "keras", "onnxruntime", "numpy", "pyarrow", "duckdb", "scikit-learn")
LOW_DISK_BYTES = 1 << 30
BAD_STATES = ("FAILED", "CRASHED")


def versions() -> dict[str, str]:
    """Python, the platform and the installed versions of the packages posebatch runs on."""
    from models.registry import library_versions

    return library_versions(PACKAGES, with_platform=True)


def _iso_age(stamp: str | None, now: float) -> tuple[str | None, float | None]:
    if not stamp:
        return None, None
    try:
        t = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp, None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.isoformat(), round((now - t.timestamp()) / 86400, 2)


def model_section(registry_dir: Path | str, now: float) -> tuple[dict[str, Any], list[str]]:
    from models.registry import Registry, RegistryError

    reg = Registry(registry_dir)
    info: dict[str, Any] = {"registry": str(registry_dir), "versions": len(reg.versions()),
                            "production": reg.production_version()}
    if info["production"] is None:
        return info, [f"no production model in {registry_dir}: run `posebatch retrain` or "
                      "`posebatch models import`"]
    try:
        entry = reg.resolve()
    except RegistryError as exc:
        return info, [str(exc)]
    created, age = _iso_age(entry.metadata.get("created_at"), now)
    metrics = entry.metadata.get("metrics") or {}
    test = metrics.get("test", metrics) if isinstance(metrics, dict) else {}
    info.update(created_at=created, age_days=age, classes=len(entry.class_names),
                temperature=entry.temperature,
                macro_f1=test.get("macro_f1") if isinstance(test, dict) else None)
    history = reg.history()
    if history:
        info["last_change"] = history[-1]
    problems = [] if entry.model_path.exists() else [f"model file missing: {entry.model_path}"]
    return info, problems


def ledger_section(output_dir: str, now: float) -> tuple[dict[str, Any], Any, list[str]]:
    """The last commit of the output's ledger, the ledger's entries (for pending input) and
    one problem per committed part that is missing, unreadable or holds other rows than the
    ledger says (``tasks/classify/verify.py``, footers only: fast)."""
    from tasks.classify.ledger import SEGMENTS, Ledger
    from tasks.classify.verify import verify

    ledger = Ledger.load(output_dir)
    verdict = verify(ledger, deep=False)
    entries = ledger.entries
    info: dict[str, Any] = {"output": output_dir, "commits": ledger.last_seq,
                            "files_processed": entries.num_rows,
                            "parts_checked": verdict.parts}
    if entries.num_rows:
        import pyarrow.compute as pc

        counts = pc.value_counts(entries["status"]).to_pylist()
        info["by_status"] = {c["values"]: c["counts"] for c in counts}
    if ledger.records:
        last = ledger.records[-1]
        created, age = _iso_age(last.created_at, now)
        info["last_commit"] = {"at": created, "age_days": age, "flow_run_id": last.flow_run_id,
                               "model_version": last.model_version,
                               "files": last.files}
    elif ledger.segments:
        seg = ledger.segments[-1]
        fi = ledger.loc.fs.get_file_info(ledger.loc.path(f"{SEGMENTS}/{seg[2]}"))
        at = fi.mtime.astimezone(UTC).isoformat() if fi.mtime else None
        info["last_commit"] = {"at": at, "age_days": _iso_age(at, now)[1]}
    problems = verdict.problems[:20] + ([f"... and {len(verdict.problems) - 20} more part "
                                         "problem(s): run `posebatch ledger verify`"]
                                        if len(verdict.problems) > 20 else [])
    return info, entries, problems


def _api_last_run(api_url: str) -> dict[str, Any] | None:
    import httpx

    body = {"flows": {"name": {"any_": [CLASSIFY_FLOW]}},
            "flow_runs": {"state": {"type": {"not_any_": ["SCHEDULED", "PENDING"]}}},
            "sort": "START_TIME_DESC", "limit": 1}
    resp = httpx.post(f"{api_url.rstrip('/')}/flow_runs/filter", json=body, timeout=5.0)
    resp.raise_for_status()
    runs = resp.json()
    if not runs:
        return None
    r = runs[0]
    return {"name": r["name"], "id": r["id"], "state": r.get("state_type"),
            "state_name": r.get("state_name"), "start_time": r.get("start_time"),
            "end_time": r.get("end_time"), "deployment_id": r.get("deployment_id")}


def _db_last_run(db: Path) -> dict[str, Any] | None:
    if not db.is_file():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
    try:
        row = con.execute(
            "SELECT fr.name, fr.id, fr.state_type, fr.state_name, fr.start_time, fr.end_time, "
            "fr.deployment_id FROM flow_run fr JOIN flow f ON f.id = fr.flow_id "
            "WHERE f.name = ? AND fr.start_time IS NOT NULL "
            "ORDER BY fr.start_time DESC LIMIT 1", (CLASSIFY_FLOW,)).fetchone()
    finally:
        con.close()
    if row is None:
        return None
    keys = ("name", "id", "state", "state_name", "start_time", "end_time", "deployment_id")
    return dict(zip(keys, row, strict=True))


def prefect_section(settings: Settings) -> tuple[dict[str, Any], list[str]]:
    from flows.runtime.serve import serve_info

    serving = serve_info(settings)
    api = os.environ.get("PREFECT_API_URL") or (serving or {}).get("api_url")
    home = Path(os.environ.get("PREFECT_HOME") or settings.prefect_home).resolve()
    info: dict[str, Any] = {
        "home": str(home), "api_url": api or "ephemeral (started per command)",
        # what posebatch commands do (flows.settings.configure_prefect_env): the user's
        # DO_NOT_TRACK wins, else off unless the settings turn telemetry on
        "telemetry": "off" if os.environ.get(
            "DO_NOT_TRACK", "" if settings.telemetry else "1") == "1" else "on",
        "serve": {k: serving[k] for k in ("pid", "cron", "timezone", "started_at")}
        if serving else None,
        "database": prefect_database(home, api),
    }
    problems: list[str] = []
    last = None
    try:
        if api:
            last, info["last_run_source"] = _api_last_run(api), "api"
        else:
            last, info["last_run_source"] = _db_last_run(home / "prefect.db"), "local database"
    except Exception as exc:  # server down, locked database: report, do not crash
        problems.append(f"could not read the last flow run ({'API ' + api if api else 'DB'}): "
                        f"{str(exc).splitlines()[0][:200]}")
    info["last_classify_run"] = last
    if last and str(last.get("state")).upper() in BAD_STATES:
        problems.append(f"last classification run {last['name']} ended {last['state_name']}")
    return info, problems


DB_VARS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


def prefect_database(home: Path, api: str | None) -> str:
    """Which database Prefect's server keeps its state in, password masked: the connection
    URL this environment gives the server (``posebatch serve`` and the ephemeral server
    read it), else the server's own ``/admin/settings``, else SQLite under the home."""
    import re

    url = next((os.environ[v] for v in DB_VARS if os.environ.get(v)), None)
    if url is None and api:
        try:
            import httpx

            got = httpx.get(f"{api.rstrip('/')}/admin/settings", timeout=5).json()
            url = ((got.get("server") or {}).get("database") or {}).get("connection_url")
        except Exception:  # noqa: BLE001 - an older server or no admin API: say unknown
            return "unknown (the server does not say)"
    if not url:
        return "sqlite (the server's default)" if api else f"sqlite ({home / 'prefect.db'})"
    if "*" in str(url):
        return "set on the server (masked)"
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(url))


def input_section(input_dir: str, quiet_seconds: float, entries: Any,
                  max_age_hours: float, exclude: tuple[str, ...] = ()
                  ) -> tuple[dict[str, Any], list[str]]:
    """Pending input and its backlog; a complete batch waiting longer than
    ``max_age_hours`` (the settings' ``backlog_max_age_hours``) is a problem: runs are not
    keeping up (or not running)."""
    from tasks.classify.discover import backlog, scan_input, unseen

    scan = scan_input(input_dir, quiet_seconds, exclude=exclude)
    fresh, _ = unseen(scan.ready, entries)
    left = backlog(fresh)
    problems = []
    age = left["oldest_age_hours"]
    if isinstance(age, float) and age > max_age_hours:
        problems.append(f"backlog: {left['files']} file(s) waiting, the oldest batch "
                        f"{left['oldest_batch']} for {age:.1f} h (more than "
                        f"{max_age_hours:g} h)")
    return {"input": input_dir, "files": scan.seen, "ready": len(scan.ready),
            "pending": len(fresh), "still_arriving": len(scan.waiting),
            "incomplete_batches": scan.waiting_batches[:20], "backlog": left}, problems


def disk_section(paths: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    from tasks.io.storage import Location

    info: dict[str, Any] = {}
    problems: list[str] = []
    for name, path in paths.items():
        free = Location(path).free_bytes()
        info[name] = {"path": path, "free_gb": None if free is None else round(free / 2**30, 2)}
        if free is not None and free < LOW_DISK_BYTES:
            problems.append(f"low disk space for {name} ({path}): {free / 2**20:.0f} MB free")
    return info, problems


def diagnose(settings: Settings, input_dir: str | None = None, output_dir: str | None = None,
             registry_dir: Path | str | None = None) -> dict[str, Any]:
    """Every section of the report; each section fails on its own, never the whole."""
    now = time.time()
    input_dir = input_dir or str(settings.incoming_dir.resolve())
    output_dir = output_dir or str(settings.output_dir.resolve())
    registry_dir = absolute(registry_dir or settings.registry_dir)
    root = settings.data_root.resolve()
    report: dict[str, Any] = {"versions": versions(),
                              "data_root": {"path": str(root), "exists": root.is_dir()}}
    problems: list[str] = [] if root.is_dir() else [f"data root {root} does not exist"]

    def section(name: str, fn: Any, *args: Any) -> Any:
        try:
            value = fn(*args)
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                            if str(exc) else f"{name}: {type(exc).__name__}")
            report[name] = None
            return None
        return value

    got = section("model", model_section, registry_dir, now)
    if got:
        report["model"], more = got
        problems += more
    got = section("last_run", ledger_section, output_dir, now)
    entries = None
    if got:
        report["last_run"], entries, more = got
        problems += more
    got = section("prefect", prefect_section, settings)
    if got:
        report["prefect"], more = got
        problems += more
    if entries is not None:
        got = section("input", input_section, input_dir, settings.quiet_seconds, entries,
                      settings.backlog_max_age_hours)
        if got:
            report["input"], more = got
            problems += more
    got = section("disk", disk_section, {"data_root": str(root), "output": output_dir})
    if got:
        report["disk"], more = got
        problems += more
    report["problems"] = problems
    report["ok"] = not problems
    return report


def render(report: dict[str, Any]) -> str:
    """The human view: one line per fact, problems last and marked."""
    v = report["versions"]
    tf = v.get("tensorflow-cpu") or v.get("tensorflow", "-")
    lines = [f"posebatch {v.get('posebatch', '?')}  python {v['python']}  prefect "
             f"{v.get('prefect', '-')}  tensorflow {tf}  keras {v.get('keras', '-')}  "
             f"pyarrow {v.get('pyarrow', '-')}",
             f"data root      {report['data_root']['path']}"
             + ("" if report["data_root"]["exists"] else "  (missing)")]
    m = report.get("model")
    if m:
        if m.get("production"):
            f1 = f", macro-F1 {m['macro_f1']:.3f}" if isinstance(m.get("macro_f1"), float) else ""
            lines.append(f"model          {m['production']} (of {m['versions']}), created "
                         f"{m.get('created_at')}, {m.get('age_days')} days old{f1}")
        else:
            lines.append(f"model          none in {m['registry']}")
    r = report.get("last_run")
    if r:
        last = r.get("last_commit") or {}
        lines.append(f"output         {r['output']}: {r['files_processed']} files processed "
                     f"{json.dumps(r.get('by_status', {}))}; last commit {last.get('at', '-')}")
    p = report.get("prefect")
    if p:
        run = p.get("last_classify_run")
        lines.append(f"prefect        api {p['api_url']}, home {p['home']}, telemetry "
                     f"{p['telemetry']}" + (f", serve pid {p['serve']['pid']}" if p.get('serve')
                                              else ""))
        lines.append(f"prefect db     {p.get('database', '-')}")
        lines.append("last run       " + (f"{run['name']} {run['state_name']} started "
                                           f"{run['start_time']} ({p.get('last_run_source')})"
                                           if run else "none recorded"))
    i = report.get("input")
    if i:
        lines.append(f"input          {i['input']}: {i['pending']} pending of {i['ready']} in "
                     f"complete batches, {i['still_arriving']} still arriving"
                     + (f" (batches {', '.join(i['incomplete_batches'])})"
                        if i["incomplete_batches"] else ""))
    for name, d in (report.get("disk") or {}).items():
        free = "n/a (object store)" if d["free_gb"] is None else f"{d['free_gb']} GB free"
        lines.append(f"disk {name:<9} {free} at {d['path']}")
    if report["problems"]:
        lines += [f"! {p}" for p in report["problems"]]
    else:
        lines.append("ok: no problems found")
    return "\n".join(lines)
