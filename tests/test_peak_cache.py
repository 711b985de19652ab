"""The device peak cache never fails a measured cell (issue 18, item 9): a HOME that cannot be
written moves the cache to this user's temporary folder, and a cache that cannot be written
keeps the peak for this cell, saying so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aebench.bench.peak import Peak, _store, cache_path


def test_an_unwritable_cache_folder_falls_back_to_the_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.write_text("a file where a folder should be")
    monkeypatch.setenv("AEBENCH_CACHE", str(plain / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    assert cache_path() == tmp_path / "tmp" / f"aebench-{os.getuid()}" / "device_peaks.json"
    monkeypatch.delenv("AEBENCH_CACHE")
    monkeypatch.setenv("HOME", "/proc/nohome")  # the HOME
    assert cache_path().parent == tmp_path / "tmp" / f"aebench-{os.getuid()}"


def test_a_cache_that_cannot_be_written_keeps_the_peak_and_says_so(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("not a folder")
    peak = _store(plain / "device_peaks.json", "cpu|torch|float32|ieee-fp32", Peak(12.5, reason="first"), [])
    assert peak.gflops == 12.5 and peak.reason.startswith("first; not cached (")


def test_the_cache_is_never_written_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "device_peaks.json").symlink_to(victim)  # planted where the cache is kept
    peak = _store(folder / "device_peaks.json", "k", Peak(1.0), [])
    assert victim.read_text() == "keep me" and "not cached" in peak.reason and "link" in peak.reason
