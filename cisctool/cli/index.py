"""`cisctool index build | info | query`: the FAISS index of the labeled images' class prototypes."""

from pathlib import Path

import click

from cisctool.cli.options import device_option, hold_run_folder, load, resolve_device, round_option
from cisctool.console import console


@click.group()
def index() -> None:
    """FAISS index of the labeled images' class prototypes."""


@index.command("build")
@round_option()
@click.option("--factory", default=None, help="FAISS factory string [default: index.factory].")
@device_option
@click.pass_context
def index_build_command(ctx: click.Context, round_index: int, factory: str | None, device: str | None) -> None:
    """Embed every labeled image's present classes with round N's model and index them."""
    from cisctool.report.tables import index_table
    from cisctool.steps.index import build_round_index
    from cisctool.store.layout import RunLayout

    config = load(ctx)
    hold_run_folder(config)
    prototype_index = build_round_index(config, round_index, resolve_device(device), factory)
    console.print(index_table(prototype_index, list(config.class_names)))
    index_path, meta_path = RunLayout.of(config).index_files(round_index)
    console.print(f"wrote {index_path} and {meta_path}")


@index.command("info")
@round_option()
@click.pass_context
def index_info_command(ctx: click.Context, round_index: int) -> None:
    """Vectors per class, dim, checkpoint hash and staleness of round N's index."""
    from cisctool.report.tables import index_table
    from cisctool.steps.index import open_round_index

    config = load(ctx)
    prototype_index, stale = open_round_index(config, round_index)
    console.print(index_table(prototype_index, list(config.class_names), stale=stale))
    console.print(f"checkpoint sha256 {prototype_index.metadata.get('checkpoint_sha256', '?')}")


@index.command("query")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@round_option()
@click.option("-k", "k", type=click.IntRange(1), default=None, help="Guides per class [default: index.topk].")
@click.option("--save", "save_path", type=click.Path(path_type=Path), default=None,
              help="Write a PNG: image, prediction, top guide per class with its mask.")  # fmt: skip
@device_option
@click.pass_context
def index_query_command(
    ctx: click.Context, image: Path, round_index: int, k: int | None, save_path: Path | None, device: str | None
) -> None:
    """Show the labeled guides IMAGE would get: per predicted class, the top-k prototypes."""
    from cisctool.report.tables import guides_table
    from cisctool.steps.index import query_image, save_guide_picture

    config = load(ctx)
    hits, pixels, prediction = query_image(config, round_index, image, k or config.index.topk, resolve_device(device))
    title = f"guides for {image.name} (round {round_index} index)"
    console.print(guides_table(hits, config.class_names, title))
    if save_path is not None:
        save_guide_picture(config, hits, pixels, prediction, save_path)
        console.print(f"wrote {save_path}")
