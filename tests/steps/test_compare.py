import json
import math
from pathlib import Path

from click.testing import CliRunner

from cisctool.cli.main import main
from cisctool.config import with_overrides
from cisctool.steps.compare import BASELINE, METHOD, SUPONLY, compare
from cisctool.store.atomic import sha256_file
from cisctool.store.layout import RunLayout


def test_compare_runs_every_arm_on_shared_round0s_and_pairs_by_seed(demo_config):
    config = with_overrides(demo_config, {"rectify.tta": False})
    result, record = compare(config, [0, 1], 1, "cpu", extra_arms={"mean": {"rectify.weight_mode": "mean"}})
    assert result.arms == [SUPONLY, BASELINE, METHOD, "mean"] and result.seeds == [0, 1]
    for seed in (0, 1):
        shared = RunLayout(Path(config.workdir), f"{config.name}-compare-s{seed}-{SUPONLY}").model(0)
        for arm in (BASELINE, METHOD, "mean"):
            layout = RunLayout(Path(config.workdir), f"{config.name}-compare-s{seed}-{arm}")
            assert sha256_file(layout.model(0)) == sha256_file(shared)  # one round 0 per seed
            assert layout.model(1).is_file()
    saved = json.loads(record.read_text())
    for arm in (SUPONLY, METHOD, "mean"):
        expected = [a - b for a, b in zip(result.final(arm), result.final(BASELINE), strict=True)]
        assert saved["arms"][arm]["minus_st"] == expected
        mean = sum(expected) / 2
        std = math.sqrt(sum((value - mean) ** 2 for value in expected))  # n − 1 = 1
        assert math.isclose(saved["arms"][arm]["minus_st_mean_std"][0], mean, abs_tol=1e-12)
        assert math.isclose(saved["arms"][arm]["minus_st_mean_std"][1], std, abs_tol=1e-12)
        assert saved["arms"][arm]["seeds_above_st"] == sum(value > 0 for value in expected)
    # rerunning continues: nothing left to do
    again, _ = compare(config, [0, 1], 1, "cpu", extra_arms={"mean": {"rectify.weight_mode": "mean"}})
    assert all(not rows[-1].ran for arm in again.arms for rows in again.rows[arm])
    assert again.as_dict() == result.as_dict()


def test_compare_command_prints_the_paired_table(demo_config):
    config_path = demo_config.source
    args = ["--config", config_path, "--set", f'workdir="{demo_config.workdir}"', "--set", "rectify.tta=false"]
    args += [f"--set={key}={json.dumps(value)}" for key, value in
             {"model.backbone": "tiny", "model.pretrained": "", "train.max_steps": 2, "train.round_max_steps": 1,
              "train.batch_size": 4, "train.crop_size": 64, "train.workers": 0}.items()]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "compare", "--rounds", "1", "--seeds", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "minus ST, same seed" in result.output and "seed 3" in result.output
    bad = CliRunner().invoke(main, [*args, "compare", "--seeds", "a,b"])
    assert bad.exit_code == 2 and "comma-separated" in bad.output
    no_jobs = CliRunner().invoke(main, [*args, "compare", "--jobs", "0"])
    assert no_jobs.exit_code == 2 and "--jobs" in no_jobs.output
