"""Real processes killed (SIGKILL) or interrupted (SIGINT) at chosen points, then rerun.

The fault points come from `cisctool.faults` (CISCTOOL_FAULT="<point>:<n>"). Every
run here uses the same thread count, so a resumed run can be compared with an
uninterrupted one value for value.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cisctool.checkpoint import load_checkpoint

from conftest import FAST_TRAINING


def cisctool(workdir: Path, config: Path, *args: str, fault: str = "") -> subprocess.CompletedProcess:
    settings = [arg for key, value in {**FAST_TRAINING, "rectify.batch_size": 2}.items()
                for arg in ("--set", f"{key}={json.dumps(value)}")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CISCTOOL_FAULT": fault}
    command = [sys.executable, "-m", "cisctool", "--config", str(config), *settings,
               "--set", f"workdir={json.dumps(str(workdir))}", *args]  # fmt: skip
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300, env=env)


def datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {name: handle[name][:] for name in handle}


def assert_same_datasets(first: Path, second: Path) -> None:
    one, two = datasets(first), datasets(second)
    assert one.keys() == two.keys()
    for name in one:
        assert np.array_equal(one[name], two[name], equal_nan=one[name].dtype.kind == "f"), name


def assert_same_weights(first: Path, second: Path) -> None:
    expected, actual = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=0, atol=0, msg=key)


@pytest.fixture
def workdirs(trained_workdir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of a trained round 0 and its index: one to break, one for the uninterrupted run."""
    for name in ("broken", "whole"):
        shutil.copytree(trained_workdir, tmp_path / name)
    return tmp_path / "broken", tmp_path / "whole"


# forward: 4 calibration batches over the labeled images come first, so forward:6 is unlabeled batch 2
@pytest.mark.parametrize("fault", ["forward:6", "pseudo-write:2"])
def test_rectify_killed_then_resumed_writes_the_uninterrupted_file(workdirs, demo_dir: Path, fault: str):
    broken, whole = workdirs
    config = demo_dir / "cisctool.toml"
    rectify = ["rectify", "--round", "1", "--device", "cpu"]
    killed = cisctool(broken, config, *rectify, fault=fault)
    assert killed.returncode == -signal.SIGKILL
    round1 = broken / "runs/demo/round1"
    assert not (round1 / "pseudo.h5").exists() and (round1 / "pseudo.partial.h5").exists()
    training = cisctool(broken, config, "train", "--round", "1", "--device", "cpu")
    assert training.returncode == 2 and "unfinished" in training.stderr  # never trained on
    assert cisctool(broken, config, *rectify, "--resume").returncode == 0
    assert cisctool(whole, config, *rectify).returncode == 0
    assert_same_datasets(round1 / "pseudo.h5", whole / "runs/demo/round1/pseudo.h5")
    assert not list(round1.glob("*partial*")) and not list(round1.glob(".*.tmp"))


@pytest.mark.parametrize("fault", ["train-step:3", "checkpoint-write:2"])
def test_training_killed_then_resumed_equals_the_uninterrupted_run(tmp_path: Path, demo_dir: Path, fault: str):
    config = demo_dir / "cisctool.toml"
    for name in ("broken", "whole"):
        (tmp_path / name).mkdir()
    killed = cisctool(tmp_path / "broken", config, "train", "--device", "cpu", fault=fault)
    assert killed.returncode == -signal.SIGKILL
    round0 = tmp_path / "broken/runs/demo/round0"
    assert not (round0 / "model.pt").exists()
    assert load_checkpoint(round0 / "last.pt")["step"] == 2  # the last whole checkpoint
    if fault.startswith("checkpoint-write"):
        assert list(round0.glob(".last.pt.*.tmp"))  # the half-written one, under a name nothing reads
    assert cisctool(tmp_path / "broken", config, "train", "--resume", "--device", "cpu").returncode == 0
    assert not list(round0.glob(".*.tmp"))  # the killed writer's leftover is gone
    assert cisctool(tmp_path / "whole", config, "train", "--device", "cpu").returncode == 0
    assert_same_weights(round0 / "model.pt", tmp_path / "whole/runs/demo/round0/model.pt")


def test_ctrl_c_exits_cleanly_and_leaves_a_resumable_state(workdirs, demo_dir: Path):
    broken, whole = workdirs
    config = demo_dir / "cisctool.toml"
    rectify = ["rectify", "--round", "1", "--device", "cpu"]
    interrupted = cisctool(broken, config, *rectify, fault="forward:6:INT")
    assert interrupted.returncode == 130
    assert interrupted.stderr.strip().splitlines() == [
        "Error: interrupted; finished files are intact, rerun with --resume to continue"
    ]
    assert cisctool(broken, config, *rectify, "--resume").returncode == 0
    assert cisctool(whole, config, *rectify).returncode == 0
    assert_same_datasets(broken / "runs/demo/round1/pseudo.h5", whole / "runs/demo/round1/pseudo.h5")


@pytest.mark.parametrize("fault", ["forward:6", "train-step:5"])
def test_run_killed_anywhere_then_rerun_completes_the_same_rounds(tmp_path: Path, demo_dir: Path, fault: str):
    config = demo_dir / "cisctool.toml"
    for name in ("broken", "whole"):
        (tmp_path / name).mkdir()
    # train-step:5 is round 1's first step (round 0 has 4); forward:6 is rectify 1's second batch
    killed = cisctool(tmp_path / "broken", config, "run", "--rounds", "1", "--device", "cpu", fault=fault)
    assert killed.returncode == -signal.SIGKILL
    assert cisctool(tmp_path / "broken", config, "run", "--rounds", "1", "--device", "cpu").returncode == 0
    assert cisctool(tmp_path / "whole", config, "run", "--rounds", "1", "--device", "cpu").returncode == 0
    for round_index in (0, 1):
        model = f"runs/demo/round{round_index}/model.pt"
        assert_same_weights(tmp_path / "broken" / model, tmp_path / "whole" / model)
    assert_same_datasets(tmp_path / "broken/runs/demo/round1/pseudo.h5", tmp_path / "whole/runs/demo/round1/pseudo.h5")
