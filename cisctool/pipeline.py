"""Steps that span modules: train a round then score it on val; score a saved round or its pseudo labels."""

import numpy as np

from cisctool.checkpoint import load_inference_model
from cisctool.config import Config
from cisctool.console import progress_bar
from cisctool.data.masks import read_mask
from cisctool.distributed import from_environment
from cisctool.data.splits import read_split
from cisctool.evaluate import EvalResult, evaluate
from cisctool.pseudo_store import PseudoLabels
from cisctool.quality import QualityAccumulator
from cisctool.runs import RunLayout, atomic_write_json
from cisctool.train import TrainOutcome, train_round


def evaluate_round(config: Config, round_index: int, device: str) -> EvalResult:
    """Load round N's model.pt and score it on the val split with the config's eval mode."""
    model_path = RunLayout.of(config).model(round_index)
    model, _ = load_inference_model(model_path, expected=config)
    entries = read_split(config.data_root / config.data.val, config.data_root, masks_required=True)
    return evaluate(
        model,
        entries,
        list(config.class_names),
        config.data.ignore_index,
        mode=config.eval.mode,
        crop_size=config.eval.crop_size,
        stride=config.eval.stride,
        batch_size=config.eval.batch_size,
        workers=min(config.train.workers, 2),
        device=device,
        amp=config.train.amp,
        description=f"eval round {round_index}",
    )


def train_and_evaluate(
    config: Config, device: str, resume: bool, round_index: int = 0
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


def score_pseudo_labels(config: Config, round_index: int) -> dict[str, object]:
    """The quality report of a finished `pseudo.h5` from its stored signals (`eval --split pseudo`)."""
    entries = read_split(config.data_root / config.data.unlabeled, config.data_root, masks_required=False)
    masks = {entry.id: entry.mask for entry in entries}
    signals = ["confidence", "cisc", "weight", "confidence_x_weight"]
    quality = QualityAccumulator(list(config.class_names), config.data.ignore_index, signals)
    with PseudoLabels(RunLayout.of(config).pseudo(round_index)) as stored, progress_bar() as bar:
        task = bar.add_task(f"score round {round_index} pseudo labels", total=len(stored))
        for index, image_id in enumerate(stored.ids):
            image = stored.image(index)
            mask_path = masks.get(image_id)
            truth = read_mask(mask_path) if mask_path is not None else None
            confidence, weight = image.confidence.astype(np.float32), image.weight.astype(np.float32)
            values = {"confidence": confidence, "cisc": image.cisc.astype(np.float32), "weight": weight,
                      "confidence_x_weight": confidence * weight}  # fmt: skip
            quality.add(image.raw_label, image.label, weight, image.reliability, values, truth)
            bar.advance(task)
        report = quality.report()
        report.update(round=round_index, guide=stored.attrs.get("guide"), weight_mode=stored.attrs.get("weight_mode"))
    return report
