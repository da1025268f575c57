"""SIGTERM (a scheduler's preemption) at chosen points of training and rectify: the work so far is saved,
the command exits 143 with one line, and --resume ends where an uninterrupted run does, byte for byte.

The signal comes from `cisctool.faults` (CISCTOOL_FAULT="<point>:<n>:TERM"), sent by the process to itself.
"""

import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cisctool.config import Config, with_overrides
from cisctool.faults import FAULT_VARIABLE
from cisctool.method.signals import fixed_batches
from cisctool.preemption import Preempted
from cisctool.steps import rectify
from cisctool.steps.rectify import rectify_round
from cisctool.steps.train import train_round
from cisctool.store.checkpoints import load_checkpoint
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels, partial_path

from helpers import RECTIFY, WORKERS, assert_same_pseudo_labels, assert_same_weights, cisctool, one_error_line

CALIBRATION = len(fixed_batches(8, 2))  # the labeled images' calibration batches come before the split's 3


@contextmanager
def terminated_at(fault: str) -> Iterator[pytest.ExceptionInfo]:
    """Run the block with `CISCTOOL_FAULT=<fault>:TERM`; it must stop there with `Preempted`."""
    os.environ[FAULT_VARIABLE] = f"{fault}:TERM"
    try:
        with pytest.raises(Preempted) as caught:
            yield caught
    finally:
        del os.environ[FAULT_VARIABLE]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler lives only as long as the loop


# 4 steps, a checkpoint every 2: before the first checkpoint, between two, and inside one (saved at 2 anyway)
@pytest.mark.parametrize(("fault", "saved_step"), [("train-step:1", 1), ("train-step:3", 3), ("checkpoint-write:1", 2)])
def test_training_stopped_by_sigterm_saves_its_step_and_resumes_to_the_same_weights(
    demo_config: Config, tmp_path: Path, fault: str, saved_step: int
):
    whole = train_round(with_overrides(demo_config, {"workdir": str(tmp_path / "whole")}))
    stopped = with_overrides(demo_config, {"workdir": str(tmp_path / "stopped")})
    with terminated_at(fault) as caught:
        train_round(stopped)
    layout = RunLayout.of(stopped)
    assert f"stopped at step {saved_step} of 4, saved in {layout.last(0)}" in str(caught.value)
    assert load_checkpoint(layout.last(0))["step"] == saved_step and not layout.model(0).exists()
    resumed = train_round(stopped, resume=True)
    assert resumed.resumed_from == saved_step and resumed.steps == 4
    assert_same_weights(whole.model_path, resumed.model_path)


@pytest.fixture
def rectify_config(demo_config: Config, trained_workdir: Path, tmp_path: Path) -> Config:
    workdir = tmp_path / "work"
    shutil.copytree(trained_workdir, workdir)
    return with_overrides(demo_config, {"workdir": str(workdir), "rectify.batch_size": 2})


# before the split's first and second forward (that batch is still computed and written), and inside
# the writer thread's first write. The writer's queue holds one batch, so the main thread's second put
# waits for the first write and sees its SIGTERM with a batch still to compute, however slow the writer.
@pytest.mark.parametrize(("fault", "least_written"), [
    (f"forward:{CALIBRATION + 1}", 2), (f"forward:{CALIBRATION + 2}", 4), ("pseudo-write:1", 2),
])  # fmt: skip
def test_rectify_stopped_by_sigterm_flushes_its_queue_and_resumes_to_the_same_file_and_report(
    rectify_config: Config, tmp_path: Path, fault: str, least_written: int, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(rectify, "WRITER_QUEUE_BYTES", 1)
    whole_config = with_overrides(rectify_config, {"workdir": str(tmp_path / "whole")})
    shutil.copytree(Path(rectify_config.workdir), tmp_path / "whole")
    rectify_round(whole_config, 1, "cpu")
    final = RunLayout.of(rectify_config).pseudo(1)
    with terminated_at(fault) as caught:
        rectify_round(rectify_config, 1, "cpu")
    with PseudoLabels(partial_path(final), require_complete=False) as stored:
        written = int(stored.done.sum())
    assert least_written <= written < 6 and f"{written} of 6 images written to" in str(caught.value)
    assert not final.exists()
    resumed = rectify_round(rectify_config, 1, "cpu", resume=True)
    assert resumed.computed == 6 - written  # nothing the stopped run wrote is computed again
    assert_same_pseudo_labels(RunLayout.of(rectify_config).round_dir(1), RunLayout.of(whole_config).round_dir(1))


@pytest.mark.slow
def test_the_commands_exit_143_with_one_line_and_resume(trained_workdir: Path, demo_dir: Path, uninterrupted: Path,
                                                        tmp_path: Path):  # fmt: skip
    config = demo_dir / "cisctool.toml"
    train = cisctool(tmp_path, config, "train", "--device", "cpu", fault="train-step:3:TERM", settings=WORKERS)
    assert train.returncode == 143
    line = one_error_line(train)
    assert "preempted (SIGTERM): training stopped at step 3 of 4" in line and line.endswith(
        "rerun the same command with --resume to continue"
    )
    resumed = cisctool(tmp_path, config, "train", "--device", "cpu", "--resume", settings=WORKERS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(tmp_path / "runs/demo/round0/model.pt", uninterrupted / "train/runs/demo/round0/model.pt")

    workdir = tmp_path / "rectify"
    shutil.copytree(trained_workdir, workdir)
    stopped = cisctool(workdir, config, *RECTIFY, fault="forward:6:TERM", settings=WORKERS)
    assert stopped.returncode == 143 and "images written to" in one_error_line(stopped)
    resumed = cisctool(workdir, config, *RECTIFY, "--resume", settings=WORKERS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_pseudo_labels(workdir / "runs/demo/round1", uninterrupted / "runs/demo/round1")
