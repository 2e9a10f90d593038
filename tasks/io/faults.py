"""Fault injection for the crash-safety tests: kill the process at a named point.

It lives in the I/O layer, below the ledger and the inference loop that call it, so both
stages share one hook and one environment variable (``POSEBATCH_CRASH_AT``).
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at the n-th time it reaches ``name``.

    ``POSEBATCH_CRASH_AT=recorded:2,batch:5`` kills at the second commit record or the fifth
    model batch, whichever comes first. Names may hold colons (``compact:removing``,
    ``fold:written:2``): only a numeric last field is the count. Unset (always, outside
    tests) it does nothing.
    """
    spec = os.environ.get("POSEBATCH_CRASH_AT")
    if not spec:
        return
    for item in spec.split(","):
        point, _, nth = item.strip().rpartition(":")
        if not nth.isdigit():
            point, nth = item.strip(), ""
        if point == name:
            _CRASH_COUNTS[name] = _CRASH_COUNTS.get(name, 0) + 1
            if _CRASH_COUNTS[name] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)


_CRASH_COUNTS: dict[str, int] = {}
