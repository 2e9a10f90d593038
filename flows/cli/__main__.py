"""``python -m flows.cli``: the same entry as the ``posebatch`` console script (tests use it)."""

from flows.cli import main

main()
