"""Per-joint heatmap statistics: against direct NumPy on generated frames, on frames with
a known peak width, and merged across chunks."""

from __future__ import annotations

import numpy as np
import pytest

from models.keypoints import decode
from models.ood import NO_PEAK
from models.spec import HEATMAP_SHAPE
from tasks.monitor.inputs import InputStats, height_quantile
from tasks.synth.generate import synth_dataset
from tasks.synth.nuisance import shifted


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return synth_dataset(4, seed=21).frames


def gaussian_frames(sigma: float, n: int = 3, height: float = 0.8) -> np.ndarray:
    """Every channel one Gaussian peak of ``sigma`` px at a different place."""
    _, h, w = HEATMAP_SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, *HEATMAP_SHAPE), np.float32)
    rng = np.random.default_rng(0)
    for i in range(n):
        for j in range(HEATMAP_SHAPE[0]):
            cy, cx = rng.uniform(10, h - 10), rng.uniform(10, w - 10)
            out[i, j] = height * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return out


def test_heights_and_missing_rate_match_numpy(frames):
    stats = InputStats().add(frames)
    _, score = decode(frames)
    s = stats.summary()
    assert stats.frames == len(frames)
    for j in range(17):
        assert s["height_p50"][j] == pytest.approx(np.quantile(score[:, j], 0.5), abs=0.021)
        assert s["height_p90"][j] == pytest.approx(np.quantile(score[:, j], 0.9), abs=0.021)
        assert s["missing_rate"][j] == pytest.approx((score[:, j] < NO_PEAK).mean())


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_width_recovers_a_known_sigma(sigma):
    width = InputStats().add(gaussian_frames(sigma)).summary()["width_mean"]
    assert np.allclose(width, sigma, rtol=0.15)


def test_a_blank_channel_is_missing_and_has_no_width():
    x = gaussian_frames(2.0, n=4)
    x[:2, 3] = 0.0
    s = InputStats().add(x).summary()
    assert s["missing_rate"][3] == pytest.approx(0.5)
    assert s["missing_rate"][0] == 0.0
    assert s["width_mean"][3] == pytest.approx(2.0, rel=0.15)  # the two frames with a peak


def test_chunks_merge_to_the_whole(frames):
    whole = InputStats().add(frames)
    merged = InputStats().add(frames[:20]).merge(InputStats().add(frames[20:]))
    streamed = InputStats().add_stream(iter(frames), batch=7)
    for other in (merged, streamed, InputStats.from_dict(whole.to_dict())):
        assert other.frames == whole.frames and other.implausible == whole.implausible
        assert np.array_equal(other.height_counts, whole.height_counts)
        assert np.allclose(other.width_sum, whole.width_sum)
        assert np.array_equal(other.present, whole.present)


def test_lower_peaks_move_the_quantiles(frames):
    low = synth_dataset(4, seed=21, nuisance=shifted(3.0, ["peak_height"])).frames
    base, moved = InputStats().add(frames), InputStats().add(low)
    for j in (0, 5, 11):
        assert height_quantile(moved.height_counts[j], 0.5) < height_quantile(
            base.height_counts[j], 0.5) - 0.05


def test_empty_summary_is_nan():
    s = InputStats().summary()
    assert s["frames"] == 0 and np.isnan(s["implausible_share"])
    assert np.isnan(s["height_p50"]).all()


def test_a_caller_s_decode_and_a_width_sample_give_the_same_statistics():
    """The classifier passes the batch's decode (shared with the OOD check) and measures
    widths on every 8th frame: heights and missing joints still count every frame, and the
    sampled mean width is still the frames' one width."""
    frames = gaussian_frames(2.0, n=16)
    whole = InputStats().add(frames)
    sampled = InputStats().add(frames, decode(frames), width_every=8)
    assert np.array_equal(sampled.height_counts, whole.height_counts)
    assert np.array_equal(sampled.present, whole.present)
    assert sampled.width_n.sum() == whole.width_n.sum() // 8
    assert np.allclose(sampled.summary()["width_mean"], 2.0, rtol=0.1)   # pixel-grid noise
    assert np.allclose(whole.summary()["width_mean"], 2.0, rtol=0.1)
    assert InputStats.from_dict(sampled.to_dict()).summary() == sampled.summary()
