"""Commands: ``posebatch ledger show|verify|forget``: what the output's ledger says, whether
the output still holds it, and making files new again on purpose.

The logic lives in ``tasks/classify/ledger.py`` and ``tasks/classify/verify.py``; nothing
heavy is imported at module level (no Prefect, no TensorFlow).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from flows.cli.common import DataOpt, JsonOpt, emit, fail, location, setup

OutputOpt = Annotated[str | None, typer.Option(
    "--output", help="Output folder holding the ledger [default: DATA/output].",
    show_default=False, parser=location)]
SHOWN = ("path", "sha256", "status", "frames", "reason", "committed_at", "seq", "commit_id",
         "part", "model_version", "flow_run_id")


def _output(output_dir: str | None, data: Any) -> str:
    return output_dir if output_dir is not None else str(setup(data).output_dir)


def show_cmd(
    target: Annotated[str, typer.Argument(
        help="A file's path relative to the input (or a glob, * spans folders), or a batch.",
        show_default=False)],
    output_dir: OutputOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """When and how files were processed: status, commit, part, model version, flow run."""
    from tasks.classify.ledger import Ledger
    from tasks.classify.verify import select

    out = _output(output_dir, data)
    ledger = Ledger.load(out)
    found = select(ledger.entries, target)
    if found.num_rows == 0:
        found = select(ledger.entries, batch=target)
    if found.num_rows == 0:
        fail(f"no ledger entry in {out} matches {target!r} (a path, glob or batch)", as_json)
    rows = found.select(list(SHOWN)).to_pylist()
    for row in rows:
        row["part_exists"] = bool(row["part"]) and ledger.loc.exists(row["part"])
    human = "\n".join(
        f"{r['path']}  {r['status']}  {r['frames']} frame(s)  committed {r['committed_at']} "
        f"(#{r['seq']} {r['commit_id']})  model {r['model_version']}  run {r['flow_run_id']}  "
        f"part {r['part'] or '-'}" + ("" if r["part_exists"] or not r["part"] else " (MISSING)")
        for r in rows)
    emit({"ok": True, "output_dir": out, "entries": rows}, as_json, human)


def verify_cmd(output_dir: OutputOpt = None, data: DataOpt = None,
               as_json: JsonOpt = False) -> None:
    """Check that every committed part the ledger records exists, is readable and holds
    exactly the rows the ledger says (per file and content). Exit code 1 on a problem,
    one line each. Read-only; run it when no classification is writing."""
    from tasks.classify.ledger import Ledger
    from tasks.classify.verify import verify

    out = _output(output_dir, data)
    verdict = verify(Ledger.load(out))
    result = {"output_dir": out, **verdict.as_dict()}
    human = "\n".join(verdict.problems) or (f"ok: {verdict.parts} part(s) in {out} hold what "
                                            "the ledger says")
    emit(result, as_json, human)
    if verdict.problems:
        raise typer.Exit(1)


def forget_cmd(
    target: Annotated[str | None, typer.Argument(
        help="A file's path relative to the input, or a glob (* spans folders).",
        show_default=False)] = None,
    batch: Annotated[str | None, typer.Option(
        "--batch", help="Forget every file of this batch (top-level input folder).",
        show_default=False)] = None,
    output_dir: OutputOpt = None,
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make files new again: the next classify processes them. Their rows (and those of
    copies recognised as duplicates) are removed from the Parquet parts in the same commit,
    so readers never see a frame twice. Takes the output's lock."""
    from tasks.classify.ledger import Ledger, LockHeld, OutputLock
    from tasks.classify.verify import forget, select

    if (target is None) == (batch is None):
        fail("give a PATH_OR_GLOB or --batch B (one of them)", as_json)
    settings = setup(data)
    out = output_dir if output_dir is not None else str(settings.output_dir)
    try:
        with OutputLock(out, settings.lease_seconds):
            ledger = Ledger.load(out)
            ledger.reconcile()
            chosen = select(ledger.entries, target, batch)
            if chosen.num_rows == 0:
                fail(f"no ledger entry in {out} matches {target or batch!r}", as_json)
            stats = forget(ledger, chosen, "forget")
    except LockHeld as exc:
        fail(str(exc), as_json, code=3)
    except OSError as exc:
        fail(f"could not forget in {out}: {exc}", as_json)
    emit({"ok": True, "output_dir": out, **stats}, as_json,
         f"forgot {stats['files']} file(s) in {out}: {stats['rows_removed']} row(s) removed, "
         f"{stats['parts_rewritten']} part(s) rewritten; the next classify processes them")


def register(app: typer.Typer) -> None:
    """Add the ``ledger`` group."""
    ledger = typer.Typer(help="Show, verify and forget what the output's ledger records.",
                         no_args_is_help=True)
    app.add_typer(ledger, name="ledger")
    ledger.command("show")(show_cmd)
    ledger.command("verify")(verify_cmd)
    ledger.command("forget")(forget_cmd)
