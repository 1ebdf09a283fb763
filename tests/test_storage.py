"""amc_mobile.storage: atomic writes survive a full disk, one writer per lock, names that cannot escape."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from amc_mobile.errors import UserError
from amc_mobile.storage import ExclusiveLock, atomic_write_bytes, atomic_write_json, ensure_dir, safe_name


@pytest.fixture
def small_disk(tmp_path: Path):  # -> Iterator[Path]
    """A 64 KiB tmpfs: a real 'no space left on device' (needs root; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp_file(small_disk: Path) -> None:
    target = small_disk / "summary.json"
    atomic_write_json(target, {"episodes": 3})
    before = target.read_bytes()
    with pytest.raises(UserError, match="no space left on device"):
        atomic_write_bytes(target, b"x" * (512 * 1024))
    assert target.read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["summary.json"]


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    with ExclusiveLock(tmp_path / "table.csv", "latency table X"):
        with pytest.raises(UserError, match=rf"latency table X is in use by another process \(PID {os.getpid()}\)"):
            ExclusiveLock(tmp_path / "table.csv", "latency table X").acquire()
    with ExclusiveLock(tmp_path / "table.csv", "latency table X") as again:  # released: free again
        assert again.held


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "", "x" * 200, "-rf"])
def test_names_that_could_leave_their_folder_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="invalid device name"):
        safe_name(name, "device name")
    assert safe_name("pixel1-lab3_a.b", "device name") == "pixel1-lab3_a.b"


def test_an_output_directory_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="part of the path is a file|a file is in the way"):
        ensure_dir(tmp_path / "file" / "out")
