"""The benchmarks' record: where it goes, and that it names the command, commit and load it was measured with."""

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import records  # noqa: E402  (a script folder, not a package)


def test_record_names_command_commit_and_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CISCTOOL_RESULTS", str(tmp_path / "out"))
    monkeypatch.setattr(sys, "argv", [str(records.RESULTS.parent / "bench_train.py"), "--size", "voc", "--set", "a=b c"])
    written = records.write_record("train-voc", {"figures": {"steps": 3}})
    assert written.parent == tmp_path / "out" and written.name.startswith("train-voc-")
    record = json.loads(written.read_text())
    assert record["figures"] == {"steps": 3}
    assert record["command"] == "python benchmarks/bench_train.py --size voc --set 'a=b c'"
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    load = record["machine"]["load_average"]
    assert len(load["start"]) == 3 and len(load["end"]) == 3


def test_commit_falls_back_to_the_environment_without_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(records, "RESULTS", tmp_path / "benchmarks" / "results")  # no .git above it
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("CISCTOOL_COMMIT", "abc123")
    (tmp_path / "benchmarks").mkdir()
    assert records.current_commit() == "abc123"
