import json
import math
import shutil
from pathlib import Path

from cisctool.config import Config, with_overrides
from cisctool.steps.rounds import run_rounds
from cisctool.steps.train import train_round
from cisctool.store.layout import RunLayout

from helpers import crash_at


def test_run_resumes_an_unfinished_training_and_skips_done_steps(demo_config: Config):
    layout = RunLayout.of(demo_config)
    with crash_at("train-step:3"):  # after the step-2 checkpoint
        train_round(demo_config, 0)
    rows = run_rounds(demo_config, 1, "cpu")
    assert [row.ran for row in rows] == [["train 0"], ["index 0", "rectify 1", "train 1"]]
    assert json.loads(layout.metrics(0).read_text())["resumed_from_step"] == 2
    assert not math.isnan(rows[1].raw_miou) and not math.isnan(rows[1].val_miou)
    again = run_rounds(demo_config, 1, "cpu")
    assert [row.ran for row in again] == [[], []]
    assert again[1].val_miou == rows[1].val_miou


def test_changed_settings_redo_only_the_steps_they_touch(demo_config: Config):
    run_rounds(demo_config, 1, "cpu")
    # a training-only setting of rounds ≥ 1: pseudo labels stay, round 1 retrains
    changed = with_overrides(demo_config, {"train.round_max_steps": 3})
    rows = run_rounds(changed, 1, "cpu")
    assert [row.ran for row in rows] == [[], ["train 1"]]
    # a rectify setting: the pseudo labels are redone, and so is the training on them
    guided = with_overrides(changed, {"rectify.guide": "random"})
    rows = run_rounds(guided, 1, "cpu")
    assert [row.ran for row in rows] == [[], ["rectify 1", "train 1"]]


def test_self_training_runs_without_an_index(demo_config: Config, tmp_path: Path):
    self_training = with_overrides(demo_config, {"rectify.enabled": False, "workdir": str(tmp_path / "st")})
    rows = run_rounds(self_training, 1, "cpu")
    assert rows[1].ran == ["rectify 1", "train 1"]
    assert not RunLayout.of(self_training).index_files(0)[0].exists()
    shutil.rmtree(RunLayout.of(self_training).run_dir / "round1")
    assert run_rounds(self_training, 1, "cpu")[1].ran == ["rectify 1", "train 1"]
