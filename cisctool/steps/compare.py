"""`cisctool compare`: does the method pay on *your* data? CISC-R against the baselines people use, by paired seeds.

For every seed one round-0 model is trained (labeled images only: SupOnly), and
every arm continues that same model for R rounds:

- `st`: self-training (argmax pseudo labels, weight 1, no CISC);
- `threshold`: confidence-thresholded pseudo labels as FixMatch and UniMatch (pixels
  under τ ignored, weight 1 elsewhere);
- `stpp`: ST++'s selection: round 1 trains on the images whose predictions were the
  most stable over round 0's snapshots at 1/3 and 2/3 of its steps;
- `oracle`: the unlabeled images' true masks as pseudo labels (where the split lists
  them): the ceiling, so the table can say what share of the SupOnly → oracle gap
  each method closes;
- `cisc`: CISC-R with the config's settings, and any extra arms (config overrides).

Every arm predicts with the same TTA views, trains the same budget and steps with the
same images a step, and trains round 1 on as many images as CISC-R (`rectify.ratio`),
each arm's most reliable by its own score (lower = more reliable); arms of one seed differ only in
their pseudo labels, weights and which images they trust, so the per-seed difference is the fair
comparison: the table gives CISC-R minus each baseline per seed, its mean ± std and on
how many seeds CISC-R is ahead. The `official` profile trains its own round 0 (λ = 1
changes round 0), so it is compared on its final round only. Runs are named
`<name>-compare-s<seed>-<arm>`; rerunning continues where it stopped. The record,
`runs/<name>-compare.json`, is written after every seed, with the commit, the machine
and the command. With `jobs` > 1 the runs first go as that many `cisctool run`
processes at once (`compare_jobs`), and the pass over the seeds then reads their results.
"""

import os
import platform
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cisctool.config import Config, with_overrides
from cisctool.console import console
from cisctool.data.splits import split_entries
from cisctool.steps.compare_jobs import Job, run_jobs
from cisctool.steps.rectify import require_true_masks, tta_description
from cisctool.steps.rounds import RoundRow, run_rounds
from cisctool.store.atomic import atomic_write_json
from cisctool.store.layout import RunLayout
from cisctool.store.locks import writing

SUPONLY, METHOD, OFFICIAL = "suponly", "cisc", "official"
ST, THRESHOLD, STPP, ORACLE = "st", "threshold", "stpp", "oracle"
BASELINES = (ST, THRESHOLD, STPP, ORACLE)
DEFAULT_BASELINES = (ST, THRESHOLD, STPP)
ARM_NAMES = (SUPONLY, *BASELINES, METHOD, OFFICIAL)  # taken: an extra arm needs another name
DEFAULT_TAU = 0.95  # FixMatch's and UniMatch's confidence threshold
STPP_SNAPSHOTS = 2  # ST++ keeps its round-0 model at epochs // 3 and 2 · epochs // 3 besides the final one


def baseline_overrides(name: str, tau: float = DEFAULT_TAU) -> dict[str, Any]:
    """The config keys that make the arm `name` out of the config (every baseline: self-training's argmax)."""
    self_training = {"rectify.enabled": False}
    return {
        ST: self_training,
        THRESHOLD: {**self_training, "rectify.conf_min": tau},
        STPP: {**self_training, "rectify.reliability": "stability", "train.snapshots": STPP_SNAPSHOTS},
        ORACLE: {**self_training, "rectify.pseudo_source": "masks"},
    }[name]


@dataclass
class Comparison:
    """Final val mIoU (and per-round rows) of every arm, per seed; `arms` in table order."""

    rounds: int
    arms: list[str]
    baselines: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    rows: dict[str, list[list[RoundRow]]] = field(default_factory=dict)  # arm → per seed → rounds
    about: dict[str, Any] = field(default_factory=dict)  # protocol, commit, machine, command

    @property
    def methods(self) -> list[str]:
        """The arms measured against every baseline: CISC-R, the extra arms, the official profile."""
        return [arm for arm in self.arms if arm != SUPONLY and arm not in self.baselines]

    def final(self, arm: str) -> list[float]:
        return [rows[-1].val_miou for rows in self.rows[arm]]

    def difference(self, arm: str, baseline: str) -> list[float]:
        """Per seed: the arm's final val mIoU minus the baseline's, same seed."""
        return [value - base for value, base in zip(self.final(arm), self.final(baseline), strict=True)]

    def gap_share(self, arm: str) -> float | None:
        """The share of the SupOnly → oracle gap (mean final val mIoU) the arm closes; None without an
        oracle arm or a gap."""
        if ORACLE not in self.arms or not self.seeds:
            return None
        floor = statistics.fmean(self.final(SUPONLY))
        gap = statistics.fmean(self.final(ORACLE)) - floor
        return (statistics.fmean(self.final(arm)) - floor) / gap if gap > 0 else None

    def as_dict(self) -> dict[str, Any]:
        arms = {}
        for arm in self.arms:
            arms[arm] = {
                "final_val_miou": self.final(arm),
                "final_mean_std": mean_std(self.final(arm)),
                "gap_share": self.gap_share(arm),
                "val_miou_per_round": [[row.val_miou for row in rows] for rows in self.rows[arm]],
                "pseudo_miou_per_round": [
                    [{"raw": row.raw_miou, "rectified": row.rectified_miou} for row in rows[1:]]
                    for rows in self.rows[arm]
                ],
                "collapsed_round0": [rows[0].collapsed for rows in self.rows[arm]],
            }
        paired = {}
        for arm in self.methods:
            for baseline in self.baselines:
                differences = self.difference(arm, baseline)
                paired[f"{arm} - {baseline}"] = {"per_seed": differences, "mean_std": mean_std(differences),
                                                 "seeds_ahead": sum(value > 0 for value in differences)}  # fmt: skip
        return {"rounds": self.rounds, "seeds": self.seeds, "baselines": self.baselines, **self.about,
                "arms": arms, "paired": paired}  # fmt: skip


def compare(
    config: Config,
    seeds: list[int],
    rounds: int,
    device: str,
    *,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    tau: float = DEFAULT_TAU,
    extra_arms: dict[str, dict[str, Any]] | None = None,
    official: bool = False,
    jobs: int = 1,
    command: str = "",
) -> tuple[Comparison, Path]:
    """Run every arm on every seed (skipping finished steps); returns the comparison and its record path."""
    if ORACLE in baselines:
        entries = split_entries(config, "unlabeled")
        require_true_masks(with_overrides(config, baseline_overrides(ORACLE)), all(entry.mask for entry in entries))
    arms = {**{name: baseline_overrides(name, tau) for name in baselines}, METHOD: {}, **(extra_arms or {})}
    names = [SUPONLY, *arms, *([OFFICIAL] if official else [])]
    about = {"protocol": protocol(config, tau if THRESHOLD in baselines else None), **provenance(device, command)}
    result = Comparison(rounds, names, list(baselines), rows={name: [] for name in names}, about=about)
    record = Path(config.workdir) / "runs" / f"{config.name}-compare.json"
    shared_overrides = {"train.snapshots": STPP_SNAPSHOTS} if STPP in baselines else {}
    if jobs > 1:
        run_jobs(comparison_jobs(config, seeds, rounds, arms, official, shared_overrides), jobs, device, share_round0)
    for seed in seeds:
        shared = arm_config(config, seed, SUPONLY, shared_overrides)
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


def protocol(config: Config, tau: float | None) -> str:
    """What every arm shares and how they differ, in words, for the record."""
    train = config.train
    budget = f"round_max_steps = {train.round_max_steps}" if train.round_max_steps else \
        f"{train.round_epochs:g} passes over the round's chosen pseudo-labelled images"  # fmt: skip
    threshold = f"; threshold: pixels under confidence {tau:g} ignored" if tau is not None else ""
    return (
        f"every arm continues its seed's round 0 (suponly) for the same rounds with the same TTA views "
        f"({tta_description(config)}), the same budget ({budget}, init = {train.init}, round rate "
        f"{train.rate(1):g}), the same images a step and, in round 1, as many images as CISC-R "
        f"(rectify.ratio = {config.rectify.ratio:g}), each arm's most reliable by its own score (lower = more "
        f"reliable): st, threshold and oracle by mean -log confidence, stpp by ST++ stability over round 0's "
        f"snapshots, cisc by rectify.reliability = {config.rectify.reliability}{threshold}"
    )


def provenance(device: str, command: str) -> dict[str, Any]:
    """The commit (git's HEAD of the installed package, or CISCTOOL_COMMIT), the machine and the command."""
    commit = os.environ.get("CISCTOOL_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                    text=True, timeout=10).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            commit = ""
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
               "device": device, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}  # fmt: skip
    return {"commit": commit or "unknown", "machine": machine, "command": command}


def comparison_jobs(
    config: Config, seeds: list[int], rounds: int, arms: dict[str, dict[str, Any]], official: bool,
    shared_overrides: dict[str, Any] | None = None,
) -> list[Job]:  # fmt: skip
    """Every run of the comparison as a job: the seeds' round 0s, the official arms (their own round 0), the arms."""
    shared = {seed: arm_config(config, seed, SUPONLY, shared_overrides or {}) for seed in seeds}
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
