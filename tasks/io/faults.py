"""Fault injection for the crash-safety tests: kill the process at a named point.

It lives in the I/O layer, below the ledger and the inference loop that call it, so both
stages share one hook. The CLI and the classify flow arm it from the settings
(``POSEBATCH_CRASH_AT``); tasks never read the environment themselves.
"""

from __future__ import annotations

import os
import signal

_ARMED: dict[str, int] = {}       # point -> the visit that kills
_CRASH_COUNTS: dict[str, int] = {}


def arm(spec: str) -> None:
    """Kill at the n-th visit of each named point: ``"recorded:2,batch:5"`` kills at the
    second commit record or the fifth model batch, whichever comes first. Names may hold
    colons (``compact:removing``, ``fold:written:2``): only a numeric last field is the
    count. ``""`` disarms (always, outside tests)."""
    _ARMED.clear()
    _CRASH_COUNTS.clear()
    for item in filter(None, (x.strip() for x in spec.split(","))):
        point, _, nth = item.rpartition(":")
        if not nth.isdigit():
            point, nth = item, ""
        _ARMED[point] = int(nth or 1)


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at the armed visit of ``name``; nothing otherwise."""
    if name not in _ARMED:
        return
    _CRASH_COUNTS[name] = _CRASH_COUNTS.get(name, 0) + 1
    if _CRASH_COUNTS[name] == _ARMED[name]:
        os.kill(os.getpid(), signal.SIGKILL)
