"""Is `cisctool train` as fast as a minimal PyTorch loop of the same model, batch, crop and precision?

    python benchmarks/bench_train.py [--size demo|voc] [--steps N] [--repeats 2] [--device cpu|cuda]
                                     [--backbone resnet101] [--stub-rate STEPS_PER_S] [--set KEY=VALUE]

`--size demo`: the demo data set and config (DeepLabV3+ over MobileNetV2, head 64, batch 8, crop
96); round 0 is trained and round 1's pseudo labels rectified by it first. `--size voc`: a
synthetic set at VOC's sizes (benchmarks/voc_data.py: 500×375 JPEG; DeepLabV3+ on ResNet-101,
output stride 16, crop 321, batch 8 labeled + 8 pseudo-labelled, pseudo labels read from a real
pseudo.h5 written by the tool's writer). `--set key=value` changes both arms alike, AMP included
(`train.amp`: mixed precision on CUDA in both arms, or in neither). In one run:
  (a) `train_round` round 0 for `--steps` steps;
  (b) a minimal loop of the same model, optimizer, precision and memory format: forward, CE,
      backward, step on crops decoded and cut once beforehand (no loader, no augmentation,
      no logging, no checkpoints);
  (c), (d) the same for round 1: `train_round` on round 1's pseudo labels against the minimal
      loop with as many labeled and pseudo-labelled images a step and a weighted CE.
(a)–(d) alternate, best of `--repeats`. Two rates of `train_round`: its own clock (loader
workers' start and checkpoints included) and its steady rate, from its step times after the
first 10 % of the steps (or after the batches its workers prefetch, 2 a worker, if more); the
minimal loop runs 10 % of the steps untimed first. Then one profiled
round-0 and round-1 run says where `train_round`'s time goes. Writes a JSON record.
`--steps` defaults to 40 on a CPU, 600 on a GPU (demo) and 100 on a GPU (voc).

`--stub-rate R` replays a GPU on a machine without one: the model's forward, losses, backward
and optimizer step become a wait of 1/R s, and everything the host does around them stays
(the loaders with `train.workers` processes each, as on a GPU host; CutMix; the progress bar,
log and checkpoints of a stand-in model). The minimal loop then runs at R by construction, so
the ratio says whether the loaders keep up with a GPU stepping at R.
"""

import argparse
import cProfile
import math
import pstats
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.table import Table
from torch import nn

from cisctool import faults
from cisctool.cli.options import parse_setting
from cisctool.config import Config, load_config, with_overrides
from cisctool.console import console, set_verbosity
from cisctool.data.datasets import LabeledPairDataset
from cisctool.data.demo import make_demo
from cisctool.data.splits import split_entries
from cisctool.method.losses import masked_cross_entropy
from cisctool.method.pseudo_training import cutmix
from cisctool.models import build_configured_model
from cisctool.steps import train as train_module
from cisctool.steps import train_data
from cisctool.steps.index import ensure_round_index
from cisctool.steps.rectify import rectify_round
from cisctool.steps.train import build_optimizer, train_round
from cisctool.steps.train_data import labeled_batch_size, pair_settings, pseudo_batch_size
from cisctool.store.layout import RunLayout

from records import progress, write_record
from step_flops import estimated_step_rates, training_flops_per_image
from voc_data import ensure_round1_pseudo, ensure_voc_like

ROOT = Path(__file__).resolve().parent
WARM_SHARE = 0.1  # the first 10 % of the steps: loader start, cuDNN's first-shape work; left out of the steady rate
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
    parser.add_argument("--size", choices=("demo", "voc"), default="demo")
    parser.add_argument("--steps", type=int, default=0, help="default 40 on a CPU; on a GPU 600 (demo), 100 (voc)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet101", choices=("resnet50", "resnet101"), help="--size voc")
    parser.add_argument("--stub-rate", type=float, default=0.0, help="replay a GPU stepping at this many steps/s")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=None, help="default benchmarks/work/bench_train[-voc]")
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    args.steps = args.steps or ((600 if args.size == "demo" else 100) if on_gpu else 40)
    args.workdir = args.workdir or ROOT / "work" / ("bench_train" if args.size == "demo" else "bench_train-voc")
    set_verbosity(-1)
    config = _prepare(args)
    with _replayed(args.stub_rate):
        rates = _alternating_rates(config, args)
        profiles = {} if args.no_profile or args.stub_rate else {
            f"round{index}": _profile(config, index, args.device) for index in (0, 1)}  # fmt: skip
    figures = _figures(config, args, rates, profiles)
    console.quiet = False
    console.print(_table(figures))
    if profiles:
        console.print(_profile_table(profiles))
    console.print(f"wrote {write_record(f'train-{args.size}', {'figures': figures}, args.device)}")


def _alternating_rates(config: Config, args: argparse.Namespace) -> dict[str, float]:
    """Best of `--repeats` of each arm, the arms alternating: the machine's noise hits all alike."""
    rates: dict[str, float] = {}
    for _ in range(args.repeats):
        for index in (0, 1):
            overall, steady = _cisctool_rates(config, index, args.device)
            minimal = args.stub_rate or _minimal_rate(config, index, args.steps, args.device)
            for name, value in ((f"cisctool_round{index}", overall), (f"cisctool_steady_round{index}", steady),
                                (f"minimal_round{index}", minimal)):  # fmt: skip
                rates[name] = max(rates.get(name, 0.0), value)
            progress(f"round {index}: cisctool {rates[f'cisctool_round{index}']:.2f} steps/s "
                     f"(steady {rates[f'cisctool_steady_round{index}']:.2f}), "
                     f"minimal loop {rates[f'minimal_round{index}']:.2f} (best so far)")  # fmt: skip
    return rates


def _figures(config: Config, args: argparse.Namespace, rates: dict[str, float], profiles: dict) -> dict:
    figures = {
        "size": args.size, "steps": args.steps, "repeats": args.repeats, "overrides": args.overrides,
        "backbone": config.model.backbone, "output_stride": config.model.output_stride,
        "amp": config.train.amp and args.device.startswith("cuda"), "channels_last": config.train.channels_last,
        "batch_size": config.train.batch_size, "round_batch_size": labeled_batch_size(config, 1),
        "pseudo_batch_size": pseudo_batch_size(config), "crop_size": config.train.crop_size,
        "workers": config.train.workers, "steps_per_second": rates,
        **{f"ratio{kind}_round{index}": rates[f"cisctool{kind}_round{index}"] / rates[f"minimal_round{index}"]
           for kind in ("", "_steady") for index in (0, 1)},
        "profile_seconds": profiles,
    }  # fmt: skip
    if args.size == "voc":
        flops = training_flops_per_image(config) * (labeled_batch_size(config, 1) + pseudo_batch_size(config))
        figures["training_flops_round1_step"] = flops
        figures["estimated_h100_steps_per_second"] = estimated_step_rates(flops)
    if args.stub_rate:
        figures["stub"] = {"steps_per_second": args.stub_rate, "torch_threads": torch.get_num_threads(),
                           "what": "forward, losses, backward and optimizer replayed as a wait; loaders, "
                                   "CutMix, progress bar, log and a stand-in model's checkpoints run"}  # fmt: skip
    return figures


def _prepare(args: argparse.Namespace) -> Config:
    """The data set and config for `--steps` steps a round, round 0's model and round 1's pseudo labels."""
    overrides = {**dict(parse_setting(item) for item in args.overrides), "workdir": str(args.workdir),
                 "name": "bench-train", "train.max_steps": args.steps, "train.round_max_steps": args.steps}  # fmt: skip
    if args.stub_rate:  # the stand-in model cannot load round 0's weights (a set-up cost, outside the clocks)
        overrides["train.init"] = "scratch"
    if args.size == "voc":
        config = ensure_voc_like(args.workdir / "data", 32, 64, args.backbone, overrides)
        ensure_round1_pseudo(config)  # for an untrained round-0 model: training reads it as any pseudo.h5
        return config
    data = args.workdir / "data"
    if not data.exists():
        partial = data.with_name("data.partial")
        shutil.rmtree(partial, ignore_errors=True)
        make_demo(partial)
        partial.rename(data)
    config = load_config(data / "cisctool.toml", overrides)
    layout = RunLayout.of(config)
    if not layout.model(0).is_file():
        train_round(config, 0, args.device)
    if not layout.pseudo(1).is_file():
        ensure_round_index(config, 0, args.device)
        rectify_round(config, 1, args.device)
    return config


def _cisctool_rates(config: Config, round_index: int, device: str) -> tuple[float, float]:
    """Steps/s of `train_round` from scratch: by its own clock (set-up excluded, the loaders' start
    included), and steady (from its step times after the first WARM_SHARE of the steps)."""
    bench = with_overrides(config, {"name": f"{config.name}-timed"})
    _share_inputs(config, bench, round_index)
    with _step_times() as times:
        outcome = train_round(bench, round_index, device)
    # past the start-up and the batches the workers prefetched meanwhile (2 a worker), so they do not inflate it
    first = min(max(1, math.ceil(WARM_SHARE * outcome.steps), 2 * config.train.workers + 1), len(times) - 1)
    steady = (len(times) - first) / (times[-1] - times[first - 1])
    return outcome.steps / outcome.seconds, steady


@contextmanager
def _step_times() -> Iterator[list[float]]:
    """The moment each training step ends, from the step's fault point (which still works as before)."""
    times: list[float] = []
    original = faults.reached

    def reached(point: str) -> None:
        if point == "train-step":
            times.append(time.perf_counter())
        original(point)

    faults.reached = reached
    try:
        yield times
    finally:
        faults.reached = original


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
    """Steps/s of forward, CE (weighted CE on the extra images of round 1), backward, step on fixed crops,
    with the config's precision (AMP and its gradient scaler on CUDA, as `train_round`) and memory format."""
    torch.manual_seed(config.train.seed)
    model = build_configured_model(config, imagenet=True)  # the config's model, output stride included
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    optimizer = build_optimizer(model, config)
    for group in optimizer.param_groups:
        group["lr"] = config.train.lr * group["lr_mult"]
    use_amp = config.train.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    extra = pseudo_batch_size(config) if round_index else 0
    labeled = labeled_batch_size(config, round_index)
    images, masks = _fixed_crops(config, labeled + extra, device, memory_format)
    weights = torch.rand(masks[labeled:].shape, device=device)

    def step() -> torch.Tensor:
        with torch.autocast(device_type="cuda", enabled=use_amp):
            logits = model(images).logits
        loss = masked_cross_entropy(logits[:labeled], masks[:labeled], config.data.ignore_index)
        if extra:
            pixel_loss = F.cross_entropy(logits[labeled:].float(), masks[labeled:], reduction="none",
                                         ignore_index=config.data.ignore_index)  # padding, as the pseudo loss
            loss = loss + (pixel_loss * weights).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    _timed_steps(step, max(1, math.ceil(WARM_SHARE * steps)))  # untimed, as the steady rate leaves them out
    return steps / _timed_steps(step, steps)


def _timed_steps(step: Callable[[], torch.Tensor], count: int) -> float:
    """Seconds of `count` steps, the device's work included."""
    started = time.perf_counter()
    for _ in range(count):
        loss = step()
    loss.detach().item()  # waits for the device
    return time.perf_counter() - started


def _fixed_crops(
    config: Config, count: int, device: str, memory_format: torch.memory_format
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` labeled crops, decoded and cut once (the training set's own first pairs)."""
    entries = split_entries(config, "labeled")
    dataset = LabeledPairDataset(entries, pair_settings(config))
    samples = [dataset[(index, index)] for index in range(-(-count // 2))]  # (image, augmentation seed)
    images = torch.stack([sample[key] for sample in samples for key in ("image", "partner_image")])[:count]
    masks = torch.stack([sample[key] for sample in samples for key in ("mask", "partner_mask")])[:count]
    return images.to(device).contiguous(memory_format=memory_format), masks.to(device)


class StandIn(nn.Module):
    """The model in a replay: two parameters, a `backbone` and a head, as the optimizer expects."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(1, 1)
        self.head = nn.Linear(1, 1)


@contextmanager
def _replayed(steps_per_second: float) -> Iterator[None]:
    """With a rate: `train_round` builds a stand-in model, its forward, losses and backward become a wait
    of one step's time after the host's part (batching, CutMix), and its loaders get the workers asked
    for, as on a GPU host. Without: nothing changes."""
    if not steps_per_second:
        yield
        return
    patched = {(train_module, "build_configured_model"): lambda config, imagenet: StandIn(),
               (train_module, "_losses"): _waiting_losses(1.0 / steps_per_second),
               (train_data, "loader_workers"): lambda requested, device: requested}  # fmt: skip
    originals = {key: getattr(*key) for key in patched}
    torch.set_num_threads(1)  # the host's part on one core, the other(s) left to the loaders
    for (module, name), value in patched.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for (module, name), value in originals.items():
            setattr(module, name, value)


def _waiting_losses(seconds: float) -> Callable[..., dict[str, torch.Tensor]]:
    def losses(learner, batch, pseudo_batch, step, config, device) -> dict[str, torch.Tensor]:
        """`_losses`'s host part (the labeled pairs batched, the pseudo batch CutMixed), then a wait."""
        images = torch.cat([batch["image"], batch["partner_image"]])
        if pseudo_batch is not None:
            generator = torch.Generator().manual_seed(config.train.seed * 1_000_003 + step)
            mixed, _, _ = cutmix(pseudo_batch["image"], pseudo_batch["mask"], pseudo_batch["weight"], generator)
            images = torch.cat([images, mixed])
        del images  # what a real step hands to the device
        time.sleep(seconds)
        zero = learner.model.backbone.weight.sum() * 0.0
        return {"ce": zero, "consistency": zero, "pseudo": zero}

    return losses


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
    table = Table(title=f"training steps/s, {figures['size']}: {figures['backbone']}, batch {figures['batch_size']} "
                        f"(round 1: {figures['round_batch_size']} + {figures['pseudo_batch_size']} pseudo), crop "
                        f"{figures['crop_size']}, AMP {'on' if figures['amp'] else 'off'}, {figures['steps']} steps"
                        + (f", GPU replayed at {figures['stub']['steps_per_second']:g} steps/s" if "stub" in figures
                           else ""))  # fmt: skip
    for column in ("round", "cisctool train", "steady", "minimal loop", "ratio; steady (target ≥ 0.9)"):
        table.add_column(column, justify="right")
    for index in (0, 1):
        table.add_row(str(index), f"{rates[f'cisctool_round{index}']:.2f}",
                      f"{rates[f'cisctool_steady_round{index}']:.2f}", f"{rates[f'minimal_round{index}']:.2f}",
                      f"{figures[f'ratio_round{index}']:.3f}; {figures[f'ratio_steady_round{index}']:.3f}")  # fmt: skip
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
