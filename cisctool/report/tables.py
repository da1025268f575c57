"""Rich tables of results; plain text when output is not a terminal."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.table import Table

from cisctool.report.numbers import percent_text

if TYPE_CHECKING:  # faiss loads only for the index commands
    from cisctool.method.guides import GuideHit
    from cisctool.method.index import PrototypeIndex


def index_table(prototype_index: PrototypeIndex, class_names: list[str], *, stale: bool | None = None) -> Table:
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


def quality_tables(report: dict, title: str) -> list[Table]:
    """The pseudo-label quality report: raw vs rectified per class, what changed, signal AUROCs."""
    summary = _quality_summary(report, title)
    labeled = report.get("labeled_share") or {}
    aligned = (report.get("prior_alignment") or {}).get("classes") or {}
    factor_columns = [("prior factor", "right")] if aligned else []
    if not report["with_masks"]:
        shares = Table(title="pseudo-label class share (no masks: no mIoU)")
        for column, justify in (("class", "left"), ("pixels %", "right"), ("labeled pixels %", "right"),
                                *factor_columns):  # fmt: skip
            shares.add_column(column, justify=justify)
        for name, share in report["label_share"].items():
            shares.add_row(
                name, percent_text(share), percent_text(labeled.get(name)), *_factor(aligned, name)
            )
        return [summary, shares]
    _add_mask_scores(summary, report)
    per_class = Table(title="pseudo-label IoU % per class, and each class's share of the pixels")
    for column, justify in (("class", "left"), ("raw", "right"), ("rectified", "right"),
                            ("pixels %", "right"), ("labeled pixels %", "right"),
                            *factor_columns):  # fmt: skip
        per_class.add_column(column, justify=justify)
    names = list(report["label_share"])[:-1]
    for name, raw, rectified in zip(
        names, report["raw_per_class_iou"], report["rectified_per_class_iou"], strict=True
    ):
        per_class.add_row(name, percent_text(raw), percent_text(rectified),
                          percent_text(report["label_share"][name]), percent_text(labeled.get(name)),
                          *_factor(aligned, name))  # fmt: skip
    return [summary, per_class, _signals_table(report)]


def _quality_summary(report: dict, title: str) -> Table:
    """The measures a report has with or without masks: images, weights, drops, reliability, queries, alignment."""
    summary = Table(title=title)
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("images", str(report["images"]))
    summary.add_row("mean weight", f"{report['mean_weight']:.3f}")
    summary.add_row("dropped pixels %", percent_text(report["label_share"]["(dropped)"]))
    quantiles = report["reliability"]["quantiles"]
    summary.add_row("reliability median (lower = more reliable)", _maybe_number(quantiles["0.50"]))
    summary.add_row("images without CISC evidence", str(report["reliability"]["images_without_evidence"]))
    if "queries" in report:
        queries = report["queries"]
        summary.add_row(
            "class queries: guided / fallback / no guide",
            f"{queries['guided']} / {queries['fallback']} / {queries['unguided']}",
        )
    if (report.get("prior_alignment") or {}).get("classes"):
        strength = report["prior_alignment"]["strength"]
        summary.add_row("prior alignment τ (P × factor, renormalised)", f"{strength:g}")
    if thresholds := report.get("adaptive_thresholds"):
        values = [entry["threshold"] for entry in thresholds["classes"].values()]
        summary.add_row("class thresholds (FreeMatch): mean confidence, lowest–highest τ_c",
                        f"{thresholds['mean_confidence']:.3f}, {min(values):.3f}–{max(values):.3f}")  # fmt: skip
    return summary


def _add_mask_scores(summary: Table, report: dict) -> None:
    """The summary rows that need the unlabeled masks: mIoU raw and rectified, what relabeling and dropping did."""
    summary.add_row("[bold]raw mIoU %", f"[bold]{percent_text(report['raw_miou'])}")
    summary.add_row("[bold]rectified mIoU % (kept pixels)", f"[bold]{percent_text(report['rectified_miou'])}")
    summary.add_row("relabeled pixels %", percent_text(report["relabeled_fraction"]))
    summary.add_row(
        "relabeled: right before → after %",
        f"{percent_text(report['relabeled_right_before'])} → {percent_text(report['relabeled_right_after'])}",
    )
    summary.add_row("dropped pixels that were wrong %", percent_text(report["dropped_that_were_wrong"]))


def _signals_table(report: dict) -> Table:
    """Each per-pixel signal's AUROC at telling right from wrong pseudo-labelled pixels."""
    signals = Table(title="which signal tells right from wrong pixels (AUROC; 0.5 = none)")
    for column in ("signal", "pooled", "mean over classes", "undefined px %"):
        signals.add_column(column, justify="left" if column == "signal" else "right")
    for name, scores in report["auroc"].items():
        signals.add_row(
            name, _maybe_number(scores["pooled"]), _maybe_number(scores["class_mean"]),
            percent_text(scores["undefined_pixels"]),
        )  # fmt: skip
    return signals


def _factor(aligned: dict[str, dict[str, float]], name: str) -> list[str]:
    """The prior-alignment factor of class `name` as a cell ([] without alignment; "" for "(dropped)")."""
    if not aligned:
        return []
    return [f"×{aligned[name]['weight']:.2f}" if name in aligned else ""]


def _maybe_number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def tune_table(results: list[dict], recommended: dict[str, float], folds: int) -> Table:
    """Leaving labels as predicted vs the best relabel and drop settings, scored on held-out folds."""
    table = Table(title=f"thresholds cross-fitted on {folds} held-out folds of the labeled images")
    table.caption = "mIoU counts a dropped pixel as missed; changed = relabeled or dropped pixels"
    for column in ("setting", "margin", "p_min", "cisc_min", "conf_min", "changed %", "mIoU %"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    baseline = results[0]
    rows = [("as predicted", baseline)]
    for name in ("relabel", "drop"):
        rows.append((f"best {name}", max((r for r in results if r["family"] == name), key=lambda r: r["miou"])))
    for label, result in rows:
        table.add_row(
            label, *(_setting_value(result[key]) for key in ("margin", "p_min", "cisc_min", "conf_min")),
            percent_text(result["changed"]),
            f"{percent_text(result['miou'])} ({100 * (result['miou'] - baseline['miou']):+.2f})",
        )  # fmt: skip
    table.add_section()
    table.add_row(
        "[bold]recommended", *(_setting_value(recommended[key]) for key in ("margin", "p_min", "cisc_min", "conf_min")),
        "", "",
    )  # fmt: skip
    return table


def _setting_value(value: float) -> str:
    return "off" if math.isinf(value) else f"{value:g}"


