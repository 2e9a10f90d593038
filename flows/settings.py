"""One typed settings object for the whole project, read at the edges (CLI, flows).

Every value can be overridden by an environment variable ``POSEBATCH_<NAME>`` (for example
``POSEBATCH_DATA_ROOT=/srv/poses``); CLI options override both. Tasks and models never read
settings: they receive plain arguments, which keeps them testable without an environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSEBATCH_", extra="ignore")

    data_root: Path = Path("data")
    batch_size: int = 256
    quiet_seconds: float = 5.0
    max_frames_per_file: int = 4096
    timezone: str = "UTC"
    nightly_cron: str = "0 2 * * *"
    promotion_margin: float = 0.0
    low_confidence: float = 0.5
    # Monitoring (tasks/monitor, docs/monitoring.md): a run alerts when a drift score (PSI of
    # the class mix, of the joints' peak heights or of the confidences against the model's
    # training reference) exceeds monitor_psi_threshold (0.25: the usual "major shift"
    # band), or when its label-free accuracy estimate falls below monitor_min_est_accuracy
    # (0.85: the robustness suite's target for data shifted 2x).
    monitor_psi_threshold: float = 0.25
    monitor_min_est_accuracy: float = 0.85
    # Alerts (flows/runtime/alerts.py, `posebatch alerts apply`): Prefect automations notify
    # through a notification block: a generic webhook block that `alerts apply` creates from
    # alert_webhook_url, or an existing block named by alert_block ("slack-webhook/ops",
    # "sendgrid-email/oncall": any Prefect notification block, made in the UI or in code).
    # alert_absence_hours: no Completed classify run for this long notifies (26 h: a nightly
    # run plus two hours of slack; the server's minimum is 10 seconds).
    alert_webhook_url: str = ""
    alert_block: str = ""
    alert_webhook_block: str = "posebatch-alerts"   # name of the block `apply` writes
    alert_absence_hours: float = 26.0
    telemetry: bool = False
    # Training (flows/retrain.py, tasks/adapt): the CNN's input mode ("raw" or "canonical":
    # decoded and redrawn, models/network.py); a floor on optimizer steps, so a small folder
    # trains as long as it needs; our generator as a source domain below transfer_below
    # frames a class (synthetic_per_class frames a class, cached under DATA/cache), by
    # transfer_strategy ("finetune" or "mixed"); adaptation to what was
    # classified in the last adapt_days (at most adapt_max_frames frames).
    input_mode: str = "raw"
    min_train_steps: int = 800
    transfer_below: int = 200
    transfer_strategy: str = "mixed"
    synthetic_per_class: int = 150
    adapt_days: float = 7.0
    adapt_max_frames: int = 4096
    adapt_round_steps: int = 300       # optimizer steps per self-training round
    label_audit: bool = True           # retrain audits its labeled folder (tasks/label)
    # classification's work units and output upkeep
    chunk_files: int = 2048            # files per classify-chunk task: a few thousand frames
    chunk_bytes: int = 512 << 20       # and at most this much input per chunk
    compact_above: int = 32            # compact a day partition holding more parts than this
    backlog_max_age_hours: float = 26  # doctor: a complete batch waiting longer is a problem
    fold_at: int = 16                  # fold ledger records into a segment at this many
    lease_seconds: float = 60.0        # an s3:// output's writer lease lives this long
                                       # unrenewed (tasks/classify/lease.py)
    # runtime switches
    xla: bool = False                  # XLA-compile the model (POSEBATCH_XLA=1; see infer.py)
    # the inference engine of classify and rescore: auto (ONNX Runtime when the version has a
    # verified model.onnx, else Keras), keras or onnx (tasks/classify/engine.py)
    engine: Literal["auto", "keras", "onnx"] = "auto"
    early_server: bool = True          # start Prefect's server while the CLI imports
    crash_at: str = ""                 # tests only: "recorded:2,batch:5" (tasks/io/faults.py)

    @field_validator("data_root", mode="before")
    @classmethod
    def _local_data_root(cls, value: object) -> object:
        """The data root is a local folder: a URL is refused, never turned into a folder
        named ``s3:`` (put input, output or registry on object storage by their options)."""
        text = str(value)
        scheme = text.split("://", 1)[0] if "://" in text else ""
        if len(scheme) > 1:
            raise ValueError(f"data root {text} is a URL; it must be a local folder")
        return value

    # Everything lives under one data root; these are the conventional sub-folders.
    @property
    def labeled_dir(self) -> Path:
        return self.data_root / "labeled"

    @property
    def incoming_dir(self) -> Path:
        return self.data_root / "incoming"

    @property
    def output_dir(self) -> Path:
        return self.data_root / "output"

    @property
    def registry_dir(self) -> Path:
        return self.data_root / "registry"

    @property
    def state_dir(self) -> Path:
        return self.data_root / "state"

    @property
    def cache_dir(self) -> Path:
        return self.data_root / "cache"

    @property
    def prefect_home(self) -> Path:
        return self.data_root / "prefect"


def get_settings(data_root: Path | str | None = None) -> Settings:
    """Settings from the environment, with an optional ``--data`` override."""
    settings = Settings()
    if data_root is not None:
        settings = settings.model_copy(update={"data_root": Path(data_root)})
    return settings


def configure_prefect_env(settings: Settings) -> None:
    """Point Prefect at a home under the data root and keep telemetry off.

    Must run before ``prefect`` is imported. Values the user already exported win, so a
    user who runs against their own Prefect server (``PREFECT_API_URL``) keeps it.
    """
    home = settings.prefect_home.resolve()
    os.environ.setdefault("PREFECT_HOME", str(home))
    if not settings.telemetry:
        os.environ.setdefault("DO_NOT_TRACK", "1")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
