"""Augmentation (tasks/train/augment.py): the mirror-aware flip and the reproducible batch ops."""

from __future__ import annotations

import numpy as np
import pytest

from models.keypoints import decode
from models.spec import WIDTH, class_names, flip_pairs, keypoint_names
from tasks.synth.generate import synth_frames
from tasks.train.augment import (
    AugmentConfig,
    augment_batch,
    augment_dataset,
    flip_frames,
    limb_rotations,
    mirror_flip,
    mirror_index,
    peak_xy,
    swap_sides,
)

NAMES = class_names()
# Every augmentation off (the defaults turn most of them on).
STILL = dict(flip=0.0, affine=0.0, blur=0.0, peak_low=1.0, peak_high=1.0, joint_dropout=0.0,
             noise=0.0, swap=0.0, joint_jitter_px=0.0, limb_deg=0.0, lean_deg=0.0, aspect=0.0,
             truncate=0.0, rerender=0.0, occlusion=0.0, blob=0.0, second_person=0.0,
             limb_scale=0.0, clean=0.0)
# flip everything that may flip, nothing else
OFF = AugmentConfig(**{**STILL, "flip": 1.0})


def test_mirror_index_follows_the_spec() -> None:
    m = mirror_index(NAMES)
    assert NAMES[m[NAMES.index("action_up")]] == "category_events"
    assert NAMES[m[NAMES.index("category_events")]] == "action_up"
    assert NAMES[m[NAMES.index("action_remove_block")]] == "action_select_block"
    assert NAMES[m[NAMES.index("dummy")]] == "dummy"
    for name in ("category_looks", "action_switch", "category_control", "select_avatar"):
        assert m[NAMES.index(name)] == -1
    # A mirror outside the trained classes, or an unknown class: never flipped.
    assert mirror_index(["action_up", "mystery"]).tolist() == [-1, -1]


def test_flip_swaps_sides_and_mirrors_x() -> None:
    frames = synth_frames(["action_up"], seed=5)
    flipped = flip_frames(frames).numpy()
    xy, score = decode(frames)
    fxy, fscore = decode(flipped)
    kp = keypoint_names()
    rw, lw = kp.index("right_wrist"), kp.index("left_wrist")
    assert fxy[0, lw, 0] == pytest.approx(WIDTH - 1 - xy[0, rw, 0], abs=0.01)
    assert fxy[0, lw, 1] == pytest.approx(xy[0, rw, 1], abs=0.01)
    assert fscore[0, lw] == pytest.approx(score[0, rw])
    np.testing.assert_array_equal(flip_frames(flipped).numpy(), frames)  # an involution


def test_flipped_action_up_becomes_category_events_and_looks_never_flips() -> None:
    labels = ["action_up", "category_looks", "category_events", "action_switch", "dummy"]
    frames = synth_frames(labels, seed=2)
    y = np.array([NAMES.index(n) for n in labels])
    out, out_y = mirror_flip(frames, y, mirror_index(NAMES), np.ones(len(y), bool))
    assert [NAMES[i] for i in out_y.numpy()] == ["category_events", "category_looks",
                                                 "action_up", "action_switch", "dummy"]
    out = out.numpy()
    np.testing.assert_array_equal(out[1], frames[1])  # category_looks: untouched
    np.testing.assert_array_equal(out[3], frames[3])  # action_switch: untouched
    np.testing.assert_array_equal(out[0], flip_frames(frames[:1]).numpy()[0])


def test_pipeline_never_produces_a_flipped_category_looks() -> None:
    import tensorflow as tf

    labels = ["action_up", "category_looks"] * 8
    frames = synth_frames(labels, seed=4)
    y = np.array([NAMES.index(n) for n in labels], np.int32)
    ds = augment_dataset(tf.data.Dataset.from_tensor_slices((frames, y)).batch(4), NAMES,
                         seed=0, config=OFF)
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds], strict=True)
    out, out_y = np.concatenate(xs), np.concatenate(ys)
    looks = NAMES.index("category_looks")
    assert out_y.tolist().count(looks) == 8  # no other class became looks, none left it
    assert set(out_y.tolist()) == {looks, NAMES.index("category_events")}
    np.testing.assert_allclose(out[out_y == looks], frames[y == looks], atol=1e-6)
    flipped_looks = flip_frames(frames[y == looks]).numpy()
    assert not any(np.allclose(o, f, atol=1e-3) for o in out for f in flipped_looks)


def test_augment_batch_is_reproducible_and_changes_the_frames() -> None:
    labels = NAMES[:8]
    frames = synth_frames(labels, seed=9)
    y = np.arange(8, dtype=np.int32)
    m = mirror_index(NAMES)
    a, ya = augment_batch(frames, y, np.array([1, 2]), m)
    b, yb = augment_batch(frames, y, np.array([1, 2]), m)
    c, _ = augment_batch(frames, y, np.array([1, 3]), m)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    assert not np.allclose(a.numpy(), c.numpy())
    assert a.shape == frames.shape and a.dtype.name == "float32"
    assert np.isfinite(a.numpy()).all()
    assert np.abs(a.numpy() - frames).mean() > 1e-3
    # Still a pose: the peaks stay strong enough to decode (most joints keep a peak).
    _, score = decode(a.numpy())
    assert (score > 0.2).mean() > 0.6


def test_dataset_epochs_differ_but_runs_repeat() -> None:
    import tensorflow as tf

    frames = synth_frames(NAMES[:4], seed=1)
    y = np.arange(4, dtype=np.int32)

    def run(seed: int) -> list[np.ndarray]:
        ds = augment_dataset(tf.data.Dataset.from_tensor_slices((frames, y)).batch(4),
                             NAMES, seed=seed)
        return [next(iter(ds))[0].numpy() for _ in range(2)]  # two epochs

    first, again = run(7), run(7)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], first[1])


def test_swap_sides_swaps_only_the_chosen_pairs() -> None:
    frames = synth_frames(NAMES[:3], seed=6)
    choose = np.zeros((3, len(flip_pairs())), bool)
    choose[0, 4] = True  # the wrists of sample 0
    out = swap_sides(frames, choose).numpy()
    a, b = flip_pairs()[4]
    assert {keypoint_names()[a], keypoint_names()[b]} == {"left_wrist", "right_wrist"}
    np.testing.assert_array_equal(out[0, a], frames[0, b])
    np.testing.assert_array_equal(out[0, b], frames[0, a])
    others = [j for j in range(17) if j not in (a, b)]
    np.testing.assert_array_equal(out[0, others], frames[0, others])
    np.testing.assert_array_equal(out[1:], frames[1:])


def test_joint_jitter_moves_each_joint_on_its_own() -> None:
    frames = synth_frames(NAMES[:8], seed=8)
    y = np.arange(8, dtype=np.int32)
    base = {k: v for k, v in STILL.items() if k not in ("affine", "joint_jitter_px")}
    still = AugmentConfig(**base, affine=0.0, joint_jitter_px=0.0)
    np.testing.assert_array_equal(
        augment_batch(frames, y, np.array([1, 2]), mirror_index(NAMES), still)[0].numpy(),
        frames)
    jittered = augment_batch(frames, y, np.array([1, 2]), mirror_index(NAMES),
                             AugmentConfig(**base, affine=0.0, joint_jitter_px=1.5))[0].numpy()
    xy, _ = decode(frames)
    moved = decode(jittered)[0] - xy
    assert 1.0 < moved.std() < 2.2  # about the asked std, in grid pixels
    assert moved.std(axis=1).mean() > 0.8  # joints of one frame move differently
    # Folded into the whole-pose warp: a negligible jitter leaves the warp unchanged.
    warp = dict(base, affine=1.0, shift_px=3.0)
    a = augment_batch(frames, y, np.array([3, 4]), mirror_index(NAMES),
                      AugmentConfig(**warp, joint_jitter_px=0.0))
    b = augment_batch(frames, y, np.array([3, 4]), mirror_index(NAMES),
                      AugmentConfig(**warp, joint_jitter_px=1e-4))
    np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), atol=1e-3)


def _moved(frames: np.ndarray, normal: np.ndarray, limb: float, lean: float) -> np.ndarray:
    """Where ``limb_rotations`` sends each joint's peak: ``[B,17,2]``."""
    m = limb_rotations(frames, normal.astype(np.float32), limb, lean).numpy()
    pos = peak_xy(frames).numpy()
    return np.einsum("bkij,bkj->bki", m[..., :2], pos) + m[..., 2]


def test_limb_rotations_re_pose_along_the_skeleton() -> None:
    frames = synth_frames(["action_outside", "dummy"], seed=3)
    pos = peak_xy(frames).numpy()
    kp = keypoint_names()
    sh, el, wr = (kp.index(f"right_{j}") for j in ("shoulder", "elbow", "wrist"))
    normal = np.zeros((2, 9))
    normal[:, 3] = 1.0  # the right forearm only (chain 1, lower segment)
    out = _moved(frames, normal, 30.0, 0.0)
    moved = np.linalg.norm(out - pos, axis=-1)
    assert (moved[:, wr] > 1.0).all() and np.delete(moved, wr, axis=1).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(out[:, wr] - pos[:, el], axis=-1),
                               np.linalg.norm(pos[:, wr] - pos[:, el], axis=-1), rtol=1e-4)
    normal[:, 3], normal[:, 2] = 0.0, 1.0  # the right upper arm: elbow and wrist follow
    out = _moved(frames, normal, 30.0, 0.0)
    moved = np.linalg.norm(out - pos, axis=-1)
    assert (moved[:, [el, wr]] > 1.0).all() and np.delete(moved, [el, wr], axis=1).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(out[:, wr] - out[:, el], axis=-1),
                               np.linalg.norm(pos[:, wr] - pos[:, el], axis=-1), rtol=1e-4)
    assert np.linalg.norm(out[:, sh] - pos[:, sh], axis=-1).max() < 1e-4
    lean = np.zeros((2, 9))
    lean[:, 8] = 1.0  # the upper body leans; hips and legs stay
    out = _moved(frames, lean, 0.0, 15.0)
    moved = np.linalg.norm(out - pos, axis=-1)
    assert (moved[:, :11] > 0.5).all() and moved[:, 11:].max() < 1e-4


# -- the shift augmentations (issue 10) -------------------------------------------------------


def _run(frames: np.ndarray, seed: int = 1, **overrides: float) -> np.ndarray:
    y = np.zeros(len(frames), np.int32)
    out, _ = augment_batch(frames, y, np.array([seed, 2]), mirror_index(NAMES),
                           AugmentConfig(**{**STILL, **overrides}))
    assert out.shape == frames.shape and out.dtype.name == "float32"
    return out.numpy()


def _width(frames: np.ndarray) -> np.ndarray:
    """Per channel, the peak's spread (sd along x of the positive mass around the peak)."""
    xy, _ = decode(frames)
    xs = np.arange(frames.shape[-1])
    w = np.clip(frames, 0, None).sum(axis=2)  # [N,17,W] column mass
    near = np.abs(xs[None, None] - xy[..., :1]) <= 8
    w = w * near
    mean = (w * xs).sum(-1) / np.maximum(w.sum(-1), 1e-9)
    return np.sqrt((w * (xs - mean[..., None]) ** 2).sum(-1) / np.maximum(w.sum(-1), 1e-9))


def test_all_off_is_the_identity() -> None:
    frames = synth_frames(NAMES[:4], seed=2)
    np.testing.assert_array_equal(_run(frames), frames)


def test_rerender_redraws_peaks_with_the_asked_width_in_place() -> None:
    frames = synth_frames(NAMES[:6], seed=3)
    wide = _run(frames, rerender=1.0, sigma_low=3.5, sigma_high=3.5, sigma_joint=0.0)
    narrow = _run(frames, rerender=1.0, sigma_low=1.2, sigma_high=1.2, sigma_joint=0.0)
    strong = decode(frames)[1] > 0.3
    assert np.median(_width(wide)[strong]) > 1.6 * np.median(_width(narrow)[strong])
    for out in (wide, narrow):  # the joints stay where they were, at about their height
        moved = np.linalg.norm(decode(out)[0] - decode(frames)[0], axis=-1)
        assert np.median(moved[strong]) <= 0.75
        np.testing.assert_allclose(decode(out)[1][strong], decode(frames)[1][strong], atol=0.2)


def test_rerender_occlusion_makes_low_displaced_peaks() -> None:
    frames = synth_frames(NAMES[:6], seed=4)
    out = _run(frames, rerender=1.0, occlusion=1.0)
    before, after = decode(frames)[1], decode(out)[1]
    strong = before > 0.3
    assert (after[strong] < 0.45 * before[strong]).mean() > 0.9


def test_blob_adds_one_spurious_peak_per_sample() -> None:
    frames = synth_frames(NAMES[:8], seed=5)
    out = _run(frames, blob=1.0)
    gained = (out - frames).reshape(8, 17, -1).max(axis=-1) > 0.1
    assert gained.sum(axis=1).max() == 1 and gained.sum() >= 6  # a few land on the peak


def test_second_person_adds_weaker_peaks_to_the_side() -> None:
    frames = synth_frames(NAMES[:8], seed=6)
    out = _run(frames, second_person=1.0)
    extra = np.clip(out - frames, 0, None)
    assert (extra.reshape(8, 17, -1).max(axis=-1) > 0.1).sum(axis=1).min() >= 3
    # each extra peak sits 14-26 px to a side of the person's own joint
    xy = decode(frames)[0]
    exy = decode(extra)[0]
    dx = np.abs(exy[..., 0] - xy[..., 0])
    has = extra.reshape(8, 17, -1).max(axis=-1) > 0.2
    assert np.median(dx[has]) > 10


def test_truncation_pushes_the_body_off_an_edge() -> None:
    frames = synth_frames(NAMES[:8], seed=7)
    out = _run(frames, truncate=1.0)
    before, after = decode(frames)[1], decode(out)[1]
    lost = (after < 0.4 * before) & (before > 0.3)  # the joint's peak left the crop
    moved = np.median(np.linalg.norm(decode(out)[0] - decode(frames)[0], axis=-1), axis=1)
    assert ((lost.sum(axis=1) >= 1) | (moved >= 4.0)).all()  # cut, or pushed to an edge
    assert lost.sum() < 0.5 * (before > 0.3).sum()  # a cut, not an empty crop


def test_aspect_stretches_x_against_y() -> None:
    frames = synth_frames(NAMES[:8], seed=8)
    xy = decode(frames)[0]
    spread = xy.std(axis=1)  # [N, 2]
    for seed in (1, 2, 3):
        out = _run(frames, seed=seed, affine=1.0, shift_px=0.0, scale=0.0, rotate_deg=0.0,
                   aspect=0.3)
        ratio = decode(out)[0].std(axis=1) / spread
        assert np.abs(np.log(ratio[:, 0] / ratio[:, 1])).max() > 0.1


def test_default_augmentation_keeps_the_label_by_the_spec_geometry() -> None:
    """A rotated, re-posed, re-rendered ``action_up`` is still right arm up (or, flipped,
    ``category_events``: left arm up), by the spec's geometry read off the decoded joints."""
    kp = keypoint_names()
    frames = synth_frames(["action_up"] * 64, seed=9)
    y = np.full(64, NAMES.index("action_up"), np.int32)
    out, out_y = augment_batch(frames, y, np.array([5, 6]), mirror_index(NAMES))
    xy, score = decode(out.numpy())
    ok = seen = 0
    for i, label in enumerate(out_y.numpy()):
        side = "right" if NAMES[label] == "action_up" else "left"
        assert NAMES[label] in ("action_up", "category_events")
        joints = [kp.index(f"{side}_wrist"), kp.index(f"{side}_shoulder"),
                  kp.index("left_hip"), kp.index("right_hip")]
        if (score[i, joints] < 0.2).any():  # a joint dropped or occluded: nothing to read
            continue
        wrist, shoulder = xy[i, joints[0]], xy[i, joints[1]]
        up = shoulder - (xy[i, joints[2]] + xy[i, joints[3]]) / 2
        seen += 1
        ok += float(np.dot(wrist - shoulder, up)) > 0  # the wrist is above the shoulder
    assert seen >= 32 and ok >= 0.9 * seen  # a left/right swap (a detector error) may flip one


def test_shifted_copy_is_reproducible_and_keeps_labels() -> None:
    from tasks.train.augment import shifted_copy

    frames = synth_frames(NAMES[:5], seed=10)
    y = np.arange(5)
    a = shifted_copy(frames, y, NAMES, seed=3)
    np.testing.assert_array_equal(a, shifted_copy(frames, y, NAMES, seed=3))
    assert a.shape == frames.shape and a.dtype == np.float32
    assert not np.allclose(a, frames)


def test_clean_samples_pass_through_unchanged() -> None:
    frames = synth_frames(NAMES[:4], seed=11)
    y = np.zeros(4, np.int32)
    busy = AugmentConfig(flip=0.0, swap=0.5, rerender=1.0, blob=1.0, truncate=1.0, clean=1.0,
                         limb_scale=0.2)
    out, _ = augment_batch(frames, y, np.array([1, 1]), mirror_index(NAMES), busy)
    np.testing.assert_array_equal(out.numpy(), frames)
    some = augment_batch(frames, y, np.array([1, 1]), mirror_index(NAMES),
                         AugmentConfig(flip=0.0, clean=0.0))[0].numpy()
    assert not np.allclose(some, frames)


def test_limb_scale_changes_segment_lengths_about_the_proximal_joint() -> None:
    frames = synth_frames(["action_outside"] * 6, seed=12)
    kp = keypoint_names()
    sh, el = kp.index("right_shoulder"), kp.index("right_elbow")
    out = _run(frames, limb_scale=0.3)
    xy, out_xy = decode(frames)[0], decode(out)[0]
    before = np.linalg.norm(xy[:, el] - xy[:, sh], axis=-1)
    after = np.linalg.norm(out_xy[:, el] - out_xy[:, sh], axis=-1)
    assert np.abs(np.log(after / before)).max() > 0.1  # some arms grew or shrank
    np.testing.assert_allclose(out_xy[:, sh], xy[:, sh], atol=0.6)  # the shoulder stays
