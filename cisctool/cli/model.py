"""`cisctool train | eval | tune | predict`: train a round's model, score it, tune thresholds, label images."""

from pathlib import Path

import click

from cisctool.cli.options import device_option, hold_run_folder, load, resolve_device, round_option
from cisctool.cli.tables import eval_table, train_table
from cisctool.config import EvalMode, Init, RectifyConfig, choices
from cisctool.console import console, warn
from cisctool.report.confusion import collapse_message


@click.command()
@round_option(help="0: labeled images only; N ≥ 1: plus round N's pseudo labels (run rectify --round N first).")
@click.option("--resume", is_flag=True, help="Continue from the round's last.pt.")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help="Override train.max_steps (round 0) or train.round_max_steps (rounds ≥ 1).")
@click.option("--init", type=click.Choice(choices(Init)), default=None,
              help="Rounds ≥ 1: start from scratch or from round N-1's model [default: train.init].")
@device_option
@click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA [default: train.amp].")
@click.option("--consistency-weight", type=click.FloatRange(0), default=None,
              help="Override train.consistency_weight (0 = no CISC consistency loss).")  # fmt: skip
@click.pass_context
def train(
    ctx: click.Context, *,
    round_index: int,
    resume: bool,
    max_steps: int | None,
    init: str | None,
    device: str | None,
    amp: bool | None,
    consistency_weight: float | None,
) -> None:
    """Train round N (0: labeled images; N ≥ 1: labeled + rectified pseudo labels), then evaluate on val."""
    from cisctool.steps.train import train_and_evaluate

    steps_key = "train.max_steps" if round_index == 0 else "train.round_max_steps"
    config = load(
        ctx,
        {steps_key: max_steps, "train.amp": amp, "train.consistency_weight": consistency_weight,
         "train.init": init},
    )  # fmt: skip
    hold_run_folder(config)
    outcome, result = train_and_evaluate(config, resolve_device(device), round_index, resume=resume)
    console.print(train_table(outcome))
    if result is not None:
        console.print(eval_table(result, f"round {round_index} on val ({result.mode})"))
        if result.collapsed:
            warn(collapse_message(result.collapsed, f"round {round_index}'s model"))
    console.print(f"wrote {outcome.model_path} and metrics beside it")


@click.command("eval")
@round_option()
@click.option("--mode", type=click.Choice(choices(EvalMode)), default=None,
              help="Inference mode [default: eval.mode].")  # fmt: skip
@click.option("--split", type=click.Choice(["val", "pseudo"]), default="val", show_default=True,
              help="val: the round's model on val; pseudo: round N's pseudo labels vs unlabeled masks.")
@device_option
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the scores as JSON.")  # fmt: skip
@click.pass_context
def eval_command(
    ctx: click.Context,
    round_index: int,
    mode: str | None,
    split: str,
    device: str | None,
    json_path: Path | None,
) -> None:
    """Per-class IoU and mIoU of a round's model on val, or of its pseudo labels (--split pseudo)."""
    from cisctool.report.tables import quality_tables
    from cisctool.steps.evaluate import evaluate_round, score_pseudo_labels
    from cisctool.store.atomic import atomic_write_json

    config = load(ctx, {"eval.mode": mode})
    if split == "pseudo":
        scores = score_pseudo_labels(config, round_index)
        for table in quality_tables(scores, f"pseudo labels for round {round_index}"):
            console.print(table)
    else:
        result = evaluate_round(config, round_index, resolve_device(device))
        console.print(eval_table(result, f"round {round_index} on {split} ({result.mode})"))
        if result.collapsed:
            warn(collapse_message(result.collapsed, f"round {round_index}'s model"))
        scores = result.as_dict()
    if json_path is not None:
        atomic_write_json(json_path, scores)
        console.print(f"wrote {json_path}")


@click.command()
@click.option("--folds", type=click.IntRange(2), default=3, show_default=True, help="K cross-fitting folds.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Training steps per fold model.")
@device_option
@click.pass_context
def tune(ctx: click.Context, folds: int, max_steps: int | None, device: str | None) -> None:
    """Choose rectify thresholds by K-fold cross-fitting on the labeled images (never the unlabeled masks)."""
    from cisctool.report.tables import quality_tables, tune_table
    from cisctool.steps.tune import tune_thresholds

    config = load(ctx)
    hold_run_folder(config)
    outcome = tune_thresholds(config, resolve_device(device), folds, max_steps)
    console.print(quality_tables(outcome.signals, "held-out signals")[-1])
    console.print(tune_table(outcome.results, outcome.recommended, folds))
    defaults = RectifyConfig()
    changes = [f"{key} = {value:g}" for key, value in outcome.recommended.items() if value != getattr(defaults, key)]
    advice = "add to [rectify]: " + "; ".join(changes) if changes else "leave relabel and drop off (the defaults)"
    console.print(f"wrote {outcome.path} ({outcome.seconds:.0f} s); {advice}")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--overlay", is_flag=True, help="Also write overlay/<name>.png: the image and it with the mask.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@device_option
def predict(
    *, checkpoint: Path, images: tuple[Path, ...], out: Path, overlay: bool, batch_size: int, device: str | None
) -> None:
    """Palette PNG masks (<name>.png, palette index = class) for any IMAGES with a model.pt; no config needed."""
    from cisctool.steps.predict import predict_images

    class_names = predict_images(
        checkpoint, list(images), out, resolve_device(device), overlay=overlay, batch_size=batch_size
    )
    console.print(f"wrote {len(images)} masks to {out}/ (classes: {', '.join(class_names)})")
