"""`cisctool rectify | export`: make a round's pseudo labels, and hand them to other tools."""

from pathlib import Path

import click

from cisctool.cli.options import (
    device_option,
    guide_option,
    hold_run_folder,
    load,
    no_rectify_option,
    rectify_overrides,
    resolve_device,
    round_option,
    weight_mode_option,
)  # fmt: skip
from cisctool.config import Compression, ReviewFormat, choices
from cisctool.console import console


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    """`I/N` with 0 ≤ I < N."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise click.BadParameter(f"{text!r} is not I/N with 0 ≤ I < N", param_hint="--shard")
    return int(index), int(count)


@click.command()
@round_option(first=1, required=True, help="Make the pseudo labels FOR round N (with round N-1's model and index).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Override rectify.batch_size.")
@guide_option
@weight_mode_option
@no_rectify_option
@click.option("--tta/--no-tta", default=None,
              help="Average predictions over rectify.tta_scales and flips [default: rectify.tta].")
@click.option("--resume", is_flag=True, help="Continue an unfinished run; only images not done are computed.")
@click.option("--force", is_flag=True, help="Recompute even if a finished pseudo.h5 exists.")
@click.option("--shard", default=None, metavar="I/N",
              help="Compute only shard I of N (the I-th of N contiguous runs of batches) into pseudo.shard<I>of<N>.h5.")
@click.option("--merge", is_flag=True,
              help="Join the finished shard files into pseudo.h5 (no computing): virtual datasets that read "
                   "the pixels from the shard files beside it.")
@click.option("--copy", is_flag=True,
              help="With --merge: copy every pixel into a self-contained pseudo.h5 (to ship it without its shards).")
@click.option("--compression", type=click.Choice(choices(Compression)), default="lzf", show_default=True,
              help="Of a computed file, or of a --merge --copy.")
@device_option
@click.pass_context
def rectify(
    ctx: click.Context, *,
    round_index: int,
    batch_size: int | None,
    guide: str | None,
    weight_mode: str | None,
    self_training: bool,
    tta: bool | None,
    resume: bool,
    force: bool,
    shard: str | None,
    merge: bool,
    copy: bool,
    compression: str,
    device: str | None,
) -> None:
    """Predict, guide, and rectify pseudo labels for the unlabeled split; write pseudo.h5 and a report.

    Under torchrun each rank computes one shard and rank 0 merges them. SIGTERM (a scheduler's
    preemption) stops after the queued batches are written: exit 143, then rerun with --resume.
    """
    from cisctool.report.tables import quality_tables
    from cisctool.steps.rectify import MergedShards, rectify_command
    from cisctool.store.layout import RunLayout

    overrides = rectify_overrides(self_training=self_training, guide=guide, weight_mode=weight_mode)
    config = load(ctx, {**overrides, "rectify.batch_size": batch_size, "rectify.tta": tta})
    shard_spec = _parse_shard(shard)
    if copy and not merge:
        raise click.BadParameter("only with --merge", param_hint="--copy")
    # shards of one run share the folder, each holding its own shard alone
    hold_run_folder(config, shard=f"round{round_index}-shard{shard_spec[0]}of{shard_spec[1]}" if shard_spec else None)
    outcome = rectify_command(config, round_index, resolve_device(device), resume=resume, force=force,
                              compression=compression, shard=shard_spec, merge=merge, copy=copy)  # fmt: skip
    if outcome is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    if isinstance(outcome, MergedShards):
        for table in quality_tables(outcome.report, f"pseudo labels for round {round_index} (merged)"):
            console.print(table)
        console.print(f"wrote {outcome.path}")
        return
    for table in quality_tables(outcome.report, f"pseudo labels for round {round_index}"):
        console.print(table)
    console.print(
        f"{outcome.computed} images in {outcome.seconds:.1f} s ({outcome.images_per_second:.1f} img/s); "
        f"wrote {outcome.path} and {RunLayout.of(config).pseudo_quality(round_index)}"
    )


@click.command()
@round_option(first=1, required=True)
@click.option("--format", "file_format", type=click.Choice(["png", *choices(ReviewFormat)]), default="png",
              show_default=True,
              help="png: palette masks in a folder; labelstudio: tasks JSON; cvat: Segmentation mask 1.1 zip.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A folder (png), a .json file (labelstudio) or a .zip file (cvat).")
@click.option("--worst", type=click.IntRange(1), default=None,
              help="Only the first K images of the review queue (highest Σ(1 − confidence)² first).")
@click.option("--overlay", is_flag=True, help="png: also write overlay/<id>.png: image, labels, CISC, weight.")
@click.option("--limit", type=click.IntRange(1), default=None, help="png: only the first N images.")
@click.pass_context
def export(
    ctx: click.Context, *, round_index: int, file_format: str, out: Path, worst: int | None, overlay: bool,
    limit: int | None,
) -> None:  # fmt: skip
    """Round N's pseudo labels as palette PNGs (<id>.png, 255 = ignore, as ST++/UniMatch read them), or as
    predictions to correct in Label Studio or CVAT (then `cisctool data import`)."""
    from cisctool.steps.export import export_pseudo_labels, label_config_path

    count = export_pseudo_labels(load(ctx), round_index, file_format, out, overlay=overlay, limit=limit, worst=worst)
    if file_format == "png":
        console.print(f"wrote {count} PNG masks to {out}/" + (f" and overlays to {out}/overlay/" if overlay else ""))
        return
    beside = f" and its labeling config {label_config_path(out)}" if file_format == "labelstudio" else ""
    console.print(f"wrote {count} images' pseudo labels to {out}{beside}")
