"""``--move-processed``: files leave the input for the archive, and the archive never
overwrites."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.classify.archive import archive_files, free_name
from tests.support.classify_support import write


def test_archive_never_overwrites_copies_of_one_name(tmp_path: Path) -> None:
    """Three files of one name archived within the same second: all three are kept."""
    inp, dest = tmp_path / "in", tmp_path / "archive"
    for k in range(3):
        write(inp / "b" / "x.npy", bytes([k]) * 10)
        assert archive_files(str(inp), str(dest), ["b/x.npy"], []) == 1
    kept = sorted(p.read_bytes()[0] for p in (dest / "b").iterdir())
    assert kept == [0, 1, 2]


def test_rejected_files_go_apart_and_gone_files_are_skipped(tmp_path: Path) -> None:
    inp, dest = tmp_path / "in", tmp_path / "archive"
    write(inp / "b" / "good.npy", b"g")
    write(inp / "b" / "bad.npy", b"b")
    assert archive_files(str(inp), str(dest), ["b/good.npy", "b/gone.npy"], ["b/bad.npy"]) == 2
    assert (dest / "b" / "good.npy").read_bytes() == b"g"
    assert (dest / "_rejected" / "b" / "bad.npy").read_bytes() == b"b"
    assert not list(inp.rglob("*.npy"))


def test_free_name_keeps_a_free_name_and_refuses_remote_archives(tmp_path: Path) -> None:
    assert free_name(tmp_path / "x.npy") == tmp_path / "x.npy"
    with pytest.raises(ValueError, match="local folders only"):
        archive_files("s3://bucket/in", str(tmp_path), ["a.npy"], [])
