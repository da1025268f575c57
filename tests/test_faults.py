"""Real processes killed (SIGKILL), interrupted (SIGINT) or out of disk at chosen points, then rerun.

The fault points come from `cisctool.faults` (CISCTOOL_FAULT="<point>:<n>[:KIND]").
Every run here uses the same thread count, so a resumed run can be compared with
an uninterrupted one value for value. Reruns follow the killed run at once, as a
scheduler's requeue does, with DataLoader workers (`WORKERS`) that must not
outlive their parent or keep its files.
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


WORKERS = {"train.workers": 1}
RECTIFY = ["rectify", "--round", "1", "--device", "cpu"]
TIMING = ("seconds", "images_per_second", "computed_this_run", "file")


def cisctool_command(workdir: Path, config: Path, *args: str, settings: dict | None = None) -> list[str]:
    overrides = [arg for key, value in {**FAST_TRAINING, "rectify.batch_size": 2, **(settings or {})}.items()
                 for arg in ("--set", f"{key}={json.dumps(value)}")]  # fmt: skip
    return [sys.executable, "-m", "cisctool", "--config", str(config), *overrides,
            "--set", f"workdir={json.dumps(str(workdir))}", *args]  # fmt: skip


def fault_environment(fault: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CISCTOOL_FAULT": fault}


def cisctool(
    workdir: Path, config: Path, *args: str, fault: str = "", settings: dict | None = None
) -> subprocess.CompletedProcess:
    command = cisctool_command(workdir, config, *args, settings=settings)
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300,
                          env=fault_environment(fault))  # fmt: skip


def one_error_line(completed: subprocess.CompletedProcess) -> str:
    """The run's only stderr line, which must be an `Error: …` line."""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), completed.stderr[-2000:]
    return lines[0]


def quality_report(path: Path) -> str:
    """The quality report without its timings, as canonical JSON (NaN compares equal to NaN)."""
    report = {key: value for key, value in json.loads(path.read_text()).items() if key not in TIMING}
    return json.dumps(report, sort_keys=True)


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


@pytest.fixture(scope="module")
def uninterrupted(trained_workdir: Path, demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Round 0, its index, round 1's pseudo labels and round 0 trained again, each by an uninterrupted run."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    shutil.copytree(trained_workdir, workdir, dirs_exist_ok=True)
    config = demo_dir / "cisctool.toml"
    assert cisctool(workdir, config, *RECTIFY, settings=WORKERS).returncode == 0
    (workdir / "train").mkdir()
    assert cisctool(workdir / "train", config, "train", "--device", "cpu", settings=WORKERS).returncode == 0
    return workdir


# forward: 4 calibration batches over the labeled images come first, so forward:6 is unlabeled batch 2;
# pseudo-write:3 dies inside the last batch's write, with the other two batches done
@pytest.mark.parametrize("fault", ["forward:6", "pseudo-write:2", "pseudo-write:3"])
def test_rectify_killed_then_resumed_at_once_writes_and_reports_the_uninterrupted_file(
    workdirs, demo_dir: Path, uninterrupted: Path, fault: str
):
    broken, _ = workdirs
    config = demo_dir / "cisctool.toml"
    killed = cisctool(broken, config, *RECTIFY, fault=fault, settings=WORKERS)
    assert killed.returncode == -signal.SIGKILL
    resumed = cisctool(broken, config, *RECTIFY, "--resume", settings=WORKERS)  # no pause: a requeue
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    round1, whole = broken / "runs/demo/round1", uninterrupted / "runs/demo/round1"
    assert_same_datasets(round1 / "pseudo.h5", whole / "pseudo.h5")
    assert quality_report(round1 / "pseudo_quality.json") == quality_report(whole / "pseudo_quality.json")
    assert not list(round1.glob("*partial*")) and not list(round1.glob(".*.tmp"))


def test_an_unfinished_pseudo_file_is_never_trained_on(workdirs, demo_dir: Path):
    broken, _ = workdirs
    config = demo_dir / "cisctool.toml"
    assert cisctool(broken, config, *RECTIFY, fault="forward:6").returncode == -signal.SIGKILL
    round1 = broken / "runs/demo/round1"
    assert not (round1 / "pseudo.h5").exists() and (round1 / "pseudo.partial.h5").exists()
    training = cisctool(broken, config, "train", "--round", "1", "--device", "cpu")
    assert training.returncode == 2 and "unfinished" in one_error_line(training)


# 4 steps, a checkpoint every 2: killed before the first checkpoint, after it, and inside the second
@pytest.mark.parametrize(("fault", "saved_step"), [("train-step:1", None), ("train-step:3", 2), ("checkpoint-write:2", 2)])
def test_training_killed_then_resumed_at_once_equals_the_uninterrupted_run(
    tmp_path: Path, demo_dir: Path, uninterrupted: Path, fault: str, saved_step: int | None
):
    config = demo_dir / "cisctool.toml"
    killed = cisctool(tmp_path, config, "train", "--device", "cpu", fault=fault, settings=WORKERS)
    assert killed.returncode == -signal.SIGKILL
    round0 = tmp_path / "runs/demo/round0"
    assert not (round0 / "model.pt").exists()
    if saved_step is not None:
        assert load_checkpoint(round0 / "last.pt")["step"] == saved_step  # the last whole checkpoint
    if fault.startswith("checkpoint-write"):
        assert list(round0.glob(".last.pt.*.tmp"))  # the half-written one, under a name nothing reads
    resumed = cisctool(tmp_path, config, "train", "--resume", "--device", "cpu", settings=WORKERS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(round0.glob(".*.tmp"))  # the killed writer's leftover is gone
    assert_same_weights(round0 / "model.pt", uninterrupted / "train/runs/demo/round0/model.pt")


def test_ctrl_c_exits_cleanly_and_leaves_a_resumable_state(workdirs, demo_dir: Path, uninterrupted: Path):
    broken, _ = workdirs
    config = demo_dir / "cisctool.toml"
    interrupted = cisctool(broken, config, *RECTIFY, fault="forward:6:INT")
    assert interrupted.returncode == 130
    assert one_error_line(interrupted) == "Error: interrupted; finished files are intact, rerun with --resume to continue"
    assert cisctool(broken, config, *RECTIFY, "--resume").returncode == 0
    assert_same_datasets(broken / "runs/demo/round1/pseudo.h5", uninterrupted / "runs/demo/round1/pseudo.h5")


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
