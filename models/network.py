"""The deployed CNN: a small network designed for 17 sparse peak channels on a 64x48 grid.

Input is the file layout as it is, ``(None, 17, 64, 48)`` float32; the transposition to
channels-last lives inside the model so callers never reshape. Output is LOGITS; callers
apply ``softmax(logits / temperature)``. Keras is imported inside the functions so that
importing this module stays cheap.

Design, and why:

- The input is 17 Gaussian peaks (sigma about 2 px) on mostly empty maps. A 2x2 max-pool
  stem halves the grid first: a peak survives pooling (its position to about a pixel, its
  height exactly), and every later layer is four times cheaper.
- Three conv blocks (conv 3x3, batch norm, ReLU, max-pool) bring the grid to 4x3 with a
  receptive field over the whole body, so the network sees the joints relative to each
  other (what a gesture is), not only where each one is.
- A flatten + dense head keeps the coarse layout (arm above head vs beside hip), dropout
  regularises it. About 0.3 M parameters and roughly 5 M multiply-adds a frame: thousands of
  frames a second on one CPU core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.spec import HEATMAP_SHAPE

INPUT_LAYOUT: dict[str, Any] = {"shape": [None, *HEATMAP_SHAPE],
                                "axes": ["batch", "keypoint", "y", "x"]}
DEFAULT_PARAMS: dict[str, Any] = {"filters": [32, 64, 96], "dense": 128, "dropout": 0.3,
                                  "learning_rate": 2e-3, "stem_pool": True, "keypoints": 64,
                                  "label_smoothing": 0.0, "input_mode": "raw"}
INPUT_MODES = ("raw", "canonical")
SHARPNESS = 12.0  # soft-argmax: softmax(SHARPNESS * heat / channel max) over the grid
CANONICAL_SIGMA = 2.0   # the redrawn peaks' width: ViTPose's own training targets (spec)
LOCAL_RADIUS = 2        # the sub-pixel centroid looks this many pixels around the argmax


def canonical_redraw(inputs: Any, sigma: float = CANONICAL_SIGMA) -> Any:
    """Decode every joint and draw it again as a clean Gaussian: the ``canonical`` input mode.

    Why: PoseC3D never feeds an estimator's raw heatmaps to its classifier; it decodes each
    joint to (x, y, score) and redraws a Gaussian at a fixed width. Peak width and shape,
    background noise, spurious blobs and quantisation then vanish by construction, and only
    the pose (and each joint's confidence, as the peak's height) reaches the network.

    Decoding: the argmax, refined by the centroid of the positive heat within
    ``LOCAL_RADIUS`` pixels of it (a blob elsewhere cannot pull the joint). The height is
    the peak value clipped to [0, 1.5]. Inside the graph, from ``keras.ops`` only, so
    training, evaluation, classification and re-scoring run the same code and the saved
    model still loads in safe mode."""
    from keras import layers, ops

    k, h, w = HEATMAP_SHAPE
    flat = layers.Reshape((k, h * w), name="canon_flat")(inputs)
    arg = ops.argmax(flat, axis=-1)
    y0 = ops.cast(arg // w, "float32")[..., None, None]
    x0 = ops.cast(arg % w, "float32")[..., None, None]
    gy = ops.reshape(ops.arange(h, dtype="float32"), (1, 1, h, 1))
    gx = ops.reshape(ops.arange(w, dtype="float32"), (1, 1, 1, w))
    near = ops.cast((ops.abs(gy - y0) <= LOCAL_RADIUS) & (ops.abs(gx - x0) <= LOCAL_RADIUS),
                    "float32")
    mass = ops.maximum(inputs, 0.0) * near
    total = ops.sum(mass, axis=(2, 3), keepdims=True)
    safe = ops.maximum(total, 1e-6)
    has = ops.cast(total > 1e-6, "float32")
    y = has * ops.sum(mass * gy, axis=(2, 3), keepdims=True) / safe + (1 - has) * y0
    x = has * ops.sum(mass * gx, axis=(2, 3), keepdims=True) / safe + (1 - has) * x0
    height = ops.clip(ops.max(flat, axis=-1), 0.0, 1.5)[..., None, None]
    d2 = (gy - y) ** 2 + (gx - x) ** 2
    return layers.Activation("linear", name="canonical")(
        height * ops.exp(-d2 / (2.0 * sigma * sigma)))


def keypoint_branch(inputs: Any, width: int) -> Any:
    """Pose geometry inside the graph: soft-argmax joints, in the torso's own frame.

    Why: a pose class is limb directions relative to the body. Coordinates relative to the
    mid-hip, divided by the torso length and turned so the torso points up, do not move with
    the crop (box shift, scale, padding, aspect, in-plane roll) nor with how wide or high a
    detector draws its peaks, which is exactly where conv features learned on one renderer
    break. The peak heights go along (an occluded joint is a weak peak). Built from stock
    layers and ``keras.ops`` only, so the ``.keras`` file loads in safe mode."""
    import numpy as np
    from keras import layers, ops

    k, h, w = HEATMAP_SHAPE
    flat = layers.Reshape((k, h * w), name="kp_flat")(inputs)
    peak = ops.max(flat, axis=-1, keepdims=True)
    weights = layers.Softmax(axis=-1, name="kp_softmax")(
        flat * (SHARPNESS / ops.maximum(peak, 0.05)))
    grid = layers.Reshape((k, h, w), name="kp_grid")(weights)
    # Expected row and column: marginals times fixed index ramps (non-trainable weights).
    ramp_y = layers.Dense(1, use_bias=False, trainable=False, name="kp_ramp_y")
    ramp_x = layers.Dense(1, use_bias=False, trainable=False, name="kp_ramp_x")
    y = ramp_y(ops.sum(grid, axis=3))[..., 0]
    x = ramp_x(ops.sum(grid, axis=2))[..., 0]
    ramp_y.set_weights([np.arange(h, dtype="float32")[:, None]])
    ramp_x.set_weights([np.arange(w, dtype="float32")[:, None]])
    hip_x, hip_y = (x[:, 11] + x[:, 12]) / 2, (y[:, 11] + y[:, 12]) / 2
    up_x, up_y = (x[:, 5] + x[:, 6]) / 2 - hip_x, (y[:, 5] + y[:, 6]) / 2 - hip_y
    torso = ops.maximum(ops.sqrt(up_x * up_x + up_y * up_y), 2.0)
    ux, uy = up_x / torso, up_y / torso
    rx, ry = (x - hip_x[:, None]) / torso[:, None], (y - hip_y[:, None]) / torso[:, None]
    across = rx * (-uy[:, None]) + ry * ux[:, None]  # torso frame: x' across, y' down
    along = -(rx * ux[:, None] + ry * uy[:, None])
    feats = layers.Concatenate(name="kp_features")(
        [across, along, peak[..., 0], ops.stack([ux, uy], axis=-1)])
    z = layers.Dense(width, activation="relu", name="kp_dense0")(feats)
    return layers.Dense(width, activation="relu", name="kp_dense1")(z)


def build_cnn(num_classes: int, filters: Sequence[int] = (32, 64, 96), dense: int = 128,
              dropout: float = 0.3, learning_rate: float = 2e-3, stem_pool: bool = True,
              keypoints: int = 64, label_smoothing: float = 0.0, input_mode: str = "raw",
              compile: bool = True) -> Any:
    """A (compiled) Keras CNN: ``(None,17,64,48)`` float32 in, ``num_classes`` logits out.
    ``keypoints``: width of the keypoint branch (``keypoint_branch``); 0 leaves it out.
    ``input_mode``: ``raw`` (the heatmaps as drawn) or ``canonical`` (``canonical_redraw``
    first, for both branches)."""
    import keras
    from keras import layers

    if input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {', '.join(INPUT_MODES)}")
    inputs = keras.Input(shape=HEATMAP_SHAPE, dtype="float32", name="heatmaps")
    seen = canonical_redraw(inputs) if input_mode == "canonical" else inputs
    x = layers.Permute((2, 3, 1), name="to_channels_last")(seen)
    if stem_pool:
        x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for i, f in enumerate(filters):
        x = layers.Conv2D(int(f), 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(int(dense), activation="relu", name="dense")(x)
    if keypoints:
        x = layers.Concatenate(name="fuse")([x, keypoint_branch(seen, int(keypoints))])
    outputs = layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(inputs, outputs, name="posebatch_cnn")
    if compile:
        compile_cnn(model, learning_rate, label_smoothing)
    return model


def compile_cnn(model: Any, learning_rate: Any = 2e-3, label_smoothing: float = 0.0) -> Any:
    """Adam + cross-entropy on logits (integer labels); accuracy as the progress metric.
    ``learning_rate``: a float or a Keras learning-rate schedule. ``label_smoothing`` keeps
    the logits from growing without bound on easy frames, which is what makes a network
    over-confident on frames unlike its training data."""
    import keras

    loss: Any = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if label_smoothing > 0:
        n = int(model.output_shape[-1])

        def loss(y_true: Any, y_pred: Any) -> Any:
            onehot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32"),
                                       n)
            return keras.losses.categorical_crossentropy(
                onehot, y_pred, from_logits=True, label_smoothing=label_smoothing)

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def pool_before_transpose(model: Any) -> Any:
    """An inference twin of ``model`` (shared weights) that max-pools the heatmaps in their
    stored layout before moving the channels last, or None when the model has no such stem.

    The deployed network (``models.network``) transposes the whole ``[B,17,64,48]`` batch
    to channels-last and then 2x2 max-pools it: the transpose moves 53 MB per batch of 256.
    Pooling first (oneDNN pools channels-first on CPU) and transposing the quarter-size
    result gives identical numbers (a maximum is a maximum) for about 5 % less CPU per
    batch. Only for a ``to_channels_last`` Permute((2, 3, 1)) feeding nothing but a
    ``stem_pool`` 2x2/2 valid max-pool; the saved model itself is untouched."""
    import keras
    import tensorflow as tf

    try:
        perm, pool = model.get_layer("to_channels_last"), model.get_layer("stem_pool")
        stem = (isinstance(perm, keras.layers.Permute) and tuple(perm.dims) == (2, 3, 1)
                and isinstance(pool, keras.layers.MaxPooling2D)
                and tuple(pool.pool_size) == (2, 2) and tuple(pool.strides) == (2, 2)
                and pool.padding == "valid" and pool.data_format == "channels_last"
                and len(perm._outbound_nodes) == 1 and pool.input is perm.output)
    except (ValueError, AttributeError):
        return None
    if not stem:
        return None

    class PoolThenTranspose(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            pooled = tf.nn.max_pool2d(x, 2, 2, "VALID", data_format="NCHW")
            return tf.transpose(pooled, [0, 2, 3, 1])

    class Same(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x

    def swap(layer: Any) -> Any:
        if layer is perm:
            return PoolThenTranspose(name="pool_then_transpose")
        return Same(name="pooled") if layer is pool else layer  # others: shared weights

    try:
        return keras.models.clone_model(model, clone_function=swap)
    except Exception:  # noqa: BLE001 - any surprise: the saved graph as it is
        return None


def predict_logits(model: Any, frames: Any, batch_size: int = 256) -> Any:
    """Logits for an in-memory array or a ``tf.data`` dataset of ``(frames, labels)``."""
    import numpy as np

    if isinstance(frames, np.ndarray):
        if len(frames) == 0:
            return np.zeros((0, model.output_shape[-1]), np.float32)
        out = [np.asarray(model(frames[i:i + batch_size], training=False))
               for i in range(0, len(frames), batch_size)]
        return np.concatenate(out).astype(np.float32)
    return np.asarray(model.predict(frames, verbose=0), dtype=np.float32)


def predict_embedding(model: Any, frames: Any, batch_size: int = 256) -> Any:
    """The input of the ``logits`` layer (the penultimate embedding) for in-memory frames.

    Why: a simple classifier on a trained network's embedding gives out-of-sample
    probabilities without retraining the network k times (the label audit's ``cnn``)."""
    import keras
    import numpy as np

    head = keras.Model(model.inputs, model.get_layer("logits").input)
    if len(frames) == 0:
        return np.zeros((0, head.output_shape[-1]), np.float32)
    out = [np.asarray(head(frames[i:i + batch_size], training=False))
           for i in range(0, len(frames), batch_size)]
    return np.concatenate(out).astype(np.float32)
