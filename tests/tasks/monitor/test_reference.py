"""The training reference: small, strict JSON, its bins on the statistics' grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.spec import class_names
from tasks.monitor.inputs import HEIGHT_EDGES, InputStats
from tasks.monitor.reference import build_reference
from tasks.synth.generate import synth_dataset


@pytest.fixture(scope="module")
def reference() -> dict:
    data = synth_dataset(4, seed=41)
    names = class_names()
    labels = np.array([names.index(x) for x in data.labels])
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(len(names), 0.2), size=len(labels))
    return build_reference(InputStats().add(data.frames), probs, dict.fromkeys(names, 30),
                           names, labels)


def test_reference_is_small_strict_json(reference):
    text = json.dumps(reference, allow_nan=False)
    assert len(text) < 20_000
    assert json.loads(text) == reference


def test_height_bins_are_on_the_grid_and_shares_sum_to_one(reference):
    inputs = reference["inputs"]
    assert len(inputs["height_edges"]) == 17
    for edges, shares in zip(inputs["height_edges"], inputs["height_shares"], strict=True):
        assert edges == sorted(edges) and len(shares) == len(edges) + 1
        assert all(np.isclose(HEIGHT_EDGES, e).any() for e in edges)
        assert sum(shares) == pytest.approx(1.0, abs=1e-5)
        assert max(shares) < 0.5  # deciles: no bin holds most frames


def test_estimate_and_measured_accuracy(reference):
    assert reference["frames"] == 68
    assert 0.0 <= reference["est_accuracy"] <= 1.0
    assert 0.0 <= reference["accuracy"] <= 1.0
    conf = reference["confidence"]
    assert sum(conf["shares"]) == pytest.approx(1.0, abs=1e-5)
    assert conf["p05"] <= conf["p25"] <= conf["p50"]


def test_empty_held_out_side_gives_no_bins():
    ref = build_reference(InputStats(), np.zeros((0, 3)), {"a": 1}, ["a", "b", "c"])
    json.dumps(ref, allow_nan=False)
    assert ref["inputs"]["height_edges"][0] == [] and ref["est_accuracy"] is None
