"""The retrain options' allowed values and their one check, shared by the CLI (before any
start-up cost) and the flow (a deployment run gets its parameters unchecked). No heavy
imports: the CLI's ``--help`` stays instant."""

from __future__ import annotations

from models.network import INPUT_MODES  # cheap: Keras is imported inside its functions

GROUP_RULES = ("subject", "prefix", "none")
PROMOTE_POLICIES = ("if-better", "always", "never")
SOURCES = ("auto", "synthetic", "none")
STRATEGIES = ("finetune", "mixed")


def check_retrain_options(promote: str, group_by: str, epochs: int, batch_size: int = 1,
                          source: str = "auto", strategy: str = "finetune",
                          input_mode: str = "raw") -> None:
    """Raise ValueError with a one-line message for a bad choice or count."""
    for flag, value, allowed in (("--source", source, SOURCES),
                                 ("--strategy", strategy, STRATEGIES),
                                 ("--input-mode", input_mode, INPUT_MODES)):
        if value not in allowed:
            raise ValueError(f"{flag} must be one of {', '.join(allowed)}")
    if promote not in PROMOTE_POLICIES:
        raise ValueError(f"--promote must be one of {', '.join(PROMOTE_POLICIES)}")
    if group_by not in GROUP_RULES:
        raise ValueError(f"--group-by must be one of {', '.join(GROUP_RULES)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("--epochs and --batch-size must be at least 1")
