"""Progress listeners: chunks reporting out of order add up, removers remove."""

from __future__ import annotations

from flows.runtime.progress import (
    FileProgress,
    Listeners,
    add_file_listener,
    report_files,
    start_files,
)


def test_chunks_reporting_out_of_order_add_up_to_the_files_done() -> None:
    seen: list[tuple[int, int]] = []
    listeners = Listeners()
    remove = listeners.add(lambda done, total: seen.append((done, total)))
    progress = FileProgress(listeners, total=10)
    progress.update(1, 3)
    progress.update(0, 4)
    progress.update(1, 2)   # a stale report never moves the count back
    assert seen == [(3, 10), (7, 10), (7, 10)]
    remove()
    assert listeners.emit(1, 1) is False


def test_the_classify_counter_reaches_its_listener_until_removed() -> None:
    seen: list[tuple[int, int]] = []
    remove = add_file_listener(lambda done, total: seen.append((done, total)))
    start_files(5)
    report_files(0, 5)
    remove()
    report_files(1, 1)
    assert seen == [(5, 5)]
