"""Synthetic ViTPose-like heatmaps: rendering, and writing a data root (labeled + incoming).

There is no public ViTPose heatmap data set here, so tests, benches and the demo use this
generator. Clean Gaussians would make every model perfect and every test meaningless, so the
renderer imitates what a real top-down pose model emits: peaks well below 1 whose height and
width vary per joint, occluded joints as weak, wide, displaced peaks, left/right confusions
(the strong peak on the wrong side, a weaker one left on the right side), smooth background
noise with small negative values, and the odd spurious blob or second person. The geometry
(people, takes, the person crop) comes from ``tasks/synth/skeleton.py``.

Every strength (how often, how much) is a field of ``tasks.synth.nuisance.Nuisance``, so robustness
sweeps can move each factor on its own; the defaults are the data this project was always
trained and benchmarked on, bit for bit. Only the per-joint profiles below (which joints are
confident, occluded or confused) live here: they shape an artefact, the Nuisance scales it.

Deterministic for a seed; vectorised per chunk of frames, so thousands of files per second.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.spec import HEATMAP_SHAPE, HEIGHT, NUM_KEYPOINTS, WIDTH, class_names, flip_pairs
from tasks.synth.nuisance import HARD, NORMAL, Nuisance, changes
from tasks.synth.skeleton import SIDE_SECOND_PERSON, sample_poses, sample_subjects, side_rng

FRAMES_PER_TAKE = 6  # at most; fewer when a person has few frames, so takes stay several
CHUNK = 256  # frames rendered at once: bounds memory (~50 MB) for any data set size

# Typical peak height per joint (COCO order): faces and shoulders are confident,
# ears, wrists and ankles less so.
JOINT_HEIGHT = np.array([.86, .82, .82, .62, .62, .80, .80, .70, .70, .62, .62,
                         .72, .72, .70, .70, .62, .62])
# Relative occlusion rate per joint: hands, ears and feet disappear most often.
OCCLUSION_WEIGHT = np.array([.3, .4, .4, 1.2, 1.2, .6, .6, 1.2, 1.2, 1.6, 1.6,
                             1.0, 1.0, 1.0, 1.0, 1.3, 1.3])
# Relative left/right confusion rate per flip pair (eyes, ears, shoulders, elbows, wrists,
# hips, knees, ankles): limbs far from the face are confused most.
SWAP_WEIGHT = np.array([.3, .5, .3, 1.0, 1.2, .5, 1.0, 1.2])
PEAK_SIGMA = 2.0    # typical peak sigma (px) before per-frame and per-joint variation
PEAK_MAX = 0.97     # a confident peak never quite reaches 1

# Older name of the render settings (they were the artefact rates only); same class.
Artefacts = Nuisance

_XS = np.arange(WIDTH, dtype=np.float32)
_YS = np.arange(HEIGHT, dtype=np.float32)


def _upsampler(coarse: int, fine: int) -> np.ndarray:
    """Linear interpolation matrix ``[fine, coarse]`` for smooth background noise."""
    pos = np.linspace(0, coarse - 1, fine)
    lo = np.minimum(pos.astype(int), coarse - 2)
    frac = pos - lo
    m = np.zeros((fine, coarse), dtype=np.float32)
    m[np.arange(fine), lo] = 1 - frac
    m[np.arange(fine), lo + 1] = frac
    return m


_UY, _UX = _upsampler(9, HEIGHT), _upsampler(7, WIDTH)


def _gauss(pos: np.ndarray, sig: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Separable Gaussians: ``pos``/``sig`` ``[...,2]`` (x, y), ``h`` ``[...]`` -> ``[...,H,W]``.

    Built as an outer product of two 1-D profiles in float32: one multiply per pixel."""
    pos, sig = pos.astype(np.float32), sig.astype(np.float32)
    gx = np.exp(-((_XS - pos[..., 0:1]) ** 2) / (2 * sig[..., 0:1] ** 2))
    gy = np.exp(-((_YS - pos[..., 1:2]) ** 2) / (2 * sig[..., 1:2] ** 2))
    gy *= h[..., None].astype(np.float32)
    return gy[..., :, None] * gx[..., None, :]


def _peaks(kp: np.ndarray, rng: np.random.Generator, nz: Nuisance
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak height ``[N,K]``, sigma ``[N,K,2]`` and position ``[N,K,2]``, occlusion applied:
    an occluded joint is a low, wide, displaced peak."""
    n, k = kp.shape[0], NUM_KEYPOINTS
    h = JOINT_HEIGHT * np.exp(rng.normal(0, nz.height_frame_sd, (n, 1))
                              + rng.normal(0, nz.height_joint_sd, (n, k)))
    h = np.minimum(h * nz.height_scale, PEAK_MAX)
    sig = PEAK_SIGMA * nz.sigma_scale * np.exp(rng.normal(0, nz.sigma_frame_sd, (n, 1, 1))
                              + rng.normal(0, nz.sigma_joint_sd, (n, k, 2)))
    pos = kp + rng.normal(0, nz.position_sd, (n, k, 2))

    occ = rng.random((n, k)) < nz.occlusion * OCCLUSION_WEIGHT
    h = np.where(occ, h * rng.uniform(nz.occlusion_low, nz.occlusion_high, (n, k)), h)
    sig = np.where(occ[..., None], sig * rng.uniform(1.5, 2.5, (n, k, 1)), sig)
    pos = np.where(occ[..., None], pos + rng.normal(0, nz.occlusion_shift_px, (n, k, 2)), pos)
    return h, sig, pos


def _confuse(h: np.ndarray, sig: np.ndarray, pos: np.ndarray, rng: np.random.Generator,
             nz: Nuisance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left/right confusion, in place on ``h``/``pos``: a channel peaks at its partner's joint
    and keeps a weaker peak at its own (returned as height, position, sigma of that second
    peak; height 0 where there is none); sometimes both channels of a pair swap."""
    n, k = h.shape
    h2, pos2, sig2 = np.zeros((n, k)), pos.copy(), sig.copy()
    pairs = np.array(flip_pairs())
    hit = rng.random((n, len(pairs))) < nz.swap * SWAP_WEIGHT
    mode = rng.random((n, len(pairs)))
    h0, pos0 = h.copy(), pos.copy()
    for j, (a, b) in enumerate(pairs):
        for own, other, take in ((a, b, mode[:, j] < .675), (b, a, mode[:, j] >= .325)):
            m = hit[:, j] & take
            h2[m, own] = h0[m, own] * rng.uniform(.35, .7, m.sum())
            pos[m, own] = pos0[m, other] + rng.normal(0, .5, (m.sum(), 2))
            h[m, own] = h0[m, other] * rng.uniform(.8, 1.0, m.sum())
            pos2[m, own] = pos0[m, own]
    return h2, pos2, sig2


def _second_person(heat: np.ndarray, kp: np.ndarray, rng: np.random.Generator,
                   nz: Nuisance) -> None:
    """Add, in place, a second person beside the crop's own in some frames: another frame's
    pose, smaller, shifted toward a crop edge so part of it is off the grid, its peaks lower
    and only some of its joints detected. Drawn from a side stream (only when on)."""
    if nz.second_person <= 0:
        return
    side = side_rng(rng, SIDE_SECOND_PERSON)
    n, k = kp.shape[0], NUM_KEYPOINTS
    frames = np.nonzero(side.random(n) < nz.second_person)[0]
    m = len(frames)
    other = kp[side.integers(0, n, m)]
    centre = other.mean(axis=1, keepdims=True)
    way = np.where(side.random(m) < 0.5, -1.0, 1.0)
    at = kp[frames].mean(axis=1) + np.stack(
        [way * side.uniform(0.35, 0.6, m) * WIDTH, side.normal(0, 3, m)], -1)
    pos = (other - centre) * side.uniform(0.6, 1.0, (m, 1, 1)) + at[:, None, :]
    seen = (side.random((m, k)) < 0.7) & (pos[..., 0] > -2) & (pos[..., 0] < WIDTH + 1)
    h = JOINT_HEIGHT * side.uniform(0.25, 0.6, (m, k))
    sig = PEAK_SIGMA * side.uniform(0.9, 1.4, (m, k, 1)) * np.ones(2)
    fi, ki = np.nonzero(seen)
    heat[frames[fi], ki] += _gauss(pos[fi, ki], sig[fi, ki], h[fi, ki])


def _background(rng: np.random.Generator, n: int, nz: Nuisance) -> np.ndarray:
    """Smooth low-frequency noise with pixel noise on top, and a small negative offset,
    ``[N,K,H,W]``. Noise fields are drawn per call and dealt out to channels at random with
    their own amplitude: far cheaper than a fresh field per channel, and just as unstructured.
    """
    k = NUM_KEYPOINTS
    amplitude = nz.noise if nz.noise > 0 else nz.fine_noise  # fine noise alone still shows
    fields = _UY @ rng.normal(0, 1, (64, 9, 7)).astype(np.float32) @ _UX.T
    if nz.noise <= 0:
        fields[:] = 0
    fields += rng.normal(0, nz.fine_noise / max(amplitude, 1e-9), fields.shape).astype(
        np.float32)
    noise = fields[rng.integers(0, len(fields), (n, k))]
    noise *= (amplitude * np.exp(rng.normal(0, .3, (n, k, 1, 1)))).astype(np.float32)
    noise += rng.normal(nz.offset_mean, nz.offset_sd, (n, k, 1, 1)).astype(np.float32)
    return noise


def render(kp: np.ndarray, rng: np.random.Generator, nuisance: Nuisance = NORMAL
           ) -> np.ndarray:
    """Heatmaps ``[N,17,64,48]`` float32 for grid keypoints ``kp`` ``[N,17,2]`` (x, y).

    Keypoints off the grid are fine: the grid gets whatever tail of their peak reaches it."""
    nz = nuisance
    n, k = kp.shape[0], NUM_KEYPOINTS
    h, sig, pos = _peaks(kp, rng, nz)
    h2, pos2, sig2 = _confuse(h, sig, pos, rng, nz)
    heat = _gauss(pos, sig, h)
    ni, ki = np.nonzero(h2)
    heat[ni, ki] += _gauss(pos2[ni, ki], sig2[ni, ki], h2[ni, ki])

    blob = np.nonzero(rng.random(n) < nz.blob)[0]
    if len(blob):
        bk = rng.integers(0, k, len(blob))
        bpos = rng.uniform([0, 0], [WIDTH - 1, HEIGHT - 1], (len(blob), 2))
        bsig = rng.uniform(1.5, 3.5, (len(blob), 1)) * np.ones(2)
        heat[blob, bk] += _gauss(bpos, bsig, rng.uniform(.15, .55, len(blob)))
    _second_person(heat, kp, rng, nz)
    heat += _background(rng, n, nz)
    return np.clip(heat, -0.2, 1.5, out=heat)


# ----------------------------------------------------------------------------- planning


@dataclass
class Plan:
    """Which frames to make: per frame its class, subject, global take id and names."""

    class_idx: np.ndarray
    subject_idx: np.ndarray
    take_idx: np.ndarray
    relpaths: list[str]


def _labeled_plan(per_class: int) -> tuple[Plan, int]:
    """Every class performed by the same people, several takes each, frames in order."""
    n_sub = min(max(3, math.ceil(per_class / 10)), 40) if per_class >= 3 else per_class
    cls, sub, take, paths = [], [], [], []
    t_global = 0
    for c, name in enumerate(class_names()):
        base, extra = divmod(per_class, max(n_sub, 1))
        for s in range(n_sub):
            m = base + (1 if (s - c) % n_sub < extra else 0)
            per_take = min(max(math.ceil(math.sqrt(m)), 2), FRAMES_PER_TAKE)
            n_takes = math.ceil(m / per_take)
            for t in range(n_takes):
                frames = m // n_takes + (1 if t < m % n_takes else 0)
                for f in range(frames):
                    cls.append(c)
                    sub.append(s)
                    take.append(t_global)
                    paths.append(f"{name}/s{s:02d}/t{t:02d}_f{f:03d}.npy")
                t_global += 1
    return Plan(np.array(cls, int), np.array(sub, int), np.array(take, int), paths), n_sub


def _incoming_plan(rng: np.random.Generator, batches: int, per_batch: int,
                   first_subject: int) -> tuple[Plan, int]:
    """New people (subject ids after the labeled ones), takes of random classes per batch."""
    total = batches * per_batch
    n_sub = min(max(2, math.ceil(total / 40)), 20)
    cls, sub, take, paths = [], [], [], []
    t_global = 0
    for b in range(batches):
        left = per_batch
        while left > 0:
            frames = min(int(rng.integers(2, 7)), left)
            c = int(rng.integers(0, len(class_names())))
            s = first_subject + int(rng.integers(0, n_sub))
            for f in range(frames):
                cls.append(c)
                sub.append(s)
                take.append(t_global)
                paths.append(f"batch_{b:03d}/s{s:02d}_t{t_global:03d}_f{f:03d}.npy")
            t_global += 1
            left -= frames
    return Plan(np.array(cls, int), np.array(sub, int), np.array(take, int), paths), n_sub


def _nuisance(hard: bool, nuisance: Nuisance | None) -> Nuisance:
    """The settings to generate with: ``nuisance`` when given, else the ``hard`` preset or not."""
    if nuisance is not None:
        return nuisance
    return HARD if hard else NORMAL


def _frames(plan: Plan, subjects: dict[str, np.ndarray], seed: int, stream: int,
            nuisance: Nuisance, start: int, stop: int) -> np.ndarray:
    """Render frames ``start:stop`` of a plan. Poses of a take never straddle a chunk's random
    state: each chunk has its own generator derived from (seed, stream, chunk start)."""
    rng = np.random.default_rng([seed, stream, start])
    kp = sample_poses(rng, plan.class_idx[start:stop], subjects, plan.subject_idx[start:stop],
                      plan.take_idx[start:stop], nuisance)
    return render(kp, rng, nuisance)


def _chunks(plan: Plan) -> list[tuple[int, int]]:
    """Chunk bounds near CHUNK frames that never split a take (its frames drift together)."""
    bounds, start, n = [], 0, len(plan.take_idx)
    while start < n:
        stop = min(start + CHUNK, n)
        while stop < n and plan.take_idx[stop] == plan.take_idx[stop - 1]:
            stop += 1
        bounds.append((start, stop))
        start = stop
    return bounds


def _subjects(seed: int, n: int, nuisance: Nuisance) -> dict[str, np.ndarray]:
    if seed < 0:
        raise ValueError("seed must be >= 0")
    return sample_subjects(np.random.default_rng([seed, 0]), n, nuisance)


# ----------------------------------------------------------------------------- public API


@dataclass
class Samples:
    """An in-memory labeled set: frames ``[N,17,64,48]``, class names and subject ids."""

    frames: np.ndarray
    labels: list[str]
    subjects: np.ndarray


def synth_dataset(per_class: int, seed: int, hard: bool = False,
                  nuisance: Nuisance | None = None) -> Samples:
    """The labeled part of ``generate_dataset`` in memory (same plan, no files). ``nuisance``
    (see ``tasks/synth/nuisance.py``) overrides ``hard``."""
    nz = _nuisance(hard, nuisance)
    plan, n_sub = _labeled_plan(per_class)
    subjects = _subjects(seed, n_sub, nz)
    frames = np.concatenate([_frames(plan, subjects, seed, 1, nz, a, b)
                             for a, b in _chunks(plan)]) if plan.relpaths else np.zeros(
        (0, *HEATMAP_SHAPE), np.float32)
    names = class_names()
    return Samples(frames, [names[c] for c in plan.class_idx], plan.subject_idx.copy())


def synth_frames(labels: Sequence[str], seed: int, hard: bool = False,
                 nuisance: Nuisance | None = None) -> np.ndarray:
    """One frame per label, float32 ``[N,17,64,48]``: each an independent take of one of a
    few people. ``nuisance`` overrides ``hard``. Raises ``ValueError`` on an unknown class
    name."""
    names = class_names()
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"unknown class names: {unknown}")
    n = len(labels)
    nz = _nuisance(hard, nuisance)
    subjects = _subjects(seed, 8, nz)
    rng = np.random.default_rng([seed, 3])
    plan = Plan(np.array([names.index(x) for x in labels], int), rng.integers(0, 8, n),
                np.arange(n), [""] * n)
    if n == 0:
        return np.zeros((0, *HEATMAP_SHAPE), np.float32)
    return np.concatenate([_frames(plan, subjects, seed, 4, nz, a, b)
                           for a, b in _chunks(plan)])


def _npy_header() -> bytes:
    """The exact ``np.save`` header of a ``[1,17,64,48]`` float32 array (written once)."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, *HEATMAP_SHAPE), np.float32))
    return buf.getvalue()[: -4 * int(np.prod(HEATMAP_SHAPE))]


def _write_all(root: Path, plan: Plan, subjects: dict[str, np.ndarray], seed: int, stream: int,
               nuisance: Nuisance, tick: Callable[[int], None], after: Callable[[int], None]
               ) -> None:
    """Render and write a plan chunk by chunk; ``after(i)`` runs after frame ``i`` is written."""
    header = _npy_header()
    made: set[Path] = set()
    for a, b in _chunks(plan):
        frames = _frames(plan, subjects, seed, stream, nuisance, a, b)
        for i in range(a, b):
            path = root / plan.relpaths[i]
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            with open(path, "wb") as fh:
                fh.write(header)
                fh.write(frames[i - a].data)
            after(i)
        tick(b - a)


def generate_dataset(out: Path, per_class: int, seed: int, incoming_batches: int = 0,
                     incoming_per_batch: int = 0, hard: bool = False,
                     nuisance: Nuisance | None = None, *,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a data root: ``labeled/<class>/<subject>/<take>_f<frame>.npy``,
    ``incoming/batch_<k>/<subject>_<take>_f<frame>.npy`` (each batch folder gets ``_SUCCESS``
    after its last file), and ``incoming_labels.csv`` (``source_path,label``, paths relative
    to ``incoming/``). Files are ``[1,17,64,48]`` float32. Incoming people never appear in
    ``labeled/``. Existing files of the same names are overwritten; others are left alone.

    ``nuisance`` (see ``tasks/synth/nuisance.py``) sets every variation and artefact strength and
    overrides ``hard``. ``progress(done, total)`` is called after every chunk of files.
    """
    if per_class < 0 or incoming_batches < 0 or incoming_per_batch < 0:
        raise ValueError("counts must be >= 0")
    t0 = time.perf_counter()
    out = Path(out)
    nz = _nuisance(hard, nuisance)
    lab_plan, n_lab = _labeled_plan(per_class)
    in_plan, n_in = _incoming_plan(np.random.default_rng([seed, 2]), incoming_batches,
                                   incoming_per_batch, first_subject=n_lab)
    subjects = _subjects(seed, n_lab, nz)
    if n_in:  # new people, drawn from their own stream so labeled data does not change
        more = sample_subjects(np.random.default_rng([seed, 6]), n_in, nz)
        subjects = {key: np.concatenate([subjects[key], more[key]]) for key in subjects}
    total = len(lab_plan.relpaths) + len(in_plan.relpaths)
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        if progress:
            progress(done, total)

    _write_all(out / "labeled", lab_plan, subjects, seed, 1, nz, tick, lambda i: None)

    last = {p.split("/")[0]: i for i, p in enumerate(in_plan.relpaths)}
    ends = {i: batch for batch, i in last.items()}

    def mark(i: int) -> None:  # the batch is complete: its marker comes last
        if i in ends:
            (out / "incoming" / ends[i] / "_SUCCESS").write_bytes(b"")

    _write_all(out / "incoming", in_plan, subjects, seed, 5, nz, tick, mark)
    names = class_names()
    if in_plan.relpaths:
        tmp = out / ".incoming_labels.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["source_path", "label"])
            writer.writerows((p, names[c]) for p, c in zip(in_plan.relpaths, in_plan.class_idx,
                                                            strict=True))
        os.replace(tmp, out / "incoming_labels.csv")
    seconds = time.perf_counter() - t0
    return {
        "out": str(out), "seed": seed, "hard": hard, "nuisance": changes(nz),
        "classes": len(names),
        "labeled": len(lab_plan.relpaths), "incoming": len(in_plan.relpaths),
        "incoming_batches": incoming_batches, "subjects_labeled": n_lab,
        "subjects_incoming": n_in if in_plan.relpaths else 0,
        "seconds": round(seconds, 3), "files_per_second": round(total / seconds, 1) if total
        else 0.0,
    }
