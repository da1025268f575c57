"""Is `cisctool train` as fast as a minimal PyTorch loop of the same model, batch and crop?

    python benchmarks/bench_train.py [--steps N] [--repeats 2] [--device cpu|cuda]

On the demo data set and config (DeepLabV3+ over MobileNetV2, head 64, batch 8, crop 96,
SGD, one loader worker; `--set key=value` changes both sides), in one run:
  (a) `train_round` round 0 for `--steps` steps;
  (b) a minimal loop of the same model and optimizer: `--steps` steps of forward, CE,
      backward, step on crops decoded and cut once beforehand (no loader, no augmentation,
      no logging, no checkpoints);
  (c), (d) the same for round 1: `train_round` with round 1's pseudo labels (rectified by
      round 0's model) against the minimal loop with as many labeled and pseudo-labeled
      images a step and a weighted CE.
(a)–(d) alternate, best of `--repeats`. Then one profiled round-0 and round-1 run says where
`train_round`'s time goes (loader waits, augmentation, losses, backward, optimizer,
logging, checkpoints). Prints steps/s and the ratios (target ≥ 0.9), writes a JSON record.
`--steps` defaults to 40 on a CPU and 600 on a GPU, where a step takes milliseconds: at 60
steps an H200 timed mostly what does not grow with them (the loader worker's start, cuDNN's
first-shape tuning, checkpoint writes) and gave 0.28.
"""

import argparse
import cProfile
import pstats
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.table import Table

from cisctool.cli.options import parse_setting
from cisctool.config import Config, load_config, with_overrides
from cisctool.console import console, set_verbosity
from cisctool.data.datasets import LabeledPairDataset
from cisctool.data.demo import make_demo
from cisctool.data.splits import read_split
from cisctool.method.losses import masked_cross_entropy
from cisctool.models import build_configured_model
from cisctool.steps.index import ensure_round_index
from cisctool.steps.rectify import rectify_round
from cisctool.steps.train import build_optimizer, train_round
from cisctool.steps.train_data import labeled_batch_size, pair_settings, pseudo_batch_size
from cisctool.store.layout import RunLayout

from records import progress, write_record

ROOT = Path(__file__).resolve().parent
# Where train_round's time goes: (label, substrings of the profiled functions' "file:function").
PROFILE_PARTS = (
    ("waiting for the loaders", ("dataloader.py:__next__",)),
    ("CutMix", ("pseudo_training.py:cutmix",)),
    ("forward + losses", ("train.py:_losses",)),
    ("backward", ("_tensor.py:backward",)),
    ("optimizer step", ("grad_scaler.py:step",)),
    ("progress bar", ("progress.py:update",)),
    ("checkpoints", ("checkpoints.py:save_checkpoint",)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=0, help="default 40 on a CPU, 600 on a GPU")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "bench_train")
    args = parser.parse_args()
    args.steps = args.steps or (600 if args.device.startswith("cuda") else 40)
    set_verbosity(-1)
    config = _prepare(args)
    rates = {"cisctool_round0": 0.0, "minimal_round0": 0.0, "cisctool_round1": 0.0, "minimal_round1": 0.0}
    for _ in range(args.repeats):  # alternating, best of each: the machine's noise hits all alike
        for round_index in (0, 1):
            rates[f"cisctool_round{round_index}"] = max(
                rates[f"cisctool_round{round_index}"], _cisctool_rate(config, round_index, args.device)
            )
            rates[f"minimal_round{round_index}"] = max(
                rates[f"minimal_round{round_index}"], _minimal_rate(config, round_index, args.steps, args.device)
            )
            progress(f"round {round_index}: cisctool {rates[f'cisctool_round{round_index}']:.2f} steps/s, "
                     f"minimal loop {rates[f'minimal_round{round_index}']:.2f} (best so far)")
    profiles = {f"round{index}": _profile(config, index, args.device) for index in (0, 1)}
    figures = {
        "steps": args.steps, "repeats": args.repeats, "overrides": args.overrides,
        "batch_size": config.train.batch_size, "round_batch_size": labeled_batch_size(config, 1),
        "pseudo_batch_size": pseudo_batch_size(config),
        "crop_size": config.train.crop_size, "workers": config.train.workers,
        "steps_per_second": rates,
        "ratio_round0": rates["cisctool_round0"] / rates["minimal_round0"],
        "ratio_round1": rates["cisctool_round1"] / rates["minimal_round1"],
        "profile_seconds": profiles,
    }  # fmt: skip
    console.quiet = False
    console.print(_table(figures))
    console.print(_profile_table(figures["profile_seconds"]))
    console.print(f"wrote {write_record('train', {'figures': figures}, args.device)}")


def _prepare(args: argparse.Namespace) -> Config:
    """The demo data set, its config for `--steps` steps a round, round 0's model and round 1's pseudo labels."""
    data = args.workdir / "data"
    if not data.exists():
        partial = data.with_name("data.partial")
        shutil.rmtree(partial, ignore_errors=True)
        make_demo(partial)
        partial.rename(data)
    overrides = dict(parse_setting(item) for item in args.overrides)
    config = load_config(data / "cisctool.toml", {
        **overrides, "workdir": str(args.workdir), "name": "bench-train",
        "train.max_steps": args.steps, "train.round_max_steps": args.steps,
    })  # fmt: skip
    layout = RunLayout.of(config)
    if not layout.model(0).is_file():
        train_round(config, 0, args.device)
    if not layout.pseudo(1).is_file():
        ensure_round_index(config, 0, args.device)
        rectify_round(config, 1, args.device)
    return config


def _cisctool_rate(config: Config, round_index: int, device: str) -> float:
    """Steps/s of `train_round` (its own clock: the loop, set-up excluded), from scratch each time."""
    bench = with_overrides(config, {"name": f"{config.name}-timed"})
    _share_inputs(config, bench, round_index)
    outcome = train_round(bench, round_index, device)
    return outcome.steps / outcome.seconds


def _share_inputs(source: Config, target: Config, round_index: int) -> None:
    """Give `target`'s run folder the previous round's model and this round's pseudo labels of `source`."""
    have, want = RunLayout.of(source), RunLayout.of(target)
    shutil.rmtree(want.round_dir(round_index), ignore_errors=True)
    if round_index:
        want.round_dir(round_index - 1).mkdir(parents=True, exist_ok=True)
        want.round_dir(round_index).mkdir(parents=True, exist_ok=True)
        shutil.copy2(have.model(round_index - 1), want.model(round_index - 1))
        shutil.copy2(have.pseudo(round_index), want.pseudo(round_index))


def _minimal_rate(config: Config, round_index: int, steps: int, device: str) -> float:
    """Steps/s of forward, CE (weighted CE on the extra images of round 1), backward, step on fixed crops."""
    torch.manual_seed(config.train.seed)
    model = build_configured_model(config, imagenet=True)  # the config's model, output stride included
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = build_optimizer(model, config)
    for group in optimizer.param_groups:
        group["lr"] = config.train.lr * group["lr_mult"]
    extra = pseudo_batch_size(config) if round_index else 0
    labeled = labeled_batch_size(config, round_index)
    images, masks = _fixed_crops(config, labeled + extra, device, memory_format)
    weights = torch.rand(masks[labeled:].shape, device=device)
    started = time.perf_counter()
    for _ in range(steps):
        logits = model(images).logits
        loss = masked_cross_entropy(logits[:labeled], masks[:labeled], config.data.ignore_index)
        if extra:
            pixel_loss = F.cross_entropy(logits[labeled:].float(), masks[labeled:], reduction="none",
                                         ignore_index=config.data.ignore_index)  # padding, as the pseudo loss
            loss = loss + (pixel_loss * weights).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss.detach().item()  # waits for the device
    return steps / (time.perf_counter() - started)


def _fixed_crops(
    config: Config, count: int, device: str, memory_format: torch.memory_format
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` labeled crops, decoded and cut once (the training set's own first pairs)."""
    entries = read_split(config.data_root / config.data.labeled, config.data_root, masks_required=True)
    dataset = LabeledPairDataset(entries, pair_settings(config))
    samples = [dataset[(index, index)] for index in range(-(-count // 2))]  # (image, augmentation seed)
    images = torch.stack([sample[key] for sample in samples for key in ("image", "partner_image")])[:count]
    masks = torch.stack([sample[key] for sample in samples for key in ("mask", "partner_mask")])[:count]
    return images.to(device).contiguous(memory_format=memory_format), masks.to(device)


def _profile(config: Config, round_index: int, device: str) -> dict[str, float]:
    """Seconds of one `train_round` spent in each of PROFILE_PARTS (cProfile), and in all (wall clock)."""
    bench = with_overrides(config, {"name": f"{config.name}-profiled"})
    _share_inputs(config, bench, round_index)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    train_round(bench, round_index, device)
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats  # {(file, line, function): (calls, calls, own, cumulative, callers)}
    cumulative = {f"{Path(file).name}:{function}": values[3] for (file, _, function), values in stats.items()}
    parts = {label: sum(seconds for name, seconds in cumulative.items() if any(key in name for key in keys))
             for label, keys in PROFILE_PARTS}  # fmt: skip
    parts["all of train_round"] = wall  # wall clock: on Python 3.12 with CUDA, cProfile missed train_round itself
    return {label: round(seconds, 3) for label, seconds in parts.items()}


def _table(figures: dict) -> Table:
    rates = figures["steps_per_second"]
    table = Table(title=f"training steps/s, batch {figures['batch_size']} (round 1: {figures['round_batch_size']} + "
                        f"{figures['pseudo_batch_size']} pseudo), crop {figures['crop_size']}, {figures['steps']} steps")  # fmt: skip
    for column in ("round", "cisctool train", "minimal loop", "ratio (target ≥ 0.9)"):
        table.add_column(column, justify="right")
    for index in (0, 1):
        table.add_row(str(index), f"{rates[f'cisctool_round{index}']:.2f}", f"{rates[f'minimal_round{index}']:.2f}",
                      f"{figures[f'ratio_round{index}']:.3f}")  # fmt: skip
    return table


def _profile_table(profiles: dict[str, dict[str, float]]) -> Table:
    table = Table(title="where train_round's time goes (one profiled run; parts overlap where they nest)")
    table.add_column("part")
    for round_name in profiles:
        table.add_column(round_name, justify="right")
    for label in profiles["round0"]:
        table.add_row(label, *(f"{parts[label]:.2f} s ({100 * parts[label] / parts['all of train_round']:.0f} %)"
                               for parts in profiles.values()))  # fmt: skip
    return table


if __name__ == "__main__":
    main()
