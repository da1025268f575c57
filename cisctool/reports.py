"""Rich tables of results; plain text when output is not a terminal."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.table import Table

from cisctool.evaluate import EvalResult
from cisctool.train import TrainOutcome

if TYPE_CHECKING:  # faiss loads only for the index commands
    from cisctool.index import PrototypeIndex
    from cisctool.index_build import GuideHit


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


def index_table(prototype_index: PrototypeIndex, class_names: list[str], stale: bool | None = None) -> Table:
    """Vectors per class, then dim, factory, build time, recall@1 and staleness."""
    meta = prototype_index.metadata
    table = Table(title=f"index of round {meta.get('round', '?')} ({meta['factory']})")
    table.add_column("class")
    table.add_column("vectors", justify="right")
    for name, count in zip(class_names, prototype_index.vectors_per_class(len(class_names)), strict=True):
        table.add_row(name, str(count) if count else "[red]0 (no guide)")
    table.add_section()
    table.add_row("total / dim", f"{meta['vectors']} / {meta['dim']}")
    table.add_row("build seconds", f"{meta['build_seconds']:.3f}")
    recall = meta.get("recall_at_1")
    table.add_row("recall@1 vs exact", "exact (Flat)" if recall is None else f"{recall:.3f}")
    if stale is not None:
        table.add_row("stale", "[red]yes: model changed since" if stale else "no")
    return table


def guides_table(hits: list[GuideHit], class_names: tuple[str, ...], title: str) -> Table:
    """One row per retrieved guide: class, its predicted area, rank, labeled image id, cosine."""
    table = Table(title=title)
    table.add_column("class")
    for column in ("area %", "rank"):
        table.add_column(column, justify="right")
    table.add_column("guide image")
    table.add_column("cosine", justify="right")
    for hit in hits:
        table.add_row(
            class_names[hit.cls], f"{100 * hit.area:.1f}", str(hit.rank + 1), hit.image_id, f"{hit.score:.3f}"
        )
    return table
