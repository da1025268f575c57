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
from pathlib import Path

import h5py
import pytest

from cisctool.config import load_config
from cisctool.data.demo import make_demo
from cisctool.steps.index import build_round_index
from cisctool.steps.train import train_round
from cisctool.store.checkpoints import load_checkpoint
from cisctool.store.locks import file_holders
from cisctool.store.pseudo_labels import DISK_HEADROOM

from helpers import (
    FAST_TRAINING,
    RECTIFY,
    WORKERS,
    assert_same_datasets,
    assert_same_pseudo_labels,
    assert_same_weights,
    cisctool,
    one_error_line,
)  # fmt: skip

pytestmark = pytest.mark.slow  # every test here starts processes


@pytest.fixture
def workdirs(trained_workdir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of a trained round 0 and its index: one to break, one for the uninterrupted run."""
    for name in ("broken", "whole"):
        shutil.copytree(trained_workdir, tmp_path / name)
    return tmp_path / "broken", tmp_path / "whole"


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
    round1, whole = broken / "runs/demo/round1", uninterrupted / "runs/demo/round1"
    assert file_holders(round1 / "pseudo.partial.h5") == []  # no worker of the killed run keeps it open
    resumed = cisctool(broken, config, *RECTIFY, "--resume", settings=WORKERS)  # no pause: a requeue
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_pseudo_labels(round1, whole)
    assert not list(round1.glob("*partial*")) and not list(round1.glob(".*.tmp"))


@pytest.fixture(scope="module")
def longer_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, uninterrupted workdir) of a demo with 24 unlabeled images: 12 batches, so a kill
    leaves early chunks untouched and the resumed run reuses their images."""
    data = tmp_path_factory.mktemp("longer")
    make_demo(data, seed=2, num_labeled=8, num_unlabeled=24, num_val=4)
    whole = tmp_path_factory.mktemp("longer-whole")
    config = load_config(data / "cisctool.toml", {"workdir": str(whole), **FAST_TRAINING})
    train_round(config, device="cpu", resume=False)
    build_round_index(config, 0, "cpu")
    assert cisctool(whole, data / "cisctool.toml", *RECTIFY, settings=WORKERS).returncode == 0
    return data / "cisctool.toml", whole


# 4 calibration batches, then 12 of the split: forward:12 stops the main thread before batch 7
@pytest.mark.parametrize("fault", ["forward:12", "pseudo-write:8"])
def test_a_resumed_rectify_reuses_done_images_and_still_reports_on_every_image(
    longer_split: tuple[Path, Path], tmp_path: Path, fault: str
):
    config, whole = longer_split
    workdir = tmp_path / "work"
    shutil.copytree(whole, workdir, ignore=shutil.ignore_patterns("round1"))
    assert cisctool(workdir, config, *RECTIFY, fault=fault, settings=WORKERS).returncode == -signal.SIGKILL
    assert cisctool(workdir, config, *RECTIFY, "--resume", settings=WORKERS).returncode == 0
    round1 = workdir / "runs/demo/round1"
    report = json.loads((round1 / "pseudo_quality.json").read_text())
    assert 0 < report["computed_this_run"] < report["images_total"] == 24  # the saved totals were used
    assert_same_pseudo_labels(round1, whole / "runs/demo/round1")


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
    run = ["run", "--rounds", "1", "--device", "cpu"]
    killed = cisctool(tmp_path / "broken", config, *run, fault=fault, settings=WORKERS)
    assert killed.returncode == -signal.SIGKILL
    assert cisctool(tmp_path / "broken", config, *run, settings=WORKERS).returncode == 0  # at once
    assert cisctool(tmp_path / "whole", config, *run).returncode == 0
    for round_index in (0, 1):
        model = f"runs/demo/round{round_index}/model.pt"
        assert_same_weights(tmp_path / "broken" / model, tmp_path / "whole" / model)
    assert_same_datasets(tmp_path / "broken/runs/demo/round1/pseudo.h5", tmp_path / "whole/runs/demo/round1/pseudo.h5")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 32 MiB tmpfs: a real file system that fills up (ENOSPC as a full disk gives it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a real full disk needs a tmpfs mount (root); the injected-ENOSPC variant covers the same code")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()}); the injected variant runs")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` up to `leave` free bytes; delete the returned file to free the space."""
    status = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(bytes(status.f_bavail * status.f_frsize - leave))
    return filler


def full_disk(request: pytest.FixtureRequest, kind: str, tmp_path: Path, leave: int) -> tuple[Path, Path | None]:
    """(workdir, filler): on a tmpfs with `leave` bytes free ("tmpfs"), or a plain folder ("injected")."""
    if kind == "injected":
        return tmp_path / "work", None
    disk = request.getfixturevalue("small_disk")
    return disk / "work", fill(disk, leave) if leave else None


@pytest.mark.parametrize("kind", ["tmpfs", "injected"])
def test_rectify_on_a_full_disk_fails_in_one_line_keeps_the_partial_file_and_resumes(
    request, tmp_path: Path, trained_workdir: Path, demo_dir: Path, uninterrupted: Path, kind: str
):
    whole = uninterrupted / "runs/demo/round1"
    workdir, _ = full_disk(request, kind, tmp_path, 0)
    shutil.copytree(trained_workdir, workdir)
    # room for the first batch or two beyond the headroom the writer keeps free
    filler = fill(workdir.parent, DISK_HEADROOM + (whole / "pseudo.h5").stat().st_size) if kind == "tmpfs" else None
    config = demo_dir / "cisctool.toml"
    fault = "pseudo-write:2:ENOSPC" if kind == "injected" else ""
    full = cisctool(workdir, config, *RECTIFY, fault=fault, settings=WORKERS)
    assert full.returncode == 1
    assert "no space left on device; finished files are intact" in one_error_line(full)
    round1 = workdir / "runs/demo/round1"
    assert not (round1 / "pseudo.h5").exists() and not list(round1.glob(".*.tmp"))
    with h5py.File(round1 / "pseudo.partial.h5", "r") as partial:  # kept, with the batches done before
        assert 0 < partial["done"][:].sum() < len(partial["done"])
    if filler is not None:
        filler.unlink()
    resumed = cisctool(workdir, config, *RECTIFY, "--resume", settings=WORKERS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_pseudo_labels(round1, whole)


@pytest.mark.parametrize("kind", ["tmpfs", "injected"])
def test_training_on_a_full_disk_keeps_the_last_whole_checkpoint_and_resumes(
    request, tmp_path: Path, demo_dir: Path, uninterrupted: Path, kind: str
):
    checkpoint = uninterrupted / "train/runs/demo/round0/last.pt"
    # room for the step-2 checkpoint, not for the step-4 one beside it
    workdir, filler = full_disk(request, kind, tmp_path, checkpoint.stat().st_size * 3 // 2)
    workdir.mkdir()
    config = demo_dir / "cisctool.toml"
    fault = "checkpoint-write:2:ENOSPC" if kind == "injected" else ""
    full = cisctool(workdir, config, "train", "--device", "cpu", fault=fault, settings=WORKERS)
    assert full.returncode == 1
    round0 = workdir / "runs/demo/round0"
    assert f"{round0 / 'last.pt'}: no space left on device" in one_error_line(full)
    assert load_checkpoint(round0 / "last.pt")["step"] == 2 and not (round0 / "model.pt").exists()
    assert not list(round0.glob(".*.tmp"))
    if filler is not None:
        filler.unlink()
    resumed = cisctool(workdir, config, "train", "--resume", "--device", "cpu", settings=WORKERS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(round0 / "model.pt", uninterrupted / "train/runs/demo/round0/model.pt")
