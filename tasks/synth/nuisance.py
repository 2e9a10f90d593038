"""Every nuisance factor of the synthetic generator, in one place, and a knob that scales them.

A model that only ever sees today's data cannot tell us how it copes with sloppier people,
worse detector boxes or a noisier pose model. The generator (``tasks/synth/skeleton.py`` for
the geometry, ``tasks/synth/generate.py`` for the heatmaps) therefore reads every strength it uses
from a ``Nuisance``; the defaults are the values the data was always made with, so default output is
bit-identical for a seed. ``shifted(k, factors)`` moves named groups of fields (``FACTORS``) by
``k`` units of ``STEP``: the robustness suite sweeps ``k`` per group.

Per-joint *profiles* (which joints occlude or swap most, typical peak heights) stay constants
in ``tasks/synth/generate.py``: they are the shape of an artefact, not its strength.

Stdlib only (no NumPy), so the CLI can list the factors without importing anything heavy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Nuisance:
    """Every nuisance factor of the generator: one field per knob, today's values as defaults.

    Units: angles in degrees, lengths in torso units or grid pixels, ``*_sd`` of a size or
    height a log-sd, probabilities per take / frame / joint as stated.
    """

    # pose and people (tasks/synth/skeleton.py)
    take_sd: float = 7.0          # per-take deviation of every limb angle from the class pose
    drift_sd: float = 1.5         # per-frame random-walk step of the angles within a take
    habit_sd: float = 4.0         # per-person bias of every angle
    lean_sd: float = 2.0          # per-take torso lean noise
    head_yaw_sd: float = 0.04     # per-person sideways nose offset (torso units)
    body_sd: float = 0.07         # per-person log-sd of each limb length (proportions)
    # camera and detector box (tasks/synth/skeleton.py)
    rotation_sd: float = 3.0      # in-plane camera roll per take
    box_shift_sd: float = 0.04    # per-take detector box centre jitter (fraction of box)
    box_scale_sd: float = 0.06    # per-take detector box size jitter (log-sd, x and y)
    frame_shift_sd: float = 0.01  # per-frame box centre jitter on top (fraction of box)
    frame_scale_sd: float = 0.015  # per-frame box size jitter on top (log-sd)
    padding_sd: float = 0.0       # per-take log-sd of the box padding around the spec's 1.25
    aspect_sd: float = 0.0        # per-take log-sd of the crop aspect around 3:4 (squash/stretch)
    truncation: float = 0.0       # per-take probability that the box cuts the body at an edge
    # peaks (tasks/synth/generate.py render)
    sigma_scale: float = 1.0      # every peak's sigma times this (another model draws wider)
    height_scale: float = 1.0     # every peak's height times this (another model is less sure)
    sigma_frame_sd: float = 0.08  # per-frame log-sd of peak sigma (base 2.0 px)
    sigma_joint_sd: float = 0.08  # per-joint (and per-axis) log-sd of peak sigma
    height_frame_sd: float = 0.10  # per-frame log-sd of peak height
    height_joint_sd: float = 0.12  # per-joint log-sd of peak height
    position_sd: float = 0.35     # per-joint localisation noise (px)
    # background
    noise: float = 0.012          # smooth background noise amplitude
    fine_noise: float = 0.004     # pixel noise amplitude
    offset_sd: float = 0.003      # sd of the per-channel background offset
    offset_mean: float = -0.004   # mean of that offset (negative, as ViTPose's background)
    # artefacts
    occlusion: float = 0.07       # per-joint probability (times OCCLUSION_WEIGHT)
    occlusion_shift_px: float = 3.0  # sd of how far an occluded peak is displaced (px)
    occlusion_low: float = 0.15   # an occluded peak keeps U(low, high) of its height
    occlusion_high: float = 0.4
    swap: float = 0.015           # per flip-pair probability (times SWAP_WEIGHT)
    blob: float = 0.2             # per-frame probability of a spurious blob
    second_person: float = 0.0    # per-frame probability of a second, partial person

    def __post_init__(self) -> None:
        bad = [f.name for f in fields(self)
               if f.name != "offset_mean" and not getattr(self, f.name) >= 0]
        if bad:
            raise ValueError(f"nuisance fields must be >= 0: {bad}")
        if self.occlusion_low > self.occlusion_high:
            raise ValueError("occlusion_low must be <= occlusion_high")


NORMAL = Nuisance()
# The robustness preset: sloppier poses, rougher boxes, more artefacts and noise.
HARD = Nuisance(take_sd=12.0, drift_sd=2.0, lean_sd=4.0, rotation_sd=8.0, box_shift_sd=0.08,
                box_scale_sd=0.12, occlusion=0.14, occlusion_shift_px=4.0, swap=0.03, blob=0.4,
                noise=0.022, fine_noise=0.007)

# The groups the robustness suite sweeps, in report order. Every field is in exactly one.
FACTORS: dict[str, tuple[str, ...]] = {
    "angles": ("take_sd", "drift_sd", "habit_sd", "lean_sd", "head_yaw_sd"),
    "proportions": ("body_sd",),
    "rotation": ("rotation_sd",),
    "box_jitter": ("box_shift_sd", "box_scale_sd", "frame_shift_sd", "frame_scale_sd"),
    "padding_aspect": ("padding_sd", "aspect_sd"),
    "truncation": ("truncation",),
    "peak_sigma": ("sigma_scale", "sigma_frame_sd", "sigma_joint_sd", "position_sd"),
    "peak_height": ("height_scale", "height_frame_sd", "height_joint_sd"),
    "background": ("noise", "fine_noise", "offset_sd", "offset_mean"),
    "occlusion": ("occlusion", "occlusion_shift_px", "occlusion_low", "occlusion_high"),
    "swap": ("swap",),
    "blobs": ("blob", "second_person"),
}

# Steps of the fields that are off today (a realistic amount for one unit of shift), and of
# the systematic scales (a unit of shift: peaks 20 % wider, 15 % lower, as another detector
# checkpoint or input size draws them).
_OWN_STEP = {"padding_sd": 0.08, "aspect_sd": 0.06, "truncation": 0.06,
             "second_person": 0.05, "sigma_scale": 0.2, "height_scale": -0.15}
# Fields that get smaller as the shift grows: value(k) = base / k (occluded peaks get lower).
DIVIDED: tuple[str, ...] = ("occlusion_low", "occlusion_high")
# The amount one unit of shift adds to each other field: its default (so shift k multiplies a
# default by k; ``offset_mean`` gets more negative) or, for a field off today, the step above.
STEP: dict[str, float] = {f.name: _OWN_STEP.get(f.name, f.default)
                          for f in fields(Nuisance) if f.name not in DIVIDED}
# Systematic multipliers (1.0 by default).
SCALES: tuple[str, ...] = ("sigma_scale", "height_scale")
# Probabilities and fractions: clipped to [0, 1] after a shift (other fields to >= 0).
UNIT_INTERVAL: tuple[str, ...] = ("truncation", "occlusion", "swap", "blob", "second_person",
                                  "occlusion_low", "occlusion_high")


def _moved(name: str, value: float, k: float) -> float:
    """``value`` of field ``name`` moved by ``k - 1`` steps, clipped to its valid range."""
    if name in DIVIDED:
        out = value / k if k > 0 else 1.0
    else:
        out = value + (k - 1.0) * STEP[name]
    if name == "offset_mean":
        return min(out, 0.0)
    if name in SCALES:  # a multiplier: never zero, and k = 0 is no scaling at all
        return 1.0 if k == 0 else max(out, 0.1)
    return min(max(out, 0.0), 1.0) if name in UNIT_INTERVAL else max(out, 0.0)


def shifted(k: float, factors: Iterable[str] | None = None, base: Nuisance = NORMAL
            ) -> Nuisance:
    """``base`` with every field of the named ``factors`` (all of ``FACTORS`` when None) moved
    to shift ``k``: ``value = base + (k - 1) * STEP`` (``base / k`` for ``DIVIDED`` fields),
    probabilities clipped to [0, 1], sds to >= 0. ``k = 1`` returns ``base``; ``k = 0`` turns
    the factors off. Raises ``ValueError`` on ``k < 0`` or an unknown factor name."""
    if not k >= 0:
        raise ValueError(f"shift must be >= 0, got {k}")
    names = list(FACTORS) if factors is None else list(factors)
    unknown = [n for n in names if n not in FACTORS]
    if unknown:
        raise ValueError(f"unknown nuisance factors {unknown}; valid: {', '.join(FACTORS)}")
    if k == 1:
        return base
    moved = {f: _moved(f, getattr(base, f), k) for name in names for f in FACTORS[name]}
    return replace(base, **moved)


def changes(nuisance: Nuisance, base: Nuisance = NORMAL) -> dict[str, float]:
    """The fields of ``nuisance`` that differ from ``base`` (for summaries and reports)."""
    return {f.name: getattr(nuisance, f.name) for f in fields(Nuisance)
            if getattr(nuisance, f.name) != getattr(base, f.name)}
