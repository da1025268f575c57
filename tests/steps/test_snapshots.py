import shutil
from pathlib import Path

import numpy as np
import pytest

from cisctool.config import Config, with_overrides
from cisctool.data.masks import read_mask
from cisctool.data.splits import split_entries
from cisctool.errors import InputError
from cisctool.steps.rectify import rectify_round
from cisctool.steps.snapshots import snapshot_paths, snapshot_steps
from cisctool.steps.train import train_round, training_status
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels


def test_snapshot_steps_are_st_plus_plus_thirds():
    assert snapshot_steps(90, 2) == [30, 60] and snapshot_steps(4, 2) == [1, 2] and snapshot_steps(1, 2) == [1, 1]


@pytest.fixture
def stability_config(demo_config: Config) -> Config:
    return with_overrides(demo_config, {"train.snapshots": 2, "rectify.reliability": "stability",
                                        "rectify.enabled": False, "rectify.batch_size": 2})  # fmt: skip


def test_round0_keeps_its_snapshots_and_stability_scores_the_images(stability_config: Config):
    train_round(stability_config, 0, "cpu")
    first, second = snapshot_paths(stability_config, 0)
    assert first.name == "snapshot1of2.pt" and first.is_file() and second.is_file()
    assert training_status(stability_config, 0) == "finished"
    rectify_round(stability_config, 1, "cpu")
    plain = with_overrides(stability_config, {"rectify.reliability": "cisc", "name": "plain"})
    shutil.copytree(RunLayout.of(stability_config).round_dir(0), RunLayout.of(plain).round_dir(0))
    rectify_round(plain, 1, "cpu")
    stable_path, plain_path = RunLayout.of(stability_config).pseudo(1), RunLayout.of(plain).pseudo(1)
    with PseudoLabels(stable_path) as stable, PseudoLabels(plain_path) as st:
        assert np.all((stable.reliability >= 0) & (stable.reliability <= 1))
        assert not np.allclose(stable.reliability, st.reliability)  # not self-training's confidence score
        assert np.array_equal(stable.pixels("label", 0), st.pixels("label", 0))  # labels: plain argmax both
    second.unlink()
    assert training_status(stability_config, 0) == "none"  # asked-for snapshots missing: train again
    with pytest.raises(InputError, match="snapshot2of2.pt: missing; rectify.reliability = \"stability\""):
        rectify_round(stability_config, 1, "cpu", force=True)


def test_the_oracle_stores_the_true_masks_and_is_refused_without_them(demo_config: Config, tmp_path: Path):
    oracle = with_overrides(demo_config, {"rectify.enabled": False, "rectify.pseudo_source": "masks"})
    train_round(oracle, 0, "cpu")
    rectify_round(oracle, 1, "cpu")
    entries = split_entries(oracle, "unlabeled")
    with PseudoLabels(RunLayout.of(oracle).pseudo(1)) as stored:
        for row, entry in enumerate(entries):
            assert np.array_equal(stored.pixels("label", row), read_mask(entry.mask))
            assert np.all(stored.pixels("weight", row) == 1)
    split = tmp_path / "bare.txt"
    split.write_text("".join(f"{entry.image.relative_to(oracle.data_root)}\n" for entry in entries))
    bare = with_overrides(oracle, {"data.unlabeled": str(split)})
    with pytest.raises(InputError, match="bare.txt: lists no masks"):
        rectify_round(bare, 1, "cpu", force=True)
