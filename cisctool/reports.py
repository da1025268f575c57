"""Rich tables of results; plain text when output is not a terminal."""

import math

from rich.table import Table

from cisctool.evaluate import EvalResult
from cisctool.train import TrainOutcome


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.2f}"


def eval_table(result: EvalResult, title: str) -> Table:
    """Per-class IoU, then mIoU and pixel accuracy, in percent."""
    table = Table(title=title)
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, value in zip(result.class_names, result.per_class_iou, strict=True):
        table.add_row(name, _percent(value))
    table.add_section()
    table.add_row("[bold]mIoU", f"[bold]{_percent(result.mean_iou)}")
    table.add_row("pixel accuracy", _percent(result.pixel_accuracy))
    table.add_row("images / seconds", f"{result.images} / {result.seconds:.1f}")
    return table


def train_table(outcome: TrainOutcome) -> Table:
    table = Table(title=f"training round {outcome.round_index}")
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
