"""One writer per run folder, with real processes: a second writer is refused naming the first,
shards share the folder, a file another process holds is named with it, and workers die with
their parent. A first writer is frozen (SIGSTOP at a fault point) while the others try."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cisctool.store.locks import writing

from helpers import (
    RECTIFY,
    WORKERS,
    assert_same_datasets,
    assert_same_pseudo_labels,
    cisctool,
    one_error_line,
    running,
    snapshot,
)  # fmt: skip

pytestmark = pytest.mark.slow  # every test here starts processes

PATIENCE = 120.0  # seconds to wait for a process to reach a state; polled, never slept through


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def stopped(process: subprocess.Popen) -> bool:
    """True once the process froze itself (state T); fails if it exited instead."""
    assert process.poll() is None, process.communicate()[1][-2000:]
    return Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def workdir(trained_workdir: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained_workdir, tmp_path / "work")
    return tmp_path / "work"


def test_a_second_writer_is_refused_naming_the_first_whose_result_equals_a_lone_run(
    workdir: Path, demo_dir: Path, uninterrupted: Path
):
    config = demo_dir / "cisctool.toml"
    first = running(workdir, config, *RECTIFY, fault="forward:6:STOP", settings=WORKERS)
    try:
        wait_until(lambda: stopped(first), "the first rectify holds the folder, frozen mid-run")
        before = snapshot(workdir)
        for second in ([*RECTIFY, "--force"], ["train", "--device", "cpu"], ["run", "--rounds", "1"],
                       ["index", "build", "--device", "cpu"], [*RECTIFY, "--merge", "--force"]):  # fmt: skip
            refused = cisctool(workdir, config, *second)
            assert refused.returncode == 2, (second, refused.stderr[-2000:])
            line = one_error_line(refused)
            assert f"runs/demo: in use by pid {first.pid} (" in line and "rectify --round 1" in line, line
            assert "wait for it to finish, or stop it" in line
        assert snapshot(workdir) == before  # the refused ones changed nothing
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert finish(first).returncode == 0
    assert_same_pseudo_labels(workdir / "runs/demo/round1", uninterrupted / "runs/demo/round1")


def test_training_refuses_to_start_beside_a_running_training(tmp_path: Path, demo_dir: Path):
    config = demo_dir / "cisctool.toml"
    first = running(tmp_path, config, "train", "--device", "cpu", fault="train-step:2:STOP", settings=WORKERS)
    try:
        wait_until(lambda: stopped(first), "the first training is frozen after step 2")
        refused = cisctool(tmp_path, config, "train", "--resume", "--device", "cpu")
        assert refused.returncode == 2 and f"in use by pid {first.pid}" in one_error_line(refused)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert finish(first).returncode == 0


def test_shards_write_side_by_side_but_each_shard_once_and_merge_waits_for_them(
    workdir: Path, demo_dir: Path, uninterrupted: Path
):
    config = demo_dir / "cisctool.toml"
    # 3 batches: shard 0/2 computes batch 0, shard 1/2 batches 1 and 2; 4 calibration batches come first
    first = running(workdir, config, *RECTIFY, "--shard", "1/2", fault="forward:6:STOP", settings=WORKERS)
    try:
        wait_until(lambda: stopped(first), "shard 1/2 is frozen mid-run")
        beside = cisctool(workdir, config, *RECTIFY, "--shard", "0/2")
        assert beside.returncode == 0, beside.stderr[-2000:]
        again = cisctool(workdir, config, *RECTIFY, "--shard", "1/2", "--force")
        assert again.returncode == 2 and f"(round1-shard1of2): in use by pid {first.pid}" in one_error_line(again)
        for other in ([*RECTIFY, "--merge"], [*RECTIFY, "--force"]):
            refused = cisctool(workdir, config, *other)
            assert refused.returncode == 2 and f"in use by pid {first.pid}" in one_error_line(refused), other
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert finish(first).returncode == 0
    assert cisctool(workdir, config, *RECTIFY, "--merge").returncode == 0
    assert_same_datasets(workdir / "runs/demo/round1/pseudo.h5", uninterrupted / "runs/demo/round1/pseudo.h5")


def test_a_pseudo_file_another_process_holds_is_named_with_that_process(
    workdir: Path, demo_dir: Path, uninterrupted: Path
):
    config = demo_dir / "cisctool.toml"
    assert cisctool(workdir, config, *RECTIFY, fault="forward:6").returncode == -signal.SIGKILL
    partial = workdir / "runs/demo/round1/pseudo.partial.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1], 'r'); print('open', flush=True); "
         "sys.stdin.read()", str(partial)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        refused = cisctool(workdir, config, *RECTIFY, "--resume")
        assert refused.returncode == 2
        line = one_error_line(refused)
        assert f"pseudo.partial.h5: in use by pid {holder.pid} (" in line and "start over" not in line, line
    finally:
        holder.communicate("")
    resumed = cisctool(workdir, config, *RECTIFY, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_datasets(workdir / "runs/demo/round1/pseudo.h5", uninterrupted / "runs/demo/round1/pseudo.h5")


CHILD_OF_A_DYING_PARENT = """
import os, signal, sys, time
from cisctool.data.workers import exit_with_parent
bind = exit_with_parent()
child = os.fork()
if child == 0:
    bind(0)
    os.close(1)
    time.sleep(3600)  # only the parent's death ends it
    os._exit(0)
print(child, flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_worker_bound_to_its_parent_dies_when_the_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", CHILD_OF_A_DYING_PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    worker = int(parent.stdout.readline())
    try:
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.wait(timeout=60) == -signal.SIGKILL
        wait_until(lambda: _state(worker) == "Z", "the worker is gone")
    finally:
        if _state(worker) != "Z":
            os.kill(worker, signal.SIGKILL)


def _state(pid: int) -> str:
    """A process's state letter; "Z" also when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_the_lock_is_released_on_exit_and_reentrant_within_one_process(tmp_path: Path):
    run_dir = tmp_path / "runs/x"
    with writing(run_dir):  # (reading .lock here would drop the lock: POSIX locks are per process)
        with writing(run_dir):  # a nested holding (run → rectify) neither blocks nor releases
            pass
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from cisctool.store.locks import writing\n"
             "with writing(Path(sys.argv[1])): pass", str(run_dir)], capture_output=True, text=True,
        )  # fmt: skip
        assert probe.returncode != 0 and f"in use by pid {os.getpid()}" in probe.stderr
    assert (run_dir / ".lock").read_text() == ""
    with writing(run_dir):
        pass
