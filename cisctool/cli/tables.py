"""Rich tables of what a step returned: a training, a val score, the rounds of a run, a comparison."""

from __future__ import annotations

import math

from rich.table import Table

from cisctool.report.numbers import percent_text
from cisctool.steps.compare import OFFICIAL, ORACLE, Comparison, mean_std
from cisctool.steps.evaluate import EvalResult
from cisctool.steps.rounds import RoundRow
from cisctool.steps.train import TrainOutcome


def eval_table(result: EvalResult, title: str) -> Table:
    """Per-class IoU (collapsed classes marked), then mIoU and pixel accuracy, in percent."""
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, value in zip(result.class_names, result.per_class_iou, strict=True):
        table.add_row(name, percent_text(value) + (" [red]collapsed" if name in result.collapsed else ""))
    table.add_section()
    table.add_row("[bold]mIoU", f"[bold]{percent_text(result.mean_iou)}")
    table.add_row("pixel accuracy", percent_text(result.pixel_accuracy))
    table.add_row("images / seconds", f"{result.images} / {result.seconds:.1f}")
    return table


def train_table(outcome: TrainOutcome) -> Table:
    table = Table(title=f"training round {outcome.round_index}")
    if outcome.pseudo_images is not None:
        table.caption = f"pseudo-labeled images trained on: {outcome.pseudo_images[0]} of {outcome.pseudo_images[1]}"
    for column in ("steps", "resumed from", "final loss", "seconds", "steps/s"):
        table.add_column(column, justify="right")
    done = outcome.steps - outcome.resumed_from
    rate = done / outcome.seconds if outcome.seconds > 0 else math.nan
    table.add_row(
        f"{outcome.steps}/{outcome.total_steps}",
        str(outcome.resumed_from),
        f"{outcome.final_loss:.4f}",
        f"{outcome.seconds:.1f}",
        f"{rate:.2f}",
    )
    return table


def rounds_table(rows: list[RoundRow], title: str) -> Table:
    """Per round: pseudo-label mIoU raw → rectified, val mIoU, collapsed classes, time, steps run."""
    table = Table(title=title)
    for column in ("round", "pseudo mIoU % raw", "rectified", "val mIoU %", "collapsed classes", "seconds",
                   "steps run"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("steps run", "collapsed classes") else "right")
    for row in rows:
        table.add_row(
            str(row.round_index),
            *(percent_text(value) for value in (row.raw_miou, row.rectified_miou, row.val_miou)),
            f"[red]{', '.join(row.collapsed)}" if row.collapsed else "none", f"{row.seconds:.0f}",
            ", ".join(row.ran) or "none (all up to date)",
        )  # fmt: skip
    return table


def comparison_tables(result: Comparison, title: str) -> list[Table]:
    """Two tables: the arms' final val mIoU per seed, mean ± std and share of the SupOnly → oracle gap;
    then each method minus each baseline, same seed: per seed, mean ± std, seeds where the method is ahead."""
    arms = Table(title=title)
    arms.add_column("arm")
    for seed in result.seeds:
        arms.add_column(f"seed {seed}", justify="right")
    arms.add_column("mean ± std", justify="right")
    with_gap = ORACLE in result.arms
    if with_gap:
        arms.add_column("gap closed", justify="right")
    for arm in result.arms:
        final = result.final(arm)
        share = result.gap_share(arm)
        gap = ["—" if share is None else f"{100 * share:.0f} %"] if with_gap else []
        arms.add_row(arm, *[percent_text(value) for value in final], _pm(mean_std(final)), *gap)
    arms.caption = (
        f"final val mIoU % after {result.rounds} round(s); suponly = the shared round 0; every arm but "
        f"{OFFICIAL} continues its seed's round 0" + ("; gap closed = share of suponly → oracle" if with_gap else "")
    )
    paired = Table(title="paired differences, same seed (val mIoU points)")
    paired.add_column("method − baseline")
    for seed in result.seeds:
        paired.add_column(f"seed {seed}", justify="right")
    paired.add_column("mean ± std", justify="right")
    paired.add_column("seeds ahead", justify="right")
    for arm in result.methods:
        for baseline in result.baselines:
            differences = result.difference(arm, baseline)
            paired.add_row(f"{arm} − {baseline}", *[f"{100 * value:+.2f}" for value in differences],
                           _pm(mean_std(differences), signed=True),
                           f"{sum(value > 0 for value in differences)}/{len(differences)}")  # fmt: skip
    return [arms, paired]


def _pm(pair: tuple[float, float], *, signed: bool = False) -> str:
    return f"{100 * pair[0]:{'+' if signed else ''}.2f} ± {100 * pair[1]:.2f}"
