"""A labeling folder, and the labels that come back from it (no Prefect).

What `label suggest` writes, for people and for the tools they label with:

- ``images/NNNN_<sha12>_f<frame>.png``: the frame as ``posebatch show`` draws it (heatmaps,
  decoded skeleton, the model's top 3), from the one viewer, ``tasks.read.viewer``;
- ``labels.csv``: ``source_path,frame_index,content_sha256,predicted,label,image``, the
  ``label`` column empty: fill it in, then ``posebatch label import labels.csv``;
- ``label_studio_tasks.json`` and ``label_studio_config.xml``: Label Studio's task import
  with the model's label as a pre-annotation (``predictions`` with ``score``) and a
  single-choice config of the classes. Each task's data carries the frame's identity, so
  Label Studio's JSON export (full or ``JSON_MIN``) imports back by content hash.

What comes back (``read_labels``) is one table, ``source_path, frame_index,
content_sha256, true_label``, whichever format it came in; a row without a label is left
out (not yet labeled), and anything that is not one of the formats is refused in one line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pyarrow as pa

CSV_COLUMNS = ["source_path", "frame_index", "content_sha256", "predicted", "label", "image"]
FROM_NAME, TO_NAME = "pose", "image"       # the config's control and object names
TASKS_FILE, CONFIG_FILE, CSV_FILE = ("label_studio_tasks.json", "label_studio_config.xml",
                                     "labels.csv")
LABELS_SCHEMA = pa.schema([("source_path", pa.string()), ("frame_index", pa.int32()),
                           ("content_sha256", pa.string()), ("true_label", pa.string())])


class LabelsError(ValueError):
    """A labels file that is none of the formats (one line)."""


def image_name(n: int, sha: str, frame: int) -> str:
    return f"images/{n:04d}_{sha[:12]}_f{frame}.png"


def label_studio_config(class_names: Sequence[str]) -> str:
    """A single-choice image classification config over ``class_names``."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in class_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" '
            f'showInline="false">\n{choices}\n  </Choices>\n</View>\n')


def label_studio_task(row: dict[str, Any], image_url: str) -> dict[str, Any]:
    """One task: the picture, the frame's identity, the model's label as a prediction."""
    data = {"image": image_url, **{k: row[k] for k in
                                   ("source_path", "frame_index", "content_sha256")}}
    result = [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
               "value": {"choices": [row["predicted"]]}}]
    return {"data": data, "predictions": [{"model_version": str(row.get("model_version")),
                                           "score": float(row["confidence"]),
                                           "result": result}]}


def write_sheet(folder: Path, rows: list[dict[str, Any]], pngs: list[bytes],
                class_names: Sequence[str], image_url_prefix: str) -> dict[str, str]:
    """Write the PNGs, ``labels.csv`` and the Label Studio files; returns their paths.
    ``rows``: per pick ``source_path, frame_index, content_sha256, predicted, confidence,
    model_version``; ``image_url_prefix`` + the PNG's path is the task's image URL."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    out = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    out.writeheader()
    tasks = []
    for n, (row, png) in enumerate(zip(rows, pngs, strict=True)):
        name = image_name(n, row["content_sha256"], int(row["frame_index"]))
        (folder / name).write_bytes(png)
        out.writerow({**row, "label": "", "image": name})
        tasks.append(label_studio_task(row, image_url_prefix + name))
    (folder / CSV_FILE).write_text(buf.getvalue(), encoding="utf-8")
    (folder / TASKS_FILE).write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    (folder / CONFIG_FILE).write_text(label_studio_config(class_names), encoding="utf-8")
    return {"csv": str(folder / CSV_FILE), "label_studio_tasks": str(folder / TASKS_FILE),
            "label_studio_config": str(folder / CONFIG_FILE), "images": str(folder / "images")}


# -- labels back in ---------------------------------------------------------------------------
def read_labels(path: Path) -> pa.Table:
    """The labels of a filled ``labels.csv`` or a Label Studio JSON export (by content:
    a JSON list is Label Studio's, anything else must be the CSV)."""
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelsError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return _table([_from_label_studio(item, n) for n, item in enumerate(items)])
    return _table(_from_csv(text, path))


def _table(rows: list[dict[str, Any] | None]) -> pa.Table:
    rows = [r for r in rows if r is not None]
    return pa.Table.from_pylist(rows, schema=LABELS_SCHEMA)


def _from_csv(text: str, path: Path) -> list[dict[str, Any] | None]:
    reader = csv.DictReader(io.StringIO(text))
    need = {"source_path", "frame_index", "content_sha256", "label"}
    if not need <= set(reader.fieldnames or ()):
        raise LabelsError(f"{path}: the CSV needs the columns {', '.join(sorted(need))} "
                          "(the labels.csv that label suggest wrote)")
    return [_row(r["source_path"], r["frame_index"], r["content_sha256"], r["label"],
                 f"line {n}") for n, r in enumerate(reader, start=2)]


def _from_label_studio(item: Any, n: int) -> dict[str, Any] | None:
    """A task of the full export (``data`` + ``annotations``) or of ``JSON_MIN`` (flat)."""
    if not isinstance(item, dict):
        raise LabelsError(f"task {n}: not an object: not a Label Studio export")
    data = item.get("data", item)
    if "annotations" in item:
        done = [a for a in item["annotations"] if not a.get("was_cancelled")]
        label = _choice(done[-1].get("result", [])) if done else ""
    else:
        label = item.get(FROM_NAME) or ""
        if isinstance(label, dict):      # JSON_MIN writes {"choices": [...]} for some configs
            label = (label.get("choices") or [""])[0]
    missing = [k for k in ("source_path", "frame_index", "content_sha256") if k not in data]
    if missing:
        raise LabelsError(f"task {n}: no {', '.join(missing)} in its data: not a task "
                          "that label suggest wrote")
    return _row(data["source_path"], data["frame_index"], data["content_sha256"], label,
                f"task {n}")


def _choice(result: list[dict[str, Any]]) -> str:
    for r in result:
        if r.get("from_name") == FROM_NAME and r.get("value", {}).get("choices"):
            return str(r["value"]["choices"][0])
    return ""


def _row(path: Any, frame: Any, sha: Any, label: Any, where: str) -> dict[str, Any] | None:
    label = str(label or "").strip()
    if not label:
        return None
    frame = str(frame).strip()
    if not frame.isdigit():
        raise LabelsError(f"{where}: frame_index {frame!r} is not a whole number")
    return {"source_path": str(path).strip().replace("\\", "/"), "frame_index": int(frame),
            "content_sha256": str(sha).strip(), "true_label": label}
