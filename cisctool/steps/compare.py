"""`cisctool compare`: does the method pay on *your* data? SupOnly, self-training and CISC-R by paired seeds.

For every seed one round-0 model is trained (labeled images only: SupOnly), and
every arm continues that same model for R rounds: self-training (`st`, argmax
pseudo labels, weight 1, the same TTA), CISC-R with the config's settings
(`cisc`), and any extra arms (config overrides). Arms of one seed differ only in
their pseudo labels, weights and reliable-image choice, so the per-seed
difference to self-training is the fair comparison; the table gives it per seed,
its mean ± std and on how many seeds it is positive. The `official` profile
trains its own round 0 (λ = 1 changes round 0), so it is compared on its final
round only. Runs are named `<name>-compare-s<seed>-<arm>`; rerunning continues
where it stopped (finished steps are skipped). The record is written to
`runs/<name>-compare.json` after every seed. With `jobs` > 1 the runs first go
as that many `cisctool run` processes at once (`compare_jobs`), and the pass
over the seeds then reads their results.
"""

import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cisctool.config import Config, with_overrides
from cisctool.console import console
from cisctool.steps.compare_jobs import Job, run_jobs
from cisctool.steps.rounds import RoundRow, run_rounds
from cisctool.store.atomic import atomic_write_json
from cisctool.store.layout import RunLayout
from cisctool.store.locks import writing

SUPONLY, BASELINE, METHOD, OFFICIAL = "suponly", "st", "cisc", "official"
ARM_NAMES = (SUPONLY, BASELINE, METHOD, OFFICIAL)  # taken: an extra arm needs another name
STANDARD_ARMS: dict[str, dict[str, Any]] = {BASELINE: {"rectify.enabled": False}, METHOD: {}}


@dataclass
class Comparison:
    """Final val mIoU (and per-round rows) of every arm, per seed; `arms` in table order."""

    rounds: int
    arms: list[str]
    seeds: list[int] = field(default_factory=list)
    rows: dict[str, list[list[RoundRow]]] = field(default_factory=dict)  # arm → per seed → rounds

    def final(self, arm: str) -> list[float]:
        return [rows[-1].val_miou for rows in self.rows[arm]]

    def minus_baseline(self, arm: str) -> list[float]:
        """Per seed: the arm's final val mIoU minus self-training's, same seed."""
        return [value - base for value, base in zip(self.final(arm), self.final(BASELINE), strict=True)]

    def as_dict(self) -> dict[str, Any]:
        arms = {}
        for arm in self.arms:
            entry: dict[str, Any] = {
                "final_val_miou": self.final(arm),
                "val_miou_per_round": [[row.val_miou for row in rows] for rows in self.rows[arm]],
                "pseudo_miou_per_round": [
                    [{"raw": row.raw_miou, "rectified": row.rectified_miou} for row in rows[1:]]
                    for rows in self.rows[arm]
                ],
                "collapsed_round0": [rows[0].collapsed for rows in self.rows[arm]],
                "final_mean_std": mean_std(self.final(arm)),
            }
            if arm != BASELINE:
                differences = self.minus_baseline(arm)
                entry.update(minus_st=differences, minus_st_mean_std=mean_std(differences),
                             seeds_above_st=sum(value > 0 for value in differences))  # fmt: skip
            arms[arm] = entry
        return {"rounds": self.rounds, "seeds": self.seeds, "arms": arms}


def compare(
    config: Config,
    seeds: list[int],
    rounds: int,
    device: str,
    *,
    extra_arms: dict[str, dict[str, Any]] | None = None,
    official: bool = False,
    jobs: int = 1,
) -> tuple[Comparison, Path]:
    """Run every arm on every seed (skipping finished steps); returns the comparison and its record path."""
    arms = {**STANDARD_ARMS, **(extra_arms or {})}
    names = [SUPONLY, *arms, *([OFFICIAL] if official else [])]
    result = Comparison(rounds, names, rows={name: [] for name in names})
    record = Path(config.workdir) / "runs" / f"{config.name}-compare.json"
    if jobs > 1:
        run_jobs(comparison_jobs(config, seeds, rounds, arms, official), jobs, device, share_round0)
    for seed in seeds:
        shared = arm_config(config, seed, SUPONLY, {})
        console.print(f"[bold]seed {seed}: shared round 0")
        result.rows[SUPONLY].append(_run_held(shared, 0, device))
        for name, overrides in arms.items():
            console.print(f"[bold]seed {seed}: {name}")
            result.rows[name].append(_run_held(arm_config(config, seed, name, overrides), rounds, device, shared))
        if official:
            console.print(f"[bold]seed {seed}: official profile (its own round 0)")
            official_config = arm_config(config, seed, OFFICIAL, {"profile": "official"})
            result.rows[OFFICIAL].append(_run_held(official_config, rounds, device))
        result.seeds.append(seed)
        atomic_write_json(record, result.as_dict())
    return result, record


def comparison_jobs(
    config: Config, seeds: list[int], rounds: int, arms: dict[str, dict[str, Any]], official: bool
) -> list[Job]:
    """Every run of the comparison as a job: the seeds' round 0s, the official arms (their own round 0), the arms."""
    shared = {seed: arm_config(config, seed, SUPONLY, {}) for seed in seeds}
    jobs = [Job(shared[seed], 0) for seed in seeds]
    if official:
        jobs += [Job(arm_config(config, seed, OFFICIAL, {"profile": "official"}), rounds) for seed in seeds]
    jobs += [Job(arm_config(config, seed, name, overrides), rounds, after=shared[seed])
             for seed in seeds for name, overrides in arms.items()]  # fmt: skip
    return jobs


def _run_held(config: Config, rounds: int, device: str, shared: Config | None = None) -> list[RoundRow]:
    """Rounds 0…R of one arm, holding its run folder (and first copying the seed's round 0 from `shared`)."""
    with writing(RunLayout.of(config).run_dir):
        if shared is not None:
            share_round0(shared, config)
        return run_rounds(config, rounds, device)


def arm_config(config: Config, seed: int, arm: str, overrides: dict[str, Any]) -> Config:
    """The config of one arm on one seed: its own run name, the seed, the arm's overrides."""
    return with_overrides(config, {**overrides, "train.seed": seed, "name": f"{config.name}-compare-s{seed}-{arm}"})


def share_round0(shared: Config, arm: Config) -> None:
    """Give the arm the seed's round-0 model (a copy of its folder), unless it has its own already."""
    source, target = RunLayout.of(shared).round_dir(0), RunLayout.of(arm).round_dir(0)
    if not (target / "model.pt").is_file():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


