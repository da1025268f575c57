import json
import math
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cisctool.cli.main import main
from cisctool.config import Config, with_overrides
from cisctool.steps.compare import METHOD, ORACLE, ST, STPP, SUPONLY, THRESHOLD, compare
from cisctool.store.atomic import sha256_file
from cisctool.store.layout import RunLayout
from cisctool.store.pseudo_labels import PseudoLabels

BASELINES = (ST, THRESHOLD, STPP, ORACLE)


def arm_layout(config: Config, seed: int, arm: str) -> RunLayout:
    return RunLayout(Path(config.workdir), f"{config.name}-compare-s{seed}-{arm}")


def final_from_metrics(config: Config, seed: int, arm: str, round_index: int) -> float:
    """What the arm's own metrics.json says, read from disk: not from what `compare` returned."""
    metrics = json.loads(arm_layout(config, seed, arm).metrics(round_index).read_text())
    return metrics["val"]["mean_iou"]


def round1_images(config: Config, seed: int, arm: str) -> str:
    """The train.log line naming how many pseudo-labelled images round 1 trained on."""
    return arm_layout(config, seed, arm).train_log(1).read_text().splitlines()[0]


def test_compare_pairs_cisc_with_every_baseline_on_shared_round0s(demo_config: Config):
    config = with_overrides(demo_config, {"rectify.tta": False})
    result, record = compare(config, [0, 1], 1, "cpu", baselines=BASELINES, tau=0.6)
    assert result.arms == [SUPONLY, *BASELINES, METHOD] and result.seeds == [0, 1]
    saved = json.loads(record.read_text())
    finals = {arm: [final_from_metrics(config, seed, arm, 0 if arm == SUPONLY else 1) for seed in (0, 1)]
              for arm in result.arms}  # fmt: skip
    for arm in result.arms:
        assert saved["arms"][arm]["final_val_miou"] == finals[arm]  # the figures are each arm's metrics.json
    for seed in (0, 1):
        shared = arm_layout(config, seed, SUPONLY).model(0)
        for arm in (*BASELINES, METHOD):
            assert sha256_file(arm_layout(config, seed, arm).model(0)) == sha256_file(shared)  # one round 0 a seed
            assert round1_images(config, seed, arm) == round1_images(config, seed, METHOD)  # as many images
    for baseline in BASELINES:
        paired = saved["paired"][f"{METHOD} - {baseline}"]
        by_hand = [finals[METHOD][seed] - finals[baseline][seed] for seed in (0, 1)]
        assert np.allclose(paired["per_seed"], by_hand, rtol=0, atol=1e-12)
        assert math.isclose(paired["mean_std"][0], (by_hand[0] + by_hand[1]) / 2, abs_tol=1e-12)
        assert math.isclose(paired["mean_std"][1], abs(by_hand[0] - by_hand[1]) / math.sqrt(2), abs_tol=1e-12)
        assert paired["seeds_ahead"] == sum(value > 0 for value in by_hand)
    floor, ceiling = np.mean(finals[SUPONLY]), np.mean(finals[ORACLE])
    assert math.isclose(saved["arms"][METHOD]["gap_share"], (np.mean(finals[METHOD]) - floor) / (ceiling - floor))
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", saved["commit"]) and saved["machine"]["device"] == "cpu"
    assert "same TTA views (off)" in saved["protocol"] and "command" in saved


def test_each_baseline_writes_its_own_pseudo_labels(demo_config: Config):
    config = with_overrides(demo_config, {"rectify.tta": False})
    compare(config, [0], 1, "cpu", baselines=BASELINES, tau=0.6)
    files = {arm: PseudoLabels(arm_layout(config, 0, arm).pseudo(1)) for arm in (*BASELINES, METHOD)}
    try:
        assert not files[ST].attrs["rectified"] and not files[THRESHOLD].attrs["rectified"]
        assert files[METHOD].attrs["rectified"]
        ignore, dropped = config.data.ignore_index, 0
        for row in range(len(files[ST])):
            confidence = files[ST].pixels("confidence", row).astype(np.float32)  # stored in half precision
            unsure, sure = confidence < 0.6 - 1e-3, confidence > 0.6 + 1e-3
            assert np.all(files[THRESHOLD].pixels("label", row)[unsure] == ignore)  # τ drops them
            dropped += int(unsure.sum())
            assert np.array_equal(files[THRESHOLD].pixels("label", row)[sure], files[ST].pixels("label", row)[sure])
            assert not np.any(files[ST].pixels("label", row) == ignore)  # self-training keeps every pixel
            assert np.all(files[ST].pixels("weight", row) == 1)
        assert dropped > 0
        assert not np.allclose(files[STPP].reliability, files[ST].reliability)  # ST++'s stability, not confidence
        assert (arm_layout(config, 0, STPP).round_dir(0) / "snapshot2of2.pt").is_file()
    finally:
        for stored in files.values():
            stored.close()
    # rerunning continues: nothing left to do, the same figures
    again, _ = compare(config, [0], 1, "cpu", baselines=BASELINES, tau=0.6)
    assert all(not rows[-1].ran for arm in again.arms for rows in again.rows[arm])


def test_compare_command_prints_each_arm_and_each_paired_difference(demo_config: Config):
    args = ["--config", demo_config.source, "--set", f'workdir="{demo_config.workdir}"', "--set", "rectify.tta=false"]
    args += [f"--set={key}={json.dumps(value)}" for key, value in
             {"model.backbone": "tiny", "model.pretrained": "", "train.max_steps": 2, "train.round_max_steps": 1,
              "train.batch_size": 4, "train.crop_size": 64, "train.workers": 0}.items()]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "compare", "--rounds", "1", "--seeds", "3", "--device", "cpu",
                                       "--baselines", "st,threshold", "--arm", "mean:rectify.weight_mode=mean"])
    assert result.exit_code == 0, result.output
    config = with_overrides(demo_config, {"train.seed": 3})
    finals = {arm: final_from_metrics(config, 3, arm, 0 if arm == SUPONLY else 1)
              for arm in (SUPONLY, ST, THRESHOLD, METHOD, "mean")}  # fmt: skip
    lines = result.output.splitlines()
    for arm, value in finals.items():
        assert any(re.search(rf"│ {re.escape(arm)} +│ +{100 * value:.2f} │", line) for line in lines), arm
    for method in (METHOD, "mean"):
        for baseline in (ST, THRESHOLD):
            difference = f"{100 * (finals[method] - finals[baseline]):+.2f}"
            assert any(f"{method} − {baseline}" in line and difference in line for line in lines), (method, baseline)
    bad = CliRunner().invoke(main, [*args, "compare", "--seeds", "a,b"])
    assert bad.exit_code == 2 and "comma-separated" in bad.output
    unknown = CliRunner().invoke(main, [*args, "compare", "--baselines", "st,fixmatch"])
    assert unknown.exit_code == 2 and "choose from st, threshold, stpp, oracle" in unknown.output
    no_jobs = CliRunner().invoke(main, [*args, "compare", "--jobs", "0"])
    assert no_jobs.exit_code == 2 and "--jobs" in no_jobs.output
