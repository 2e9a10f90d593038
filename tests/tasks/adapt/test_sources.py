"""Training sets from several sources (tasks/adapt/sources.py, synthetic.py): the user's
frames decide validation and test, synthetic ones only train and validate, the source
decision, and the synthetic cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.spec import class_names
from tasks.adapt.sources import build_training_set, oversampled
from tasks.adapt.synthetic import choose_source, synthetic_folder, synthetic_settings
from tasks.synth.generate import generate_dataset
from tasks.train.dataset import scan_labeled


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict:
    user = tmp_path_factory.mktemp("user")
    generate_dataset(user, per_class=4, seed=1)
    synth = synthetic_folder(tmp_path_factory.mktemp("cache"), synthetic_settings(3, seed=2))
    return {"user": scan_labeled(user / "labeled"), "synthetic": scan_labeled(synth)}


def test_user_frames_judge_and_synthetic_frames_only_train(scans: dict) -> None:
    names = class_names()
    ts = build_training_set([("user", scans["user"]), ("synthetic", scans["synthetic"])],
                            names, seed=0)
    user, synth = set(ts.idx("user")), set(ts.idx("synthetic"))
    assert len(user) == 17 * 4 and len(synth) == 17 * 3
    assert set(ts.split.test) <= user and set(ts.split.train) <= user  # finetune's train
    assert set(ts.synthetic["train"]) <= synth and not set(ts.synthetic["train"]) & set(
        ts.split.val)
    assert set(ts.split.val) & synth and set(ts.split.val) & user   # both validate
    assert set(ts.target_val) == set(ts.split.val) & user
    groups = {ts.scan.files[i].file.group for i in synth}
    assert all(g.startswith("synthetic:") for g in groups)
    assert not groups & {ts.scan.files[i].file.group for i in user}


def test_without_user_frames_the_synthetic_split_is_all_there_is(scans: dict) -> None:
    from tasks.train.dataset import Scan

    ts = build_training_set([("user", Scan([], [])), ("synthetic", scans["synthetic"])],
                            class_names(), seed=0)
    assert ts.split.train == [] and ts.target_val == []
    assert ts.split.test == ts.synthetic["test"] and ts.split.test


def test_oversampling_weights_the_user_up() -> None:
    mixed = oversampled([100, 101], list(range(60)), share=0.4)
    assert mixed.count(100) == mixed.count(101) == 20  # 40 of 100 files
    assert oversampled([5], [], 0.4) == [5] and oversampled([], [1, 2], 0.4) == [1, 2]


def test_source_decision() -> None:
    names = class_names()
    assert choose_source("auto", names, [10] * 17, 100)[0] == "synthetic"
    assert choose_source("auto", names, [150] * 17, 100)[0] == "none"
    assert choose_source("auto", names, [150] * 16 + [20], 100)[0] == "synthetic"
    assert choose_source("none", names, [1] * 17, 100)[0] == "none"
    own = ["wave", *names[:3]]
    source, why = choose_source("auto", own, [5] * 4, 100)
    assert source == "none" and "wave" in why
    with pytest.raises(ValueError, match="does not draw class"):
        choose_source("synthetic", own, [5] * 4, 100)
    with pytest.raises(ValueError, match="--source"):
        choose_source("sometimes", names, [5] * 17, 100)


def test_synthetic_cache_records_its_settings_and_is_reused(tmp_path: Path) -> None:
    settings = synthetic_settings(1, seed=4)
    folder = synthetic_folder(tmp_path, settings)
    recorded = json.loads((folder.parent / "settings.json").read_text())
    assert recorded == settings and recorded["nuisance"] == "defaults"
    files = sorted(folder.rglob("*.npy"))
    assert len(files) == 17
    stamp = files[0].stat().st_mtime_ns
    assert synthetic_folder(tmp_path, settings) == folder  # not generated again
    assert files[0].stat().st_mtime_ns == stamp
    assert synthetic_folder(tmp_path, synthetic_settings(1, seed=5)) != folder
    assert not [p for p in (tmp_path / "synthetic").iterdir() if p.name.startswith(".tmp")]


def _linear(weights: np.ndarray, bias: np.ndarray) -> Any:
    """A Keras model whose logits are ``flatten(frame) @ weights + bias``."""
    import keras

    model = keras.Sequential([keras.Input(shape=(17, 64, 48)), keras.layers.Flatten(),
                              keras.layers.Dense(weights.shape[1])])
    model.layers[-1].set_weights([weights.astype(np.float32), bias.astype(np.float32)])
    return model


def test_the_synthetic_only_model_is_kept_only_when_strictly_better(scans: dict) -> None:
    """Judged on the user's validation files: a model fitted to them beats a constant one;
    a tie keeps the model trained with the user's frames."""
    from sklearn.linear_model import LogisticRegression

    from tasks.adapt.transfer import keep_better
    from tasks.train.dataset import load_frames
    from tasks.train.fit import TrainResult

    ts = build_training_set([("user", scans["user"]), ("synthetic", scans["synthetic"])],
                            class_names(), seed=0)
    x, y = load_frames(ts.scan, ts.target_val)
    fitted = LogisticRegression(C=100.0, max_iter=2000).fit(x.reshape(len(x), -1), y)
    weights = np.zeros((x[0].size, 17))
    weights[:, fitted.classes_] = fitted.coef_.T
    bias = np.full(17, -50.0)
    bias[fitted.classes_] = fitted.intercept_
    right = TrainResult(_linear(weights, bias), {}, 1, 1, {}, 0.0)
    constant = TrainResult(_linear(np.zeros_like(weights), np.eye(17)[0]), {}, 1, 1, {}, 0.0)

    kept, info = keep_better(constant, right, ts, 4096)
    assert kept is right and info["kept"] == "synthetic only"
    assert info["val_macro_f1"]["synthetic only"] > info["val_macro_f1"]["trained"]
    kept, info = keep_better(right, constant, ts, 4096)
    assert kept is right and info["kept"] == "trained"
    kept, info = keep_better(constant, constant, ts, 4096)  # a tie keeps the user's
    assert kept is constant and info["kept"] == "trained"
    assert f"{len(y)} user validation frame" in info["judged_on"]
