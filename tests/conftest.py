"""Shared fixtures: a tiny demo data set (the real generator at small size) and a fast config."""

from pathlib import Path

import pytest

from cisctool.config import Config, load_config
from cisctool.data.demo import make_demo

FAST_TRAINING = {
    "model.backbone": "tiny",
    "model.pretrained": "",
    "train.max_steps": 4,
    "train.batch_size": 4,
    "train.crop_size": 64,
    "train.workers": 0,
    "train.checkpoint_every": 2,
    "train.log_every": 1,
    "eval.batch_size": 4,
}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, seed=1, num_labeled=8, num_unlabeled=6, num_val=4)
    return out


@pytest.fixture
def demo_config(demo_dir: Path, tmp_path: Path) -> Config:
    """The demo's own cisctool.toml, with outputs under tmp_path and a few fast steps."""
    return load_config(demo_dir / "cisctool.toml", {"workdir": str(tmp_path), **FAST_TRAINING})
