import json
import sys
from pathlib import Path

import pytest

from cisctool.config import with_overrides
from cisctool.errors import InputError
from cisctool.steps import compare_jobs
from cisctool.steps.compare import METHOD, ST, SUPONLY, compare
from cisctool.store.atomic import sha256_file
from cisctool.store.layout import RunLayout


@pytest.mark.slow
def test_compare_jobs_runs_every_run_as_its_own_process(demo_config):
    config = with_overrides(demo_config, {"rectify.tta": False})
    result, record = compare(config, [0, 1], 1, "cpu", baselines=(ST,), jobs=2)
    assert result.arms == [SUPONLY, ST, METHOD] and result.seeds == [0, 1]
    for seed in (0, 1):
        shared = RunLayout(Path(config.workdir), f"{config.name}-compare-s{seed}-{SUPONLY}")
        assert (shared.run_dir / "compare.log").is_file() and (shared.run_dir / "compare-config.toml").is_file()
        for arm in (ST, METHOD):
            layout = RunLayout(Path(config.workdir), f"{config.name}-compare-s{seed}-{arm}")
            assert sha256_file(layout.model(0)) == sha256_file(shared.model(0))  # the seed's one round 0
            assert layout.model(1).is_file() and (layout.run_dir / "compare.log").is_file()
    # the processes did every step: the pass that builds the table only read their results
    assert all(not row.ran for arm in result.arms for rows in result.rows[arm] for row in rows)
    # the figures are what each arm's own process wrote to its metrics.json
    saved = json.loads(record.read_text())
    for arm in result.arms:
        for position, seed in enumerate((0, 1)):
            layout = RunLayout(Path(config.workdir), f"{config.name}-compare-s{seed}-{arm}")
            metrics = json.loads(layout.metrics(0 if arm == SUPONLY else 1).read_text())
            assert saved["arms"][arm]["final_val_miou"][position] == metrics["val"]["mean_iou"]
    st, cisc = saved["arms"][ST]["final_val_miou"], saved["arms"][METHOD]["final_val_miou"]
    assert saved["paired"][f"{METHOD} - {ST}"]["per_seed"] == [cisc[0] - st[0], cisc[1] - st[1]]


def test_a_failed_run_names_its_log_and_its_arms_do_not_start(demo_config, monkeypatch):
    monkeypatch.setattr(compare_jobs, "run_command",
                        lambda job, device: [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    with pytest.raises(InputError) as error:
        compare(demo_config, [0], 1, "cpu", baselines=(ST,), jobs=2)
    shared = RunLayout.of(with_overrides(demo_config, {"name": f"{demo_config.name}-compare-s0-{SUPONLY}"}))
    log = shared.run_dir / "compare.log"
    assert str(log) in str(error.value) and "exited with 3" in str(error.value)
    assert log.read_text().strip() == "boom"
    for arm in (ST, METHOD):
        arm_dir = RunLayout.of(with_overrides(demo_config, {"name": f"{demo_config.name}-compare-s0-{arm}"})).run_dir
        assert not (arm_dir / "compare.log").exists()


def test_threads_are_split_between_the_jobs_unless_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(compare_jobs.os, "cpu_count", lambda: 16)
    assert compare_jobs.thread_environment(4)["OMP_NUM_THREADS"] == "4"
    assert compare_jobs.thread_environment(32)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert compare_jobs.thread_environment(4)["OMP_NUM_THREADS"] == "3"
