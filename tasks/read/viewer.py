"""Render one heatmap frame as a picture: what the model saw, for a prediction that looks wrong.

The picture is the maximum over the 17 channels (where any joint is), the skeleton decoded
with ``models.keypoints.decode`` drawn over it (left side cyan, right side lime, centre
magenta; joints with a weak peak dashed), and, when given, the model's top-3 probabilities.

The geometry is fixed so a picture can be checked pixel by pixel: the heatmap panel fills the
full width with ``SCALE`` pixels per grid cell, below a title band of ``TITLE_PX`` pixels.
Lines are drawn without antialiasing, so they carry their exact colours.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from models.calibration import softmax
from models.keypoints import decode
from models.spec import HEIGHT, WIDTH, keypoint_names

SCALE = 10  # pixels per heatmap cell
DPI = 100
TITLE_PX = 40
PANEL_PX = 150  # the prediction panel below the heatmap
WEAK_PEAK = 0.2  # joints below this peak height are drawn dashed: the decode is a guess
LEFT, RIGHT, CENTRE = "#00ffff", "#00ff00", "#ff00ff"

# The COCO-17 skeleton (0-based keypoint indices), as drawn by the COCO API.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)


def image_size() -> tuple[int, int]:
    """``(width, height)`` of a rendered picture in pixels."""
    return WIDTH * SCALE, TITLE_PX + HEIGHT * SCALE + PANEL_PX


def grid_to_pixel(x: float, y: float) -> tuple[int, int]:
    """Pixel ``(column, row)`` of heatmap grid coordinates (cell centres are integers)."""
    return int(round((x + 0.5) * SCALE)), int(round(TITLE_PX + (y + 0.5) * SCALE))


def side_color(i: int, j: int) -> str:
    """Colour of the limb between keypoints ``i`` and ``j`` (by side of the body)."""
    names = keypoint_names()
    sides = {n.split("_")[0] for n in (names[i], names[j])}
    if sides == {"left"}:
        return LEFT
    if sides == {"right"}:
        return RIGHT
    return CENTRE


def softmax_top_k(logits: np.ndarray, class_names: Sequence[str], temperature: float = 1.0,
                  k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one logit vector, ``softmax(logits / T)`` (the
    calibration's own softmax, so the viewer shows the confidence the outputs store)."""
    z = np.asarray(logits, dtype=np.float64).reshape(1, -1)
    p = softmax(z, max(float(temperature), 1e-6))[0]
    order = np.argsort(-p, kind="stable")[:k]
    return [(str(class_names[i]), float(p[i])) for i in order]


def render_frame(frame: np.ndarray, title: str = "",
                 prediction: Sequence[tuple[str, float]] | None = None,
                 note: str = "") -> bytes:
    """PNG bytes of one ``[17,64,48]`` frame with its skeleton and optional top-k bars."""
    from matplotlib.figure import Figure

    frame = np.asarray(frame, dtype=np.float32)
    width_px, height_px = image_size()
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    heat_bottom = PANEL_PX / height_px
    ax = fig.add_axes((0.0, heat_bottom, 1.0, HEIGHT * SCALE / height_px))
    ax.imshow(frame.max(axis=0), cmap="magma", interpolation="nearest",
              extent=(-0.5, WIDTH - 0.5, HEIGHT - 0.5, -0.5), aspect="auto")
    ax.set_xlim(-0.5, WIDTH - 0.5)
    ax.set_ylim(HEIGHT - 0.5, -0.5)
    ax.set_axis_off()
    xy, score = decode(frame[None])
    xy, score = xy[0], score[0]
    for i, j in COCO_SKELETON:
        weak = min(score[i], score[j]) < WEAK_PEAK
        ax.plot([xy[i, 0], xy[j, 0]], [xy[i, 1], xy[j, 1]], color=side_color(i, j),
                linewidth=2.5, linestyle="--" if weak else "-", antialiased=False)
    ax.scatter(xy[:, 0], xy[:, 1], s=18, c="#ffffff", edgecolors="#000000", linewidths=0.5,
               zorder=3)
    fig.text(0.02, 1 - (TITLE_PX / 3) / height_px, title, va="center", fontsize=9)
    fig.text(0.02, 1 - (TITLE_PX * 0.75) / height_px,
             "skeleton: cyan = person's left, lime = right; dashed = weak peak",
             va="center", fontsize=7, color="#555555")
    panel = fig.add_axes((0.3, 0.12 * PANEL_PX / height_px, 0.62, 0.7 * PANEL_PX / height_px))
    if prediction:
        names = [name for name, _ in prediction][::-1]
        probs = [p for _, p in prediction][::-1]
        panel.barh(range(len(names)), probs, color="#4c72b0")
        panel.set_yticks(range(len(names)), names, fontsize=8)
        panel.set_xlim(0, 1)
        panel.tick_params(axis="x", labelsize=7)
        for yy, p in enumerate(probs):
            panel.text(min(p + 0.02, 0.85), yy, f"{p:.1%}", va="center", fontsize=8)
        panel.set_title(note or "model prediction (top 3)", fontsize=8, loc="left")
    else:
        panel.set_axis_off()
        panel.text(0.0, 0.5, note or "no model prediction", fontsize=9, va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
