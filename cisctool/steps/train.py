"""Training a round: CE plus the CISC consistency loss on labeled pairs, and from round 1 on,
the weighted CE on rectified pseudo labels (`pseudo_training`).

SGD with momentum (or AdamW), a linear warm-up over `warmup_ratio` of the steps, poly
learning-rate decay (power 0.9) and the head at `head_lr_mult` × the backbone's rate, as
ST++ and CISC-R train DeepLabV3+. The consistency weight λ may ramp up over
`consistency_rampup` of the steps.
Each step draws `batch_size // 2` pairs of labeled images that share a class,
so a step sees `batch_size` images whether the consistency loss is on or off
and the two settings differ only in the loss. `last.pt` holds the full state
(model, optimizer, scaler, step, RNG) every `checkpoint_every` steps; the
sample stream is addressed by step, so `--resume` continues exactly.
"""

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from rich.progress import TextColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cisctool import faults, preemption
from cisctool.config import Config, to_toml
from cisctool.console import console, progress_bar
from cisctool.data.datasets import LabeledPairDataset
from cisctool.data.splits import split_entries
from cisctool.errors import InputError
from cisctool.method.cisc import consistency_loss
from cisctool.method.losses import masked_cross_entropy, ohem_cross_entropy, weighted_cross_entropy
from cisctool.method.pseudo_training import cutmix
from cisctool.models import build_configured_model
from cisctool.steps.distributed import Processes, any_rank, barrier, from_environment, process_group
from cisctool.steps.evaluate import EvalResult, evaluate_round
from cisctool.steps.snapshots import remove_snapshots, save_snapshots, snapshot_paths
from cisctool.steps.train_data import (
    PseudoSelection,
    labeled_loader,
    pair_settings,
    pseudo_class_factors,
    pseudo_loader,
    select_pseudo_labels,
    total_steps_of,
    training_signature,
)  # fmt: skip
from cisctool.store.atomic import atomic_write_json, atomic_write_text, remove_stale_temporaries
from cisctool.store.checkpoints import load_checkpoint, load_model, model_payload, save_checkpoint
from cisctool.store.layout import RunLayout

Batches = Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]]


@dataclass
class TrainOutcome:
    """What a finished (or stopped) training produced."""

    round_index: int
    steps: int
    total_steps: int
    seconds: float
    final_loss: float
    model_path: Path | None
    resumed_from: int
    pseudo_images: tuple[int, int] | None = None  # rounds ≥ 1: (trained on, in the file)


@dataclass
class Learner:
    """The model being trained (and its DDP wrapper), its optimizer and gradient scaler, and how its
    inputs are laid out."""

    model: nn.Module
    network: nn.Module  # the model, or DDP around it: what the forward pass runs
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    memory_format: torch.memory_format
    use_amp: bool


def scheduled_lr(base_lr: float, step: int, total_steps: int, warmup_ratio: float = 0.0, power: float = 0.9) -> float:
    """Linear warm-up from base_lr / warm-up steps to base_lr, then poly decay to 0 at `total_steps`."""
    warmup_steps = int(warmup_ratio * total_steps)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr * (1.0 - step / total_steps) ** power


def consistency_ramp(step: int, total_steps: int, rampup_ratio: float) -> float:
    """Share of λ at `step`: exp(−5 (1 − t)²) over the first `rampup_ratio` of the steps, then 1.

    The ramp-up of mean teacher and its successors: the consistency loss waits until the
    features it compares mean something, instead of pulling on random ones from step 0.
    """
    rampup_steps = rampup_ratio * total_steps
    if step >= rampup_steps:
        return 1.0
    return math.exp(-5.0 * (1.0 - step / rampup_steps) ** 2)


def build_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """Backbone at lr, everything else (ASPP, decoder, classifier) at lr × head_lr_mult.

    SGD with momentum is the field's recipe for pretrained backbones; AdamW
    trains a small network from scratch in far fewer steps (the CPU demo).
    """
    backbone_ids = {id(parameter) for parameter in model.backbone.parameters()}
    head = [parameter for parameter in model.parameters() if id(parameter) not in backbone_ids]
    groups = [
        {"params": list(model.backbone.parameters()), "lr_mult": 1.0},
        {"params": head, "lr_mult": config.train.head_lr_mult},
    ]
    if config.train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.train.lr, weight_decay=config.train.weight_decay)
    return torch.optim.SGD(
        groups,
        lr=config.train.lr,
        momentum=config.train.momentum,
        weight_decay=config.train.weight_decay,
    )


def train_round(config: Config, round_index: int = 0, device: str = "cpu", *, resume: bool = False) -> TrainOutcome:
    """Train round N; write last.pt, model.pt and train.log under runs/<name>/round<N>/.

    Round 0 learns from the labeled images alone; round N ≥ 1 adds round N's
    pseudo labels (checked against round N−1's model) with a weighted CE.
    A run stopped early (killed, interrupted) leaves its last periodic
    checkpoint in last.pt and no model.pt; `resume` continues from it.
    """
    with process_group(device) as (processes, device):
        layout = RunLayout.of(config)
        entries = split_entries(config, "labeled")
        dataset = LabeledPairDataset(entries, pair_settings(config))
        # the pseudo-label file is checked before anything is built, restored or written
        pseudo = select_pseudo_labels(config, round_index) if round_index > 0 else None
        if pseudo is not None and config.train.pseudo_class_balance > 0:
            pseudo = dataclasses.replace(pseudo, class_factors=pseudo_class_factors(config, pseudo))
            if processes.is_main:
                console.print(_class_balance_line(config, pseudo.class_factors))
        signature = training_signature(config, round_index, processes.world, pseudo)
        trained_on = len(pseudo.positions) if pseudo else 0
        total_steps = total_steps_of(config, len(dataset), round_index, trained_on)
        learner = _learner(config, round_index, processes, device)
        start_step = 0
        if resume and layout.last(round_index).exists():
            start_step = _restore(layout.last(round_index), signature, learner)
        if processes.is_main:
            layout.round_dir(round_index).mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(layout.round_dir(round_index))
            if start_step == 0:
                remove_snapshots(config, round_index)
            atomic_write_text(layout.resolved_config, to_toml(config))
        loader = labeled_loader(config, round_index, dataset, start_step, total_steps, processes, device)
        if pseudo is None:
            batches: Batches = ((batch, None) for batch in loader)
        else:
            batches = zip(loader, pseudo_loader(config, round_index, pseudo, start_step, total_steps, processes, device))
        started = time.perf_counter()
        step, loss = _train_steps(learner, batches, config, round_index, start_step, total_steps, signature,
                                  processes, device, pseudo)  # fmt: skip
        model_path = None
        if step == total_steps:
            model_path = layout.model(round_index)
            if processes.is_main:
                save_checkpoint(model_path, model_payload(learner.model, config, round_index))
        barrier(processes)  # every rank sees model.pt and last.pt whole before it returns
    chosen = (len(pseudo.positions), pseudo.images) if pseudo is not None else None
    seconds = time.perf_counter() - started
    return TrainOutcome(round_index, step, total_steps, seconds, loss, model_path, start_step, chosen)


def _learner(config: Config, round_index: int, processes: Processes, device: str) -> Learner:
    """A fresh model (seeded by round; round N−1's weights with `train.init = "previous"`) on `device`,
    wrapped in DDP under torchrun, with its optimizer and gradient scaler."""
    torch.manual_seed(config.train.seed + round_index)
    model = build_configured_model(config, imagenet=True)
    if round_index > 0 and config.train.init == "previous":
        previous = RunLayout.of(config).model(round_index - 1)
        model.load_state_dict(load_model(previous, expected=config)[0].state_dict())
    if config.train.sync_bn and processes.active and device.startswith("cuda"):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    network: nn.Module = model
    if processes.active:
        network = DistributedDataParallel(model, device_ids=[device] if device.startswith("cuda") else None)
    use_amp = config.train.amp and device.startswith("cuda")
    optimizer = build_optimizer(model, config)
    return Learner(model, network, optimizer, torch.amp.GradScaler("cuda", enabled=use_amp), memory_format, use_amp)


def _train_steps(
    learner: Learner, batches: Batches, config: Config, round_index: int, start_step: int, total_steps: int,
    signature: str, processes: Processes, device: str, pseudo: PseudoSelection | None,
) -> tuple[int, float]:  # fmt: skip
    """Steps start_step+1 … total_steps: log every `log_every`, save last.pt every `checkpoint_every`
    (rank 0); returns the last step and the last logged loss. Losses are read on log steps only:
    reading one makes the host wait for the device, every step would keep a GPU from running ahead."""
    layout = RunLayout.of(config)
    base_lr = config.train.rate(round_index)
    step, loss_value = start_step, float("nan")
    columns = (TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("lr {task.fields[lr]:.2e}"))
    log = _train_log(layout, round_index, processes, start_step, pseudo, config)
    with preemption.stop_on_sigterm(), log, progress_bar(*columns) as bar:
        task = bar.add_task(f"train round {round_index}", total=total_steps, completed=start_step, loss=0.0, lr=0.0)
        learner.model.train()
        for batch, pseudo_batch in batches:
            learning_rate = scheduled_lr(base_lr, step, total_steps, config.train.warmup_ratio)
            for group in learner.optimizer.param_groups:
                group["lr"] = learning_rate * group["lr_mult"]
            losses = _losses(learner, batch, pseudo_batch, step, config, device)
            weight = config.train.consistency_weight * consistency_ramp(step, total_steps, config.train.consistency_rampup)
            loss = losses["ce"] + weight * losses["consistency"] + losses["pseudo"]
            learner.optimizer.zero_grad(set_to_none=True)
            learner.scaler.scale(loss).backward()
            learner.scaler.step(learner.optimizer)
            learner.scaler.update()
            step += 1
            if processes.is_main:
                save_snapshots(learner.model, config, round_index, step, total_steps)
            faults.reached("train-step")
            bar.update(task, completed=step, lr=learning_rate)
            if step % config.train.log_every == 0 or step == total_steps:  # reading a loss waits for the GPU
                loss_value = float(loss.detach())
                bar.update(task, loss=loss_value)
                parts = " ".join(f"{name} {float(value.detach()):.4f}" for name, value in losses.items())
                log.write(f"step {step}/{total_steps} loss {loss_value:.4f} {parts} lr {learning_rate:.3e}\n")
                log.flush()
            if processes.is_main and (step % config.train.checkpoint_every == 0 or step == total_steps):
                state = _training_state(learner, config, round_index, step, total_steps, signature)
                save_checkpoint(layout.last(round_index), state)
            if step < total_steps and _stop_requested(processes, step, config, device):
                _stop(learner, config, round_index, step, total_steps, signature, processes)
    return step, loss_value


def _stop_requested(processes: Processes, step: int, config: Config, device: str) -> bool:
    """A SIGTERM came (to any rank). Under torchrun the ranks agree on log steps only: agreeing is a
    collective that waits for the device, as reading a loss does."""
    if processes.active and step % config.train.log_every:
        return False
    return any_rank(processes, preemption.requested(), device)


def _stop(
    learner: Learner, config: Config, round_index: int, step: int, total_steps: int, signature: str,
    processes: Processes,
) -> None:  # fmt: skip
    """After a SIGTERM (any rank's): last.pt at this step (unless just saved), then `Preempted`."""
    path = RunLayout.of(config).last(round_index)
    if processes.is_main and step % config.train.checkpoint_every:
        save_checkpoint(path, _training_state(learner, config, round_index, step, total_steps, signature))
    barrier(processes)
    raise preemption.Preempted(f"training stopped at step {step} of {total_steps}, saved in {path}")


def _train_log(
    layout: RunLayout, round_index: int, processes: Processes, start_step: int, pseudo: PseudoSelection | None,
    config: Config,
) -> IO[str]:  # fmt: skip
    """train.log (rank 0; the other ranks write nothing), continued on resume; a new log names the
    pseudo-labeled images it trains on."""
    log = open(layout.train_log(round_index) if processes.is_main else os.devnull, "a" if start_step else "w")
    if pseudo is not None and not start_step:
        log.write(f"pseudo-labeled images: {len(pseudo.positions)} of {pseudo.images} "
                  f"(rectify.select = {config.rectify.select})\n")  # fmt: skip
        if pseudo.class_factors is not None:
            log.write(_class_balance_line(config, pseudo.class_factors) + "\n")
    return log


def _class_balance_line(config: Config, factors: np.ndarray) -> str:
    """`train.pseudo_class_balance`'s factors, for the console and train.log."""
    listed = ", ".join(f"{name} ×{factor:.2f}" for name, factor in zip(config.class_names, factors, strict=True))
    return f"pseudo loss class balance (τ = {config.train.pseudo_class_balance:g}): {listed}"


def _losses(
    learner: Learner,
    batch: dict[str, torch.Tensor],
    pseudo_batch: dict[str, torch.Tensor] | None,
    step: int,
    config: Config,
    device: str,
) -> dict[str, torch.Tensor]:
    """CE on both images of every labeled pair, the pairs' CISC consistency loss, and (rounds ≥ 1)
    the weighted CE on CutMixed pseudo-labeled images, all from one forward pass."""
    images = torch.cat([batch["image"], batch["partner_image"]])
    masks = torch.cat([batch["mask"], batch["partner_mask"]]).to(device, non_blocking=True)
    labeled, pairs = images.shape[0], batch["image"].shape[0]
    if pseudo_batch is not None:
        generator = torch.Generator().manual_seed(config.train.seed * 1_000_003 + step)
        pseudo_images, pseudo_labels, pseudo_weights = cutmix(
            pseudo_batch["image"], pseudo_batch["mask"], pseudo_batch["weight"], generator
        )
        images = torch.cat([images, pseudo_images])
    images = images.to(device, non_blocking=True).contiguous(memory_format=learner.memory_format)
    with torch.autocast(device_type="cuda", enabled=learner.use_amp):
        output = learner.network(images)
    losses = {"ce": _labeled_loss(output.logits[:labeled], masks, config)}
    losses["consistency"] = torch.zeros((), device=device)
    if config.train.consistency_weight != 0:
        features = output.features[:labeled]
        losses["consistency"] = consistency_loss(
            features[:pairs],
            masks[:pairs],
            features[pairs:],
            masks[pairs:],
            batch["shared_class"].to(device),
            config.data.num_classes,
            config.data.ignore_index,
        )
    losses["pseudo"] = torch.zeros((), device=device)
    if pseudo_batch is not None:
        losses["pseudo"] = weighted_cross_entropy(
            output.logits[labeled:], pseudo_labels.to(device), pseudo_weights.to(device), config.data.ignore_index
        )
    return losses


def _labeled_loss(logits: torch.Tensor, masks: torch.Tensor, config: Config) -> torch.Tensor:
    """CE on the labeled masks: over every pixel, or over the hard ones (`train.ohem_threshold` > 0)."""
    if config.train.ohem_threshold > 0:
        return ohem_cross_entropy(
            logits, masks, config.data.ignore_index, config.train.ohem_threshold, config.train.ohem_min_kept
        )
    return masked_cross_entropy(logits, masks, config.data.ignore_index)


def _training_state(
    learner: Learner, config: Config, round_index: int, step: int, total_steps: int, signature: str
) -> dict[str, object]:
    """What last.pt holds: model.pt's payload plus optimizer, scaler, step, signature and RNG states."""
    state = model_payload(learner.model, config, round_index)
    state.update(
        optimizer=learner.optimizer.state_dict(),
        scaler=learner.scaler.state_dict(),
        step=step,
        total_steps=total_steps,
        signature=signature,
        rng_cpu=torch.get_rng_state(),
        rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    )
    return state


def _restore(path: Path, signature: str, learner: Learner) -> int:
    """Load last.pt into model/optimizer/scaler/RNG; returns the step to continue from."""
    state = load_checkpoint(path)
    if state.get("signature") != signature:
        raise InputError(
            f"{path}: written with other data/model/train settings; "
            "rerun without --resume to start over, or restore the settings"
        )
    learner.model.load_state_dict(state["model"])
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(state["step"])


def training_status(config: Config, round_index: int) -> str:
    """"finished": model.pt and a complete last.pt of exactly these settings and inputs exist;
    "partial": last.pt of these settings stopped early (resume it); "none": start over."""
    layout = RunLayout.of(config)
    last_path = layout.last(round_index)
    if not last_path.is_file():
        return "none"
    pseudo = select_pseudo_labels(config, round_index) if round_index > 0 else None
    signature = training_signature(config, round_index, from_environment().world, pseudo)
    state = load_checkpoint(last_path)
    if state.get("signature") != signature:
        return "none"
    finished = int(state["step"]) == int(state["total_steps"]) and layout.model(round_index).is_file()
    if finished and not all(path.is_file() for path in snapshot_paths(config, round_index)):
        return "none"  # trained without the snapshots the config now asks for: train it again, keeping them
    return "finished" if finished else "partial"


def train_and_evaluate(
    config: Config, device: str, round_index: int = 0, *, resume: bool = False
) -> tuple[TrainOutcome, EvalResult | None]:
    """Train round N, then evaluate on val (when the config names a val split) and write metrics.json."""
    outcome = train_round(config, round_index, device=device, resume=resume)
    if not from_environment().is_main:  # under torchrun, rank 0 evaluates and writes metrics
        return outcome, None
    result = None
    if config.data.val and outcome.model_path is not None:
        result = evaluate_round(config, round_index, device)
    metrics = {
        "round": round_index,
        "steps": outcome.steps,
        "train_seconds": outcome.seconds,
        "final_loss": outcome.final_loss,
        "resumed_from_step": outcome.resumed_from,
        "consistency_weight": config.train.consistency_weight,
        "init": config.train.init if round_index else "round 0",
        "val": result.as_dict() if result is not None else None,
    }
    atomic_write_json(RunLayout.of(config).metrics(round_index), metrics)
    return outcome, result
