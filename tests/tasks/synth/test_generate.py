"""The synthetic data generator (tasks/synth/generate.py, tasks/synth/skeleton.py) and
`posebatch generate`.

What the rest of the project relies on: the file layout and the labels CSV, shapes and dtypes,
determinism, that every class looks like the spec says (checked on decoded keypoints), that the
data looks like imperfect ViTPose output, and that it is neither trivial nor hopeless for a
classical model on held-out people.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.keypoints import decode, keypoint_features
from models.spec import HEATMAP_SHAPE, class_names, keypoint_names, load_spec
from tasks.io.validate import read_heatmap_file
from tasks.synth.generate import generate_dataset, render, synth_dataset, synth_frames
from tasks.synth.nuisance import FACTORS, HARD, NORMAL, Nuisance, shifted
from tasks.synth.skeleton import pose_keypoints, sample_subjects

K = {name: i for i, name in enumerate(keypoint_names())}
CLEAN = Nuisance(occlusion=0, swap=0, blob=0, noise=0, fine_noise=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen")
    summary = generate_dataset(out, per_class=10, seed=5, incoming_batches=3,
                               incoming_per_batch=12)
    return out, summary


def _files(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------ shapes, determinism


def test_synth_frames_shape_dtype_and_range():
    frames = synth_frames(class_names() * 2, seed=1)
    assert frames.shape == (34, *HEATMAP_SHAPE) and frames.dtype == np.float32
    assert np.isfinite(frames).all()
    assert -0.2 <= frames.min() < 0 and frames.max() <= 1.5
    assert synth_frames([], seed=1).shape == (0, *HEATMAP_SHAPE)
    with pytest.raises(ValueError, match="unknown class"):
        synth_frames(["action_up", "jumping_jack"], seed=1)


def test_synth_frames_deterministic():
    labels = ["action_up", "dummy", "select_avatar"] * 3
    a, b = synth_frames(labels, seed=9), synth_frames(labels, seed=9)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, synth_frames(labels, seed=10))
    assert not np.array_equal(a, synth_frames(labels, seed=9, hard=True))


# Measured on synth_dataset(6, seed=3) before the generator read its settings from
# tasks/synth/nuisance.py: the float64 sum of all frames and four values.
BEFORE = {False: (10788.036938597263, [0.01099175214767456, -0.014731872826814651,
                                       -0.008266395889222622, -0.008610054850578308]),
          True: (11721.91743395, [-0.012913781218230724, -0.009784908965229988,
                                  -0.009628928266465664, 0.002084051026031375])}


@pytest.mark.parametrize("hard", [False, True])
def test_default_output_is_unchanged_by_the_nuisance_settings(hard):
    """Benchmarks and stored results rely on the same data for a seed; the presets are the old
    ones, and new factors draw nothing while they are off."""
    frames = synth_dataset(6, seed=3, hard=hard).frames
    total, values = BEFORE[hard]
    assert frames.astype(np.float64).sum() == pytest.approx(total, rel=1e-9)
    np.testing.assert_allclose(frames.reshape(-1)[[0, 1000, 123456, 999999]], values,
                               rtol=0, atol=1e-7)
    preset = synth_dataset(6, seed=3, nuisance=HARD if hard else NORMAL).frames
    assert preset.tobytes() == frames.tobytes()


def test_nuisance_overrides_hard():
    labels = ["action_up", "dummy"] * 3
    assert (synth_frames(labels, seed=1, hard=True, nuisance=NORMAL).tobytes()
            == synth_frames(labels, seed=1).tobytes())
    moved = synth_frames(labels, seed=1, nuisance=shifted(2.0, ["background"]))
    assert moved.shape == (6, *HEATMAP_SHAPE) and not np.array_equal(
        moved, synth_frames(labels, seed=1))


def test_generate_dataset_deterministic_bytes(tmp_path):
    kw = dict(per_class=3, incoming_batches=2, incoming_per_batch=5)
    generate_dataset(tmp_path / "a", seed=4, **kw)
    generate_dataset(tmp_path / "b", seed=4, **kw)
    generate_dataset(tmp_path / "c", seed=5, **kw)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 17 * 3 + 10 + 2 + 1  # labeled, incoming, markers, labels csv
    shared = set(a) & set(c)
    assert any(a[p] != c[p] for p in shared if p.endswith(".npy"))


def test_labeled_data_does_not_depend_on_incoming(tmp_path):
    generate_dataset(tmp_path / "a", per_class=3, seed=2)
    generate_dataset(tmp_path / "b", per_class=3, seed=2, incoming_batches=1,
                     incoming_per_batch=4)
    assert _files(tmp_path / "a" / "labeled") == _files(tmp_path / "b" / "labeled")


def test_synth_dataset_is_the_labeled_part_in_memory(root):
    out, _ = root
    samples = synth_dataset(per_class=10, seed=5)
    paths = sorted((out / "labeled").rglob("*.npy"))
    assert len(paths) == len(samples.frames) == 170
    on_disk = np.concatenate([np.load(p) for p in paths])
    np.testing.assert_array_equal(on_disk, samples.frames)
    assert samples.labels == [p.parts[-3] for p in paths]
    assert [f"s{s:02d}" for s in samples.subjects] == [p.parts[-2] for p in paths]


# ------------------------------------------------------------------------ layout and CSV


def test_labeled_layout(root):
    out, summary = root
    names = class_names()
    assert sorted(p.name for p in (out / "labeled").iterdir()) == names
    takes: dict[str, int] = {}
    for name in names:
        files = sorted((out / "labeled" / name).rglob("*.npy"))
        assert len(files) == 10
        rel = [f.relative_to(out / "labeled" / name).as_posix() for f in files]
        assert all(re.fullmatch(r"s\d\d/t\d\d_f\d{3}\.npy", r) for r in rel), rel
        assert len({r.split("/")[0] for r in rel}) >= 3          # several people
        for r in rel:
            take = f"{name}/{r.split('_f')[0]}"
            takes[take] = takes.get(take, 0) + 1
    assert max(takes.values()) >= 2 and len(takes) > 17 * 3    # several frames per take
    arr = np.load(files[0], allow_pickle=False)
    assert arr.shape == (1, *HEATMAP_SHAPE) and arr.dtype == np.float32
    assert summary["labeled"] == 170 and summary["subjects_labeled"] >= 3


def test_every_generated_file_passes_the_validator(root):
    out, _ = root
    paths = sorted(out.rglob("*.npy"))
    assert len(paths) == 170 + 36
    for path in paths:
        got = read_heatmap_file(path)
        assert got.frames.shape == (1, *HEATMAP_SHAPE)
        assert got.warnings == [[]]


def test_incoming_batches_markers_and_labels(root):
    out, summary = root
    batches = sorted(p.name for p in (out / "incoming").iterdir())
    assert batches == ["batch_000", "batch_001", "batch_002"]
    listed = []
    for batch in batches:
        folder = out / "incoming" / batch
        npys = sorted(folder.glob("*.npy"))
        assert len(npys) == 12
        marker = folder / "_SUCCESS"
        assert marker.exists() and marker.stat().st_size == 0
        assert marker.stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in npys)
        listed += [p.relative_to(out / "incoming").as_posix() for p in npys]
    with open(out / "incoming_labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["source_path", "label"]
    assert sorted(r["source_path"] for r in rows) == sorted(listed)
    assert {r["label"] for r in rows} <= set(class_names())
    assert len({r["label"] for r in rows}) >= 5
    assert summary["incoming"] == 36 and summary["incoming_batches"] == 3


def test_incoming_people_are_new(root):
    out, _ = root
    labeled = {p.name for p in (out / "labeled").glob("*/*") if p.is_dir()}
    incoming = {p.name.split("_")[0] for p in (out / "incoming").rglob("*.npy")}
    assert incoming and labeled and not incoming & labeled


def test_frames_of_a_take_are_correlated(root):
    """Frames of one take drift slightly from a shared pose; other takes differ more."""
    out, _ = root
    within, across = [], []
    for folder in (out / "labeled").glob("*/*"):
        paths = sorted(folder.glob("*.npy"))
        xy, _ = decode(np.concatenate([np.load(p) for p in paths]))
        take = [p.name.split("_f")[0] for p in paths]
        for i in range(len(paths)):
            for j in range(i + 1, len(paths)):
                d = np.median(np.linalg.norm(xy[i] - xy[j], axis=1))
                (within if take[i] == take[j] else across).append(d)
    assert np.median(within) < 0.6 * np.median(across)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, per_class=-1, seed=0)
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, per_class=1, seed=-3)


# ------------------------------------------------------------------------ geometry


def test_skeleton_rest_pose_follows_spec_body():
    spec = load_spec()
    body = np.array([[spec["body"][k] for k in (
        "shoulder_half_width", "hip_half_width", "upper_arm", "forearm", "thigh", "shin",
        "neck_to_nose", "eye_offset_x", "eye_above_nose", "ear_offset_x", "ear_above_nose")]])
    rest = np.array([[10, 5, 10, 5, 5, 0, 5, 0, 0]], float)
    kp = pose_keypoints(rest, body, np.zeros(1))[0]
    np.testing.assert_allclose(kp[K["right_shoulder"]], [-0.42, -1.0])  # person's right:
    np.testing.assert_allclose(kp[K["left_hip"]], [0.25, 0.0])          # image left
    np.testing.assert_allclose(kp[K["nose"]], [0.0, -1.45])
    arm = np.linalg.norm(kp[K["right_elbow"]] - kp[K["right_shoulder"]])
    assert arm == pytest.approx(0.62)
    # Angle convention: 90 = horizontal outward, 180 = up, negative = across the midline.
    out = pose_keypoints(np.array([[90, 180, -90, 0, 5, 0, 5, 0, 0]], float), body,
                         np.zeros(1))[0]
    np.testing.assert_allclose(out[K["right_elbow"]], [-1.04, -1.0], atol=1e-9)
    np.testing.assert_allclose(out[K["right_wrist"]], [-1.04, -1.55], atol=1e-9)
    np.testing.assert_allclose(out[K["left_elbow"]], [0.42 - 0.62, -1.0], atol=1e-9)


def test_subjects_differ_in_proportions():
    s = sample_subjects(np.random.default_rng(0), 20, NORMAL)
    ratio = s["body"][:, 2] / s["body"][:, 3]   # upper arm / forearm per person
    assert s["body"].shape == (20, 11) and ratio.std() > 0.05


N_PER_CLASS = 30


@pytest.fixture(scope="module")
def poses() -> dict[str, dict[str, np.ndarray]]:
    """Median decoded keypoint per class, in torso units about the mid-hip, y UP, image x
    (so the person's right side is negative x)."""
    names = class_names()
    xy, _ = decode(synth_frames([c for c in names for _ in range(N_PER_CLASS)], seed=21))
    mid_hip = (xy[:, K["left_hip"]] + xy[:, K["right_hip"]]) / 2
    mid_sh = (xy[:, K["left_shoulder"]] + xy[:, K["right_shoulder"]]) / 2
    torso = np.linalg.norm(mid_sh - mid_hip, axis=1)
    rel = (xy - mid_hip[:, None]) / torso[:, None, None] * np.array([1, -1])
    med = np.median(rel.reshape(len(names), N_PER_CLASS, 17, 2), axis=1)
    return {c: {k: med[i, j] for k, j in K.items()} for i, c in enumerate(names)}


def _x(p, k):
    return p[k][0]


def _y(p, k):
    return p[k][1]


def _out(p, k):
    """Distance from the midline, whichever side."""
    return abs(p[k][0])


def _at_rest(p, side):
    return _y(p, f"{side}_wrist") < 0.3 and _out(p, f"{side}_wrist") < 0.85


# One robust rule per class, from the spec's angles (see pose_classes.json).
RULES = {
    "action_down": lambda p: all(_out(p, f"{s}_wrist") > 0.8 and _y(p, f"{s}_wrist") < 0.5
                                 for s in ("left", "right")),
    "action_inside": lambda p: all(_out(p, f"{s}_wrist") < 0.25
                                   and 0.1 < _y(p, f"{s}_wrist") < 0.9 for s in ("left", "right")),
    "action_new": lambda p: all(_y(p, f"{s}_elbow") > 1.2 and _out(p, f"{s}_elbow") > 0.7
                                and _y(p, f"{s}_wrist") > _y(p, "nose")
                                and _out(p, f"{s}_wrist") < _out(p, f"{s}_elbow") - 0.2
                                for s in ("left", "right")),
    "action_outside": lambda p: all(_out(p, f"{s}_wrist") > _out(p, f"{s}_shoulder") + 0.6
                                    and abs(_y(p, f"{s}_wrist") - 1) < 0.3
                                    for s in ("left", "right")),
    "action_remove_block": lambda p: (_x(p, "right_wrist") < -1.2
                                      and abs(_y(p, "right_wrist") - 1) < 0.3
                                      and _at_rest(p, "left")),
    "action_select_block": lambda p: (_x(p, "left_wrist") > 1.2
                                      and abs(_y(p, "left_wrist") - 1) < 0.3
                                      and _at_rest(p, "right")),
    "action_switch": lambda p: (_x(p, "right_elbow") < -0.8
                                and abs(_y(p, "right_elbow") - 1) < 0.3
                                and _y(p, "right_wrist") > _y(p, "right_elbow") + 0.35
                                and _at_rest(p, "left")),
    "action_up": lambda p: (_y(p, "right_wrist") > _y(p, "nose") + 0.3
                            and _at_rest(p, "left")),
    "block_events_ran": lambda p: all(_y(p, f"{s}_wrist") > _y(p, "nose")
                                      and _out(p, f"{s}_wrist") > _out(p, f"{s}_shoulder")
                                      for s in ("left", "right")),
    "category_control": lambda p: (_out(p, "right_wrist") < _out(p, "right_elbow") - 0.25
                                   and _y(p, "right_wrist") < 0.8 and _at_rest(p, "left")),
    "category_events": lambda p: (_y(p, "left_wrist") > _y(p, "nose") + 0.3
                                  and _at_rest(p, "right")),
    "category_looks": lambda p: (0.6 < _y(p, "right_wrist") < _y(p, "nose")
                                 and _y(p, "right_wrist") > _y(p, "right_elbow") + 0.3
                                 and _at_rest(p, "left")),
    "category_motion": lambda p: (_x(p, "left_shoulder") + _x(p, "right_shoulder")) / 2 < -0.15
                                 and _x(p, "nose") < -0.25,
    "category_sound": lambda p: all(_y(p, f"{s}_shoulder") < _y(p, f"{s}_wrist") < _y(p, "nose")
                                    and _out(p, f"{s}_wrist") > 0.6 for s in ("left", "right")),
    "dummy": lambda p: (_at_rest(p, "left") and _at_rest(p, "right")
                        and abs((_x(p, "left_shoulder") + _x(p, "right_shoulder")) / 2) < 0.1),
    "select_avatar": lambda p: (_y(p, "right_ankle") > _y(p, "left_ankle") + 0.25
                                and _x(p, "right_knee") < -0.7 and _at_rest(p, "left")),
    "select_backdrop": lambda p: (_y(p, "left_wrist") > _y(p, "nose")
                                  and _x(p, "left_wrist") > 0.8
                                  and _x(p, "right_wrist") < -0.8
                                  and _y(p, "right_wrist") < 0.6),
}


def test_rules_cover_every_class():
    assert set(RULES) == set(class_names())


@pytest.mark.parametrize("name", sorted(RULES))
def test_decoded_keypoints_match_spec_geometry(poses, name):
    assert RULES[name](poses[name]), {k: v.round(2).tolist() for k, v in poses[name].items()}


@pytest.mark.parametrize("name", ["action_up", "action_remove_block", "category_motion",
                                  "select_avatar"])
def test_geometry_rules_discriminate(poses, name):
    """A rule is not a tautology: the resting pose does not satisfy it."""
    assert not RULES[name](poses["dummy"])


# ------------------------------------------------------------------------ ViTPose realism


def test_peaks_look_like_vitpose_output():
    frames = synth_frames(class_names() * 20, seed=8)
    peak = frames.max(axis=(2, 3))
    assert 0.5 < np.median(peak) < 0.9                          # well below 1
    assert np.median(peak[:, K["nose"]]) > np.median(peak[:, K["left_wrist"]])  # per joint
    weak = (peak < 0.4).mean()
    assert 0.005 < weak < 0.15                                  # occluded joints exist
    assert (frames < 0).mean() > 0.2                            # negative background
    background = frames[:, :, :4, :4]
    assert 0.003 < background.std() < 0.05


def test_hard_is_noisier():
    labels = class_names() * 10
    normal, hard = synth_frames(labels, seed=3), synth_frames(labels, seed=3, hard=True)
    weak = [(f.max(axis=(2, 3)) < 0.4).mean() for f in (normal, hard)]
    assert weak[1] > 1.5 * weak[0]
    assert hard[:, :, :4, :4].std() > normal[:, :, :4, :4].std()


def _grid_pose(n: int) -> np.ndarray:
    """Well-separated keypoints: left joints on the image right, right joints on the left."""
    rng = np.random.default_rng(0)
    kp = np.zeros((n, 17, 2))
    kp[:, :, 1] = np.linspace(6, 58, 17) + rng.normal(0, 0.5, (n, 17))
    for name, i in K.items():
        kp[:, i, 0] = 36 if name.startswith("left") else 12 if name.startswith("right") else 24
    return kp


def test_occluded_joints_are_low_wide_and_displaced():
    kp = _grid_pose(40)
    heat = render(kp, np.random.default_rng(1),
                  Nuisance(occlusion=100, swap=0, blob=0, noise=0, fine_noise=0))
    clean = render(kp, np.random.default_rng(1), CLEAN)
    xy, peak = decode(heat)
    assert peak.max() < 0.4 < np.median(clean.max(axis=(2, 3)))
    width = (heat > peak[..., None, None] / 2).sum(axis=(2, 3))
    clean_width = (clean > clean.max(axis=(2, 3), keepdims=True) / 2).sum(axis=(2, 3))
    assert np.median(width) > 2 * np.median(clean_width)
    assert np.median(np.linalg.norm(xy - kp, axis=-1)) > 1.5


def test_left_right_confusion_leaves_a_weaker_peak_on_the_true_side():
    kp = _grid_pose(40)
    heat = render(kp, np.random.default_rng(2),
                  Nuisance(occlusion=0, swap=100, blob=0, noise=0, fine_noise=0))
    xy, peak = decode(heat)
    wrong = np.abs(xy[..., 0] - kp[..., 0]) > 10      # channel peaks on the other side
    pairs = [(K["left_wrist"], K["right_wrist"]), (K["left_knee"], K["right_knee"])]
    for a, b in pairs:
        assert (wrong[:, a] | wrong[:, b]).all()       # every pair confused somewhere
    n_idx, k_idx = np.nonzero(wrong)
    assert len(n_idx) > 40
    own_x = np.round(kp[n_idx, k_idx, 0]).astype(int)
    own_y = np.round(kp[n_idx, k_idx, 1]).astype(int)
    second = heat[n_idx, k_idx, own_y, own_x]
    assert (second > 0.1).all() and (second < peak[n_idx, k_idx]).all()


def test_spurious_blob_lands_in_one_channel():
    kp = _grid_pose(30)
    base = Nuisance(occlusion=0, swap=0, blob=0, noise=0, fine_noise=0)
    with_blob = Nuisance(occlusion=0, swap=0, blob=1.0, noise=0, fine_noise=0)
    diff = np.abs(render(kp, np.random.default_rng(3), with_blob)
                  - render(kp, np.random.default_rng(3), base))
    touched = (diff.max(axis=(2, 3)) > 0.1).sum(axis=1)
    assert (touched == 1).all()


# ------------------------------------------------------------------------ difficulty


def _held_out_subject_f1(hard: bool, per_class: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    s = synth_dataset(per_class, seed=seed, hard=hard)
    x, y = keypoint_features(s.frames), np.array(s.labels)
    test = s.subjects >= s.subjects.max() + 1 - 3       # the last three people never trained
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with threadpool_limits(1):  # a tiny fit: BLAS threads only contend on a busy machine
        clf.fit(x[~test], y[~test])
    return float(f1_score(y[test], clf.predict(x[test]), average="macro"))


def test_not_trivially_separable_nor_hopeless():
    """Logistic regression on decoded keypoints, tested on people it never saw: realistic
    (0.80-0.99 macro-F1), and the hard set is harder."""
    normal = _held_out_subject_f1(hard=False, per_class=100, seed=1)
    assert 0.80 <= normal <= 0.99, normal
    hard = _held_out_subject_f1(hard=True, per_class=100, seed=1)
    assert hard < normal - 0.05, (hard, normal)


# ------------------------------------------------------------------------ CLI


def _cli(*args: str):
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_generate_json(tmp_path):
    res = _cli("generate", "--out", str(tmp_path / "d"), "--per-class", "2", "--seed", "1",
               "--incoming-batches", "2", "--incoming-per-batch", "3", "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["labeled"] == 34 and result["incoming"] == 6
    assert result["shift"] == 1.0 and result["factors"] == list(FACTORS)
    assert result["nuisance"] == {}          # the default settings, exactly
    assert (tmp_path / "d" / "incoming" / "batch_001" / "_SUCCESS").exists()
    assert len(list((tmp_path / "d" / "labeled").rglob("*.npy"))) == 34


def test_cli_generate_shifted_factor(tmp_path):
    res = _cli("generate", "--out", str(tmp_path / "d"), "--shift", "2", "--factor",
               "occlusion", "--per-class", "2", "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["shift"] == 2.0 and result["factors"] == ["occlusion"]
    assert set(result["nuisance"]) == set(FACTORS["occlusion"])
    assert result["nuisance"]["occlusion"] == pytest.approx(0.14)
    paths = sorted((tmp_path / "d" / "labeled").rglob("*.npy"))
    assert len(paths) == 34
    expected = synth_dataset(2, seed=0, nuisance=shifted(2.0, ["occlusion"])).frames
    np.testing.assert_array_equal(np.concatenate([np.load(p) for p in paths]), expected)
    res = _cli("generate", "--out", str(tmp_path / "e"), "--shift", "2", "--hard",
               "--factor", "lighting", "--per-class", "1", "--json")
    assert res.exit_code == 2 and "valid: angles" in res.output
    assert not (tmp_path / "e").exists()


def test_cli_defaults_to_the_data_root(tmp_path):
    res = _cli("generate", "--data", str(tmp_path), "--per-class", "1")
    assert res.exit_code == 0, res.output
    assert "wrote 17 labeled" in res.stdout
    assert len(list((tmp_path / "labeled").rglob("*.npy"))) == 17


def test_cli_errors_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _cli("generate", "--out", str(blocker), "--per-class", "1", "--json")
    assert res.exit_code == 2
    assert "Traceback" not in res.output and "error: cannot generate" in res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["ok"] is False
    assert _cli("generate", "--per-class", "-1").exit_code != 0


def test_cli_progress_lines_on_stderr(capsys):
    from flows.cli.generate import _progress

    callback, close = _progress(5000)
    for done in range(0, 5001, 250):
        callback(done, 5000)
    close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert 5 <= len(lines) <= 12 and lines[-1] == "generate: 5000/5000 files"
    assert _progress(100)[0] is None


def test_generate_help_imports_nothing_heavy():
    code = ("import sys\nsys.argv = ['posebatch', 'generate', '--help']\n"
            "from flows.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'prefect', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "--per-class" in out and "HEAVY []" in out
