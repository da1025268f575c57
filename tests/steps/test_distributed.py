"""Two gloo processes on CPU through torchrun: training runs, and resumes exactly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cisctool.data.datasets import SeededSampler
from cisctool.faults import FAULT_VARIABLE
from cisctool.store.checkpoints import load_checkpoint

from helpers import FAST_TRAINING

SCRIPT = """
import json, sys
from cisctool.config import load_config
from cisctool.steps.train import train_round
config_path, workdir, resume = sys.argv[1:4]
config = load_config(config_path, {**json.loads(sys.argv[4]), "workdir": workdir})
train_round(config, 0, "cpu", resume=resume == "1")
"""


def torchrun(*args: str, cwd: Path, fault: str = "") -> subprocess.CompletedProcess:
    """Two processes of one thread each (what torchrun sets unless OMP_NUM_THREADS is set already, so the
    runs compare with one-thread runs wherever the tests run); without a fault they must succeed, with
    one (CISCTOOL_FAULT) they must fail."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **({FAULT_VARIABLE: fault} if fault else {})}
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=environment)
    assert (completed.returncode != 0) == bool(fault), completed.stderr[-3000:]
    return completed


def test_ranks_split_one_sample_stream():
    whole = list(SeededSampler(10, 0, 4, 24))
    ranks = [list(SeededSampler(10, 0, 4, 24, rank, 2)) for rank in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(whole) and not set(ranks[0]) & set(ranks[1])


@pytest.mark.slow
def test_two_process_training_resumes_to_the_uninterrupted_result(demo_dir: Path, tmp_path: Path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    config, fast = str(demo_dir / "cisctool.toml"), json.dumps(FAST_TRAINING)
    torchrun(str(script), config, str(tmp_path / "whole"), "0", fast, cwd=tmp_path)
    torchrun(str(script), config, str(tmp_path / "crashed"), "0", fast, cwd=tmp_path, fault="train-step:3")  # killed
    crashed = tmp_path / "crashed/runs/demo/round0"
    assert not (crashed / "model.pt").exists() and load_checkpoint(crashed / "last.pt")["step"] == 2
    torchrun(str(script), config, str(tmp_path / "crashed"), "1", fast, cwd=tmp_path)
    expected = load_checkpoint(tmp_path / "whole/runs/demo/round0/model.pt")["model"]
    actual = load_checkpoint(crashed / "model.pt")["model"]
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_the_cli_trains_under_torchrun_with_one_voice(demo_dir: Path, tmp_path: Path):
    settings = [arg for key, value in FAST_TRAINING.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    completed = torchrun("-m", "cisctool", "--config", str(demo_dir / "cisctool.toml"), "--set",
                         f"workdir={json.dumps(str(tmp_path))}", *settings, "train", "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "runs/demo/round0/model.pt").is_file()
    metrics = json.loads((tmp_path / "runs/demo/round0/metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["val"]["images"] == 4
    assert completed.stdout.count("training round 0") == 1  # rank 1 prints nothing


@pytest.mark.slow
def test_rectify_under_torchrun_shards_by_rank_and_merges(demo_dir: Path, trained_workdir: Path, tmp_path: Path):
    """Same values in every dataset as one process, with the same threads (torchrun sets OMP_NUM_THREADS=1);
    a rerun with --resume keeps the finished shards."""
    import shutil

    import h5py
    import numpy as np

    for name in ("single", "ranks"):
        shutil.copytree(trained_workdir, tmp_path / name)
    settings = [arg for key, value in {**FAST_TRAINING, "rectify.batch_size": 2}.items()
                for arg in ("--set", f"{key}={json.dumps(value)}")]  # fmt: skip
    command = ["-m", "cisctool", "--config", str(demo_dir / "cisctool.toml"), *settings]
    rectify = ["rectify", "--round", "1", "--device", "cpu"]
    single = subprocess.run(
        [sys.executable, *command, "--set", f"workdir={json.dumps(str(tmp_path / 'single'))}", *rectify],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    completed = torchrun(*command, "--set", f"workdir={json.dumps(str(tmp_path / 'ranks'))}", *rectify, cwd=tmp_path)
    assert "(merged)" in completed.stdout
    paths = [tmp_path / name / "runs/demo/round1/pseudo.h5" for name in ("single", "ranks")]
    with h5py.File(paths[0], "r") as expected, h5py.File(paths[1], "r") as actual:
        assert actual["label"].is_virtual and not expected["label"].is_virtual  # rank 0 merged as --merge does
        for name in expected:
            floats = expected[name].dtype.kind == "f"
            assert np.array_equal(actual[name][:], expected[name][:], equal_nan=floats), name
    # killed after every rank finished its shard, before the merge: --resume keeps the shards and merges
    shards = sorted(paths[1].parent.glob("pseudo.shard*of2.h5"))
    stamps = [(path.stat().st_ino, path.stat().st_mtime_ns) for path in shards]
    paths[1].unlink()
    resumed = torchrun(*command, "--set", f"workdir={json.dumps(str(tmp_path / 'ranks'))}", *rectify, "--resume",
                       cwd=tmp_path)  # fmt: skip
    assert "(merged)" in resumed.stdout and paths[1].is_file() and len(shards) == 2
    assert [(path.stat().st_ino, path.stat().st_mtime_ns) for path in shards] == stamps
