"""Running the installed `cisctool` as a real process, and comparing what two runs wrote."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cisctool.faults import FAULT_VARIABLE, InjectedFault
from cisctool.store.checkpoints import load_checkpoint

FAST_TRAINING = {
    "model.backbone": "tiny",
    "model.pretrained": "",
    "train.max_steps": 4,
    "train.round_max_steps": 2,
    "train.batch_size": 4,
    "train.crop_size": 64,
    "train.workers": 0,
    "train.checkpoint_every": 2,
    "train.log_every": 1,
    "eval.batch_size": 4,
    "rectify.tta_scales": [0.5, 1.0],  # TTA on (the default) but cheap: 2 scales × flip
}
WORKERS = {"train.workers": 1}
RECTIFY = ["rectify", "--round", "1", "--device", "cpu"]
TIMING = ("seconds", "images_per_second", "computed_this_run", "file")


def fast_project(demo_dir: Path, data: Path) -> Path:
    """A copy of the demo data at `data` whose own cisctool.toml carries FAST_TRAINING: for tests that
    pass the file to `--config` and break its text, as a user's file would be. Returns the config."""
    shutil.copytree(demo_dir, data)
    config = data / "cisctool.toml"
    tables = tomllib.loads(config.read_text())
    for dotted, value in FAST_TRAINING.items():
        section, key = dotted.split(".")
        tables.setdefault(section, {})[key] = value
    lines = [f"{key} = {json.dumps(value)}" for key, value in tables.items() if not isinstance(value, dict)]
    for section, table in tables.items():
        if isinstance(table, dict):
            lines += ["", f"[{section}]", *(f"{key} = {json.dumps(value)}" for key, value in table.items())]
    config.write_text("\n".join(lines) + "\n")
    return config


def snapshot(root: Path, *folders: str) -> dict[str, str]:
    """sha256 of every file under root's `folders` (all of root when none), by path relative to root:
    what a refused command must leave as it was."""
    paths = [path for folder in folders or (".",) for path in sorted((root / folder).rglob("*")) if path.is_file()]
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def cisctool_command(workdir: Path, config: Path, *args: str, settings: dict | None = None) -> list[str]:
    overrides = [arg for key, value in {**FAST_TRAINING, "rectify.batch_size": 2, **(settings or {})}.items()
                 for arg in ("--set", f"{key}={json.dumps(value)}")]  # fmt: skip
    return [sys.executable, "-m", "cisctool", "--config", str(config), *overrides,
            "--set", f"workdir={json.dumps(str(workdir))}", *args]  # fmt: skip


@contextmanager
def crash_at(fault: str) -> Iterator[None]:
    """Run the block in this process with `CISCTOOL_FAULT=<fault>:RAISE`; it must crash there."""
    os.environ[FAULT_VARIABLE] = f"{fault}:RAISE"
    try:
        with pytest.raises(InjectedFault):
            yield
    finally:
        del os.environ[FAULT_VARIABLE]


def fault_environment(fault: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CISCTOOL_FAULT": fault}


def cisctool(
    workdir: Path, config: Path, *args: str, fault: str = "", settings: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `cisctool` and wait for that process alone: its output goes to files, not pipes, so a
    killed run's orphans (which would keep a pipe open) cannot delay the next command."""
    command = cisctool_command(workdir, config, *args, settings=settings)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=err, text=True,
                                   env=fault_environment(fault))  # fmt: skip
        returncode = process.wait(timeout=300)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, returncode, out.read(), err.read())


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


def assert_same_pseudo_labels(first: Path, second: Path) -> None:
    """Two round folders hold the same `pseudo.h5`, value for value, and the same quality report (timings
    aside): what a stopped, killed or resumed rectify must end with."""
    assert_same_datasets(first / "pseudo.h5", second / "pseudo.h5")
    assert quality_report(first / "pseudo_quality.json") == quality_report(second / "pseudo_quality.json")


def assert_same_weights(first: Path, second: Path) -> None:
    expected, actual = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=0, atol=0, msg=key)


def running(workdir: Path, config: Path, *args: str, fault: str = "", settings: dict | None = None) -> subprocess.Popen:
    """`cisctool` started in the background (stdout and stderr captured)."""
    command = cisctool_command(workdir, config, *args, settings=settings)
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=fault_environment(fault))  # fmt: skip

