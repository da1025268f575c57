"""`cisctool data make-demo | check | import`: the demo data set, the splits' check, reviewed masks back in."""

from pathlib import Path

import click

from cisctool.cli.options import load
from cisctool.config import ReviewFormat, choices
from cisctool.console import console, warn
from cisctool.data.demo import DEMO_KINDS


@click.group()
def data() -> None:
    """Make the demo data set; check a config's splits."""


@data.command("make-demo")
@click.argument("out", type=click.Path(path_type=Path), default=Path("demo_data"))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--kind", type=click.Choice(list(DEMO_KINDS)), default="shapes", show_default=True,
              help="shapes: the demo (6 balanced classes); aerial: map tiles (7 unbalanced classes, thin roads).")
@click.option("--labeled", "num_labeled", type=click.IntRange(2), default=None, help="[default: 30 shapes, 40 aerial]")
@click.option("--unlabeled", "num_unlabeled", type=click.IntRange(1), default=None,
              help="[default: 500 shapes, 400 aerial]")
@click.option("--val", "num_val", type=click.IntRange(1), default=None, help="[default: 100]")
def make_demo_command(
    out: Path, seed: int, kind: str, num_labeled: int | None, num_unlabeled: int | None, num_val: int | None
) -> None:
    """Write an embedded, seeded benchmark data set and its cisctool.toml to OUT."""
    from cisctool.data.demo import make_demo

    config_path = make_demo(out, seed, num_labeled, num_unlabeled, num_val, kind=kind)
    console.print(f"demo data written to {out}/ ; config: {config_path}")


@data.command("check")
@click.pass_context
def check_command(ctx: click.Context) -> None:
    """Validate the splits: files exist, image/mask sizes match, label values < C or ignore."""
    from cisctool.data.check import check_splits
    from cisctool.report.resolution import ceiling_table, labeled_ceilings, thin_classes

    config = load(ctx)
    summary = check_splits(config)
    console.print(summary.table())
    ceilings = labeled_ceilings(config)
    console.print(ceiling_table(config.class_names, ceilings))
    for message in thin_classes(config, ceilings):
        warn(message)
    console.print(f"all splits of {config.source} are valid")


@data.command("import")
@click.option("--format", "file_format", type=click.Choice(choices(ReviewFormat)), required=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_split", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The labeled split file to write: the existing labeled images plus the imported ones.")
@click.pass_context
def import_command(ctx: click.Context, file_format: str, file: Path, out_split: Path) -> None:
    """Corrected masks from Label Studio (JSON export) or CVAT (Segmentation mask 1.1 zip) → labeled images."""
    from cisctool.steps.review_import import import_reviewed

    config = load(ctx)
    outcome = import_reviewed(config, file_format, file, out_split)
    console.print(
        f"imported {outcome.imported} masks to {outcome.masks}/; wrote {outcome.split} ({outcome.labeled} labeled "
        f"images); train on them with --set data.labeled={outcome.labeled_key(config)!r} or that key in the config"
    )
