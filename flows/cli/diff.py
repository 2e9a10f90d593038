"""Command: diff: how two model versions disagree on the frames both scored.

The figures come from ``tasks.read.diff`` (the report's "Model versions" section uses the
same functions); this module parses flags and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import DataOpt, JsonOpt, emit, fail, local_path, setup
from flows.cli.query import OutputOpt, RegistryOpt, SinceOpt, UntilOpt, production_version

FLIPS_SHOWN = 15  # the human output lists this many (old, new) cells; --json has them all


def diff(
    from_version: Annotated[str | None, typer.Option(
        "--from", help="The old version (default: the version found in the predictions "
        "just before --to, in version order).", show_default=False)] = None,
    to_version: Annotated[str | None, typer.Option(
        "--to", help="The new version (default: the production version, else the newest "
        "found in the predictions).", show_default=False)] = None,
    min_confidence: Annotated[float, typer.Option(
        "--min-confidence", help="List flips whose new confidence is at least this.")] = 0.8,
    limit: Annotated[int, typer.Option(
        "--limit", help="List at most N high-confidence flips.")] = 20,
    since: SinceOpt = None,
    until: UntilOpt = None,
    png: Annotated[Path | None, typer.Option(
        "--png", help="Flip-matrix PNG to write (default: "
        "DATA/reports/diff-FROM-TO.png).", show_default=False, parser=local_path)] = None,
    data: DataOpt = None,
    output: OutputOpt = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two model versions on the frames both scored: agreement, label flips
    (old -> new, as a table and a PNG), confidence shift per old label (mean new minus mean
    old confidence), and the flips with a confident new label, for review.

    --since/--until select frames by when the --from version classified them.
    """
    from tasks.read import plots
    from tasks.read.diff import compare, default_pair, read_pair
    from tasks.read.query import QueryError, model_versions_in

    settings = setup(data)
    output = output or str(settings.output_dir)
    if limit < 0:
        fail("--limit must be 0 or more", as_json)
    try:
        pair = default_pair(model_versions_in(output),
                            production_version(registry or settings.registry_dir),
                            from_version, to_version)
        old, new = read_pair(output, *pair, since=since, until=until)
        result = compare(old, new, min_confidence=min_confidence, limit=limit)
    except QueryError as exc:
        fail(str(exc), as_json)
    png = png or settings.data_root / "reports" / f"diff-{pair[0]}-{pair[1]}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(plots.flip_matrix(result["labels"], result["matrix"], *pair))
    result = {"ok": True, **result, "png": str(png)}
    if as_json:
        emit(result, True)
    else:
        typer.echo(human(result))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    import pyarrow as pa

    from tasks.read.table_output import format_aligned

    if not rows:
        return "(none)"
    return format_aligned(pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows]))


def human(r: dict[str, Any]) -> str:
    """The diff as text: headline, flips, confidence shift, high-confidence flips."""
    hc = r["high_confidence_flips"]
    shift = [{"old_label": d["label"], "frames": d["frames"],
              "agreement": round(d["agreement"], 3),
              "mean_old_conf": d["mean_old_confidence"],
              "mean_new_conf": d["mean_new_confidence"],
              "shift": d["shift"]} for d in r["confidence_shift"]]
    review = [{"source_path": x["source_path"], "frame": x["frame_index"],
               "old -> new": f"{x['old_label']} -> {x['new_label']}",
               "old_conf": x["old_confidence"], "new_conf": x["new_confidence"]}
              for x in hc["rows"]]
    return "\n".join([
        f"{r['from_version']} -> {r['to_version']}: {r['frames']} frames scored by both "
        f"({r['only_from']} by {r['from_version']} only, {r['only_to']} by "
        f"{r['to_version']} only)",
        f"agreement {r['agreement']:.1%}, {r['flipped']} flipped; flip matrix: {r['png']}",
        "",
        "Label flips (old -> new)" + (f", the {FLIPS_SHOWN} largest of {len(r['flips'])} "
                                      "(--json has the whole matrix)"
                                      if len(r["flips"]) > FLIPS_SHOWN else "") + ":",
        _table(r["flips"][:FLIPS_SHOWN], ["old_label", "new_label", "frames"]),
        "",
        "Confidence shift per old label (mean new - mean old confidence):",
        _table(shift, list(shift[0]) if shift else []),
        "",
        f"Flips with new confidence >= {r['min_confidence']:g}: {hc['total']}"
        + (f" ({len(hc['rows'])} shown, --limit)" if len(hc["rows"]) < hc["total"] else ""),
        _table(review, list(review[0]) if review else []),
    ])


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("diff")(diff)
