"""Out-of-distribution warnings: frames whose label should not be trusted, whatever it says.

A softmax is confident far from its training data, so confidence alone cannot say "this is
not what I was trained on". Two checks on the decoded keypoints (``models.keypoints``: model
independent, NumPy on 17 peaks a frame) catch what it misses:

- ``ood_skeleton``: the decoded joints cannot be a person as a top-down crop shows one: the
  torso is tiny or fills the crop, limbs are far longer than the body allows, or most joints
  have no peak at all.
- ``ood_features``: the frame's keypoint features lie far from every training class. The
  distance is class-conditional Mahalanobis (the nearest class mean under one shared, shrunk
  covariance); the threshold is a high quantile of the validation frames' own distances, so
  about ``1 - quantile`` of in-distribution frames are flagged by design.

The reference (class means, precision matrix, threshold) is fitted at training time and
saved in the model's metadata (``ood``), so a model carries its own rule. Pure NumPy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.keypoints import L_HIP, L_SHOULDER, R_HIP, R_SHOULDER, decode, torso_features
from models.spec import HEIGHT, load_spec

CODES = ("ood_skeleton", "ood_features")
# Limb segments (COCO indices) and their spec length keys, in torso units.
_SEGMENTS = ((5, 7, "upper_arm"), (6, 8, "upper_arm"), (7, 9, "forearm"), (8, 10, "forearm"),
             (11, 13, "thigh"), (12, 14, "thigh"), (13, 15, "shin"), (14, 16, "shin"))
LIMB_TOO_LONG = 2.2      # x the spec's length: no person stretches that far
TORSO_PX = (4.0, 0.75 * HEIGHT)  # a torso outside this (grid px) is no person in the crop
NO_PEAK = 0.08           # a joint whose peak is below this is missing
MISSING_JOINTS = 6       # this many missing joints or more: too little of a person


def implausible_skeleton(xy: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``[N]`` bool: decoded joints (``xy`` ``[N,17,2]``, ``score`` ``[N,17]``) that no person
    in a top-down crop produces."""
    body = load_spec()["body"]
    torso = np.linalg.norm((xy[:, L_SHOULDER] + xy[:, R_SHOULDER]) / 2
                           - (xy[:, L_HIP] + xy[:, R_HIP]) / 2, axis=1)
    bad = (torso < TORSO_PX[0]) | (torso > TORSO_PX[1])
    unit = np.maximum(torso, TORSO_PX[0])
    too_long = np.zeros(len(xy), int)
    for a, b, key in _SEGMENTS:
        length = np.linalg.norm(xy[:, a] - xy[:, b], axis=1) / unit
        too_long += (length > LIMB_TOO_LONG * body[key]) & (score[:, a] >= NO_PEAK) & (
            score[:, b] >= NO_PEAK)
    missing = (score < NO_PEAK).sum(axis=1)
    return bad | (too_long >= 2) | (missing >= MISSING_JOINTS)


def fit_reference(features: np.ndarray, labels: np.ndarray, val_features: np.ndarray,
                  quantile: float = 0.99) -> dict[str, Any]:
    """The ``ood_features`` rule from training features and labels, its threshold from the
    validation features (never seen by the fit). JSON-ready (lists of floats)."""
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    precision = LedoitWolf().fit(centred).precision_
    ref = {"means": means.tolist(), "precision": precision.tolist(), "quantile": quantile}
    val = feature_distance(np.asarray(val_features, np.float64), ref)
    base = val if len(val) else feature_distance(features, ref)
    ref["threshold"] = float(np.quantile(base, quantile))
    return ref


def feature_distance(features: np.ndarray, ref: Mapping[str, Any]) -> np.ndarray:
    """``[N]`` Mahalanobis distance of each feature row to its nearest class mean."""
    means = np.asarray(ref["means"], np.float64)
    precision = np.asarray(ref["precision"], np.float64)
    d = np.asarray(features, np.float64)[:, None, :] - means[None]
    sq = np.einsum("ncf,fg,ncg->nc", d, precision, d)
    return np.sqrt(np.maximum(sq.min(axis=1), 0.0)) if len(d) else np.zeros(0)


def ood_codes(frames: np.ndarray, ref: Mapping[str, Any] | None,
              decoded: tuple[np.ndarray, np.ndarray] | None = None) -> list[list[str]]:
    """Per frame the warning codes (``CODES``) that apply; ``ref`` None: skeleton check only.
    ``decoded``: ``decode(frames)`` when the caller has it already."""
    xy, score = decode(frames) if decoded is None else decoded
    skeleton = implausible_skeleton(xy, score)
    far = np.zeros(len(xy), bool)
    if ref is not None:
        far = feature_distance(torso_features(xy, score), ref) > float(ref["threshold"])
    return [[c for c, on in zip(CODES, flags, strict=True) if on]
            for flags in zip(skeleton.tolist(), far.tolist(), strict=True)]


def flag_frames(frames: np.ndarray, ref: Mapping[str, Any] | None) -> np.ndarray:
    """``[N]`` bool: frames with any out-of-distribution code."""
    return np.array([bool(c) for c in ood_codes(frames, ref)], bool)
