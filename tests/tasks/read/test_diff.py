"""``tasks.read.diff`` against a plain-Python recomputation over the generated history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.read.diff import compare, default_pair, diff_versions, read_pair
from tasks.read.query import QueryError
from tests.support.history import frame_key, write_history


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("diff_history")
    return out, write_history(out)


def plain_diff(rows: list[dict], old_v: str, new_v: str, min_conf: float) -> dict:
    old = {frame_key(r): r for r in rows if r["model_version"] == old_v}
    new = {frame_key(r): r for r in rows if r["model_version"] == new_v}
    common = sorted(set(old) & set(new))
    pairs = [(old[k], new[k]) for k in common]
    cells: dict[tuple[str, str], int] = {}
    for o, n in pairs:
        cells[(o["label"], n["label"])] = cells.get((o["label"], n["label"]), 0) + 1
    shift = {}
    for lab in {o["label"] for o, _ in pairs}:
        grp = [(o, n) for o, n in pairs if o["label"] == lab]
        shift[lab] = (len(grp), float(np.mean([n["confidence"] for _, n in grp]))
                      - float(np.mean([o["confidence"] for o, _ in grp])))
    high = sorted(((n["confidence"], k) for k, (o, n) in zip(common, pairs, strict=True)
                   if o["label"] != n["label"] and n["confidence"] >= min_conf),
                  key=lambda t: -t[0])
    return {"frames": len(common), "only_from": len(old) - len(common),
            "only_to": len(new) - len(common),
            "agreement": sum(o["label"] == n["label"] for o, n in pairs) / len(common),
            "cells": cells, "shift": shift, "high": high}


@pytest.mark.parametrize("old_v, new_v", [("v0001", "v0002"), ("v0002", "v0003"),
                                          ("v0001", "v0003"), ("v0003", "v0001")])
def test_figures_equal_plain_python(history, old_v, new_v):
    out, rows = history
    want = plain_diff(rows, old_v, new_v, 0.8)
    got = compare(*read_pair(out, old_v, new_v), min_confidence=0.8, limit=7)
    assert (got["from_version"], got["to_version"]) == (old_v, new_v)
    for key in ("frames", "only_from", "only_to"):
        assert got[key] == want[key], key
    assert got["agreement"] == pytest.approx(want["agreement"])
    assert got["flipped"] == round(want["frames"] * (1 - want["agreement"]))
    matrix = {(a, b): c for i, a in enumerate(got["labels"])
              for j, b in enumerate(got["labels"]) if (c := got["matrix"][i][j])}
    assert matrix == want["cells"]
    assert sum(map(sum, got["matrix"])) == want["frames"]
    assert {(f["old_label"], f["new_label"]): f["frames"] for f in got["flips"]} == {
        k: v for k, v in want["cells"].items() if k[0] != k[1]}
    assert {d["label"]: (d["frames"], pytest.approx(d["shift"], abs=1e-6))
            for d in got["confidence_shift"]} == want["shift"]
    hc = got["high_confidence_flips"]
    assert hc["total"] == len(want["high"])
    assert len(hc["rows"]) == min(7, len(want["high"]))
    assert [r["new_confidence"] for r in hc["rows"]] == pytest.approx(
        [c for c, _ in want["high"][:7]])
    assert all(r["old_label"] != r["new_label"] and r["new_confidence"] >= 0.8
               for r in hc["rows"])


def test_v0001_to_v0002_has_real_flips(history):
    got = diff_versions(history[0], production="v0002")
    assert (got["from_version"], got["to_version"]) == ("v0001", "v0002")
    assert 0.5 < got["agreement"] < 0.95 and got["high_confidence_flips"]["total"] > 0


def test_since_selects_frames_by_the_from_versions_time(history):
    out, rows = history
    got = diff_versions(out, "v0001", "v0002", since="2024-06-02")
    frames = {frame_key(r) for r in rows if r["model_version"] == "v0001"
              and str(r["date"]) >= "2024-06-02"}
    assert got["frames"] == len(frames & {frame_key(r) for r in rows
                                          if r["model_version"] == "v0002"})


@pytest.mark.parametrize("versions, production, given, want", [
    (["v0001", "v0002", "v0003"], "v0002", (None, None), ("v0001", "v0002")),
    (["v0001", "v0002", "v0003"], None, (None, None), ("v0002", "v0003")),
    (["v0001", "v0002", "v0003"], "v0009", (None, None), ("v0002", "v0003")),
    (["v0001", "v0002", "v0003"], "v0002", (None, "v0003"), ("v0002", "v0003")),
    (["v0001", "v0002", "v0003"], "v0002", ("v0003", None), ("v0003", "v0002")),
    (["v0001", "v0002", "v0003"], "v0001", ("v0001", None), ("v0001", "v0003")),
])
def test_default_pair(versions, production, given, want):
    assert default_pair(versions, production, *given) == want


@pytest.mark.parametrize("versions, given, message", [
    (["v0001"], (None, None), "diff needs predictions of two model versions"),
    (["v0001", "v0002"], ("v0007", None), "--from v0007: no predictions"),
    (["v0001", "v0002"], (None, "v0001"), "no model version before v0001"),
    (["v0001", "v0002"], ("v0002", "v0002"), "both v0002"),
])
def test_pair_errors(versions, given, message):
    with pytest.raises(QueryError, match=message):
        default_pair(versions, None, *given)


def test_no_rows_in_range_is_one_line(history):
    with pytest.raises(QueryError) as info:
        diff_versions(history[0], "v0001", "v0002", since="2030-01-01")
    assert "v0001 has no predictions in the --since/--until range" in str(info.value)
