"""2-D pose geometry for the synthetic data: the spec's skeleton, people, takes and the crop.

Everything here follows ``pose_classes.json`` (see ``models/spec.py``): limb lengths in torso
units, limb directions by the spec's angle convention, and ViTPose's top-down crop (person box
padded by 1.25 at the 3:4 input aspect, mapped onto the 64x48 heatmap grid). Pure, vectorised
NumPy: one call handles thousands of poses. Rendering the heatmaps lives in
``tasks/synth/generate.py``.

How much people, takes, the camera and the detector box vary is not decided here: every
strength comes from a ``tasks.synth.nuisance.Nuisance``, so robustness sweeps can turn each
factor up or off, and its defaults (today's data) are the single owner of every value. Factors
added after the first data sets (padding, aspect, truncation) draw from their own side streams
(``side_rng``), so turning one on leaves every other random draw, and the default output, as it
was.

Coordinates: image orientation (x right, y down). A person faces the camera, so the person's
right side is image LEFT (smaller x). Body coordinates have the mid-hip at the origin and the
torso length as unit.
"""

from __future__ import annotations

import numpy as np

from models.spec import HEIGHT, WIDTH, class_names, keypoint_names, load_spec
from tasks.synth.nuisance import NORMAL, Nuisance

# The nine pose parameters of a sample, in this order (degrees).
PARAMS = ("right_upper_arm", "right_forearm", "left_upper_arm", "left_forearm",
          "right_thigh", "right_shin", "left_thigh", "left_shin", "torso_lean")
_LIMB_SLOTS = {"right_arm": (0, 1), "left_arm": (2, 3), "right_leg": (4, 5), "left_leg": (6, 7)}
BODY_KEYS = ("shoulder_half_width", "hip_half_width", "upper_arm", "forearm", "thigh", "shin",
             "neck_to_nose", "eye_offset_x", "eye_above_nose", "ear_offset_x", "ear_above_nose")

KP = {name: i for i, name in enumerate(keypoint_names())}


# Side-stream tags: one independent generator per factor added after the first data sets.
SIDE_PADDING, SIDE_ASPECT, SIDE_TRUNCATION, SIDE_SECOND_PERSON = 1, 2, 3, 4


def side_rng(rng: np.random.Generator, tag: int) -> np.random.Generator:
    """A generator derived from ``rng``'s seed and ``tag`` without drawing from ``rng``: a new
    factor's draws neither shift the existing streams nor depend on which other factors are on.
    ``rng`` must come from ``np.random.default_rng`` (it has a seed sequence)."""
    seq = rng.bit_generator.seed_seq
    return np.random.default_rng(np.random.SeedSequence(
        seq.entropy, spawn_key=(*seq.spawn_key, 1000 + tag), pool_size=seq.pool_size))


def class_table() -> tuple[np.ndarray, np.ndarray]:
    """Per class (sorted order): the nine target angles ``[C,9]`` and the rest jitter ``[C]``."""
    spec = load_spec()
    rest = spec["angles"]["rest"]
    base = np.array([rest["upper_arm"], rest["forearm"]] * 2
                    + [rest["thigh"], rest["shin"]] * 2 + [rest["torso_lean"]], dtype=np.float64)
    names = class_names()
    targets = np.tile(base, (len(names), 1))
    jitter = np.zeros(len(names))
    for c, name in enumerate(names):
        entry = spec["classes"][name]
        for limb, slots in _LIMB_SLOTS.items():
            if limb in entry:
                targets[c, list(slots)] = entry[limb]
        if "torso_lean" in entry:
            targets[c, 8] = entry["torso_lean"]
        jitter[c] = entry.get("rest_jitter_deg", 0.0)
    return targets, jitter


def sample_subjects(rng: np.random.Generator, n: int, nuisance: Nuisance = NORMAL
                    ) -> dict[str, np.ndarray]:
    """``n`` people: limb proportions, angle habits, and how they hold their head."""
    spec_body = load_spec()["body"]
    base = np.array([spec_body[k] for k in BODY_KEYS])
    body = base * np.exp(rng.normal(0.0, nuisance.body_sd, (n, len(BODY_KEYS))))
    habit = rng.normal(0.0, nuisance.habit_sd, (n, len(PARAMS)))
    habit[:, 8] *= 0.4
    head_yaw = rng.normal(0.0, nuisance.head_yaw_sd, n)  # nose offset sideways (torso units)
    return {"body": body, "habit": habit, "head_yaw": head_yaw}


def _direction(angle_deg: np.ndarray, side: float) -> np.ndarray:
    """Unit vector of a limb on ``side`` (-1 person's right = image left, +1 left)."""
    a = np.deg2rad(angle_deg)
    return np.stack([side * np.sin(a), np.cos(a)], axis=-1)


def pose_keypoints(angles: np.ndarray, body: np.ndarray, head_yaw: np.ndarray) -> np.ndarray:
    """Body-space keypoints ``[N,17,2]`` from angles ``[N,9]`` and proportions ``[N,11]``."""
    n = len(angles)
    b = dict(zip(BODY_KEYS, body.T, strict=True))
    kp = np.zeros((n, 17, 2))
    for side, s in (("right", -1.0), ("left", 1.0)):
        kp[:, KP[f"{side}_shoulder"]] = np.stack([s * b["shoulder_half_width"], -np.ones(n)], -1)
        kp[:, KP[f"{side}_hip"]] = np.stack([s * b["hip_half_width"], np.zeros(n)], -1)
    nose = np.stack([head_yaw, -1.0 - b["neck_to_nose"]], -1)
    kp[:, KP["nose"]] = nose
    for side, s in (("right", -1.0), ("left", 1.0)):
        kp[:, KP[f"{side}_eye"]] = nose + np.stack(
            [s * b["eye_offset_x"], -b["eye_above_nose"]], -1)
        kp[:, KP[f"{side}_ear"]] = nose + np.stack(
            [s * b["ear_offset_x"] - 0.5 * head_yaw, -b["ear_above_nose"]], -1)
    for side, s, (ua, fa), (th, sh) in (("right", -1.0, (0, 1), (4, 5)),
                                        ("left", 1.0, (2, 3), (6, 7))):
        elbow = kp[:, KP[f"{side}_shoulder"]] + b["upper_arm"][:, None] * _direction(
            angles[:, ua], s)
        kp[:, KP[f"{side}_elbow"]] = elbow
        kp[:, KP[f"{side}_wrist"]] = elbow + b["forearm"][:, None] * _direction(angles[:, fa], s)
        knee = kp[:, KP[f"{side}_hip"]] + b["thigh"][:, None] * _direction(angles[:, th], s)
        kp[:, KP[f"{side}_knee"]] = knee
        kp[:, KP[f"{side}_ankle"]] = knee + b["shin"][:, None] * _direction(angles[:, sh], s)
    # Torso lean: the upper body turns about the mid-hip, positive toward image left.
    upper = [i for name, i in KP.items() if "hip" not in name and "knee" not in name
             and "ankle" not in name]
    kp[:, upper] = rotate(kp[:, upper], angles[:, 8], np.zeros((n, 2)))
    return kp


def rotate(points: np.ndarray, degrees: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Rotate ``[N,K,2]`` points about ``centre`` ``[N,2]``; positive turns the top to image
    left (counter-clockwise on screen, y pointing down)."""
    a = np.deg2rad(degrees)[:, None]
    c, s = np.cos(a), np.sin(a)
    d = points - centre[:, None, :]
    x = c * d[..., 0] + s * d[..., 1]
    y = -s * d[..., 0] + c * d[..., 1]
    return np.stack([x, y], -1) + centre[:, None, :]


def _cut_box(lo: np.ndarray, hi: np.ndarray, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove fractions ``cut`` ``[N,3]`` (bottom, image left, image right) of the box."""
    size = hi - lo
    lo = lo + np.stack([cut[:, 1] * size[:, 0], np.zeros(len(cut))], -1)
    hi = hi - np.stack([cut[:, 2] * size[:, 0], cut[:, 0] * size[:, 1]], -1)
    return lo, hi


def crop_to_grid(kp: np.ndarray, roll: np.ndarray, box_shift: np.ndarray,
                 box_scale: np.ndarray, padding: float | np.ndarray | None = None,
                 aspect: np.ndarray | None = None, cut: np.ndarray | None = None
                 ) -> np.ndarray:
    """Map body-space keypoints to heatmap grid pixels ``[N,17,2]`` (x, y; pixel centres at
    integers), the way a top-down pose model sees a detected person.

    The camera roll turns the person; the detector's box hugs the person (head top, hands,
    feet) with centre/size jitter; the box is widened to 3:4, padded (``padding``, scalar or
    ``[N]``; default the spec's), and resized to 64x48. Optional distortions of a real
    pipeline: ``aspect`` ``[N]`` makes the crop wider (>1) or narrower than 3:4 before the
    resize, so the person is squashed or stretched; ``cut`` ``[N,3]`` shortens the box
    (fractions off the bottom, image left, image right), so joints can fall off the grid.
    """
    if padding is None:
        padding = load_spec()["heatmap"]["bbox_padding"]
    centre = (kp[:, KP["left_hip"]] + kp[:, KP["right_shoulder"]]) / 2
    kp = rotate(kp, roll, centre)
    lo, hi = kp.min(axis=1), kp.max(axis=1)
    head_top = kp[:, KP["nose"], 1] - 0.35
    lo = np.stack([lo[:, 0] - 0.12, np.minimum(lo[:, 1] - 0.12, head_top)], -1)
    hi = hi + np.array([0.12, 0.10])
    if cut is not None:
        lo, hi = _cut_box(lo, hi, cut)
    size = (hi - lo) * box_scale
    mid = (hi + lo) / 2 + box_shift * size
    ratio = WIDTH / HEIGHT  # 3:4, the model's 192x256 input
    w = np.maximum(size[:, 0], size[:, 1] * ratio) * padding
    h = w / ratio
    if aspect is not None:
        w, h = w * np.sqrt(aspect), h / np.sqrt(aspect)
    origin = mid - np.stack([w, h], -1) / 2
    scale = np.stack([WIDTH / w, HEIGHT / h], -1)
    return (kp - origin[:, None, :]) * scale[:, None, :] - 0.5


def _crop_extras(rng: np.random.Generator, inverse: np.ndarray, nuisance: Nuisance
                 ) -> tuple[float | np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per frame, drawn per take (``inverse`` maps frames to takes): box padding, crop aspect
    and truncation cut, as ``crop_to_grid`` takes them. Each factor draws from its own side
    stream, and only when it is on."""
    nt = int(inverse.max()) + 1 if len(inverse) else 0
    padding = load_spec()["heatmap"]["bbox_padding"]
    aspect = cut = None
    if nuisance.padding_sd > 0:
        padding = padding * np.exp(side_rng(rng, SIDE_PADDING).normal(
            0.0, nuisance.padding_sd, nt))
    if nuisance.aspect_sd > 0:
        aspect = np.exp(side_rng(rng, SIDE_ASPECT).normal(0.0, nuisance.aspect_sd, nt))
    if nuisance.truncation > 0:
        side = side_rng(rng, SIDE_TRUNCATION)
        hit = side.random(nt) < nuisance.truncation
        amount = side.uniform(0.15, 0.4, nt) * hit      # 15-40 % of the person off
        edge = np.digitize(side.random(nt), [0.7, 0.85])  # mostly the bottom, else a side
        cut = np.zeros((nt, 3))
        cut[np.arange(nt), edge] = amount
    if not np.isscalar(padding):
        padding = padding[inverse]
    return padding, (None if aspect is None else aspect[inverse]), (
        None if cut is None else cut[inverse])


def sample_poses(rng: np.random.Generator, class_idx: np.ndarray, subject: dict[str, np.ndarray],
                 subject_idx: np.ndarray, take_idx: np.ndarray, nuisance: Nuisance = NORMAL
                 ) -> np.ndarray:
    """Grid keypoints ``[N,17,2]`` for N frames.

    Frames that share ``take_idx`` (a global take id) share the class pose as this person
    performs it once, the camera roll and the box, and drift from it by a small random walk in
    frame order (the caller passes frames of a take consecutively).
    """
    nz = nuisance
    n = len(class_idx)
    targets, rest_jitter = class_table()
    takes, first, inverse = np.unique(take_idx, return_index=True, return_inverse=True)
    t_cls = class_idx[first]
    t_sub = subject_idx[first]
    nt = len(takes)
    dev = rng.normal(0.0, nz.take_sd, (nt, len(PARAMS)))
    dev[:, 4:8] *= 0.5                                   # legs move less than arms
    dev[:, 8] = rng.normal(0.0, nz.lean_sd, nt)
    # A class "at rest with jitter" (dummy) moves its arms freely, its legs a little.
    jit = rest_jitter[t_cls][:, None] * np.array([1, 1, 1, 1, .2, .2, .2, .2, 0])
    loose = rng.uniform(-1.0, 1.0, (nt, len(PARAMS))) * jit
    take_angles = targets[t_cls] + subject["habit"][t_sub] + dev + loose
    take_roll = rng.normal(0.0, nz.rotation_sd, nt)
    take_shift = rng.normal(0.0, nz.box_shift_sd, (nt, 2))
    take_scale = np.exp(rng.normal(0.0, nz.box_scale_sd, (nt, 2)))

    # Random walk inside each take: cumulative sum of steps, restarted at every take.
    # Arms move most; the trunk and the camera barely (lean and roll are subtle cues).
    step_sd = nz.drift_sd * np.array([1, 1, 1, 1, .5, .5, .5, .5, .25, .25])
    steps = rng.normal(0.0, 1.0, (n, len(PARAMS) + 1)) * step_sd
    walk = np.cumsum(steps, axis=0)
    walk -= walk[first][inverse] - steps[first][inverse]
    angles = take_angles[inverse] + walk[:, :9]
    roll = take_roll[inverse] + walk[:, 9]
    shift = take_shift[inverse] + rng.normal(0.0, nz.frame_shift_sd, (n, 2))
    scale = take_scale[inverse] * np.exp(rng.normal(0.0, nz.frame_scale_sd, (n, 2)))

    padding, aspect, cut = _crop_extras(rng, inverse, nz)
    kp = pose_keypoints(angles, subject["body"][subject_idx], subject["head_yaw"][subject_idx])
    return crop_to_grid(kp, roll, shift, scale, padding, aspect, cut)
