"""The crash hook: armed from the settings, it kills at the n-th visit, and only then."""

from __future__ import annotations

import signal
import subprocess
import sys

from tasks.io import faults

SCRIPT = """
from tasks.io import faults
faults.arm("staged:3")
for i in range(5):
    faults.crash_point("recorded")
    faults.crash_point("staged")
    print(i, flush=True)
"""


def test_an_armed_point_kills_the_process_at_its_nth_visit() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == ["0", "1"]


def test_disarmed_points_do_nothing() -> None:
    faults.arm("")
    for _ in range(3):
        faults.crash_point("staged")
    faults.arm("staged:2")
    faults.crash_point("staged")   # the first visit of two: still alive
    faults.arm("")                 # and re-arming resets the count


def test_point_names_may_hold_colons_and_only_a_numeric_last_field_counts() -> None:
    faults.arm("fold:written,compact:removing:3")
    assert faults._ARMED == {"fold:written": 1, "compact:removing": 3}
    faults.arm("")
