"""A stand-in for real ViTPose heatmaps, for benchmarks that judge domain adaptation.

    .venv/bin/python bench/standin.py   # a stand-in and a generator frame: results/standin.png

Why: models here are trained on the project's generator (``tasks/synth``); scoring them on more
of its output measures how well they learned that renderer, not the poses. With no real ViTPose
data at hand, this is a second renderer of the same spec (``pose_classes.json``), written apart:
it imports nothing from ``tasks/synth`` (only the demo does, for the picture). Differences:

- people: proportions vary per body part and segment; the body turns away from the camera per
  frame (narrower widths, nose aside); heavy-tailed angle jitter; independent frames (no takes);
- crop: a box from the joints' extent with its own margins and jitter, padding U(1.1, 1.4),
  truncation now and then, and a grid mapping without the half-pixel offset;
- peaks: oriented elliptical peaks (elongated along the limb), a mixed exponential/Gaussian
  profile with a negative ring, drawn on a 32x24 grid, bilinearly upsampled to 64x48 (as a
  stride-2 deconvolution head does) and quantised; heights 0.35-0.95 before upsampling;
- artefacts: a checkerboard that grows with the signal, a smooth background with a negative
  offset, occluded and off-crop joints as weak broad displaced peaks, left/right confusions,
  distractor peaks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.spec import HEIGHT, WIDTH, flip_pairs, keypoint_names, load_spec  # noqa: E402

K = len(keypoint_names())
J = {name: i for i, name in enumerate(keypoint_names())}
LIMBS = ("right_arm", "left_arm", "right_leg", "left_leg")
CHAIN = {"arm": ("shoulder", "elbow", "wrist"), "leg": ("hip", "knee", "ankle")}
LENGTHS = {"arm": ("upper_arm", "forearm"), "leg": ("thigh", "shin")}
CHUNK = 192  # frames rendered at once
# Per joint (COCO order): typical peak height, relative occlusion rate, and the joint its peak
# is elongated toward (its parent on the limb; -1: a random orientation).
BASE_HEIGHT = np.array([.88, .85, .85, .62, .62, .82, .82, .7, .7, .6, .6,
                        .66, .66, .7, .7, .62, .62])
OCCLUDE = np.array([.2, .3, .3, 1.5, 1.5, .5, .5, 1.0, 1.0, 1.8, 1.8, .8, .8, 1.0, 1.0, 1.4, 1.4])
PARENT = np.array([-1, -1, -1, -1, -1, -1, -1, 5, 6, 7, 8, -1, -1, 11, 12, 13, 14])


@dataclass(frozen=True)
class Strength:
    """How far the stand-in strays (angles in degrees, sizes as log-sd, rates per joint)."""

    angle_sd: float = 6.0      # per-frame jitter (scale of a Student t, 4 dof)
    habit_sd: float = 5.0      # per-person angle bias
    lean_sd: float = 2.5       # per-frame torso lean noise
    roll_sd: float = 2.5       # camera roll
    turn_sd: float = 15.0      # body turned away from the camera (narrows widths)
    body_sd: float = 0.08      # proportions
    box_sd: float = 0.04       # box centre (fraction of size) and size (log) jitter
    truncation: float = 0.06   # per-frame chance the box cuts part of the body
    occlusion: float = 0.06    # per-joint chance (times OCCLUDE)
    swap: float = 0.02         # per flip-pair chance
    distractor: float = 0.3    # expected distractor peaks per frame
    checker: float = 0.05      # checkerboard amplitude relative to the signal
    quant: float = 64.0        # values are multiples of 1/quant


STRENGTHS = {"moderate": Strength(),
             "hard": Strength(angle_sd=9.0, habit_sd=7.0, lean_sd=4.0, roll_sd=5.0, turn_sd=25.0,
                              body_sd=0.11, box_sd=0.07, truncation=0.15, occlusion=0.13,
                              swap=0.05, distractor=0.8, checker=0.09, quant=32.0),
             # farther still: the camera and the people of another site (more turn, habit,
             # truncation and occlusion), a coarser head (values in steps of 1/16)
             "severe": Strength(angle_sd=11.0, habit_sd=10.0, lean_sd=5.0, roll_sd=7.0,
                                turn_sd=35.0, body_sd=0.14, box_sd=0.09, truncation=0.25,
                                occlusion=0.2, swap=0.08, distractor=1.2, checker=0.14,
                                quant=16.0)}


@dataclass
class Standin:
    """Rendered frames plus the truth behind them (for sanity checks)."""

    frames: np.ndarray    # [N,17,64,48] float32
    labels: np.ndarray    # [N] int64, index into the class names given
    persons: np.ndarray   # [N] int64
    joints: np.ndarray    # [N,17,2] grid pixels (x, y) of the skeleton
    clean: np.ndarray     # [N,17] visible, on the grid, no swap or distractor in the channel


def class_angles(names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: limb angles ``[C,4,2]`` (LIMBS x segment), lean ``[C]``, rest jitter ``[C]``."""
    spec = load_spec()
    rest = spec["angles"]["rest"]
    arm, leg = [rest["upper_arm"], rest["forearm"]], [rest["thigh"], rest["shin"]]
    ang = np.tile(np.array([arm, arm, leg, leg], float), (len(names), 1, 1))
    lean, jitter = np.full(len(names), float(rest["torso_lean"])), np.zeros(len(names))
    for c, name in enumerate(names):
        entry = spec["classes"][name]
        for li, limb in enumerate(LIMBS):
            if limb in entry:
                ang[c, li] = entry[limb]
        lean[c] = entry.get("torso_lean", lean[c])
        jitter[c] = entry.get("rest_jitter_deg", 0.0)
    return ang, lean, jitter


def people_bodies(rng: np.random.Generator, n: int, st: Strength) -> dict[str, np.ndarray]:
    """Proportions per person ``[n]`` each: a factor per body part, then per segment."""
    body = load_spec()["body"]
    groups = (("upper_arm", "forearm"), ("thigh", "shin"), ("shoulder_half_width",
              "hip_half_width"), ("neck_to_nose", "eye_offset_x", "eye_above_nose",
                                  "ear_offset_x", "ear_above_nose"))
    out = {}
    for keys in groups:
        shared = rng.normal(0.0, st.body_sd, n)
        for key in keys:
            out[key] = body[key] * np.exp(shared + rng.normal(0.0, st.body_sd / 2, n))
    return out


def rotate(p: np.ndarray, deg: np.ndarray, about: np.ndarray) -> np.ndarray:
    """Turn ``[N,M,2]`` points (y down) about ``[N,2]``; positive moves the top to image left."""
    a = np.radians(deg)[:, None]
    d = p - about[:, None]
    x = d[..., 0] * np.cos(a) + d[..., 1] * np.sin(a)
    y = d[..., 1] * np.cos(a) - d[..., 0] * np.sin(a)
    return np.stack([x, y], -1) + about[:, None]


def skeleton(ang: np.ndarray, lean: np.ndarray, b: dict[str, np.ndarray], turn: np.ndarray
             ) -> np.ndarray:
    """Body-space joints ``[N,17,2]`` (torso units, y down, mid-hip at 0): angles ``[N,4,2]``
    absolute (0 down, 90 outward, 180 up), ``turn`` narrows widths by its cosine (degrees)."""
    n, narrow = len(ang), np.cos(np.radians(turn))
    yaw = np.sin(np.radians(turn)) * b["neck_to_nose"] * 0.5  # the nose follows the turn
    p = np.zeros((n, K, 2))
    p[:, J["nose"]] = np.stack([yaw, -1.0 - b["neck_to_nose"]], -1)
    for side, s in (("right", -1.0), ("left", 1.0)):  # the person's right is image left
        at = {"shoulder": (b["shoulder_half_width"] * narrow, -1.0), "hip": (
            b["hip_half_width"] * narrow, 0.0), "eye": (b["eye_offset_x"] * narrow + s * yaw,
            -1.0 - b["neck_to_nose"] - b["eye_above_nose"]), "ear": (
            b["ear_offset_x"] * narrow, -1.0 - b["neck_to_nose"] - b["ear_above_nose"])}
        for joint, (x, y) in at.items():
            p[:, J[f"{side}_{joint}"]] = np.stack([s * x, y * np.ones(n)], -1)
    for li, limb in enumerate(LIMBS):
        side, part = limb.split("_")
        s, chain = (-1.0 if side == "right" else 1.0), [J[f"{side}_{j}"] for j in CHAIN[part]]
        for seg, length in enumerate(LENGTHS[part]):
            t = np.radians(ang[:, li, seg])
            step = np.stack([s * np.sin(t), np.cos(t)], -1) * b[length][:, None]
            p[:, chain[seg + 1]] = p[:, chain[seg]] + step
    upper = [i for name, i in J.items() if not name.endswith(("hip", "knee", "ankle"))]
    p[:, upper] = rotate(p[:, upper], lean, np.zeros((n, 2)))
    return p


def crop(rng: np.random.Generator, p: np.ndarray, st: Strength) -> np.ndarray:
    """Body-space joints to 64x48 grid pixels: roll, a box from the joints' extent (own margins
    and jitter, sometimes cut at the bottom or the image left), 3:4 aspect, padding."""
    n = len(p)
    p = rotate(p, rng.normal(0.0, st.roll_sd, n), p.mean(axis=1))
    lo = p.min(axis=1) - np.stack([rng.uniform(.05, .2, n), rng.uniform(.25, .45, n)], -1)
    hi = p.max(axis=1) + np.stack([rng.uniform(.05, .2, n), rng.uniform(.03, .15, n)], -1)
    cut = (rng.random(n) < st.truncation) * rng.uniform(.15, .35, n)
    left = rng.random(n) < 1 / 3
    lo[:, 0] += np.where(left, cut, 0) * (hi[:, 0] - lo[:, 0])
    hi[:, 1] -= np.where(left, 0, cut) * (hi[:, 1] - lo[:, 1])
    size = (hi - lo) * np.exp(rng.normal(0.0, st.box_sd, (n, 1)))
    mid = (hi + lo) / 2 + rng.normal(0.0, st.box_sd, (n, 2)) * size
    w = np.maximum(size[:, 0], size[:, 1] * WIDTH / HEIGHT) * rng.uniform(1.1, 1.4, n)
    wh = np.stack([w, w * HEIGHT / WIDTH], -1)
    return (p - (mid - wh / 2)[:, None]) / wh[:, None] * np.array([WIDTH, HEIGHT])


def poses(rng: np.random.Generator, cls: np.ndarray, pid: np.ndarray, n_people: int,
          names: list[str], st: Strength) -> np.ndarray:
    """Grid joints ``[N,17,2]`` for frames of classes ``cls`` by people ``pid``."""
    n = len(cls)
    bodies = people_bodies(rng, n_people, st)
    habit = rng.normal(0.0, st.habit_sd, (n_people, 4, 2)) * np.array([1, 1, .4, .4])[:, None]
    target, lean, jitter = class_angles(names)
    shake = rng.standard_t(4, (n, 4, 2)).clip(-4, 4) * st.angle_sd
    loose = rng.normal(0, 1, (n, 4, 2)).clip(-2, 2) * (jitter[cls] / 2)[:, None, None]
    shake[:, 2:] *= 0.4  # legs move less
    loose[:, 2:] *= 0.25
    le = lean[cls] + rng.normal(0.0, 1.5, n_people)[pid] + rng.normal(0.0, st.lean_sd, n)
    p = skeleton(target[cls] + habit[pid] + shake + loose, le,
                 {k: v[pid] for k, v in bodies.items()}, rng.normal(0.0, st.turn_sd, n))
    return crop(rng, p, st)


def _upsample(fine: int, coarse: int) -> np.ndarray:
    """Bilinear, half-pixel-centred ``[fine, coarse]`` interpolation matrix."""
    pos = np.clip((np.arange(fine) + 0.5) * coarse / fine - 0.5, 0, coarse - 1)
    lo = np.minimum(pos.astype(int), coarse - 2)
    m = np.zeros((fine, coarse), np.float32)
    m[np.arange(fine), lo], m[np.arange(fine), lo + 1] = 1 - (pos - lo), pos - lo
    return m


CH, CW = HEIGHT // 2, WIDTH // 2  # the coarse grid peaks are drawn on
UY, UX = _upsample(HEIGHT, CH), _upsample(WIDTH, CW)
BY, BX = _upsample(HEIGHT, 8), _upsample(WIDTH, 6)  # the smooth background's grid
_CY = (np.arange(CH, dtype=np.float32) * 2 + 0.5)[:, None]  # fine-pixel centre of coarse cells
_CX = np.arange(CW, dtype=np.float32) * 2 + 0.5
_CHECK = np.where(np.add.outer(np.arange(HEIGHT), np.arange(WIDTH)) % 2, 1, -1).astype(
    np.float32)


def peaks(pos: np.ndarray, h: np.ndarray, sig: np.ndarray, theta: np.ndarray,
          mix: np.ndarray) -> np.ndarray:
    """Coarse maps ``[...,CH,CW]`` of oriented elliptical peaks: ``pos`` ``[...,2]`` fine px,
    ``sig`` ``[...,2]`` (along, across), an exponential/Gaussian ``mix``, a negative ring."""
    e = lambda a: a[..., None, None].astype(np.float32)  # noqa: E731
    dx, dy = _CX - e(pos[..., 0]), _CY - e(pos[..., 1])
    c, s = e(np.cos(theta)), e(np.sin(theta))
    d2 = ((dx * c + dy * s) / e(sig[..., 0])) ** 2 + ((dy * c - dx * s) / e(sig[..., 1])) ** 2
    core = e(mix) * np.exp(1.2 - 1.2 * np.sqrt(1 + d2)) + (1 - e(mix)) * np.exp(-0.5 * d2)
    return e(h) * (core - 0.08 * np.exp(-d2 / 12.0)) / 0.92


def joint_peaks(rng: np.random.Generator, xy: np.ndarray, st: Strength
                ) -> tuple[np.ndarray, ...]:
    """Per joint: position ``[n,17,2]``, height, sigma (along, across), angle, and whether it is
    occluded or off the crop (then a weak, broad, displaced peak, pulled to the edge)."""
    n = len(xy)
    h = BASE_HEIGHT * np.exp(rng.normal(0, .12, (n, 1)) + rng.normal(0, .18, (n, K)))
    along = rng.uniform(1.8, 3.4, (n, K))
    sig = np.stack([along, along * rng.uniform(0.45, 0.85, (n, K))], -1)
    limb = xy - xy[:, np.maximum(PARENT, 0)]
    theta = np.where(PARENT >= 0, np.arctan2(limb[..., 1], limb[..., 0]),
                     rng.uniform(0, np.pi, (n, K))) + rng.normal(0, 0.3, (n, K))
    pos = xy + rng.normal(0, 0.35, (n, K, 2))
    off = ((xy < 0) | (xy > [WIDTH - 1, HEIGHT - 1])).any(-1)
    occ = off | (rng.random((n, K)) < st.occlusion * OCCLUDE)
    pos = np.where(occ[..., None], pos + rng.normal(0, 3.0, (n, K, 2)), pos)
    pos = np.clip(pos, [-1, -1], [WIDTH, HEIGHT])
    h = np.where(occ, rng.uniform(0.06, 0.3, (n, K)), h.clip(0.35, 0.95))
    sig = np.where(occ[..., None], sig * rng.uniform(1.8, 3.0, (n, K, 1)), sig)
    return pos, h, sig, theta, occ


def confusions(rng: np.random.Generator, xy: np.ndarray, pos: np.ndarray, h: np.ndarray,
               st: Strength) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    """Left/right swaps (in place on ``pos``: both channels of a pair, or one firing on its
    partner with a weaker peak left at its own joint) and distractors (at another joint or
    anywhere). Returns the extra peaks (frame, channel, position, height) and the hit mask."""
    n = len(xy)
    hit_mask, extra = np.zeros((n, K), bool), []
    for a, b in flip_pairs():
        hit = rng.random(n) < st.swap
        both = hit & (rng.random(n) < 0.5)
        pos[both, a], pos[both, b] = pos[both, b].copy(), pos[both, a].copy()
        one = np.nonzero(hit & ~both)[0]
        ch = np.where(rng.random(len(one)) < 0.5, a, b)
        extra.append((one, ch, pos[one, ch].copy(), h[one, ch] * rng.uniform(.3, .6, len(one))))
        pos[one, ch] = pos[one, a + b - ch]
        hit_mask[hit, a] = hit_mask[hit, b] = True
    m = rng.poisson(st.distractor * n)
    fi, ki = rng.integers(0, n, m), rng.integers(0, K, m)
    src = (ki + rng.integers(1, K, m)) % K
    at = np.where(rng.random((m, 1)) < 0.5, xy[fi, src], rng.uniform(0, [WIDTH, HEIGHT], (m, 2)))
    extra.append((fi, ki, at, rng.uniform(0.1, 0.4, m)))
    hit_mask[fi, ki] = True
    return extra, hit_mask


def finish(rng: np.random.Generator, heat: np.ndarray, st: Strength, out: np.ndarray) -> None:
    """Into ``out``: ``heat`` plus a checkerboard growing with the signal, a smooth background
    with a negative offset, quantised. In place (``heat`` is scratch; fresh pages are slow)."""
    n = len(heat)
    np.copyto(out, heat)
    np.abs(heat, out=heat)
    heat += 0.1
    heat *= st.checker * rng.uniform(0.5, 1.0, (n, K, 1, 1)).astype(np.float32) * _CHECK
    out += heat
    bg = BY @ rng.normal(0, 0.012, (n, K, 8, 6)).astype(np.float32) @ BX.T
    out += bg + rng.normal(-0.012, 0.004, (n, K, 1, 1)).astype(np.float32)
    out *= st.quant
    np.round(out, out=out)
    out /= st.quant
    np.clip(out, -1.0, 4.0, out=out)


def render_chunk(rng: np.random.Generator, xy: np.ndarray, st: Strength, out: np.ndarray
                 ) -> np.ndarray:
    """Heatmaps of grid joints ``xy`` into ``out`` ``[n,17,64,48]``; returns the clean mask."""
    pos, h, sig, theta, occ = joint_peaks(rng, xy, st)
    extra, hit = confusions(rng, xy, pos, h, st)
    coarse = peaks(pos, h, sig, theta, rng.uniform(0.3, 0.8, h.shape))
    fi, ki, at, hx = (np.concatenate(z) for z in zip(*extra, strict=True))
    m = len(fi)
    np.add.at(coarse, (fi, ki), peaks(at, hx, np.full((m, 2), 2.5), np.zeros(m), np.ones(m) / 2))
    finish(rng, UY @ coarse @ UX.T, st, out)
    return ~occ & ~hit


def standin_sample(class_names: list[str], per_class: int, people: int, seed: int,
                   strength: str = "moderate") -> Standin:
    """``per_class`` frames a class, dealt round-robin to ``people`` people (ids 0..people-1,
    the same people in every class); frames in class order. Deterministic for ``seed``."""
    if strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {sorted(STRENGTHS)}, got {strength!r}")
    if people < 1 or per_class < 0:
        raise ValueError("need people >= 1 and per_class >= 0")
    st = STRENGTHS[strength]
    pose_seq, render_seq = np.random.SeedSequence(seed).spawn(2)
    cls = np.repeat(np.arange(len(class_names)), per_class)
    pid = np.tile(np.arange(per_class) % people, len(class_names))
    xy = poses(np.random.default_rng(pose_seq), cls, pid, people, class_names, st)
    frames = np.empty((len(cls), K, HEIGHT, WIDTH), np.float32)
    clean = np.zeros((len(cls), K), bool)
    for i, sub in enumerate(render_seq.spawn(-(-len(cls) // CHUNK))):
        s = slice(i * CHUNK, (i + 1) * CHUNK)
        clean[s] = render_chunk(np.random.default_rng(sub), xy[s], st, frames[s])
    return Standin(frames, cls.astype(np.int64), pid.astype(np.int64), xy, clean)


def render_standin(class_names: list[str], per_class: int, people: int, seed: int,
                   strength: str = "moderate") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(frames [N,17,64,48] float32, labels [N] int64, person ids [N] int64)``; labels index
    ``class_names``; ``strength`` is "moderate" or "hard"."""
    s = standin_sample(class_names, per_class, people, seed, strength)
    return s.frames, s.labels, s.persons


def write_labeled(root: str | Path, frames: np.ndarray, labels: np.ndarray,
                  persons: np.ndarray, class_names: list[str]) -> list[Path]:
    """Write ``root/<class>/p<person>/f<k>.npy`` (``[1,17,64,48]`` float32): a labeled folder
    whose first sub-folder (the person) is the group. Returns the paths written."""
    paths, count = [], {}
    for frame, label, person in zip(frames, labels, persons, strict=True):
        folder = Path(root) / class_names[int(label)] / f"p{int(person):02d}"
        k = count[folder] = count.get(folder, -1) + 1
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"f{k:03d}.npy")
        np.save(paths[-1], np.asarray(frame, np.float32)[None])
    return paths


def demo(out: Path, pick: str = "select_backdrop") -> None:
    """Save a stand-in frame beside a generator frame of class ``pick``, four panels each."""
    from matplotlib.figure import Figure

    from models.spec import class_names
    from tasks.synth.generate import synth_dataset  # only for the picture

    names = class_names()
    ours = standin_sample(names, 4, 2, seed=1).frames[names.index(pick) * 4]
    gen = synth_dataset(per_class=2, seed=1)
    fig = Figure(figsize=(12, 8), constrained_layout=True)
    for row, (who, f) in enumerate((("stand-in", ours),
                                    ("generator", gen.frames[gen.labels.index(pick)]))):
        panels = {"max over joints": f.max(0), "left wrist": f[J["left_wrist"]],
                  "right elbow": f[J["right_elbow"]], "nose, within +-0.05": f[0].clip(-.05, .05)}
        for col, (what, img) in enumerate(panels.items()):
            ax = fig.add_subplot(2, 4, 4 * row + col + 1)
            fig.colorbar(ax.imshow(img, cmap="magma"), ax=ax, shrink=0.7)
            ax.set_title(f"{who} ({pick}): {what}", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    demo(ROOT / "bench" / "results" / "standin.png")
