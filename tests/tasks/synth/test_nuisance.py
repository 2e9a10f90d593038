"""tasks/synth/nuisance.py and the generator's use of it.

What the robustness suite relies on: ``shifted`` moves exactly the named factor groups by the
documented steps, and every field of ``Nuisance`` is a real knob, moving the generated heatmaps
in the direction its name says (measured on decoded peaks, as a model would see them). Data
comes from the project's own generator; the random draws are paired (a knob scales the same
draws), so small samples give stable comparisons.
"""

from __future__ import annotations

from dataclasses import fields, replace
from functools import cache, lru_cache

import numpy as np
import pytest

from models.keypoints import decode
from models.spec import HEIGHT, WIDTH, class_names, keypoint_names
from tasks.synth.generate import _labeled_plan, render, synth_dataset, synth_frames
from tasks.synth.nuisance import (
    DIVIDED,
    FACTORS,
    HARD,
    NORMAL,
    SCALES,
    STEP,
    UNIT_INTERVAL,
    Nuisance,
    changes,
    shifted,
)
from tasks.synth.skeleton import sample_poses, sample_subjects

K = {name: i for i, name in enumerate(keypoint_names())}
LABELS = class_names() * 12          # one independent take per frame, 8 people
CLASS = np.arange(len(LABELS)) % len(class_names())
SEED = 11
PER_CLASS = 30                       # synth_dataset: 3 people, takes of 3-4 frames
QUIET = Nuisance(occlusion=0, swap=0, blob=0)  # one clean peak per channel: peaks measurable

# ----------------------------------------------------------------------------- shifted()


def test_defaults_and_presets():
    assert NORMAL == Nuisance() and changes(NORMAL) == {}
    assert changes(HARD) == {"take_sd": 12.0, "drift_sd": 2.0, "lean_sd": 4.0,
                             "rotation_sd": 8.0, "box_shift_sd": 0.08, "box_scale_sd": 0.12,
                             "occlusion": 0.14, "occlusion_shift_px": 4.0, "swap": 0.03,
                             "blob": 0.4, "noise": 0.022, "fine_noise": 0.007}
    with pytest.raises(ValueError, match="take_sd"):
        Nuisance(take_sd=-1)
    with pytest.raises(ValueError, match="occlusion_low"):
        Nuisance(occlusion_low=0.5, occlusion_high=0.4)


def test_every_field_is_in_exactly_one_factor_and_has_a_step():
    grouped = [f for group in FACTORS.values() for f in group]
    assert sorted(grouped) == sorted(f.name for f in fields(Nuisance))
    assert list(FACTORS) == ["angles", "proportions", "rotation", "box_jitter", "padding_aspect",
                             "truncation", "peak_sigma", "peak_height", "background",
                             "occlusion", "swap", "blobs"]
    assert set(STEP) | set(DIVIDED) == set(grouped) and not set(STEP) & set(DIVIDED)
    for f in fields(Nuisance):
        if f.name in STEP and f.name not in SCALES:
            assert STEP[f.name] == (f.default or STEP[f.name]) and STEP[f.name] != 0
    assert STEP["sigma_scale"] > 0 > STEP["height_scale"]  # wider, lower peaks


def test_shift_one_is_the_base_and_two_doubles():
    assert shifted(1.0) == Nuisance() and shifted(1.0, base=HARD) is HARD
    two = shifted(2.0)
    for f in fields(Nuisance):
        value, default = getattr(two, f.name), f.default
        if f.name in DIVIDED:
            assert value == pytest.approx(default / 2)
        elif f.name in SCALES:
            assert value == pytest.approx(1.0 + STEP[f.name]), f.name
        elif default:
            assert value == pytest.approx(2 * default), f.name
        else:
            assert value == pytest.approx(STEP[f.name]), f.name
    assert two.offset_mean == pytest.approx(-0.008)     # more negative
    assert shifted(2.0, base=HARD).take_sd == pytest.approx(12.0 + 7.0)


def test_shift_moves_only_the_named_factors():
    moved = shifted(3.0, ["swap", "truncation"])
    assert changes(moved) == {"swap": pytest.approx(0.045), "truncation": pytest.approx(0.12)}
    assert changes(shifted(2.0, ["occlusion"])) == {
        "occlusion": pytest.approx(0.14), "occlusion_shift_px": 6.0,
        "occlusion_low": pytest.approx(0.075), "occlusion_high": pytest.approx(0.2)}


def test_shift_clips_probabilities_and_sds():
    big = shifted(100.0)
    for name in UNIT_INTERVAL:
        assert 0.0 <= getattr(big, name) <= 1.0, name
    assert big.occlusion == 1.0 and big.blob == 1.0 and big.second_person == 1.0
    off = shifted(0.0)
    assert all(getattr(off, f.name) == 0.0 for f in fields(Nuisance)
               if f.name not in DIVIDED + SCALES)
    assert off.sigma_scale == off.height_scale == 1.0  # no scaling at all
    assert shifted(100.0).height_scale == pytest.approx(0.1)  # never zero
    assert off.occlusion_low == off.occlusion_high == 1.0   # occluded peaks not lowered at all
    assert shifted(0.5, base=HARD).noise == pytest.approx(0.022 - 0.006)


def test_shift_rejects_unknown_factors_and_negative_shift():
    with pytest.raises(ValueError, match="valid: angles, proportions"):
        shifted(2.0, ["angles", "lighting"])
    with pytest.raises(ValueError, match="shift"):
        shifted(-1.0)


# ----------------------------------------------------------------------------- measurements


def _mid(xy: np.ndarray, a: str, b: str) -> np.ndarray:
    return (xy[:, K[a]] + xy[:, K[b]]) / 2


def _angle(v: np.ndarray) -> np.ndarray:
    """Degrees from straight up (grid y points down), positive toward image right."""
    return np.degrees(np.arctan2(v[..., 0], -v[..., 1]))


def _torso(xy: np.ndarray) -> np.ndarray:
    return _mid(xy, "left_shoulder", "right_shoulder") - _mid(xy, "left_hip", "right_hip")


def _spread(values: np.ndarray, groups: np.ndarray = CLASS, circular: bool = False) -> float:
    """Robust sd of ``values`` about their group medians (classes, takes): outliers from
    occlusion or swaps do not count."""
    res = np.asarray(values, float).copy()
    for g in np.unique(groups):
        m = groups == g
        centre = (_angle(np.stack([np.sin(np.radians(res[m])), -np.cos(np.radians(res[m]))],
                                  -1).mean(0)) if circular else np.median(res[m]))
        res[m] -= centre
    if circular:
        res = (res + 180) % 360 - 180
    return float(1.4826 * np.median(np.abs(res - np.median(res))))


@cache
def _xy(nz: Nuisance) -> np.ndarray:
    return decode(synth_frames(LABELS, seed=SEED, nuisance=nz))[0]


@cache
def _dataset_xy(nz: Nuisance) -> tuple[np.ndarray, np.ndarray]:
    s = synth_dataset(PER_CLASS, seed=SEED, nuisance=nz)
    return decode(s.frames)[0], s.subjects


def _arm_angle(xy: np.ndarray) -> np.ndarray:
    """Right upper-arm direction relative to the torso (camera roll and lean cancel)."""
    return (_angle(xy[:, K["right_elbow"]] - xy[:, K["right_shoulder"]])
            - _angle(_torso(xy)))


def _centre(xy: np.ndarray) -> np.ndarray:
    return xy[:, [K["left_shoulder"], K["right_shoulder"], K["left_hip"], K["right_hip"]]].mean(1)


def _log_torso(xy: np.ndarray) -> np.ndarray:
    return np.log(np.linalg.norm(_torso(xy), axis=1))


def arm_spread(nz):             # per take: how far a class's arm angle strays
    return _spread(_arm_angle(_xy(nz)), circular=True)


def lean_spread(nz):            # torso against the hips' line: lean, not camera roll
    xy = _xy(nz)
    hips = _angle(xy[:, K["left_hip"]] - xy[:, K["right_hip"]]) - 90
    return _spread(_angle(_torso(xy)) - hips, circular=True)


def leg_axis_spread(nz):        # mid-hip to mid-ankle: the camera roll, not the lean
    xy = _xy(nz)
    axis = _mid(xy, "left_ankle", "right_ankle") - _mid(xy, "left_hip", "right_hip")
    return _spread(_angle(axis), circular=True)


def head_yaw_spread(nz):        # nose sideways of the shoulders, in torso lengths
    xy = _xy(nz)
    off = (xy[:, K["nose"], 0] - _mid(xy, "left_shoulder", "right_shoulder")[:, 0])
    return _spread(off / np.linalg.norm(_torso(xy), axis=1))


def proportion_spread(nz):      # forearm / torso length across people
    xy = _xy(nz)
    forearm = np.linalg.norm(xy[:, K["right_wrist"]] - xy[:, K["right_elbow"]], axis=1)
    return _spread(np.log(forearm) - _log_torso(xy))


def centre_spread(nz):          # where the person sits in the grid
    c = _centre(_xy(nz))
    return _spread(c[:, 0]) + _spread(c[:, 1])


def size_spread(nz):            # how large the person is in the grid
    return _spread(_log_torso(_xy(nz)))


def aspect_spread(nz):          # shoulder width against torso length: squash and stretch
    xy = _xy(nz)
    width = np.maximum(np.abs(xy[:, K["left_shoulder"], 0] - xy[:, K["right_shoulder"], 0]), .25)
    return _spread(np.log(width) - _log_torso(xy))


def edge_fraction(nz):          # joints decoded on the grid's border (cut off by the crop)
    xy = _xy(nz)
    edge = ((xy[..., 0] <= 0.5) | (xy[..., 0] >= WIDTH - 1.5) | (xy[..., 1] <= 0.5)
            | (xy[..., 1] >= HEIGHT - 1.5))
    return float(edge.mean())


def habit_spread(nz):           # per-person mean of the arm angles: a person's habit
    xy, subjects = _dataset_xy(nz)
    cls = np.repeat(np.arange(len(class_names())), PER_CLASS)
    means = []
    for shoulder, elbow in (("right_shoulder", "right_elbow"), ("left_shoulder", "left_elbow"),
                            ("right_elbow", "right_wrist"), ("left_elbow", "left_wrist")):
        a = _angle(xy[:, K[elbow]] - xy[:, K[shoulder]]) - _angle(_torso(xy))
        res = a.copy()
        for c in range(len(class_names())):
            res[cls == c] -= np.median(a[cls == c])
        res = (res + 180) % 360 - 180
        means += [np.median(res[subjects == s]) for s in np.unique(subjects)]
    return float(np.std(means))


def _within_take(values: np.ndarray) -> float:
    return _spread(values, groups=_labeled_plan(PER_CLASS)[0].take_idx)


def drift_spread(nz):           # frames of one take: how far the arm wanders
    xy, _ = _dataset_xy(nz)
    return _within_take(_angle(xy[:, K["right_wrist"]] - xy[:, K["right_shoulder"]]))


def frame_shift_spread(nz):     # frames of one take: how much the box centre jitters
    c = _centre(_dataset_xy(nz)[0])
    return _within_take(c[:, 0]) + _within_take(c[:, 1])


def frame_scale_spread(nz):     # frames of one take: how much the box size jitters
    return _within_take(_log_torso(_dataset_xy(nz)[0]))


@lru_cache(maxsize=1)
def _truth() -> np.ndarray:
    """Grid keypoints of the generator's own people and poses, to render and compare with."""
    rng = np.random.default_rng(5)
    n = len(LABELS)
    return sample_poses(rng, CLASS, sample_subjects(rng, 8), rng.integers(0, 8, n),
                        np.arange(n))


def _render(nz: Nuisance, n: int | None = None) -> np.ndarray:
    return render(_truth()[:n], np.random.default_rng(6), nz)


def _log_width(frames: np.ndarray) -> np.ndarray:
    """Log of each peak's half-maximum area ``[N,K]`` (grows with sigma_x * sigma_y)."""
    peak = frames.max(axis=(2, 3), keepdims=True)
    return np.log((frames > peak / 2).sum(axis=(2, 3)))


def _per_frame(v: np.ndarray) -> float:
    return _spread(np.median(v, axis=1), groups=np.zeros(len(v)))


def _per_joint(v: np.ndarray) -> float:
    return float(np.median(np.std(v - np.median(v, axis=1, keepdims=True), axis=1)))


def sigma_frame_spread(nz):
    return _per_frame(_log_width(_render(nz)))


def sigma_joint_spread(nz):
    return _per_joint(_log_width(_render(nz)))


def height_frame_spread(nz):
    return _per_frame(np.log(_render(nz).max(axis=(2, 3))))


def height_joint_spread(nz):
    return _per_joint(np.log(_render(nz).max(axis=(2, 3))))


def peak_width(nz):             # median half-maximum area of the peaks
    return float(np.exp(np.median(_log_width(_render(nz)))))


def peak_lowness(nz):           # 1 / median peak height
    return 1 / float(np.median(_render(nz).max(axis=(2, 3))))


def position_error(nz):         # decoded peak against the true joint
    return float(np.median(np.linalg.norm(decode(_render(nz))[0] - _truth(), axis=-1)))


def _background(nz: Nuisance) -> np.ma.MaskedArray:
    """Pixels more than 9 px from their channel's true joint (QUIET: one peak per channel),
    in a few frames (a background has thousands of pixels per frame)."""
    frames = _render(nz, 24)
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    t = _truth()[:24, :, :, None, None]
    far = np.hypot(xs - t[:, :, 0], ys - t[:, :, 1]) > 9
    return np.ma.masked_array(frames, ~far)


def background_std(nz):
    return float(np.ma.median(_background(nz).std(axis=(2, 3))))


def pixel_noise(nz):            # neighbour differences: fine noise, not the smooth fields
    bg = _background(nz)
    return float(np.ma.median(np.ma.diff(bg, axis=3).std(axis=(2, 3))))


def offset_spread(nz):          # per-channel background level, across channels
    return float(np.ma.median(_background(nz), axis=(2, 3)).std())


def offset_depth(nz):           # how far below zero the background sits
    return -float(np.ma.median(_background(nz)))


def low_peak_fraction(nz):
    return float((decode(synth_frames(LABELS, seed=SEED, nuisance=nz))[1] < 0.4).mean())


def low_peaks(nz):              # how weak the weakest (occluded) peaks are: 1 / 10th percentile
    return 1 / float(np.quantile(_render(nz).max(axis=(2, 3)), 0.1))


def high_peaks(nz):             # how weak the best occluded peaks are: 1 / 90th percentile
    return 1 / float(np.quantile(_render(nz).max(axis=(2, 3)), 0.9))


def wrist_swap_fraction(nz):    # a wrist channel peaking at the other wrist
    xy, t = decode(_render(nz))[0], _truth()
    a, b = K["left_wrist"], K["right_wrist"]
    apart = np.linalg.norm(t[:, a] - t[:, b], axis=1) > 6
    wrong = (np.linalg.norm(xy[:, a] - t[:, b], axis=1)
             < np.linalg.norm(xy[:, a] - t[:, a], axis=1))
    return float((wrong & apart).sum() / apart.sum())


def second_peak_fraction(nz):   # channels with a clear second maximum away from the first
    frames = synth_frames(LABELS, seed=SEED, nuisance=nz)
    n, k = frames.shape[:2]
    idx = frames.reshape(n, k, -1).argmax(axis=2)
    py, px = np.divmod(idx, WIDTH)
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    far = np.hypot(xs - px[..., None, None], ys - py[..., None, None]) > 6
    return float((np.where(far, frames, 0).max(axis=(2, 3)) > 0.12).mean())


OCCLUDED = Nuisance(occlusion=10.0, swap=0, blob=0)  # every joint occluded

# field, moved value, base settings, measurement, at least this factor of the base measurement
CASES = [
    ("take_sd", 21.0, NORMAL, arm_spread, 1.5),
    ("drift_sd", 7.5, NORMAL, drift_spread, 1.3),
    ("habit_sd", 16.0, NORMAL, habit_spread, 2.0),
    ("lean_sd", 14.0, NORMAL, lean_spread, 1.5),
    ("head_yaw_sd", 0.25, NORMAL, head_yaw_spread, 1.5),
    ("body_sd", 0.25, NORMAL, proportion_spread, 1.5),
    ("rotation_sd", 12.0, NORMAL, leg_axis_spread, 1.5),
    ("box_shift_sd", 0.16, NORMAL, centre_spread, 1.8),
    ("box_scale_sd", 0.24, NORMAL, size_spread, 1.8),
    ("frame_shift_sd", 0.05, NORMAL, frame_shift_spread, 1.5),
    ("frame_scale_sd", 0.08, NORMAL, frame_scale_spread, 1.5),
    ("padding_sd", 0.24, NORMAL, size_spread, 1.8),
    ("aspect_sd", 0.24, NORMAL, aspect_spread, 1.5),
    ("truncation", 1.0, NORMAL, edge_fraction, 10.0),
    ("sigma_scale", 1.5, QUIET, peak_width, 1.8),
    ("height_scale", 0.6, QUIET, peak_lowness, 1.5),
    ("sigma_frame_sd", 0.3, QUIET, sigma_frame_spread, 1.8),
    ("sigma_joint_sd", 0.3, QUIET, sigma_joint_spread, 1.5),
    ("height_frame_sd", 0.3, QUIET, height_frame_spread, 1.8),
    ("height_joint_sd", 0.36, QUIET, height_joint_spread, 1.5),
    ("position_sd", 1.5, QUIET, position_error, 2.0),
    ("noise", 0.04, QUIET, background_std, 2.0),
    ("fine_noise", 0.016, QUIET, pixel_noise, 2.0),
    ("offset_sd", 0.012, QUIET, offset_spread, 2.0),
    ("offset_mean", -0.02, QUIET, offset_depth, 2.0),
    ("occlusion", 0.28, NORMAL, low_peak_fraction, 2.5),
    ("occlusion_shift_px", 8.0, OCCLUDED, position_error, 1.5),
    ("occlusion_low", 0.03, OCCLUDED, low_peaks, 1.5),
    ("occlusion_high", 0.18, OCCLUDED, high_peaks, 1.5),
    ("swap", 0.3, QUIET, wrist_swap_fraction, 5.0),
    ("blob", 1.0, NORMAL, second_peak_fraction, 1.5),
    ("second_person", 0.5, NORMAL, second_peak_fraction, 1.5),
]


def test_every_field_has_a_direction_test():
    assert sorted(c[0] for c in CASES) == sorted(f.name for f in fields(Nuisance))


@pytest.mark.parametrize(("field", "value", "base", "measure", "factor"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_field_moves_the_data_its_way(field, value, base, measure, factor):
    before = measure(base)
    after = measure(replace(base, **{field: value}))
    assert after >= factor * before and after > 0, (before, after)


# ----------------------------------------------------------------------------- new factors


def test_truncation_cuts_the_body_off_the_grid():
    """Truncated takes lose joints (mostly the feet) past the grid's edge: what is left is the
    tail of the peak at the border, or only background; never an error."""
    frames = synth_frames(LABELS, seed=SEED, nuisance=Nuisance(truncation=1.0))
    xy, score = decode(frames)
    feet = [K["left_ankle"], K["right_ankle"]]
    assert np.median(score[:, feet]) < 0.35 < np.median(decode(
        synth_frames(LABELS, seed=SEED))[1][:, feet])
    at_bottom = xy[:, feet, 1] >= HEIGHT - 1.5
    assert at_bottom.mean() > 0.15 and ((score[:, feet] < 0.2) | at_bottom).mean() > 0.4
    assert np.isfinite(frames).all() and frames.shape == (len(LABELS), 17, HEIGHT, WIDTH)


def test_new_factors_leave_other_draws_alone():
    """A new factor draws from its own stream: frames it does not touch stay bit-identical
    (so a sweep compares the same people, poses and noise)."""
    base = synth_frames(LABELS, seed=SEED)
    for nz in (Nuisance(truncation=0.3), Nuisance(second_person=0.3)):
        moved = synth_frames(LABELS, seed=SEED, nuisance=nz)
        same = (moved == base).all(axis=(1, 2, 3))
        assert 0.5 < same.mean() < 0.9, (nz, same.mean())


def test_second_person_adds_lower_peaks_in_several_channels():
    kp = _truth()[:40]
    diff = (render(kp, np.random.default_rng(3), replace(QUIET, second_person=1.0))
            - render(kp, np.random.default_rng(3), QUIET))
    touched = (diff.max(axis=(2, 3)) > 0.05).sum(axis=1)
    assert np.median(touched) >= 3 and diff.max() < 0.6


def test_shifted_groups_move_their_measure():
    """The suite's knob end to end: shifting one group moves its measurement."""
    for group, measure in (("angles", arm_spread), ("rotation", leg_axis_spread),
                           ("padding_aspect", aspect_spread), ("truncation", edge_fraction)):
        assert measure(shifted(4.0, [group])) > measure(NORMAL), group

