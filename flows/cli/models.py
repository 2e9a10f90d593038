"""Commands: ``posebatch models list|show|promote|rollback|history|import|export-onnx``.

The registry is plain files (``models/registry.py``); these commands read and switch it.
Only ``import`` and ``export-onnx`` load Keras (inside the command); the rest stay instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.common import (
    DataOpt,
    JsonOpt,
    emit,
    fail,
    local_path,
    registry_location,
    setup,
    use_server,
)

RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", help="Model registry, a folder or s3://bucket/prefix "
    "(default DATA/registry).", show_default=False,
    parser=registry_location)]


def _registry(registry: Path | None, data: Path | None) -> Any:
    from models.registry import Registry

    return Registry(registry or setup(data).registry_dir)


def _row(entry: Any, production: str | None) -> dict[str, Any]:
    from models.onnx_artifact import onnx_info

    meta = entry.metadata
    test = (meta.get("metrics") or {}).get("test") or {}
    return {"version": entry.version, "path": entry.uri,
            "model_path": f"{entry.uri}/model.keras",
            "production": entry.version == production, "created_at": meta.get("created_at"),
            "source": meta.get("source", "retrain"), "classes": len(meta.get("class_names", [])),
            "macro_f1": test.get("macro_f1"), "accuracy": test.get("accuracy"),
            "temperature": meta.get("temperature", 1.0),
            "data_fingerprint": meta.get("data_fingerprint"),
            "onnx": (onnx_info(entry) or {}).get("status", "none")}


def _announce(reg: Any, version: str, previous: str | None, action: str,
              data: Path | None) -> str | None:
    """Send ``posebatch.model.promoted`` to the configured Prefect server (``PREFECT_API_URL``
    or the one ``posebatch serve`` runs), where the ``rescore/after-promotion`` deployment
    may be listening; returns the event id. No server: nothing to tell (None), and no
    temporary server is started just for an event nobody would hear."""
    api = use_server(setup(data, prefect=True))
    if not api:
        return None
    from flows.runtime.events import emit_model_promoted

    try:
        return emit_model_promoted(reg.uri, version, previous, action,
                                   wait=True)
    except Exception as exc:  # noqa: BLE001 - the switch is done; the event is best effort
        typer.echo(f"warning: production switched, but the event was not sent to {api}: "
                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
        return None


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    models = typer.Typer(help="List, inspect, promote, roll back and import registry models.",
                         no_args_is_help=True)
    app.add_typer(models, name="models")
    models.command("list")(_list_cmd)
    models.command("show")(_show_cmd)
    models.command("promote")(_promote_cmd)
    models.command("rollback")(_rollback_cmd)
    models.command("history")(_history_cmd)
    models.command("import")(_import_cmd)
    models.command("export-onnx")(_export_onnx_cmd)


def _list_cmd(registry: RegistryOpt = None, data: DataOpt = None,
              as_json: JsonOpt = False) -> None:
    """Every registered version, with its test scores and the production flag."""
    reg = _registry(registry, data)
    prod = reg.production_version()
    rows = [_row(e, prod) for e in reg.entries()]
    human = "\n".join(
        [f"{'':2}{'version':<8} {'created':<20} {'source':<8} {'macro-F1':>8} "
         f"{'accuracy':>8}  path"]
        + [f"{'* ' if r['production'] else '  '}{r['version']:<8} "
           f"{(r['created_at'] or '')[:19]:<20} {r['source']:<8} {_fmt(r['macro_f1']):>8} "
           f"{_fmt(r['accuracy']):>8}  {r['path']}" for r in rows]
        + [f"({len(rows)} version(s) in {reg.uri}; * = production)" if rows
           else f"no models in {reg.uri}: run `posebatch retrain` or `posebatch models "
                "import`"])
    emit({"ok": True, "registry": reg.uri, "production": prod,
          "versions": rows}, as_json, human)


def _show_cmd(version: Annotated[str, typer.Argument(
                  help="A version (v0003) or 'production'.")] = "production",
              registry: RegistryOpt = None, data: DataOpt = None,
              as_json: JsonOpt = False) -> None:
    """A version's metadata and report."""
    from models.registry import RegistryError

    reg = _registry(registry, data)
    try:
        entry = reg.resolve(version)
    except RegistryError as exc:
        fail(str(exc), as_json)
    report = reg.read_file(entry.version, "report.md")
    row = _row(entry, reg.production_version())
    human = report.decode("utf-8") if report is not None else "\n".join(
        f"{k}: {v}" for k, v in row.items())
    emit({"ok": True, **row, "report_path": f"{entry.uri}/report.md" if report is not None
          else None, "metadata": entry.metadata}, as_json, human)


def _promote_cmd(version: Annotated[str, typer.Argument(help="The version to promote.")],
                 reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
                 registry: RegistryOpt = None, data: DataOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Make a version the production model (appended to the history)."""
    from models.registry import RegistryError

    reg = _registry(registry, data)
    before = reg.production_version()
    try:
        reg.promote(version, reason or "manual promotion")
    except RegistryError as exc:
        fail(str(exc), as_json)
    event = _announce(reg, version, before, "promote", data)
    emit({"ok": True, "from": before, "to": version, "production": version, "event": event},
         as_json, f"production: {before or '(none)'} -> {version}")


def _rollback_cmd(to: Annotated[str | None, typer.Option(
                      "--to", help="Version to return to (default: the previous production).")
                  ] = None,
                  reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
                  registry: RegistryOpt = None, data: DataOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Switch production back to the version it replaced (or --to a given one)."""
    from models.registry import RegistryError

    reg = _registry(registry, data)
    try:
        before, after = reg.rollback(to, reason)
    except RegistryError as exc:
        fail(str(exc), as_json)
    event = _announce(reg, after, before, "rollback", data)
    emit({"ok": True, "from": before, "to": after, "production": after, "event": event},
         as_json, f"rolled back: {before} -> {after}")


def _history_cmd(registry: RegistryOpt = None, data: DataOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Every promotion and rollback (append-only): who, when, from, to, why."""
    reg = _registry(registry, data)
    records = reg.history()
    human = "\n".join(f"{r['at'][:19]} {r['who']:<10} {r['action']:<9} "
                      f"{r['from'] or '(none)'} -> {r['to']}  {r['why']}"
                      for r in records) or "no promotions yet"
    emit({"ok": True, "history": records}, as_json, human)


def _import_cmd(path: Annotated[Path, typer.Argument(help="A .keras or legacy .h5 model.",
                                                     parser=local_path)],
                classes: Annotated[str | None, typer.Option(
                    help="Comma-separated class names in the model's output order "
                         "(default: the pose spec's 17 classes, sorted).")] = None,
                output: Annotated[str, typer.Option(
                    help="What the model outputs: auto (detect a final softmax), "
                         "probabilities or logits.")] = "auto",
                promote: Annotated[bool, typer.Option(
                    "--promote", help="Make it production (always done when the registry "
                                      "has no production model).")] = False,
                registry: RegistryOpt = None, data: DataOpt = None,
                as_json: JsonOpt = False) -> None:
    """Register an externally trained Keras model, wrapped to input (None,17,64,48)
    and logits out (e.g. the reference project's trained_model.h5)."""
    from models.spec import class_names

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes \
        else class_names()
    if len(set(names)) != len(names):
        fail("--classes has duplicate names", as_json)
    if output not in ("auto", "probabilities", "logits"):
        fail("--output must be auto, probabilities or logits", as_json)
    if not path.is_file():
        fail(f"{path} does not exist", as_json)
    setup(data, prefect=False)
    reg = _registry(registry, data)
    from models.importer import ImportError_, import_into_registry

    before = reg.production_version()
    try:
        entry, promoted = import_into_registry(reg, path, names, output, promote,
                                               inference=_onnx_for_import)
    except ImportError_ as exc:
        fail(str(exc), as_json)
    event = _announce(reg, entry.version, before, "import", data) if promoted else None
    meta = entry.metadata
    emit({"ok": True, "version": entry.version, "path": entry.uri,
          "promoted": promoted, "production": reg.production_version(), "event": event,
          "onnx": meta["onnx"]["status"], "onnx_reason": meta["onnx"].get("reason"),
          "input_adapter": meta["import"]["input_adapter"],
          "output_transform": meta["import"]["output_transform"], "output": "logits"},
         as_json,
         f"imported {path.name} as {entry.version} "
         f"(input: {meta['import']['input_adapter']}, "
         f"output: {meta['import']['output_transform']})"
         + ("; now production" if promoted else "")
         + f"; model.onnx {meta['onnx']['status']}")  # made at registration: in metadata


def _onnx_for_import(model: Any) -> tuple[dict[str, bytes], dict[str, Any]]:
    from tasks.train.inference_artifact import artifact_for, synthetic_check_frames

    return artifact_for(model, *synthetic_check_frames())


def _export_onnx_cmd(
        version: Annotated[list[str] | None, typer.Option(
            "--version", help="Only this version (repeatable) [default: every version].",
            show_default=False)] = None,
        force: Annotated[bool, typer.Option(
            "--force", help="Export and check again where a version already has a "
                            "record (local registries).")] = False,
        registry: RegistryOpt = None, data: DataOpt = None, as_json: JsonOpt = False) -> None:
    """Give registered versions their ONNX inference file (model.onnx beside model.keras),
    checked against the Keras model, and its record (onnx.json); a version that fails keeps
    running on Keras and the record says why. Versions that have a record are kept unless
    --force (which a local registry honours; object storage writes a version once)."""
    from models.registry import RegistryError

    setup(data, prefect=False)
    reg = _registry(registry, data)
    try:
        todo = [reg.get(v).version for v in version] if version else reg.versions()
    except RegistryError as exc:
        fail(str(exc), as_json)
    from tasks.train.inference_artifact import export_version

    rows = []
    for i, v in enumerate(todo, 1):
        typer.echo(f"[{i}/{len(todo)}] {v}: exporting and checking model.onnx", err=True)
        rows.append(export_version(reg, v, force=force))
    refused = [r for r in rows if r["status"] == "refused"]
    failed = [r for r in rows if r["status"] == "failed"]
    lines = [f"{r['version']}: {r['status']}"
             + (f" ({r['reason'] or 'max abs logit diff ' + _fmt(r['max_abs_logit_diff'])})")
             for r in rows]
    emit({"ok": not failed, "versions": rows, "refused": len(refused), "failed": len(failed)},
         as_json, "\n".join(lines) or "no versions in the registry")
    if failed:
        raise typer.Exit(1)
