"""Checkpoints: saved atomically, loaded with `weights_only=True`.

A checkpoint holds only tensors and plain types (config dict, class names,
code version), so it loads without unpickling arbitrary code; a file that
needs more is refused with a clear message.
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cisctool import __version__, faults
from cisctool.config import Config, from_dict, to_dict
from cisctool.errors import InputError, first_line
from cisctool.models import build_configured_model
from cisctool.models.fold import fold_batch_norm
from cisctool.models.safe_load import load_weights_only
from cisctool.store.atomic import atomic_write


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary name, then rename into place."""

    def write(tmp: Path) -> None:
        torch.save(payload, tmp)
        faults.reached("checkpoint-write")

    atomic_write(path, write)


def model_payload(model: nn.Module, config: Config, round_index: int) -> dict[str, Any]:
    """What `model.pt` holds: weights plus what is needed to rebuild and label with them."""
    return {
        "model": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "config": to_dict(config),
        "class_names": list(config.class_names),
        "round": round_index,
        "version": __version__,
    }


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely; missing, truncated or unsafe files give an InputError."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    payload = load_weights_only(path, "not a readable cisctool checkpoint")
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise InputError(f"{path}: not a cisctool checkpoint (no model weights and config)")
    return payload


def load_model(path: Path, expected: Config | None = None) -> tuple[nn.Module, Config]:
    """Rebuild the model a checkpoint was trained as and load its weights (CPU, eval mode).

    With `expected`, the checkpoint's architecture, backbone and class count
    must match it (a model of another data set cannot label this one).
    """
    payload = load_checkpoint(path)
    try:
        trained = from_dict(payload["config"], f"{path} (stored config)")
    except InputError as error:
        raise InputError(f"{path}: stored config is not valid ({error})") from None
    if expected is not None:
        for key in ("arch", "backbone"):
            ours, theirs = getattr(expected.model, key), getattr(trained.model, key)
            if ours != theirs:
                raise InputError(f"{path}: checkpoint is a {theirs} model; config asks for {ours}")
        if trained.data.num_classes != expected.data.num_classes:
            raise InputError(
                f"{path}: checkpoint has {trained.data.num_classes} classes; "
                f"config has {expected.data.num_classes}"
            )
    model = build_configured_model(trained, imagenet=False)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise InputError(f"{path}: weights do not fit the model ({first_line(error)})") from None
    return model.eval(), trained


def load_inference_model(path: Path, expected: Config | None = None) -> tuple[nn.Module, Config]:
    """`load_model` with batch norm folded into the convolutions: the same outputs, faster (never train it)."""
    model, trained = load_model(path, expected)
    return fold_batch_norm(model), trained
