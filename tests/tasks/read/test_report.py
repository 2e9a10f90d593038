"""The HTML report: its content, the training distribution from the registry, and the page
rendered for real in headless Chromium (text, images loaded, a screenshot kept)."""

from __future__ import annotations

import base64
import io
import re
from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from models.spec import class_names
from tasks.io.schema import PREDICTIONS, REJECTIONS
from tasks.read.report import NO_TRAINING, REPORT_COLUMNS, build_report, training_distribution
from tasks.synth.sample_outputs import synth_predictions, synth_rejections, write_partitioned
from tests.support import chromium

MONITOR_TITLES = ["Estimated vs realized accuracy",
                  "Drift scores (PSI against the training reference)", "Input statistics",
                  "Confidence"]
SECTIONS = ["Frames per day", "Frames per label", "Confidence per label",
            "Low-confidence share over time", "Rejections by reason", "Class mix vs training"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, pa.Table, dict]:
    """Predictions whose class mix is skewed towards the first classes, read back through
    read_predictions, and a uniform training distribution: the drift is real."""
    from tasks.read.query import read_predictions, read_rejections

    out = tmp_path_factory.mktemp("report_out")
    weights = np.linspace(3.0, 0.2, len(class_names()))
    write_partitioned(synth_predictions(4000, date(2024, 5, 1), 5, seed=3,
                                        class_weights=weights), out, PREDICTIONS)
    write_partitioned(synth_rejections(40, date(2024, 5, 1), 5, seed=4), out, REJECTIONS)
    training = {c: 100 for c in class_names()}
    return (read_predictions(out, columns=REPORT_COLUMNS),
            read_rejections(out, columns=["reason"]), training)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """Four monitored runs (the class mix ever more skewed), realized accuracy on two."""
    from tasks.monitor.feedback import match_labels, parse_labels, with_realized
    from tasks.monitor.trend import read_runs
    from tests.tasks.monitor.test_feedback import labels_csv
    from tests.tasks.monitor.test_trend import write_history

    out = str(tmp_path_factory.mktemp("monitor_out"))
    write_history(out)
    preds = synth_predictions(200, date(2024, 6, 1), 1, seed=9, batches=2)
    fb = match_labels(parse_labels(labels_csv(preds, range(200))), preds,
                      class_names())["matched"]
    return with_realized(read_runs(out), fb)


@pytest.fixture(scope="module")
def monitored_page(tables, history) -> str:
    pred, rej, training = tables
    return build_report(pred, rej, low_confidence=0.6, training=training,
                        model_note="production model v0007", title="Nightly poses",
                        scope="test", monitoring=history,
                        thresholds={"psi": 0.05, "min_est_accuracy": 0.85})


def test_report_monitoring_section(tables, history, monitored_page, page):
    assert "<h2>Monitoring</h2>" in monitored_page and "<h2>Monitoring</h2>" not in page
    for title in MONITOR_TITLES:
        assert f"<h3>{title}</h3>" in monitored_page
    assert len(png_sizes(monitored_page)) == 6 + 4
    assert "<td>run-3</td>" in monitored_page and "class_mix_psi" in monitored_page
    realized = [r["accuracy"] for r in history.to_pylist()]
    assert realized[:2] != [None, None] and realized[2:] == [None, None]
    pred, rej, _ = tables
    empty = build_report(pred.slice(0, 0), rej.slice(0, 0), low_confidence=0.5,
                         training=None, model_note="-", monitoring=history.slice(0, 0))
    assert "No monitored runs" in empty and png_sizes(empty) == []


@pytest.fixture(scope="module")
def page(tables) -> str:
    """The report with a training distribution (built once: plotting takes seconds)."""
    pred, rej, training = tables
    return build_report(pred, rej, low_confidence=0.6, training=training,
                        model_note="production model v0007", title="Nightly poses",
                        scope="test")


@pytest.fixture(scope="module")
def page_no_training(tables) -> str:
    pred, rej, _ = tables
    return build_report(pred, rej, low_confidence=0.5, training=None,
                        model_note="production model v0001: " + NO_TRAINING)


def png_sizes(page: str) -> list[tuple[int, int]]:
    """(width, height) of every embedded PNG, read from the PNG header."""
    sizes = []
    for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        data = base64.b64decode(b64)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        sizes.append((int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")))
    return sizes


def test_report_has_every_section_and_plot(tables, page):
    pred, rej, _ = tables
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in page
    assert len(png_sizes(page)) == 6
    assert 'src="http' not in page and "<link" not in page  # self-contained
    assert f"<b>{pred.num_rows}</b>frames" in page
    assert "PSI = " in page and "major shift" in page  # the skew is large
    assert "below 0.6" in page
    for reason in set(rej.column("reason").to_pylist()):
        assert f"<td>{reason}</td>" in page


def test_report_without_training_or_data(tables, page_no_training):
    pred, rej, _ = tables
    assert page_no_training.count(NO_TRAINING) == 1
    assert len(png_sizes(page_no_training)) == 5
    empty = build_report(pred.slice(0, 0), rej.slice(0, 0), low_confidence=0.5,
                         training=None, model_note="no production model registered")
    assert "No predictions in this range." in empty
    assert "No rejected files in this range." in empty
    assert NO_TRAINING in empty
    assert png_sizes(empty) == []


@pytest.mark.slow
def test_training_distribution_from_the_registry(tmp_path):
    import keras

    from models.registry import Registry

    reg = Registry(tmp_path / "registry")
    dist, note = training_distribution(reg.root)
    assert dist is None and "no production model registered" in note and NO_TRAINING in note
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    old = reg.register(model, {"class_names": ["a", "b"], "temperature": 1.0})
    reg.set_production(old.version, "test")
    dist, note = training_distribution(reg.root)
    assert dist is None and note == f"production model {old.version}: {NO_TRAINING}"
    new = reg.register(model, {"class_names": ["a", "b"], "class_distribution": {"a": 30,
                                                                                 "b": 10}})
    reg.set_production(new.version, "test")
    dist, note = training_distribution(reg.root)
    assert dist == {"a": 30.0, "b": 10.0}
    assert new.version in note and "40 labelled frames" in note


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    """Debian's chromium, installed with apt-get when missing (fails clearly if it cannot)."""
    return chromium.ensure_installed()


@pytest.mark.slow
def test_report_in_headless_chromium(tables, page, chromium_binary, tmp_path):
    pred, _, _ = tables
    html_file = tmp_path / "report.html"
    html_file.write_text(page, encoding="utf-8")

    text = chromium.page_text(chromium.dump_dom(chromium_binary, html_file, tmp_path / "p1"))
    assert "Nightly poses" in text
    for section in SECTIONS:
        assert section in text
    assert f"{pred.num_rows} frames" in text
    assert re.search(r"PSI = \d\.\d{3}", text)

    images = chromium.image_report(chromium_binary, html_file, tmp_path)
    assert len(images) == 6
    assert all(i["complete"] and i["w"] > 0 for i in images), images
    assert [(i["w"], i["h"]) for i in images] == png_sizes(page)

    # The check can fail: a copy with one damaged image reports it as not loaded.
    broken = tmp_path / "broken.html"
    first = re.search(r"base64,([^\"]{40})", page).group(1)
    broken.write_text(page.replace(first, "A" * 40, 1), encoding="utf-8")
    damaged = chromium.image_report(chromium_binary, broken, tmp_path)
    assert sum(i["w"] == 0 for i in damaged) == 1

    shot = chromium.screenshot(chromium_binary, html_file, tmp_path / "report.png",
                               tmp_path / "p2")
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 2400)
        pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    # Something was painted: many distinct colours, not a blank page.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    print(f"report screenshot: {shot}")


@pytest.mark.slow
def test_report_without_training_in_headless_chromium(page_no_training, chromium_binary,
                                                     tmp_path):
    html_file = tmp_path / "report.html"
    html_file.write_text(page_no_training, encoding="utf-8")
    text = chromium.page_text(chromium.dump_dom(chromium_binary, html_file, tmp_path / "p"))
    assert NO_TRAINING in text
    assert "PSI" not in text


def test_png_header_reader_matches_pillow(page):
    """png_sizes reads widths from the PNG header; cross-check it once with Pillow."""
    from PIL import Image

    b64 = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    with Image.open(io.BytesIO(base64.b64decode(b64[0]))) as img:
        assert img.size == png_sizes(page)[0]


def test_report_columns_exist_in_the_dataset():
    from tasks.read.query import dataset_schema

    assert set(REPORT_COLUMNS) <= set(dataset_schema(PREDICTIONS).names)


@pytest.mark.slow
def test_monitoring_section_in_headless_chromium(monitored_page, chromium_binary, tmp_path):
    html_file = tmp_path / "monitored.html"
    html_file.write_text(monitored_page, encoding="utf-8")
    text = chromium.page_text(chromium.dump_dom(chromium_binary, html_file, tmp_path / "p"))
    assert "Monitoring" in text and "4 runs" in text
    for title in MONITOR_TITLES:
        assert title in text
    images = chromium.image_report(chromium_binary, html_file, tmp_path)
    assert len(images) == 10 and all(i["complete"] and i["w"] > 0 for i in images), images
    assert [(i["w"], i["h"]) for i in images] == png_sizes(monitored_page)
