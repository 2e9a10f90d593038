"""Training-time augmentation of heatmap batches, as TensorFlow graph ops in the input pipeline.

Why each step: real ViTPose output differs from clean training data in ways the model must
shrug off. The person box jitters (shift/scale/rotation of the whole pose), peaks are lower
than 1 and vary per joint (peak height), occluded joints give weak, wide peaks (blur, joint
dropout), the background is not exactly zero (noise), the detector sometimes confuses left
and right (swap). People also bend their limbs a little differently from one another and from
take to take: each arm and leg segment is turned about its proximal joint (the child joint
follows), and the upper body leans about the mid-hip (limb/lean rotations, positions from
the channels' peaks); all per-joint moves are folded into one warp per channel, so a peak is
interpolated once. Other detectors and crops draw other peaks and cut people differently:
peaks are re-rendered with a new width (decode each joint, draw it again), occluded joints
become low, wide, displaced peaks, a spurious blob or a second person's weaker peaks join
the frame, the crop truncates the body or squashes it (aspect), and each segment's length
changes (other proportions). The robustness suite measured each choice on shifted data
(README, "Robustness"). A horizontal flip doubles the data for
symmetric gestures, but it also changes the meaning of one-sided ones: it swaps the left and
right keypoint channels and maps the label to its mirror class (pose spec ``mirror``); a
class without a mirror (or whose mirror is not being trained) is never flipped.

Why TensorFlow ops rather than NumPy: the warp and blur run in C++ kernels inside
``tf.data`` in parallel with training (NumPy in a ``py_function`` held the GIL and cost more
than the training step). Randomness is stateless, keyed by a per-batch seed from a seeded
``tf.data.Dataset.random``, so a run is reproducible for a seed and deterministic in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from models.spec import HEATMAP_SHAPE, flip_pairs, flip_permutation, mirror_of


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation (probabilities and ranges).

    The defaults were chosen with the robustness suite (``bench/bench_robustness.py``), on
    data shifted away from the generator, not on its own held-out people: wider pose and
    crop variation than the training data shows (limbs, lean, proportions, rotation, scale,
    aspect, truncation), re-rendered peaks, occlusion, blobs and a second person, with
    30 % of the frames left clean so the model still learns the pose as it usually comes."""

    flip: float = 0.5             # probability of a mirror-aware flip (when allowed)
    affine: float = 0.9           # probability of a whole-pose shift/scale/rotation
    shift_px: float = 6.0         # max shift in grid pixels (x and y)
    scale: float = 0.25           # scale in [1-scale, 1+scale]
    rotate_deg: float = 15.0      # rotation in [-rotate_deg, rotate_deg]
    limb_deg: float = 16.0        # std of a rotation of each arm/leg segment at its joint
    lean_deg: float = 5.0         # std of a rotation of the upper body about the mid-hip
    limb_scale: float = 0.12      # log-sd of each arm/leg segment's length (proportions)
    joint_jitter_px: float = 0.5  # std of an independent shift of each joint
    peak_low: float = 0.5         # per-joint peak height factor in [peak_low, peak_high]
    peak_high: float = 1.15
    blur: float = 0.35            # probability that a sample is blurred
    blur_sigma: float = 1.2       # max blur sigma in grid pixels (one sigma per batch)
    joint_dropout: float = 0.1    # per-joint probability of being weakened to near nothing
    swap: float = 0.03            # per left/right pair probability of swapping its channels
    noise: float = 0.04           # max std of smooth additive background noise
    aspect: float = 0.15          # x/y stretch: x scaled by e^u, y by e^-u, u in [-aspect, aspect]
    truncate: float = 0.1         # probability of a crop edge cutting the body (zoom + push off)
    rerender: float = 0.5         # probability of redrawing every peak (sigma, height, occlusion)
    sigma_low: float = 1.3        # re-rendered peak sigma range (grid pixels), per sample...
    sigma_high: float = 3.5
    sigma_joint: float = 0.15     # ... times a per-joint log-normal spread
    occlusion: float = 0.2        # per-joint probability (re-rendered samples): low, wide, moved
    blob: float = 0.2             # probability of a spurious blob in a random channel
    second_person: float = 0.1    # probability of a second person's weaker peaks beside
    clean: float = 0.3            # probability that a sample is left as it is (but flipped)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mirror_index(class_names: Sequence[str]) -> np.ndarray:
    """For each class index, the index of its mirror class, or -1 (never flip).

    Unknown class names (not in the pose spec) and mirrors outside ``class_names`` get -1."""
    pos = {name: i for i, name in enumerate(class_names)}
    out = np.full(len(class_names), -1, dtype=np.int32)
    for i, name in enumerate(class_names):
        try:
            m = mirror_of(name)
        except KeyError:
            m = None
        if m is not None and m in pos:
            out[i] = pos[m]
    return out


def flip_frames(frames: Any) -> Any:
    """Horizontal flip of ``[B,17,H,W]`` heatmaps: x reversed, left/right channels swapped."""
    import tensorflow as tf

    return tf.reverse(tf.gather(frames, flip_permutation(), axis=1), axis=[3])


def mirror_flip(frames: Any, labels: Any, mirrors: Any, choose: Any) -> tuple[Any, Any]:
    """Flip the samples where ``choose`` is true and their class has a mirror (labels mapped)."""
    import tensorflow as tf

    labels = tf.cast(labels, tf.int32)
    target = tf.gather(tf.constant(mirrors, tf.int32), labels)
    do = tf.logical_and(tf.cast(choose, tf.bool), target >= 0)
    frames = tf.where(do[:, None, None, None], flip_frames(frames), frames)
    return frames, tf.where(do, target, labels)


def swap_sides(frames: Any, choose: Any) -> Any:
    """Swap the channels of the chosen left/right pairs (``choose``: ``[B, n_pairs]`` bool)
    of ``[B,17,H,W]`` heatmaps, as a pose detector that confuses sides does; no x flip."""
    import tensorflow as tf

    pairs = flip_pairs()
    k = HEATMAP_SHAPE[0]
    # perm[b, j]: source channel of output channel j; start from identity, swap chosen pairs.
    onehot = np.zeros((len(pairs), k), np.int32)  # pair p moves channel a by (b-a), b by (a-b)
    for p, (a, c) in enumerate(pairs):
        onehot[p, a], onehot[p, c] = c - a, a - c
    delta = tf.matmul(tf.cast(choose, tf.int32), tf.constant(onehot))
    perm = tf.range(k, dtype=tf.int32)[None, :] + delta
    return tf.gather(frames, perm, axis=1, batch_dims=1)


def affine_transforms(shift: Any, scale: Any, angle_rad: Any, h: int, w: int,
                      stretch: Any = None) -> Any:
    """``[B,8]`` projective transforms (output pixel -> input pixel) for ImageProjectiveTransform:
    rotate by ``angle``, scale by ``scale`` about the grid centre (x by ``scale * e^stretch``,
    y by ``scale / e^stretch`` when given), then shift by (dx, dy)."""
    import tensorflow as tf

    cy, cx = (h - 1) / 2, (w - 1) / 2
    sx = sy = scale
    if stretch is not None:
        sx, sy = scale * tf.exp(stretch), scale * tf.exp(-stretch)
    a0 = tf.cos(angle_rad) / sx
    a1 = tf.sin(angle_rad) / sx
    b0, b1 = -tf.sin(angle_rad) / sy, tf.cos(angle_rad) / sy
    ox, oy = cx + shift[:, 0], cy + shift[:, 1]
    a2 = cx - a0 * ox - a1 * oy
    b2 = cy - b0 * ox - b1 * oy
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _blur_nhwc(img: Any, sigma: Any, radius: int = 3) -> Any:
    """Separable Gaussian blur of NHWC images with one ``sigma`` (depthwise, zero padding)."""
    import tensorflow as tf

    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(taps / tf.maximum(sigma, 1e-3)))
    k = k / tf.reduce_sum(k)
    ch = img.shape[-1]
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, ch, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, ch, 1])
    out = tf.nn.depthwise_conv2d(img, kx, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "SAME")


# Kinematic chains (COCO indices): (root, middle, end) of each arm and leg.
_CHAINS = ((5, 7, 9), (6, 8, 10), (11, 13, 15), (12, 14, 16))
_UPPER_BODY = tuple(range(11))  # head, shoulders, arms: what a torso lean moves


def _mat(t: Any) -> Any:
    """``[..., 8]`` projective rows (affine part) -> ``[..., 2, 3]`` matrices."""
    import tensorflow as tf

    return tf.stack([t[..., 0:3], t[..., 3:6]], axis=-2)


def _compose(m2: Any, m1: Any) -> Any:
    """``m2 after m1`` for ``[..., 2, 3]`` affine maps."""
    import tensorflow as tf

    a = tf.matmul(m2[..., :2], m1[..., :2])
    t = tf.linalg.matvec(m2[..., :2], m1[..., 2]) + m2[..., 2]
    return tf.concat([a, t[..., None]], axis=-1)


def _invert(m: Any) -> Any:
    import tensorflow as tf

    a = tf.linalg.inv(m[..., :2])
    return tf.concat([a, -tf.linalg.matvec(a, m[..., 2])[..., None]], axis=-1)


def _rotation_about(angle: Any, pivot: Any, scale: Any = None) -> Any:
    """``[..., 2, 3]`` forward maps: rotate by ``angle`` (radians) about ``pivot`` ``[..., 2]``,
    and scale by ``scale`` about it when given."""
    import tensorflow as tf

    cos, sin = tf.cos(angle), tf.sin(angle)
    a = tf.stack([tf.stack([cos, -sin], -1), tf.stack([sin, cos], -1)], -2)
    if scale is not None:
        a = a * scale[..., None, None]
    t = pivot - tf.linalg.matvec(a, pivot)
    return tf.concat([a, t[..., None]], axis=-1)


def peak_xy(frames: Any) -> Any:
    """``[B,17,2]`` (x, y) grid position of each channel's maximum."""
    import tensorflow as tf

    _, h, w = HEATMAP_SHAPE
    flat = tf.argmax(tf.reshape(frames, [tf.shape(frames)[0], HEATMAP_SHAPE[0], h * w]),
                     axis=-1, output_type=tf.int32)
    return tf.cast(tf.stack([flat % w, flat // w], axis=-1), tf.float32)


def limb_rotations(frames: Any, normal: Any, limb_deg: float, lean_deg: float,
                   stretch: Any = None) -> Any:
    """``[B,17,2,3]`` forward maps that re-pose each person: every arm/leg segment turns by
    ``normal * limb_deg`` about its proximal joint (the distal joint follows its parent), and
    the upper body leans by ``normal[:, 8] * lean_deg`` about the mid-hip. ``normal``:
    ``[B,9]`` standard normal draws. ``stretch`` ``[B,8]``: each segment's length times
    ``e^stretch`` (other people's proportions). Joint positions are the channels' peaks."""
    import tensorflow as tf

    k = HEATMAP_SHAPE[0]
    b = tf.shape(frames)[0]
    pos = peak_xy(frames)
    rad = np.pi / 180
    eye = tf.tile(tf.constant([[[1.0, 0, 0], [0, 1.0, 0]]])[None], [b, k, 1, 1])
    maps = [eye[:, j] for j in range(k)]
    for c, (root, mid, end) in enumerate(_CHAINS):
        grow = [None, None] if stretch is None else [tf.exp(stretch[:, 2 * c + i])
                                                     for i in (0, 1)]
        upper = _rotation_about(normal[:, 2 * c] * limb_deg * rad, pos[:, root], grow[0])
        moved_mid = tf.linalg.matvec(upper[..., :2], pos[:, mid]) + upper[..., 2]
        lower = _rotation_about(normal[:, 2 * c + 1] * limb_deg * rad, moved_mid, grow[1])
        maps[mid] = upper
        maps[end] = _compose(lower, upper)
    if lean_deg > 0:
        hip = (pos[:, 11] + pos[:, 12]) / 2
        lean = _rotation_about(normal[:, 8] * lean_deg * rad, hip)
        for j in _UPPER_BODY:
            maps[j] = _compose(lean, maps[j])
    return tf.stack(maps, axis=1)


def _uniform(seeds: Any, i: int, shape: Any, lo: float = 0.0, hi: float = 1.0) -> Any:
    """Stateless uniform draws from the ``i``-th of a step's seeds: every step keys its
    randomness this way, so a batch's augmentation is reproducible."""
    import tensorflow as tf

    return tf.random.stateless_uniform(shape, seeds[i], lo, hi)


def _gaussians(pos: Any, sigma: Any, height: Any) -> Any:
    """``[B,K,H,W]`` peaks at ``pos`` ``[B,K,2]`` (x, y) of ``sigma`` and ``height`` ``[B,K]``."""
    import tensorflow as tf

    _, h, w = HEATMAP_SHAPE
    two_var = 2.0 * tf.square(sigma)[..., None]
    gx = tf.exp(-tf.square(tf.range(w, dtype=tf.float32) - pos[..., 0:1]) / two_var)
    gy = tf.exp(-tf.square(tf.range(h, dtype=tf.float32) - pos[..., 1:2]) / two_var)
    return (gy * height[..., None])[..., :, None] * gx[..., None, :]


def rerender(img: Any, c: AugmentConfig, seeds: Any) -> Any:
    """Redraw every peak of the chosen NHWC samples with a new sigma and occlusion look.

    Why: a network trained on one renderer's peak shape learns that shape. Decoding each joint
    (its peak's position and height) and drawing it again with a random width makes the peak's
    shape a nuisance instead of a cue, and works the same on real detector output. Occluded
    joints look like ViTPose's: a low, wide peak displaced from the joint."""
    import tensorflow as tf

    b, k = tf.shape(img)[0], HEATMAP_SHAPE[0]

    u = partial(_uniform, seeds)

    frames = tf.transpose(img, [0, 3, 1, 2])
    pos = peak_xy(frames) + u(0, [b, k, 2], -0.5, 0.5)
    height = tf.reduce_max(frames, axis=[2, 3])
    sigma = u(1, [b, 1], c.sigma_low, c.sigma_high) * tf.exp(
        tf.random.stateless_normal([b, k], seeds[2]) * c.sigma_joint)
    occ = u(3, [b, k]) < c.occlusion
    pos = tf.where(occ[..., None], pos + tf.random.stateless_normal([b, k, 2], seeds[4]) * 4.0,
                   pos)
    height = tf.where(occ, height * u(5, [b, k], 0.1, 0.4), height)
    sigma = tf.where(occ, sigma * u(6, [b, k], 1.5, 2.5), sigma)
    drawn = tf.transpose(_gaussians(pos, sigma, height), [0, 2, 3, 1])
    return tf.where((u(7, [b]) < c.rerender)[:, None, None, None], drawn, img)


def distractors(img: Any, c: AugmentConfig, seeds: Any) -> Any:
    """Add what is not the person to NHWC samples: a spurious blob in one channel, and a
    second person's weaker peaks beside this one (crowded top-down crops)."""
    import tensorflow as tf

    k, h, w = HEATMAP_SHAPE
    b = tf.shape(img)[0]

    u = partial(_uniform, seeds)

    if c.blob > 0:
        where = tf.one_hot(tf.random.stateless_uniform([b], seeds[0], 0, k, tf.int32), k)
        pos = tf.stack([u(1, [b], 0, w - 1), u(2, [b], 0, h - 1)], -1)[:, None]
        blob = _gaussians(pos, u(3, [b, 1], 1.5, 3.5), u(4, [b, 1], 0.15, 0.6))[:, 0]
        on = tf.cast(u(5, [b]) < c.blob, tf.float32)[:, None, None, None]
        img = img + blob[..., None] * where[:, None, None, :] * on
    if c.second_person > 0:
        side = tf.where(u(6, [b]) < 0.5, -1.0, 1.0)
        shift = tf.stack([side * u(7, [b], 14, 26), u(8, [b], -6, 6)], -1)
        other = tf.raw_ops.ImageProjectiveTransformV3(
            images=img, transforms=affine_transforms(shift, tf.ones([b]), tf.zeros([b]), h, w),
            output_shape=tf.constant([h, w], tf.int32), fill_value=tf.constant(0.0),
            interpolation="BILINEAR", fill_mode="CONSTANT")
        keep = tf.logical_and((u(9, [b]) < c.second_person)[:, None], u(10, [b, k]) < 0.6)
        gain = u(11, [b, 1, 1, 1], 0.3, 0.7) * tf.cast(keep, tf.float32)[:, None, None, :]
        img = tf.maximum(img, other * gain)
    return img


def _truncation(shift: Any, scale: Any, rate: float, seeds: Any) -> tuple[Any, Any]:
    """The crop cuts the body: for a ``rate`` share of samples, zoom in (up to 1.25x) and push
    the person 6-16 px down (feet off the bottom) or, one time in three, sideways."""
    import tensorflow as tf

    b = tf.shape(scale)[0]

    def u(i: int, lo: float = 0.0, hi: float = 1.0) -> Any:
        return _uniform(seeds, i, [b], lo, hi)

    push = u(0, 6.0, 16.0)
    sideways = u(1) < 1 / 3
    side = tf.where(u(2) < 0.5, -1.0, 1.0)
    cut = (u(3) < rate)[:, None]
    delta = tf.stack([tf.where(sideways, side * push, 0.0), tf.where(sideways, 0.0, push)], -1)
    return (tf.where(cut, shift + delta, shift),
            tf.where(cut[:, 0], scale * u(4, 1.0, 1.25), scale))


def augment_batch(frames: Any, labels: Any, seed: Any, mirrors: np.ndarray,
                  config: AugmentConfig | None = None) -> tuple[Any, Any]:
    """Augment one batch ``[B,17,64,48]`` with labels ``[B]``; ``seed`` is a ``[2]`` int tensor.

    Same seed, same batch -> same output (stateless random ops)."""
    import tensorflow as tf

    c = config or AugmentConfig()
    k, h, w = HEATMAP_SHAPE
    x = tf.convert_to_tensor(frames, tf.float32)
    b = tf.shape(x)[0]
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 15)
    more = tf.random.experimental.stateless_split(s[0], 30)  # the later steps' own streams

    uniform = partial(_uniform, s)

    x, y = mirror_flip(x, labels, mirrors, uniform(0, [b]) < c.flip)
    flipped = x
    if c.swap > 0:  # the detector's left/right confusion: label unchanged
        x = swap_sides(x, uniform(12, [b, len(flip_pairs())]) < c.swap)

    shift = uniform(1, [b, 2], -c.shift_px, c.shift_px)
    scale = uniform(2, [b], 1 - c.scale, 1 + c.scale)
    angle = uniform(3, [b], -c.rotate_deg, c.rotate_deg) * (np.pi / 180)
    keep = uniform(4, [b]) >= c.affine  # samples left unwarped get the identity transform
    shift = tf.where(keep[:, None], 0.0, shift)
    scale = tf.where(keep, 1.0, scale)
    angle = tf.where(keep, 0.0, angle)
    stretch = None
    if c.aspect > 0:
        stretch = tf.where(keep, 0.0, tf.random.stateless_uniform([b], more[0], -c.aspect,
                                                                    c.aspect))
    if c.truncate > 0:
        shift, scale = _truncation(shift, scale, c.truncate, more[1:6])
    transforms = affine_transforms(shift, scale, angle, h, w, stretch)
    if c.joint_jitter_px > 0 or c.limb_deg > 0 or c.lean_deg > 0 or c.limb_scale > 0:
        # People bend limbs differently than the class pose: each joint channel gets its own
        # warp, the whole-pose transform composed with the joint's limb rotations and shift,
        # so peaks are interpolated once.
        inv = _mat(transforms)[:, None]  # [b,1,2,3] output -> pose pixel
        if c.joint_jitter_px > 0:  # (A (y - d) + a): shift each joint by d first
            d = tf.random.stateless_normal([b, k, 2], s[13]) * c.joint_jitter_px
            inv = tf.concat([inv[..., :2] + tf.zeros([b, k, 2, 2]),
                             inv[..., 2:] - tf.linalg.matvec(inv[..., :2], d)[..., None]],
                            axis=-1)
        else:
            inv = tf.tile(inv, [1, k, 1, 1])
        if c.limb_deg > 0 or c.lean_deg > 0 or c.limb_scale > 0:
            lengths = None
            if c.limb_scale > 0:
                lengths = tf.random.stateless_normal([b, 8], more[27]) * c.limb_scale
            limbs = limb_rotations(x, tf.random.stateless_normal([b, 9], s[14]),
                                   c.limb_deg, c.lean_deg, lengths)
            inv = _compose(_invert(limbs), inv)
        t = tf.reshape(tf.concat([tf.reshape(inv, [b, k, 6]), tf.zeros([b, k, 2])], -1),
                       [-1, 8])  # row b*k + j
        per_joint = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.reshape(x, [-1, h, w, 1]), transforms=t,
            output_shape=tf.constant([h, w], tf.int32), fill_value=tf.constant(0.0),
            interpolation="BILINEAR", fill_mode="CONSTANT")
        img = tf.transpose(tf.reshape(per_joint, [b, k, h, w]), [0, 2, 3, 1])  # NHWC
    else:
        img = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.transpose(x, [0, 2, 3, 1]), transforms=transforms,
            output_shape=tf.constant([h, w], tf.int32), fill_value=tf.constant(0.0),
            interpolation="BILINEAR", fill_mode="CONSTANT")

    if c.rerender > 0:
        img = rerender(img, c, more[6:14])
    blur = tf.where(uniform(5, [b]) < c.blur)  # blur only the chosen samples: [n, 1]
    sub = _blur_nhwc(tf.gather_nd(img, blur), uniform(6, [], 0.3, max(c.blur_sigma, 0.31)))
    img = tf.tensor_scatter_nd_update(img, blur, sub)

    if c.blob > 0 or c.second_person > 0:
        img = distractors(img, c, more[14:26])
    gain = uniform(7, [b, 1, 1, k], c.peak_low, c.peak_high)
    drop = uniform(8, [b, 1, 1, k]) < c.joint_dropout
    gain = tf.where(drop, uniform(9, [b, 1, 1, k], 0.0, 0.15), gain)
    img = img * gain
    if c.noise > 0:  # smooth background noise: drawn on a 4x coarser grid, upsampled
        std = uniform(10, [b, 1, 1, 1], 0.0, c.noise)
        coarse = tf.random.stateless_normal([b, h // 4, w // 4, k], s[11])
        img = img + tf.image.resize(coarse, [h, w], method="bilinear") * std
    out = tf.transpose(img, [0, 3, 1, 2])
    if c.clean > 0:  # some frames as they come: the augmented ones must not crowd them out
        out = tf.where((tf.random.stateless_uniform([b], more[26]) < c.clean)[:, None, None,
                                                                               None], flipped, out)
    return out, y


def augment_dataset(ds: Any, class_names: Sequence[str], seed: int,
                    config: AugmentConfig | None = None) -> Any:
    """Map ``augment_batch`` over a batched ``(frames, labels)`` dataset, reproducibly.

    Each batch gets its own stateless seed from a seeded random stream that is re-drawn
    each epoch (so every epoch sees new augmentations, the same ones for the same seed)."""
    import tensorflow as tf

    mirrors = mirror_index(class_names)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    zipped = tf.data.Dataset.zip((ds, seeds))
    return zipped.map(lambda xy, sd: augment_batch(xy[0], xy[1], sd, mirrors, config),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def shifted_copy(frames: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 seed: int, config: AugmentConfig | None = None,
                 batch_size: int = 256) -> np.ndarray:
    """A fixed, reproducible shifted copy of labeled frames for evaluation: the training
    augmentations (``config``) without the flip, so every label stays as it is.

    Why: scores on held-out people of the same renderer say little about other renderers.
    The gate and the calibration also look at the same frames moved by every nuisance the
    augmentation knows, so a challenger that only learned the renderer is caught."""
    import tensorflow as tf

    c = replace(config or AugmentConfig(), flip=0.0)
    mirrors = mirror_index(class_names)
    out = np.empty_like(np.asarray(frames, np.float32))
    for i in range(0, len(frames), batch_size):
        x, _ = augment_batch(frames[i:i + batch_size], labels[i:i + batch_size],
                             tf.constant([seed, i], tf.int64), mirrors, c)
        out[i:i + batch_size] = x.numpy()
    return out
