"""Loading ImageNet (or official DINOv2) weights into a backbone, with one-line errors a user can act on."""

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from cisctool.errors import InputError
from cisctool.models.safe_load import load_weights_only

SHOWN_KEYS = 3


def _few(items: list[str]) -> str:
    more = f" (+{len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else ""
    return ", ".join(items[:SHOWN_KEYS]) + more


def _state_dict_of(loaded: Any, path: Path) -> dict[str, Tensor]:
    """The name -> tensor mapping, directly or under a "state_dict"/"model" key."""
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in loaded.items()
    ):
        raise InputError(
            f"{path}: not a state dict (expected parameter names mapped to tensors, "
            f"got {type(loaded).__name__})"
        )
    return loaded


def load_pretrained(
    backbone: nn.Module, path: str | Path, ignored_prefixes: tuple[str, ...]
) -> None:
    """Strictly load `path` into `backbone`, skipping keys under `ignored_prefixes` (e.g. "fc.").

    Missing BN `num_batches_tracked` counters (absent from old files) keep their current value.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pretrained weights file not found")
    loaded = load_weights_only(path, "cannot read pretrained weights")
    state = {
        key: value
        for key, value in _state_dict_of(loaded, path).items()
        if not key.startswith(ignored_prefixes)
    }
    expected = backbone.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    missing = [key for key in expected if key not in state]
    if len(missing) == len(expected) and state:
        raise InputError(
            f"{path}: weights of another model: none of this backbone's {len(expected)} keys are in the file "
            f"(it holds e.g. {_few(list(state))})"
        )
    if missing:
        raise InputError(f"{path}: {len(missing)} backbone keys missing, e.g. {_few(missing)}")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise InputError(
            f"{path}: {len(unexpected)} unexpected keys for this backbone, e.g. {_few(unexpected)}"
        )
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if state[key].shape != value.shape
    ]
    if mismatched:
        raise InputError(
            f"{path}: {len(mismatched)} shape mismatches (file vs model), e.g. {_few(mismatched)}"
        )
    backbone.load_state_dict(state, strict=True)
