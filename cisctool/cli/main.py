"""Command line (DESIGN §2): parse, call the pipelines, print where outputs went and a table.

Exit codes: 0 ok, 1 runtime failure, 2 usage or bad input, 130 interrupted;
errors are one line naming the file or key and the problem. Commands that
write under runs/<name>/ hold its lock until they end (`locks`); readers take none.
"""

import sys
import tomllib
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import torch

from cisctool import __version__
from cisctool.cli.tables import eval_table, train_table
from cisctool.config import CHOICES, PROFILES, Config, RectifyConfig, load_config
from cisctool.console import console, set_verbosity, verbose, warn
from cisctool.data.demo import DEMO_KINDS
from cisctool.errors import InputError, is_disk_full
from cisctool.report.confusion import collapse_message
from cisctool.report.tables import guides_table, index_table

if TYPE_CHECKING:  # matplotlib loads only for the commands that write a report
    from cisctool.steps.evaluate import EvalResult
    from cisctool.steps.report import ReportOutcome

DEFAULT_CONFIG = Path("cisctool.toml")
REVIEW_FORMATS = ("labelstudio", "cvat")  # annotation tools that pseudo labels go to and corrections come from


class CisctoolGroup(click.Group):
    """Turns InputError into a one-line message with exit 2, anything else into exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as error:
            _fail(_one_line(error), 2)
        except KeyboardInterrupt:
            _fail("interrupted; finished files are intact, rerun with --resume to continue", 130)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:  # a runtime failure: one line, the traceback only with -v
            if verbose():
                traceback.print_exc()
            if is_disk_full(error):
                where = f"{error.filename}: " if getattr(error, "filename", None) else ""
                _fail(f"{where}no space left on device; finished files are intact, free space "
                      "and rerun with --resume", 1)  # fmt: skip
            _fail(f"{type(error).__name__}: {_one_line(error)}", 1)


def _one_line(error: BaseException) -> str:
    """The last line of the message: DataLoader workers re-raise with the traceback prepended."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    prefix = f"{InputError.__module__}.{InputError.__name__}: "
    return text.removeprefix(prefix)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(cls=CisctoolGroup)
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None,
    help="TOML config file [default: ./cisctool.toml].",
)  # fmt: skip
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE",
    help="Override a config key, e.g. --set train.lr=0.01 (TOML values; repeatable).",
)  # fmt: skip
@click.option("--profile", type=click.Choice(list(PROFILES)), default=None,
              help="official: the paper's code choices (random guide, official weight, λ = 1, five-scale TTA, "
                   "rounds from scratch); --set still wins [default: the config's profile].")
@click.option("-v", "--verbose", "verbosity", flag_value=1, help="More detail; tracebacks on failure.")
@click.option("-q", "--quiet", "verbosity", flag_value=-1, help="No progress bars or tables.")
@click.version_option(__version__, prog_name="cisctool")
@click.pass_context
def main(
    ctx: click.Context,
    config_path: Path | None,
    settings: tuple[str, ...],
    profile: str | None,
    verbosity: int | None,
) -> None:
    """cisctool: rectify pseudo labels with cross-image semantic consistency (CISC-R)."""
    from cisctool.steps.distributed import from_environment

    set_verbosity((verbosity or 0) if from_environment().is_main else -1)  # one voice under torchrun
    chosen = {"profile": profile} if profile else {}
    ctx.obj = {"config_path": config_path, "settings": {**chosen, **dict(_parse_setting(item) for item in settings)}}


def _parse_setting(item: str) -> tuple[str, Any]:
    """`key=value` with a TOML value (`0.01`, `true`, `[0]`); a bare word is a string."""
    key, separator, text = item.partition("=")
    if not separator or not key.strip():
        raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.strip(), value


def _config(ctx: click.Context, overrides: dict[str, Any] | None = None) -> Config:
    path = ctx.obj["config_path"] or DEFAULT_CONFIG
    if ctx.obj["config_path"] is None and not path.exists():
        raise InputError(f"{path}: config file not found (pass --config, or run `cisctool demo`)")
    flags = {key: value for key, value in (overrides or {}).items() if value is not None}
    return load_config(path, {**ctx.obj["settings"], **flags})


def _warn_collapsed(result: "EvalResult", round_index: int) -> None:
    if result.collapsed:
        warn(collapse_message(result.collapsed, f"round {round_index}'s model"))
def _hold_run_folder(config: Config, *, shard: str | None = None) -> None:
    """Hold runs/<name>/ until the command ends (under torchrun, rank 0 holds it for all ranks)."""
    from cisctool.steps.distributed import from_environment
    from cisctool.store.layout import RunLayout
    from cisctool.store.locks import writing

    if from_environment().is_main:
        click.get_current_context().with_resource(writing(RunLayout.of(config).run_dir, shard=shard))


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    """`I/N` with 0 ≤ I < N."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise click.BadParameter(f"{text!r} is not I/N with 0 ≤ I < N", param_hint="--shard")
    return int(index), int(count)


def _device(requested: str | None) -> str:
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: this torch sees no CUDA device")
    return requested


# ---------------------------------------------------------------- data
@main.group()
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

    config = _config(ctx)
    summary = check_splits(config)
    console.print(summary.table())
    console.print(f"all splits of {config.source} are valid")


@data.command("import")
@click.option("--format", "file_format", type=click.Choice(REVIEW_FORMATS), required=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_split", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The labeled split file to write: the existing labeled images plus the imported ones.")
@click.pass_context
def import_command(ctx: click.Context, file_format: str, file: Path, out_split: Path) -> None:
    """Corrected masks from Label Studio (JSON export) or CVAT (Segmentation mask 1.1 zip) → labeled images."""
    from cisctool.steps.review_import import import_reviewed

    config = _config(ctx)
    outcome = import_reviewed(config, file_format, file, out_split)
    console.print(
        f"imported {outcome.imported} masks to {outcome.masks}/; wrote {outcome.split} ({outcome.labeled} labeled "
        f"images); train on them with --set data.labeled={outcome.labeled_key(config)!r} or that key in the config"
    )


# ---------------------------------------------------------------- train / eval
@main.command()
@click.option("--round", "round_index", type=click.IntRange(0), default=0, show_default=True,
              help="0: labeled images only; N ≥ 1: plus round N's pseudo labels (run rectify --round N first).")
@click.option("--resume", is_flag=True, help="Continue from the round's last.pt.")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help="Override train.max_steps (round 0) or train.round_max_steps (rounds ≥ 1).")
@click.option("--init", type=click.Choice(CHOICES["train.init"]), default=None,
              help="Rounds ≥ 1: start from scratch or from round N-1's model [default: train.init].")
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.option("--amp/--no-amp", default=None, help="Mixed precision on CUDA [default: train.amp].")
@click.option("--consistency-weight", type=click.FloatRange(0), default=None,
              help="Override train.consistency_weight (0 = no CISC consistency loss).")  # fmt: skip
@click.pass_context
def train(
    ctx: click.Context,
    round_index: int,
    resume: bool,
    max_steps: int | None,
    init: str | None,
    device: str | None,
    amp: bool | None,
    consistency_weight: float | None,
) -> None:
    """Train round N (0: labeled images; N ≥ 1: labeled + rectified pseudo labels), then evaluate on val."""
    from cisctool.steps.distributed import stop as stop_processes
    from cisctool.steps.train import train_and_evaluate

    steps_key = "train.max_steps" if round_index == 0 else "train.round_max_steps"
    config = _config(
        ctx,
        {steps_key: max_steps, "train.amp": amp, "train.consistency_weight": consistency_weight,
         "train.init": init},
    )  # fmt: skip
    _hold_run_folder(config)
    try:
        outcome, result = train_and_evaluate(config, _device(device), resume, round_index)
    finally:
        stop_processes()
    console.print(train_table(outcome))
    if result is not None:
        console.print(eval_table(result, f"round {round_index} on val ({result.mode})"))
        _warn_collapsed(result, round_index)
    console.print(f"wrote {outcome.model_path} and metrics beside it")


@main.command("eval")
@click.option("--round", "round_index", type=click.IntRange(0), default=0, show_default=True)
@click.option("--mode", type=click.Choice(CHOICES["eval.mode"]), default=None,
              help="Inference mode [default: eval.mode].")  # fmt: skip
@click.option("--split", type=click.Choice(["val", "pseudo"]), default="val", show_default=True,
              help="val: the round's model on val; pseudo: round N's pseudo labels vs unlabeled masks.")
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
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

    config = _config(ctx, {"eval.mode": mode})
    if split == "pseudo":
        scores = score_pseudo_labels(config, round_index)
        for table in quality_tables(scores, f"pseudo labels for round {round_index}"):
            console.print(table)
    else:
        result = evaluate_round(config, round_index, _device(device))
        console.print(eval_table(result, f"round {round_index} on {split} ({result.mode})"))
        _warn_collapsed(result, round_index)
        scores = result.as_dict()
    if json_path is not None:
        atomic_write_json(json_path, scores)
        console.print(f"wrote {json_path}")


@main.command()
@click.option("--folds", type=click.IntRange(2), default=3, show_default=True, help="K cross-fitting folds.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Training steps per fold model.")
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.pass_context
def tune(ctx: click.Context, folds: int, max_steps: int | None, device: str | None) -> None:
    """Choose rectify thresholds by K-fold cross-fitting on the labeled images (never the unlabeled masks)."""
    from cisctool.report.tables import quality_tables, tune_table
    from cisctool.steps.tune import tune_thresholds

    config = _config(ctx)
    _hold_run_folder(config)
    outcome = tune_thresholds(config, _device(device), folds, max_steps)
    console.print(quality_tables(outcome.signals, "held-out signals")[-1])
    console.print(tune_table(outcome.results, outcome.recommended, folds))
    defaults = RectifyConfig()
    changes = [f"{key} = {value:g}" for key, value in outcome.recommended.items() if value != getattr(defaults, key)]
    advice = "add to [rectify]: " + "; ".join(changes) if changes else "leave relabel and drop off (the defaults)"
    console.print(f"wrote {outcome.path} ({outcome.seconds:.0f} s); {advice}")


@main.command()
@click.option("--round", "round_index", type=click.IntRange(1), required=True)
@click.option("--format", "file_format", type=click.Choice(["png", *REVIEW_FORMATS]), default="png", show_default=True,
              help="png: palette masks in a folder; labelstudio: tasks JSON; cvat: Segmentation mask 1.1 zip.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A folder (png), a .json file (labelstudio) or a .zip file (cvat).")
@click.option("--worst", type=click.IntRange(1), default=None,
              help="Only the K least reliable images, worst first: the review queue.")
@click.option("--overlay", is_flag=True, help="png: also write overlay/<id>.png: image, labels, CISC, weight.")
@click.option("--limit", type=click.IntRange(1), default=None, help="png: only the first N images.")
@click.pass_context
def export(
    ctx: click.Context, round_index: int, file_format: str, out: Path, worst: int | None, overlay: bool,
    limit: int | None,
) -> None:  # fmt: skip
    """Round N's pseudo labels as palette PNGs (<id>.png, 255 = ignore, as ST++/UniMatch read them), or as
    predictions to correct in Label Studio or CVAT (then `cisctool data import`)."""
    from cisctool.steps.export import export_for_review, export_round, label_config_path

    config = _config(ctx)
    if out.is_dir() != (file_format == "png") and out.exists():
        raise InputError(f"{out}: is a {'folder' if out.is_dir() else 'file'}; --format {file_format} writes "
                         f"{'a folder of masks' if file_format == 'png' else 'one file'}")  # fmt: skip
    if file_format == "png":
        count = export_round(config, round_index, out, overlay, limit, worst)
        console.print(f"wrote {count} PNG masks to {out}/" + (f" and overlays to {out}/overlay/" if overlay else ""))
        return
    count = export_for_review(config, round_index, file_format, out, worst)
    beside = f" and its labeling config {label_config_path(out)}" if file_format == "labelstudio" else ""
    console.print(f"wrote {count} images' pseudo labels to {out}{beside}")


# ---------------------------------------------------------------- index
@main.group()
def index() -> None:
    """FAISS index of the labeled images' class prototypes."""


@index.command("build")
@click.option("--round", "round_index", type=click.IntRange(0), default=0, show_default=True)
@click.option("--factory", default=None, help="FAISS factory string [default: index.factory].")
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.pass_context
def index_build_command(ctx: click.Context, round_index: int, factory: str | None, device: str | None) -> None:
    """Embed every labeled image's present classes with round N's model and index them."""
    from cisctool.steps.index import build_round_index
    from cisctool.store.layout import RunLayout

    config = _config(ctx)
    _hold_run_folder(config)
    prototype_index = build_round_index(config, round_index, _device(device), factory)
    console.print(index_table(prototype_index, list(config.class_names)))
    index_path, meta_path = RunLayout.of(config).index_files(round_index)
    console.print(f"wrote {index_path} and {meta_path}")


@index.command("info")
@click.option("--round", "round_index", type=click.IntRange(0), default=0, show_default=True)
@click.pass_context
def index_info_command(ctx: click.Context, round_index: int) -> None:
    """Vectors per class, dim, checkpoint hash and staleness of round N's index."""
    from cisctool.steps.index import open_round_index

    config = _config(ctx)
    prototype_index, stale = open_round_index(config, round_index)
    console.print(index_table(prototype_index, list(config.class_names), stale))
    console.print(f"checkpoint sha256 {prototype_index.metadata.get('checkpoint_sha256', '?')}")


@index.command("query")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--round", "round_index", type=click.IntRange(0), default=0, show_default=True)
@click.option("-k", "k", type=click.IntRange(1), default=None, help="Guides per class [default: index.topk].")
@click.option("--save", "save_path", type=click.Path(path_type=Path), default=None,
              help="Write a PNG: image, prediction, top guide per class with its mask.")  # fmt: skip
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.pass_context
def index_query_command(
    ctx: click.Context, image: Path, round_index: int, k: int | None, save_path: Path | None, device: str | None
) -> None:
    """Show the labeled guides IMAGE would get: per predicted class, the top-k prototypes."""
    from cisctool.steps.index import query_image, save_guide_picture

    config = _config(ctx)
    hits, pixels, prediction = query_image(config, round_index, image, k or config.index.topk, _device(device))
    title = f"guides for {image.name} (round {round_index} index)"
    console.print(guides_table(hits, config.class_names, title))
    if save_path is not None:
        save_guide_picture(config, hits, pixels, prediction, save_path)
        console.print(f"wrote {save_path}")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--overlay", is_flag=True, help="Also write overlay/<name>.png: the image and it with the mask.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
def predict(
    checkpoint: Path, images: tuple[Path, ...], out: Path, overlay: bool, batch_size: int, device: str | None
) -> None:
    """Palette PNG masks (<name>.png, palette index = class) for any IMAGES with a model.pt; no config needed."""
    from cisctool.steps.predict import predict_images

    class_names = predict_images(checkpoint, list(images), out, _device(device), overlay, batch_size)
    console.print(f"wrote {len(images)} masks to {out}/ (classes: {', '.join(class_names)})")


# ---------------------------------------------------------------- rectify
@main.command()
@click.option("--round", "round_index", type=click.IntRange(1), required=True,
              help="Make the pseudo labels FOR round N (with round N-1's model and index).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Override rectify.batch_size.")
@click.option("--guide", type=click.Choice(CHOICES["rectify.guide"]), default=None,
              help="Guide choice [default: rectify.guide]; random = the official code.")
@click.option("--weight-mode", type=click.Choice(CHOICES["rectify.weight_mode"]), default=None,
              help="Stored loss weight [default: rectify.weight_mode].")
@click.option("--no-rectify", "plain", is_flag=True,
              help="Plain self-training: argmax labels, weight 1, no index (rectify.enabled = false).")
@click.option("--tta/--no-tta", default=None,
              help="Average predictions over rectify.tta_scales and flips [default: rectify.tta].")
@click.option("--resume", is_flag=True, help="Continue an unfinished run; only images not done are computed.")
@click.option("--force", is_flag=True, help="Recompute even if a finished pseudo.h5 exists.")
@click.option("--shard", default=None, metavar="I/N",
              help="Compute only shard I of N (batches b with b mod N = I) into pseudo.shard<I>of<N>.h5.")
@click.option("--merge", is_flag=True, help="Join the finished shard files into pseudo.h5 (no computing).")
@click.option("--compression", type=click.Choice(["lzf", "gzip", "none"]), default="lzf", show_default=True)
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.pass_context
def rectify(
    ctx: click.Context,
    round_index: int,
    batch_size: int | None,
    guide: str | None,
    weight_mode: str | None,
    plain: bool,
    tta: bool | None,
    resume: bool,
    force: bool,
    shard: str | None,
    merge: bool,
    compression: str,
    device: str | None,
) -> None:
    """Predict, guide, and rectify pseudo labels for the unlabeled split; write pseudo.h5 and a report.

    Under torchrun each rank computes one shard and rank 0 merges them.
    """
    from cisctool.report.tables import quality_tables
    from cisctool.steps.distributed import barrier, from_environment
    from cisctool.steps.distributed import start as start_processes
    from cisctool.steps.distributed import stop as stop_processes
    from cisctool.steps.rectify import rectify_round
    from cisctool.steps.shards import merge_and_report
    from cisctool.store.layout import RunLayout

    config = _config(
        ctx,
        {"rectify.batch_size": batch_size, "rectify.guide": guide, "rectify.weight_mode": weight_mode,
         "rectify.enabled": False if plain else None, "rectify.tta": tta},
    )  # fmt: skip
    shard_spec = _parse_shard(shard)
    # shards of one run share the folder, each holding its own shard alone
    shard_name = f"round{round_index}-shard{shard_spec[0]}of{shard_spec[1]}" if shard_spec else None
    _hold_run_folder(config, shard=shard_name)
    torchrun = from_environment().active and shard_spec is None and not merge
    final_path = RunLayout.of(config).pseudo(round_index)
    if torchrun and final_path.exists() and not force:
        raise InputError(f"{final_path}: already exists; pass --force to recompute it")
    if merge or torchrun:
        if torchrun:  # one shard per rank, then rank 0 merges
            try:
                processes, rank_device = start_processes(_device(device))
                rectify_round(config, round_index, rank_device, resume=resume, force=True, compression=compression,
                              shard=(processes.rank, processes.world))  # fmt: skip
                barrier(processes)
            finally:
                stop_processes()
            if not processes.is_main:
                return
        path, report = merge_and_report(config, round_index, compression, force or torchrun)
        for table in quality_tables(report, f"pseudo labels for round {round_index} (merged)"):
            console.print(table)
        console.print(f"wrote {path}")
        return
    outcome = rectify_round(
        config, round_index, _device(device), resume=resume, force=force, compression=compression, shard=shard_spec
    )
    for table in quality_tables(outcome.report, f"pseudo labels for round {round_index}"):
        console.print(table)
    console.print(
        f"{outcome.computed} images in {outcome.seconds:.1f} s ({outcome.images_per_second:.1f} img/s); "
        f"wrote {outcome.path} and {RunLayout.of(config).pseudo_quality(round_index)}"
    )


@main.command("compare")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True, help="Rounds after round 0.")
@click.option("--seeds", default="0,1,2,3,4", show_default=True, help="Comma-separated seeds.")
@click.option("--official", is_flag=True, help="Also run the official profile (its own round 0).")
@click.option("--arm", "arms", multiple=True, metavar="NAME:KEY=VALUE[,KEY=VALUE]",
              help="An extra arm on the shared round 0, e.g. --arm mean:rectify.weight_mode=mean.")
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.pass_context
def compare_command(
    ctx: click.Context, rounds: int, seeds: str, official: bool, arms: tuple[str, ...],
    device: str | None,
) -> None:  # fmt: skip
    """SupOnly vs self-training vs CISC-R on one shared round 0 per seed; paired differences."""
    from cisctool.cli.tables import comparison_table
    from cisctool.steps.compare import compare

    config = _config(ctx)
    extra = dict(_parse_arm(text) for text in arms)
    try:
        seed_list = [int(item) for item in seeds.split(",")]
    except ValueError:
        raise click.BadParameter(f"{seeds!r} is not a comma-separated list of integers", param_hint="--seeds") from None
    result, record = compare(config, seed_list, rounds, _device(device), extra_arms=extra, official=official)
    console.print(comparison_table(result, f"{config.name}: SupOnly / ST / CISC-R over {len(result.seeds)} seed(s)"))
    console.print(f"wrote {record}")


def _parse_arm(text: str) -> tuple[str, dict[str, Any]]:
    """`name:key=value,key=value` → (name, overrides); values as `--set` reads them."""
    name, separator, settings = text.partition(":")
    if not separator or not name or name in ("suponly", "st", "cisc", "official"):
        raise click.BadParameter(f"{text!r} is not NAME:KEY=VALUE[,KEY=VALUE] with a new arm name", param_hint="--arm")
    return name, dict(_parse_setting(item) for item in settings.split(","))


@main.command("run")
@click.option("--rounds", type=click.IntRange(0), default=2, show_default=True,
              help="Train rounds 0…R (R pseudo-labelling rounds).")
@click.option("--no-rectify", "plain", is_flag=True,
              help="Plain self-training: argmax labels, weight 1, no index (the ablation).")
@click.option("--guide", type=click.Choice(CHOICES["rectify.guide"]), default=None,
              help="Guide choice [default: rectify.guide]; random = the official code.")
@click.option("--weight-mode", type=click.Choice(CHOICES["rectify.weight_mode"]), default=None,
              help="Loss weight [default: rectify.weight_mode].")
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.pass_context
def run_command(
    ctx: click.Context, rounds: int, plain: bool, guide: str | None, weight_mode: str | None, device: str | None
) -> None:
    """Every step of every round (train, index, rectify, train, …), skipping those already done."""
    from cisctool.cli.tables import rounds_table
    from cisctool.steps.report import write_report
    from cisctool.steps.rounds import run_rounds
    from cisctool.store.layout import RunLayout

    config = _config(
        ctx,
        {"rectify.enabled": False if plain else None, "rectify.guide": guide, "rectify.weight_mode": weight_mode},
    )
    _hold_run_folder(config)
    rows = run_rounds(config, rounds, _device(device))
    console.print(rounds_table(rows, f"{config.name}: {rounds} round(s)"))
    console.print(f"outputs in {RunLayout.of(config).run_dir}/")
    _print_report(write_report(config))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_data"), show_default=True)
@click.option("--rounds", type=click.IntRange(0), default=2, show_default=True)
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
@click.pass_context
def demo(ctx: click.Context, out: Path, rounds: int, device: str | None) -> None:
    """Demo data (if missing), then `run --rounds 2` on it: train, index, rectify, retrain; one table.

    Steps whose outputs are up to date are skipped; a killed step resumes.
    """
    from cisctool.cli.tables import rounds_table
    from cisctool.data.demo import make_demo
    from cisctool.steps.report import write_report
    from cisctool.steps.rounds import run_rounds
    from cisctool.store.layout import RunLayout

    config_path = out / "cisctool.toml"
    if not config_path.exists():
        make_demo(out)
        console.print(f"demo data written to {out}/")
    config = load_config(config_path, ctx.obj["settings"])
    _hold_run_folder(config)
    rows = run_rounds(config, rounds, _device(device))
    console.print(rounds_table(rows, f"demo: {rounds} round(s) of CISC-R"))
    console.print(f"outputs in {RunLayout.of(config).run_dir}/")
    _print_report(write_report(config))


# ---------------------------------------------------------------- review
@main.command()
@click.option("--round", "round_index", type=click.IntRange(1), default=None,
              help="Whose pseudo labels the signals, histogram and gallery show [default: the latest].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write [default: runs/<name>/report].")
@click.option("--gallery", "gallery_size", type=click.IntRange(0), default=60, show_default=True,
              help="How many of the least reliable images the gallery shows.")
@click.pass_context
def report(ctx: click.Context, round_index: int | None, out: Path | None, gallery_size: int) -> None:
    """A static HTML report of the run (opens from disk): rounds, IoU, losses, signals, worst-first gallery."""
    from cisctool.steps.report import write_report

    _print_report(write_report(_config(ctx), round_index, out, gallery_size))


def _print_report(outcome: "ReportOutcome") -> None:
    shown = (
        f"round {outcome.pseudo_round}'s {outcome.gallery} least reliable images"
        if outcome.pseudo_round is not None else "no pseudo labels yet"
    )  # fmt: skip
    console.print(f"wrote the report {outcome.path} ({shown}; {outcome.seconds:.1f} s)")


if __name__ == "__main__":
    main()
