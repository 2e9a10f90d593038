"""Training-time augmentation of heatmap batches, as TensorFlow graph ops in the input pipeline.

Why each step: real ViTPose output differs from clean training data in ways the model must
shrug off. The person box jitters (shift/scale/rotation of the whole pose), peaks are lower
than 1 and vary per joint (peak height), occluded joints give weak, wide peaks (blur, joint
dropout), the background is not exactly zero (noise). A horizontal flip doubles the data for
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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tasks.spec import HEATMAP_SHAPE, flip_permutation, mirror_of


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation (probabilities and ranges)."""

    flip: float = 0.5             # probability of a mirror-aware flip (when allowed)
    affine: float = 0.9           # probability of a whole-pose shift/scale/rotation
    shift_px: float = 3.0         # max shift in grid pixels (x and y)
    scale: float = 0.12           # scale in [1-scale, 1+scale]
    rotate_deg: float = 10.0      # rotation in [-rotate_deg, rotate_deg]
    peak_low: float = 0.5         # per-joint peak height factor in [peak_low, peak_high]
    peak_high: float = 1.15
    blur: float = 0.35            # probability that a sample is blurred
    blur_sigma: float = 1.2       # max blur sigma in grid pixels (one sigma per batch)
    joint_dropout: float = 0.06   # per-joint probability of being weakened to near nothing
    noise: float = 0.03           # max std of smooth additive background noise

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


def affine_transforms(shift: Any, scale: Any, angle_rad: Any, h: int, w: int) -> Any:
    """``[B,8]`` projective transforms (output pixel -> input pixel) for ImageProjectiveTransform:
    rotate by ``angle``, scale by ``scale`` about the grid centre, then shift by (dx, dy)."""
    import tensorflow as tf

    cy, cx = (h - 1) / 2, (w - 1) / 2
    a0 = tf.cos(angle_rad) / scale
    a1 = tf.sin(angle_rad) / scale
    b0, b1 = -a1, a0
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


def augment_batch(frames: Any, labels: Any, seed: Any, mirrors: np.ndarray,
                  config: AugmentConfig | None = None) -> tuple[Any, Any]:
    """Augment one batch ``[B,17,64,48]`` with labels ``[B]``; ``seed`` is a ``[2]`` int tensor.

    Same seed, same batch -> same output (stateless random ops)."""
    import tensorflow as tf

    c = config or AugmentConfig()
    k, h, w = HEATMAP_SHAPE
    x = tf.convert_to_tensor(frames, tf.float32)
    b = tf.shape(x)[0]
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 12)

    def uniform(i: int, shape: Any, lo: float = 0.0, hi: float = 1.0) -> Any:
        return tf.random.stateless_uniform(shape, s[i], lo, hi)

    x, y = mirror_flip(x, labels, mirrors, uniform(0, [b]) < c.flip)
    img = tf.transpose(x, [0, 2, 3, 1])  # NHWC for the image kernels

    shift = uniform(1, [b, 2], -c.shift_px, c.shift_px)
    scale = uniform(2, [b], 1 - c.scale, 1 + c.scale)
    angle = uniform(3, [b], -c.rotate_deg, c.rotate_deg) * (np.pi / 180)
    keep = uniform(4, [b]) >= c.affine  # samples left unwarped get the identity transform
    shift = tf.where(keep[:, None], 0.0, shift)
    scale = tf.where(keep, 1.0, scale)
    angle = tf.where(keep, 0.0, angle)
    img = tf.raw_ops.ImageProjectiveTransformV3(
        images=img, transforms=affine_transforms(shift, scale, angle, h, w),
        output_shape=tf.constant([h, w], tf.int32), fill_value=tf.constant(0.0),
        interpolation="BILINEAR", fill_mode="CONSTANT")

    blur = tf.where(uniform(5, [b]) < c.blur)  # blur only the chosen samples: [n, 1]
    sub = _blur_nhwc(tf.gather_nd(img, blur), uniform(6, [], 0.3, max(c.blur_sigma, 0.31)))
    img = tf.tensor_scatter_nd_update(img, blur, sub)

    gain = uniform(7, [b, 1, 1, k], c.peak_low, c.peak_high)
    drop = uniform(8, [b, 1, 1, k]) < c.joint_dropout
    gain = tf.where(drop, uniform(9, [b, 1, 1, k], 0.0, 0.15), gain)
    img = img * gain
    if c.noise > 0:  # smooth background noise: drawn on a 4x coarser grid, upsampled
        std = uniform(10, [b, 1, 1, 1], 0.0, c.noise)
        coarse = tf.random.stateless_normal([b, h // 4, w // 4, k], s[11])
        img = img + tf.image.resize(coarse, [h, w], method="bilinear") * std
    return tf.transpose(img, [0, 3, 1, 2]), y


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
