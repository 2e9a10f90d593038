"""The ``posebatch`` command: a Typer app whose commands live one module per group.

Command modules import nothing heavy at module level (no TensorFlow, no Prefect), so
``posebatch --help`` is instant; each command imports what it needs when it runs.
"""

from __future__ import annotations

import typer

from flows.cli import (
    alerts,
    classify,
    demo,
    diff,
    generate,
    label,
    ledger,
    models,
    monitor,
    ops,
    query,
    rescore,
    retrain,
)

app = typer.Typer(
    name="posebatch",
    help="Classify body poses from ViTPose heatmaps in batches, with Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,   # help texts are plain: "[default: x]" must print, not vanish
)

for module in (generate, classify, rescore, retrain, models, ledger, ops, query, diff, monitor,
               label, alerts, demo):
    module.register(app)


def main() -> None:
    from models.registry_store import RegistryError

    try:
        app()
    except RegistryError as exc:  # e.g. an s3:// registry unreachable: one line, not a trace
        import sys

        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
