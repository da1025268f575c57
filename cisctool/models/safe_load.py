"""Reading torch files with `weights_only=True`: a file that would need arbitrary code is refused as such."""

import pickle
from pathlib import Path
from typing import Any

import torch

from cisctool.errors import InputError, first_line


def load_weights_only(path: Path, unreadable: str) -> Any:
    """torch.load on the CPU without unpickling code; InputError `<path>: <unreadable> (<why>)` otherwise."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):  # a class, a function
            raise InputError(
                f"{path}: holds Python objects beyond tensors and plain types; refused, since loading "
                "them would run arbitrary code (weights and cisctool checkpoints never need that)"
            ) from None
        raise InputError(f"{path}: {unreadable} ({first_line(error)[:200]})") from None
