"""Decoding heatmaps into keypoints, and keypoint features for the classical models.

Decoding is the standard top-down rule: argmax per channel, refined by a quarter-pixel step
toward the higher neighbour (as in ViTPose/HRNet post-processing). Pure NumPy, vectorised.
"""

from __future__ import annotations

import numpy as np

from models.spec import HEIGHT, WIDTH

L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 5, 6, 11, 12


def decode(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(xy, score)``: ``xy`` ``[N,17,2]`` in grid pixels (x, y), ``score`` ``[N,17]``."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim == 3:
        frames = frames[None]
    n, k, h, w = frames.shape
    flat = frames.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    score = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    y, x = np.divmod(idx, w)
    xy = np.stack([x, y], axis=-1).astype(np.float32)
    # Quarter-pixel refinement toward the higher neighbour.
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    xr, xl = np.clip(x + 1, 0, w - 1), np.clip(x - 1, 0, w - 1)
    yd, yu = np.clip(y + 1, 0, h - 1), np.clip(y - 1, 0, h - 1)
    dx = frames[ni, ki, y, xr] - frames[ni, ki, y, xl]
    dy = frames[ni, ki, yd, x] - frames[ni, ki, yu, x]
    # Only between two neighbours (as mmpose does): at the border the step would leave the grid.
    xy[..., 0] += 0.25 * np.sign(dx) * ((x > 0) & (x < w - 1))
    xy[..., 1] += 0.25 * np.sign(dy) * ((y > 0) & (y < h - 1))
    return xy, score


def torso_features(xy: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Features invariant to crop position and scale: coordinates relative to the mid-hip,
    divided by the torso length, plus peak heights. Shape ``[N, 17*2 + 17]``."""
    mid_hip = (xy[:, L_HIP] + xy[:, R_HIP]) / 2
    mid_sh = (xy[:, L_SHOULDER] + xy[:, R_SHOULDER]) / 2
    torso = np.linalg.norm(mid_sh - mid_hip, axis=1)
    torso = np.maximum(torso, 0.1 * HEIGHT)  # a collapsed torso (bad decode) must not explode
    rel = (xy - mid_hip[:, None, :]) / torso[:, None, None]
    return np.concatenate([rel.reshape(len(xy), -1), score], axis=1).astype(np.float32)


def keypoint_features(frames: np.ndarray) -> np.ndarray:
    """Decode and featurise in one step."""
    xy, score = decode(frames)
    return torso_features(xy, score)


__all__ = ["decode", "torso_features", "keypoint_features", "HEIGHT", "WIDTH"]
