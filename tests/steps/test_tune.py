import json
import math

import numpy as np
import pytest

from cisctool.config import Config
from cisctool.data.splits import SplitEntry
from cisctool.errors import InputError
from cisctool.steps.tune import (
    OFF,
    family,
    fold_entries,
    miou_dropped_as_missed,
    threshold_grid,
    tune_thresholds,
)


def test_dropped_pixels_count_as_missed_not_as_false_positives():
    # truth rows × (prediction columns + dropped): class 0 has 8 right, 2 dropped; class 1 has 5 right, 5 called 0
    matrix = np.array([[8, 0, 2], [5, 5, 0]])
    expected = (8 / (10 + 13 - 8) + 5 / (10 + 5 - 5)) / 2
    assert miou_dropped_as_missed(matrix) == pytest.approx(expected)
    assert math.isnan(miou_dropped_as_missed(np.zeros((2, 3), dtype=int)))


def test_grid_starts_with_labels_as_predicted_and_separates_families():
    grid = threshold_grid()
    assert grid[0] == OFF and family(grid[0]) == "none"
    families = [family(setting) for setting in grid[1:]]
    assert set(families) == {"relabel", "drop"}
    assert all(math.isinf(s["margin"]) for s in grid if family(s) == "drop")


def test_folds_are_disjoint_and_cover_every_labeled_image():
    entries = [SplitEntry(str(i), f"{i}.png", None) for i in range(10)]
    folds = fold_entries(entries, 3, seed=0)
    assert sorted(sum(folds, [])) == list(range(10)) and [len(f) for f in folds] == [4, 3, 3]


def test_tune_cross_fits_and_writes_its_record(demo_config: Config, tmp_path):
    outcome = tune_thresholds(demo_config, "cpu", folds=2, max_steps=2)
    record = json.loads(outcome.path.read_text())
    assert record["folds"] == 2 and len(record["results"]) == len(threshold_grid())
    assert outcome.results[0]["changed"] == 0.0
    drops = [r for r in outcome.results if r["family"] == "drop" and r["cisc_min"] == 0.6 and r["conf_min"] == 0.9]
    assert drops[0]["changed"] > 0  # the strictest drop setting must drop something
    assert set(outcome.recommended) == set(OFF) and "auroc" in outcome.signals
    for fold in range(2):
        assert (tmp_path / f"runs/demo/tune-fold{fold}/round0/model.pt").is_file()
        held = (tmp_path / f"runs/demo/tune-fold{fold}/held_out.txt").read_text().splitlines()
        trained = (tmp_path / f"runs/demo/tune-fold{fold}/labeled.txt").read_text().splitlines()
        assert not set(held) & set(trained) and len(held) + len(trained) == 8
    with pytest.raises(InputError, match="--folds 9: need 2 ≤ K ≤ 8"):
        tune_thresholds(demo_config, "cpu", folds=9)
