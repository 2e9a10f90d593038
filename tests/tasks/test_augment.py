"""Augmentation (tasks/augment.py): the mirror-aware flip and the reproducible batch ops."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.augment import (
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
from tasks.generate import synth_frames
from tasks.keypoints import decode
from tasks.spec import WIDTH, class_names, flip_pairs, keypoint_names

NAMES = class_names()
# flip everything that may flip, nothing else
OFF = AugmentConfig(flip=1.0, affine=0.0, blur=0.0, peak_low=1.0, peak_high=1.0,
                    joint_dropout=0.0, noise=0.0, swap=0.0, joint_jitter_px=0.0, limb_deg=0.0,
                    lean_deg=0.0)


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
    base = dict(flip=0.0, blur=0.0, peak_low=1.0, peak_high=1.0, joint_dropout=0.0,
                noise=0.0, swap=0.0, limb_deg=0.0, lean_deg=0.0)
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
