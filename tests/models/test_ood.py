"""Out-of-distribution warnings (models/ood.py): quiet on the generator's own frames, loud on
frames no person in a crop produces and on frames far from the training classes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.keypoints import decode, keypoint_features
from models.ood import (
    CODES,
    feature_distance,
    fit_reference,
    flag_frames,
    implausible_skeleton,
    ood_codes,
)
from models.spec import class_names
from tasks.synth.generate import synth_dataset, synth_frames
from tasks.synth.nuisance import shifted

NAMES = class_names()


@pytest.fixture(scope="module")
def reference() -> dict:
    train = synth_dataset(12, seed=31)
    val = synth_dataset(4, seed=32)
    y = np.array([NAMES.index(x) for x in train.labels])
    return fit_reference(keypoint_features(train.frames), y, keypoint_features(val.frames))


def test_reference_is_json_and_flags_few_fresh_frames(reference: dict) -> None:
    assert json.loads(json.dumps(reference)) == reference  # saved in model metadata
    fresh = synth_dataset(6, seed=33).frames
    assert flag_frames(fresh, reference).mean() < 0.06  # about 1 - quantile, by design
    assert implausible_skeleton(*decode(fresh)).mean() < 0.02


def test_implausible_skeletons_are_flagged() -> None:
    frames = synth_frames(NAMES[:4], seed=5)
    tiny = frames.copy()  # every joint's peak piled into one corner: no torso
    tiny[:] = frames[:, :, :, :][:, 0:1]  # the nose channel everywhere
    stretched = frames.copy()  # wrists and ankles swapped with far corners: limbs too long
    for j, (y, x) in zip((9, 10, 15, 16), ((0, 0), (0, 47), (63, 0), (63, 47)), strict=True):
        stretched[:, j] = 0.0
        stretched[:, j, y, x] = 0.9
    empty = frames * 0.01  # no joint has a peak
    for bad in (tiny, stretched, empty):
        assert implausible_skeleton(*decode(bad)).all()
        assert all("ood_skeleton" in c for c in ood_codes(bad, None))


def test_far_from_training_is_flagged_and_grows_with_shift(reference: dict) -> None:
    names = NAMES * 4
    clean = synth_frames(names, seed=40)
    far = synth_frames(names, seed=40, nuisance=shifted(3.0))
    d_clean = feature_distance(keypoint_features(clean), reference)
    d_far = feature_distance(keypoint_features(far), reference)
    assert np.median(d_far) > np.median(d_clean)
    assert flag_frames(far, reference).mean() > 2 * max(flag_frames(clean, reference).mean(),
                                                          0.02)
    codes = ood_codes(far, reference)
    assert {c for cs in codes for c in cs} <= set(CODES)
    assert any("ood_features" in cs for cs in codes)
