"""Our generator as a source domain: when it is used, and its frames cached on disk.

Why: a team's own labeled folder is small (tens of frames a class), and a CNN trained on
it alone learns almost nothing; the same frames added to our synthetic ones beat either
alone. So below ``transfer_below`` frames a class (a setting), ``retrain`` uses the generator as a
source domain (``--source auto``, the default); ``--source synthetic|none`` chooses by hand.

The frames are written once per generator setting under the data root
(``cache/synthetic/<key>/labeled/<class>/<person>/...``, with ``settings.json``), so they
read like any labeled folder, stream from disk like one, and are recorded in the model's
metadata by their settings and count. Written to a temporary folder and renamed, so a run
killed while writing never leaves half a cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.spec import class_names as spec_class_names
from models.spec import spec_version
from tasks.train.choices import SOURCES

SYNTH_PER_CLASS = 150  # the synthetic set: the robustness suite's training size
SYNTH_SEED = 0


def synthetic_settings(per_class: int = SYNTH_PER_CLASS, seed: int = SYNTH_SEED
                       ) -> dict[str, Any]:
    """What the cached frames are: the generator's defaults (never eased), a size and a seed."""
    return {"generator": "tasks.synth.generate.generate_dataset", "nuisance": "defaults",
            "per_class": int(per_class), "seed": int(seed), "spec_version": spec_version()}


def settings_key(settings: dict[str, Any]) -> str:
    """A short, stable name for a settings dict (a cache folder's name)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def choose_source(requested: str, class_names: Sequence[str], frames_per_class: Sequence[int],
                  below: int) -> tuple[str, str]:
    """``(synthetic | none, why)`` for one retrain.

    ``auto`` transfers when the smallest class has fewer than ``below`` frames (or there
    are no labeled frames at all) and every class is one the generator draws; ``synthetic``
    insists, and a class the generator does not know is then an error."""
    if requested not in SOURCES:
        raise ValueError(f"--source must be one of {', '.join(SOURCES)}")
    if requested == "none":
        return "none", "--source none"
    unknown = sorted(set(class_names) - set(spec_class_names()))
    if unknown:
        if requested == "synthetic":
            raise ValueError(f"--source synthetic: the generator does not draw class(es) "
                             f"{', '.join(unknown[:5])}")
        return "none", f"class(es) the generator does not draw: {', '.join(unknown[:5])}"
    if requested == "synthetic":
        return "synthetic", "--source synthetic"
    smallest = min(frames_per_class) if len(frames_per_class) else 0
    if smallest < below:
        return "synthetic", (f"the smallest class has {smallest} labeled frame(s), fewer "
                             f"than {below}: our generator is used as a source domain")
    return "none", f"every class has at least {below} labeled frames"


def synthetic_folder(cache_root: Path | str, settings: dict[str, Any]) -> Path:
    """The labeled folder of the cached synthetic frames, generated on first use."""
    from tasks.synth.generate import generate_dataset

    root = Path(cache_root) / "synthetic" / settings_key(settings)
    if (root / "settings.json").is_file():
        return root / "labeled"
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root.parent))
    try:
        generate_dataset(tmp, settings["per_class"], settings["seed"])
        (tmp / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
        try:
            tmp.rename(root)
        except OSError:  # another run cached the same settings meanwhile: use theirs
            if not (root / "settings.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "labeled"
