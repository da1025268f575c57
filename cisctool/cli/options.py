"""Every option more than one command takes, defined once, and what every command does first.

Commands read the config through `load` (file, `--profile`, `--set`, then the
command's own flags), resolve `--device` through `resolve_device`, and a command
that writes under runs/<name>/ holds its lock until it ends (`hold_run_folder`).
"""

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from cisctool.config import Config, Guide, WeightMode, choices, load_config
from cisctool.errors import InputError

DEFAULT_CONFIG = Path("cisctool.toml")
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

device_option = click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
guide_option = click.option(
    "--guide", type=click.Choice(choices(Guide)), default=None,
    help="Guide choice [default: rectify.guide]; random = the official code.",
)  # fmt: skip
weight_mode_option = click.option(
    "--weight-mode", type=click.Choice(choices(WeightMode)), default=None,
    help="Stored loss weight [default: rectify.weight_mode].",
)  # fmt: skip
no_rectify_option = click.option(
    "--no-rectify", "self_training", is_flag=True,
    help="Self-training (ST): argmax pseudo labels, weight 1, no CISC (sets rectify.enabled = false).",
)  # fmt: skip


def round_option(*, first: int = 0, required: bool = False, default: int | None = 0, help: str | None = None) -> Decorator:
    """`--round N` (N ≥ `first`): which round a command works on."""
    return click.option(
        "--round", "round_index", type=click.IntRange(first), required=required,
        default=None if required else default, show_default=default is not None and not required, help=help,
    )  # fmt: skip


def rectify_overrides(*, self_training: bool, guide: str | None, weight_mode: str | None) -> dict[str, Any]:
    """The config keys `--no-rectify`, `--guide` and `--weight-mode` set."""
    enabled = False if self_training else None
    return {"rectify.enabled": enabled, "rectify.guide": guide, "rectify.weight_mode": weight_mode}


def parse_setting(item: str) -> tuple[str, Any]:
    """`key=value` with a TOML value (`0.01`, `true`, `[0]`); a bare word is a string."""
    key, separator, text = item.partition("=")
    if not separator or not key.strip():
        raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.strip(), value


def load(ctx: click.Context, overrides: dict[str, Any] | None = None) -> Config:
    """The config file with `--profile`, `--set` and then the command's flags (None = not given) over it."""
    path = ctx.obj["config_path"] or DEFAULT_CONFIG
    if ctx.obj["config_path"] is None and not path.exists():
        raise InputError(f"{path}: config file not found (pass --config, or run `cisctool demo`)")
    flags = {key: value for key, value in (overrides or {}).items() if value is not None}
    return load_config(path, {**ctx.obj["settings"], **flags})


def resolve_device(requested: str | None) -> str:
    """`--device`, or cuda when this torch sees a GPU, else cpu."""
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: this torch sees no CUDA device")
    return requested


def hold_run_folder(config: Config, *, shard: str | None = None) -> None:
    """Hold runs/<name>/ until the command ends (under torchrun, rank 0 holds it for all ranks)."""
    from cisctool.steps.distributed import from_environment
    from cisctool.store.layout import RunLayout
    from cisctool.store.locks import writing

    if from_environment().is_main:
        click.get_current_context().with_resource(writing(RunLayout.of(config).run_dir, shard=shard))
