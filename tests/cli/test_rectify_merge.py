"""`rectify --shard I/N` then `--merge` through the CLI: a virtual pseudo.h5 every command reads, wherever
the run folder goes, and a deleted shard named in one line."""

import json
import shutil
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from cisctool.cli.main import main

from helpers import FAST_TRAINING, assert_same_datasets


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def workdir(trained_workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the trained round 0 and its index, as the current directory."""
    shutil.copytree(trained_workdir, tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "work"


def cli(demo_dir: Path, workdir: Path, *args: str) -> list[str]:
    settings = [part for key, value in FAST_TRAINING.items() for part in ("--set", f"{key}={json.dumps(value)}")]
    return ["--config", str(demo_dir / "cisctool.toml"), *settings, "--set", f"workdir={json.dumps(str(workdir))}",
            *args]  # fmt: skip


def test_shards_merged_virtually_read_everywhere_and_a_deleted_shard_is_refused(
    demo_dir: Path, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rectify = ["rectify", "--round", "1", "--batch-size", "2", "--device", "cpu"]
    for shard in range(4):  # 3 batches in 4 shards: one shard holds none
        assert run(*cli(demo_dir, workdir, *rectify, "--shard", f"{shard}/4")).exit_code == 0
    result = run(*cli(demo_dir, workdir, *rectify, "--copy"))
    assert result.exit_code == 2 and "only with --merge" in result.output
    result = run(*cli(demo_dir, workdir, *rectify, "--merge", "--copy"))
    assert result.exit_code == 0, result.output
    round1 = workdir / "runs/demo/round1"
    copied = round1 / "copied.h5"
    (round1 / "pseudo.h5").rename(copied)
    result = run(*cli(demo_dir, workdir, *rectify, "--merge"))
    assert result.exit_code == 0 and "(merged)" in result.output, result.output
    with h5py.File(round1 / "pseudo.h5", "r") as merged, h5py.File(copied, "r") as whole:
        assert merged["label"].is_virtual and not whole["label"].is_virtual
    assert_same_datasets(round1 / "pseudo.h5", copied)

    moved = tmp_path / "moved"  # the run folder elsewhere, read from another working directory
    shutil.move(workdir, moved)
    monkeypatch.chdir(tmp_path)
    result = run(*cli(demo_dir, moved, "eval", "--round", "1", "--split", "pseudo", "--json", "scores.json"))
    assert result.exit_code == 0, result.output
    assert run(*cli(demo_dir, moved, "export", "--round", "1", "--out", "png")).exit_code == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 6

    (moved / "runs/demo/round1/pseudo.shard1of4.h5").unlink()
    result = run(*cli(demo_dir, moved, "eval", "--round", "1", "--split", "pseudo", "--json", "again.json"))
    line = result.output.strip().replace("\n", "")
    assert result.exit_code == 2 and "pseudo.shard1of4.h5: missing; pseudo.h5 reads its pixels from it" in line
    assert "--merge --force" in line and "Traceback" not in result.output
