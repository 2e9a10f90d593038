"""The pose spec: the one place the class list, keypoint order and flip pairs come from.

The JSON is a copy of ``shared/pose-spec/pose_classes.json`` (its ``spec_version`` is kept), so
that a clean clone needs nothing outside the repository.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

HEATMAP_SHAPE: tuple[int, int, int] = (17, 64, 48)
"""One frame: keypoint, y, x. Files hold ``[1,17,64,48]``, ``[17,64,48]`` or ``[N,17,64,48]``."""

NUM_KEYPOINTS, HEIGHT, WIDTH = HEATMAP_SHAPE


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """The parsed pose spec (cached: it is read-only data)."""
    text = resources.files("models").joinpath("pose_classes.json").read_text(encoding="utf-8")
    return json.loads(text)


def spec_version() -> int:
    return int(load_spec()["spec_version"])


def keypoint_names() -> list[str]:
    """COCO-17 keypoint order, the channel order of every heatmap file."""
    return list(load_spec()["keypoints"])


def flip_pairs() -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in load_spec()["flip_pairs"]]


def flip_permutation() -> list[int]:
    """Channel permutation that a horizontal flip applies (left and right swapped)."""
    perm = list(range(NUM_KEYPOINTS))
    for a, b in flip_pairs():
        perm[a], perm[b] = b, a
    return perm


def class_names() -> list[str]:
    """The 17 pose classes, sorted: the order of model outputs unless a model says otherwise."""
    return sorted(load_spec()["classes"])


def mirror_of(name: str) -> str | None:
    """The class a horizontally flipped pose of ``name`` belongs to, or None (do not flip)."""
    return load_spec()["classes"][name].get("mirror")
