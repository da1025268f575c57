"""Shared fixtures: a tiny demo data set (the real generator at small size), a fast config, and the
uninterrupted runs the fault and lock tests compare with."""

import shutil
from pathlib import Path

import pytest

from cisctool.config import Config, load_config
from cisctool.data.demo import make_demo
from cisctool.steps.index import build_round_index
from cisctool.steps.train import train_round

from helpers import FAST_TRAINING, RECTIFY, WORKERS, cisctool


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, seed=1, num_labeled=8, num_unlabeled=6, num_val=4)
    return out


@pytest.fixture
def demo_config(demo_dir: Path, tmp_path: Path) -> Config:
    """The demo's own cisctool.toml, with outputs under tmp_path and a few fast steps."""
    return load_config(demo_dir / "cisctool.toml", {"workdir": str(tmp_path), **FAST_TRAINING})


@pytest.fixture(scope="session")
def trained_workdir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir holding round 0 trained for a few steps and its index; copy it before writing."""
    workdir = tmp_path_factory.mktemp("trained")
    config = load_config(demo_dir / "cisctool.toml", {"workdir": str(workdir), **FAST_TRAINING})
    train_round(config, device="cpu", resume=False)
    build_round_index(config, 0, "cpu")
    return workdir


@pytest.fixture(scope="session")
def reviewed_workdir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir holding a whole run of one round (train 0, index 0, rectify 1, train 1, metrics of both):
    what `report`, `export` and `data import` read. Copy it before writing."""
    from cisctool.steps.rectify import rectify_round
    from cisctool.steps.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("reviewed")
    config = load_config(demo_dir / "cisctool.toml", {"workdir": str(workdir), **FAST_TRAINING})
    train_and_evaluate(config, "cpu", resume=False)
    build_round_index(config, 0, "cpu")
    rectify_round(config, 1, "cpu")
    train_and_evaluate(config, "cpu", resume=False, round_index=1)
    return workdir


@pytest.fixture(scope="session")
def uninterrupted(trained_workdir: Path, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Round 0, its index, round 1's pseudo labels and round 0 trained again, each by an uninterrupted run."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    shutil.copytree(trained_workdir, workdir, dirs_exist_ok=True)
    config = demo_dir / "cisctool.toml"
    assert cisctool(workdir, config, *RECTIFY, settings=WORKERS).returncode == 0
    (workdir / "train").mkdir()
    assert cisctool(workdir / "train", config, "train", "--device", "cpu", settings=WORKERS).returncode == 0
    return workdir
