"""Decoding heatmaps to keypoints (models/keypoints.py) and the torso-normalised features."""

from __future__ import annotations

import numpy as np
import pytest

from models.keypoints import decode, keypoint_features, torso_features
from models.spec import HEATMAP_SHAPE, HEIGHT, WIDTH
from tasks.synth.generate import Artefacts, render


def _peaks(points: np.ndarray, heights: np.ndarray | None = None, sigma: float = 2.0
           ) -> np.ndarray:
    """Clean Gaussian heatmaps ``[N,17,64,48]`` with peaks at ``points`` ``[N,17,2]`` (x, y)."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    d2 = (xs - points[..., 0, None, None]) ** 2 + (ys - points[..., 1, None, None]) ** 2
    h = np.ones(points.shape[:2]) if heights is None else heights
    return (h[..., None, None] * np.exp(-d2 / (2 * sigma**2))).astype(np.float32)


def test_decode_integer_peaks_exact():
    rng = np.random.default_rng(0)
    pts = np.stack([rng.integers(1, WIDTH - 1, (4, 17)), rng.integers(1, HEIGHT - 1, (4, 17))],
                   -1).astype(float)
    heights = rng.uniform(0.3, 0.9, (4, 17))
    xy, score = decode(_peaks(pts, heights))
    assert xy.shape == (4, 17, 2) and score.shape == (4, 17)
    assert xy.dtype == np.float32
    np.testing.assert_allclose(xy, pts, atol=1e-6)  # symmetric peak: no refinement step
    np.testing.assert_allclose(score, heights, rtol=1e-5)


def test_decode_quarter_pixel_refinement_toward_higher_neighbour():
    pts = np.zeros((1, 17, 2))
    pts[0, :, 0] = 20.3   # right of pixel 20: refined to 20.25
    pts[0, :, 1] = 31.7   # above pixel 32: refined to 31.75
    xy, _ = decode(_peaks(pts))
    np.testing.assert_allclose(xy[0, :, 0], 20.25)
    np.testing.assert_allclose(xy[0, :, 1], 31.75)


def test_decode_single_frame_and_edges():
    pts = np.zeros((1, 17, 2))
    pts[0, :, 0] = np.r_[0, WIDTH - 1, np.full(15, 10)]
    pts[0, :, 1] = np.r_[0, HEIGHT - 1, np.full(15, 10)]
    frames = _peaks(pts)
    xy3, s3 = decode(frames[0])          # [17,64,48] is one frame
    xy4, s4 = decode(frames)
    np.testing.assert_array_equal(xy3, xy4)
    np.testing.assert_array_equal(s3, s4)
    assert xy4[0, 0].tolist() == [0.0, 0.0]
    assert xy4[0, 1].tolist() == [WIDTH - 1, HEIGHT - 1]


def test_decode_recovers_rendered_keypoints():
    """The generator's own renderer, without artefacts: decode lands within a pixel."""
    rng = np.random.default_rng(4)
    pts = np.stack([rng.uniform(3, WIDTH - 4, (50, 17)), rng.uniform(3, HEIGHT - 4, (50, 17))],
                   -1)
    clean = Artefacts(occlusion=0, swap=0, blob=0, noise=0, fine_noise=0)
    xy, score = decode(render(pts, rng, clean))
    err = np.abs(xy - pts)
    assert np.median(err) < 0.5 and np.percentile(err, 99) < 1.5
    assert 0.3 < score.min() and score.max() < 1.0


def test_decode_is_argmax_so_a_stronger_wrong_peak_wins():
    pts = np.full((1, 17, 2), 10.0)
    frames = _peaks(pts, np.full((1, 17), 0.3))
    frames[0, 9] += _peaks(np.full((1, 1, 2), 30.0), np.full((1, 1), 0.6))[0, 0]
    xy, score = decode(frames)
    assert xy[0, 9].tolist() == [30.0, 30.0] and score[0, 9] == pytest.approx(0.6, rel=1e-3)


def _skeleton_xy(n: int = 1) -> np.ndarray:
    xy = np.zeros((n, 17, 2), np.float32)
    xy[:, 5] = [30, 20]   # left shoulder (image right)
    xy[:, 6] = [18, 20]   # right shoulder
    xy[:, 11] = [28, 36]  # left hip
    xy[:, 12] = [20, 36]  # right hip
    xy[:, 0] = [24, 12]   # nose
    xy[:, 10] = [10, 8]   # right wrist raised
    return xy


def test_torso_features_layout_and_units():
    xy = _skeleton_xy()
    score = np.linspace(0.1, 0.9, 17, dtype=np.float32)[None]
    f = torso_features(xy, score)
    assert f.shape == (1, 17 * 2 + 17) and f.dtype == np.float32
    rel = f[0, :34].reshape(17, 2)
    np.testing.assert_allclose(rel[11] + rel[12], [0, 0], atol=1e-6)   # origin: mid-hip
    np.testing.assert_allclose(rel[5], [(30 - 24) / 16, -1.0], atol=1e-6)  # torso length 16
    np.testing.assert_allclose(f[0, 34:], score[0])


def test_torso_features_invariant_to_crop_position_and_scale():
    xy = _skeleton_xy()
    score = np.full((1, 17), 0.7, np.float32)
    moved = xy * 0.7 + np.array([5.0, -3.0], np.float32)
    np.testing.assert_allclose(torso_features(moved, score), torso_features(xy, score),
                               atol=1e-5)


def test_torso_features_collapsed_torso_stays_finite():
    xy = np.full((2, 17, 2), 12.0, np.float32)
    xy[1, 3] = [40, 60]
    f = torso_features(xy, np.ones((2, 17), np.float32))
    assert np.isfinite(f).all()
    assert np.abs(f).max() <= np.hypot(WIDTH, HEIGHT) / (0.1 * HEIGHT) + 1


def test_keypoint_features_is_decode_then_torso_features():
    rng = np.random.default_rng(1)
    pts = np.stack([rng.uniform(3, 44, (3, 17)), rng.uniform(3, 60, (3, 17))], -1)
    frames = render(pts, rng)
    assert frames.shape == (3, *HEATMAP_SHAPE)
    np.testing.assert_array_equal(keypoint_features(frames), torso_features(*decode(frames)))
