"""`cisctool run | demo | compare | report`: every step of every round, the demo, paired arms, the HTML report."""

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cisctool.cli.options import (
    device_option,
    guide_option,
    hold_run_folder,
    load,
    no_rectify_option,
    parse_setting,
    rectify_overrides,
    resolve_device,
    round_option,
    weight_mode_option,
)  # fmt: skip
from cisctool.cli.tables import comparison_tables, rounds_table
from cisctool.config import load_config
from cisctool.console import console
from cisctool.steps.compare import BASELINES, DEFAULT_BASELINES, DEFAULT_TAU

if TYPE_CHECKING:  # matplotlib loads only for the commands that write a report
    from cisctool.steps.report import ReportOutcome


@click.command("run")
@click.option("--rounds", type=click.IntRange(0), default=2, show_default=True,
              help="Train rounds 0…R (R pseudo-labelling rounds).")
@no_rectify_option
@guide_option
@weight_mode_option
@device_option
@click.pass_context
def run_command(
    ctx: click.Context,
    *,
    rounds: int,
    self_training: bool,
    guide: str | None,
    weight_mode: str | None,
    device: str | None,
) -> None:
    """Every step of every round (train, index, rectify, train, …), skipping those already done."""
    from cisctool.steps.report import write_report
    from cisctool.steps.rounds import run_rounds
    from cisctool.store.layout import RunLayout

    config = load(ctx, rectify_overrides(self_training=self_training, guide=guide, weight_mode=weight_mode))
    hold_run_folder(config)
    rows = run_rounds(config, rounds, resolve_device(device))
    console.print(rounds_table(rows, f"{config.name}: {rounds} round(s)"))
    console.print(f"outputs in {RunLayout.of(config).run_dir}/")
    _print_report(write_report(config))


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_data"), show_default=True)
@click.option("--rounds", type=click.IntRange(0), default=2, show_default=True)
@device_option
@click.pass_context
def demo(ctx: click.Context, out: Path, rounds: int, device: str | None) -> None:
    """Demo data (if missing), then `run --rounds 2` on it: train, index, rectify, retrain; one table.

    Steps whose outputs are up to date are skipped; a killed step resumes.
    """
    from cisctool.data.demo import make_demo
    from cisctool.steps.report import write_report
    from cisctool.steps.rounds import run_rounds
    from cisctool.store.layout import RunLayout

    config_path = out / "cisctool.toml"
    if not config_path.exists():
        make_demo(out)
        console.print(f"demo data written to {out}/")
    config = load_config(config_path, ctx.obj["settings"])
    hold_run_folder(config)
    rows = run_rounds(config, rounds, resolve_device(device))
    console.print(rounds_table(rows, f"demo: {rounds} round(s) of CISC-R"))
    console.print(f"outputs in {RunLayout.of(config).run_dir}/")
    _print_report(write_report(config))


@click.command("compare")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True, help="Rounds after round 0.")
@click.option("--seeds", default="0,1,2,3,4", show_default=True, help="Comma-separated seeds.")
@click.option("--baselines", default=",".join(DEFAULT_BASELINES), show_default=True,
              help="Comma-separated arms CISC-R is measured against: st (self-training, no CISC), threshold "
                   "(pixels under confidence τ ignored, as FixMatch / UniMatch), stpp (ST++'s most stable "
                   "images over round 0's snapshots), oracle (the unlabeled split's true masks: the ceiling; "
                   "the split must list them).")
@click.option("--tau", type=click.FloatRange(0, 1), default=DEFAULT_TAU, show_default=True,
              help="The threshold arm's confidence threshold τ.")
@click.option("--official", is_flag=True, help="Also run the official profile (its own round 0).")
@click.option("--arm", "arms", multiple=True, metavar="NAME:KEY=VALUE[,KEY=VALUE]",
              help="An extra arm on the shared round 0, e.g. --arm mean:rectify.weight_mode=mean.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Runs at once, each its own `cisctool run` process with a share of the CPU threads "
                   "(a GPU that one small run leaves idle).")
@device_option
@click.pass_context
def compare_command(
    ctx: click.Context, *, rounds: int, seeds: str, baselines: str, tau: float, official: bool,
    arms: tuple[str, ...], jobs: int, device: str | None,
) -> None:  # fmt: skip
    """SupOnly, the baselines (self-training, thresholded, ST++, oracle) and CISC-R on one shared round 0 per
    seed; paired differences of CISC-R against each baseline."""
    from cisctool.steps.compare import compare

    config = load(ctx)
    extra = dict(_parse_arm(text) for text in arms)
    try:
        seed_list = [int(item) for item in seeds.split(",")]
    except ValueError:
        raise click.BadParameter(f"{seeds!r} is not a comma-separated list of integers", param_hint="--seeds") from None
    chosen = tuple(dict.fromkeys(item.strip() for item in baselines.split(",") if item.strip()))
    if not chosen or set(chosen) - set(BASELINES):
        raise click.BadParameter(f"{baselines!r}: choose from {', '.join(BASELINES)}", param_hint="--baselines")
    command = shlex.join(["cisctool", *sys.argv[1:]])
    result, record = compare(config, seed_list, rounds, resolve_device(device), baselines=chosen, tau=tau,
                             extra_arms=extra, official=official, jobs=jobs, command=command)  # fmt: skip
    for table in comparison_tables(result, f"{config.name}: {len(result.seeds)} seed(s), {rounds} round(s)"):
        console.print(table)
    console.print(f"wrote {record}")


def _parse_arm(text: str) -> tuple[str, dict[str, Any]]:
    """`name:key=value,key=value` → (name, overrides); values as `--set` reads them."""
    from cisctool.steps.compare import ARM_NAMES

    name, separator, settings = text.partition(":")
    if not separator or not name or name in ARM_NAMES:
        raise click.BadParameter(f"{text!r} is not NAME:KEY=VALUE[,KEY=VALUE] with a new arm name", param_hint="--arm")
    return name, dict(parse_setting(item) for item in settings.split(","))


@click.command()
@round_option(first=1, default=None,
              help="Whose pseudo labels the signals, histogram and gallery show [default: the latest].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write [default: runs/<name>/report].")
@click.option("--gallery", "gallery_size", type=click.IntRange(0), default=60, show_default=True,
              help="How many images the gallery shows, highest review score "
                   "(Σ(1 − confidence)² over the image's pixels) first.")
@click.pass_context
def report(ctx: click.Context, round_index: int | None, out: Path | None, gallery_size: int) -> None:
    """A static HTML report of the run (opens from disk): rounds, IoU, losses, signals, worst-first gallery."""
    from cisctool.steps.report import write_report

    _print_report(write_report(load(ctx), round_index, out, gallery_size))


def _print_report(outcome: "ReportOutcome") -> None:
    shown = (
        f"round {outcome.pseudo_round}'s {outcome.gallery} images with the highest review score"
        if outcome.pseudo_round is not None else "no pseudo labels yet"
    )  # fmt: skip
    console.print(f"wrote the report {outcome.path} ({shown}; {outcome.seconds:.1f} s)")
