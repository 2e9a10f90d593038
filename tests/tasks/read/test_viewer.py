"""The heatmap picture: size, the heatmap under it, the skeleton drawn where decode puts it."""

from __future__ import annotations

import io

import numpy as np
import pytest

from models.keypoints import decode
from models.spec import class_names, keypoint_names
from tasks.read.viewer import (
    CENTRE,
    COCO_SKELETON,
    LEFT,
    RIGHT,
    WEAK_PEAK,
    grid_to_pixel,
    image_size,
    render_frame,
    side_color,
    softmax_top_k,
)


def rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


def load_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def near(pixels: np.ndarray, col: int, row: int, color: tuple[int, int, int], r: int = 2) -> bool:
    patch = pixels[max(row - r, 0):row + r + 1, max(col - r, 0):col + r + 1]
    return bool((patch == np.array(color, dtype=np.uint8)).all(axis=-1).any())


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    from tasks.synth.generate import synth_frames

    return synth_frames(["action_up"], seed=4)[0]


def test_png_size_and_heatmap(frame):
    pixels = load_png(render_frame(frame, title="t"))
    w, h = image_size()
    assert pixels.shape == (h, w, 3)
    xy, score = decode(frame[None])
    strongest = int(np.argmax(score[0]))
    col, row = grid_to_pixel(*xy[0, strongest])
    # A peak is bright; the heatmap's far corner (no joint there) is dark.
    corner = pixels[grid_to_pixel(0, 63)[1] - 3, 3].astype(int).sum()
    assert corner < 60
    peak_area = pixels[row - 12:row + 13, col - 12:col + 13].astype(int).sum(axis=-1)
    assert peak_area.max() > 500


def test_skeleton_is_drawn_where_decode_puts_it(frame):
    pixels = load_png(render_frame(frame, title="t"))
    xy, score = decode(frame[None])
    xy, score = xy[0], score[0]
    drawn = 0
    for i, j in COCO_SKELETON:
        if min(score[i], score[j]) < WEAK_PEAK:
            continue
        a, b = xy[i], xy[j]
        if np.linalg.norm(a - b) < 3:  # too short to leave room beside the joint markers
            continue
        for t in (0.4, 0.6):
            col, row = grid_to_pixel(*(a + t * (b - a)))
            assert near(pixels, col, row, rgb(side_color(i, j))), (i, j, t)
        drawn += 1
    assert drawn >= 10
    # Each side's colour is really there (and the three are distinct).
    for color in (LEFT, RIGHT, CENTRE):
        assert (pixels == np.array(rgb(color), dtype=np.uint8)).all(axis=-1).sum() > 50
    # An empty frame draws no skeleton in a place where a limb would be.
    blank = load_png(render_frame(np.zeros_like(frame), title="t"))
    for color in (LEFT, RIGHT):
        assert (blank == np.array(rgb(color), dtype=np.uint8)).all(axis=-1).sum() < \
            (pixels == np.array(rgb(color), dtype=np.uint8)).all(axis=-1).sum()


def test_side_colours_follow_keypoint_names():
    names = keypoint_names()
    assert side_color(names.index("left_shoulder"), names.index("left_elbow")) == LEFT
    assert side_color(names.index("right_hip"), names.index("right_knee")) == RIGHT
    assert side_color(names.index("left_hip"), names.index("right_hip")) == CENTRE


def test_prediction_panel_changes_the_picture(frame):
    top = softmax_top_k(np.arange(17.0), class_names(), temperature=2.0)
    with_pred = load_png(render_frame(frame, title="t", prediction=top))
    without = load_png(render_frame(frame, title="t", note="no production model registered"))
    w, h = image_size()
    assert with_pred.shape == without.shape == (h, w, 3)
    panel = slice(h - 150, h)
    # The bars are drawn in the panel only when there is a prediction.
    bar = np.array([0x4C, 0x72, 0xB0], dtype=np.uint8)
    assert (with_pred[panel] == bar).all(axis=-1).sum() > 500
    assert (without[panel] == bar).all(axis=-1).sum() == 0


def test_softmax_top_k():
    logits = np.array([1.0, 3.0, 2.0, -1.0])
    names = ["a", "b", "c", "d"]
    top = softmax_top_k(logits, names, temperature=2.0, k=3)
    z = np.exp(logits / 2.0)
    p = z / z.sum()
    assert [n for n, _ in top] == ["b", "c", "a"]
    assert [q for _, q in top] == pytest.approx([p[1], p[2], p[0]])
    sharp = softmax_top_k(logits, names, temperature=0.1, k=1)
    assert sharp[0][0] == "b" and sharp[0][1] > 0.99
