"""Earlier models of a round (`train.snapshots`), for ST++'s image selection by prediction stability.

ST++ keeps its round-0 model at 1/3 and 2/3 of the training besides the final one, and trusts an
unlabeled image the more, the more those models' predictions agree with the final model's
(`rectify.reliability = "stability"`). With `train.snapshots` = K, training saves the model after
steps ⌊k·T/(K+1)⌋, k = 1…K, of its T steps as `snapshot<k>of<K>.pt` beside model.pt.
"""

from pathlib import Path

from torch import nn

from cisctool.config import Config
from cisctool.errors import InputError
from cisctool.steps.signal_stream import guided_model
from cisctool.store.checkpoints import model_payload, save_checkpoint
from cisctool.store.layout import RunLayout


def snapshot_paths(config: Config, round_index: int) -> list[Path]:
    """The K snapshot files of round N's training (none when `train.snapshots` is 0)."""
    count = config.train.snapshots
    folder = RunLayout.of(config).round_dir(round_index)
    return [folder / f"snapshot{k}of{count}.pt" for k in range(1, count + 1)]


def snapshot_steps(total_steps: int, count: int) -> list[int]:
    """After which steps the K snapshots are taken: ⌊k·T/(K+1)⌋, at least step 1."""
    return [max(1, total_steps * k // (count + 1)) for k in range(1, count + 1)]


def save_snapshots(model: nn.Module, config: Config, round_index: int, step: int, total_steps: int) -> None:
    """Save the snapshots due after `step` (a resumed run saves again those it passes again)."""
    for path, due in zip(snapshot_paths(config, round_index), snapshot_steps(total_steps, config.train.snapshots)):
        if due == step:
            save_checkpoint(path, model_payload(model, config, round_index))


def remove_snapshots(config: Config, round_index: int) -> None:
    """Delete any snapshot of round N before it is trained afresh: none left from other settings."""
    for path in RunLayout.of(config).round_dir(round_index).glob("snapshot*of*.pt"):
        path.unlink(missing_ok=True)


def snapshot_models(config: Config, round_index: int, device: str) -> tuple[nn.Module, ...]:
    """Round N's snapshots in eval mode on `device` when the config selects images by stability; else ()."""
    if config.rectify.reliability != "stability":
        return ()
    paths = snapshot_paths(config, round_index)
    for path in paths:
        if not path.is_file():
            raise InputError(
                f'{path}: missing; rectify.reliability = "stability" compares round {round_index}\'s snapshots '
                f"with its model: train round {round_index} again with train.snapshots = {config.train.snapshots}"
            )
    return tuple(guided_model(config, path, None, device)[0] for path in paths)
