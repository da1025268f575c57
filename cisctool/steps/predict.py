"""`cisctool predict CHECKPOINT IMAGES... --out DIR`: palette PNG masks for any images.

Needs no config and no data set: the checkpoint carries its architecture and
class names. Images of any size are batched (padded, then cropped back).
"""

from pathlib import Path

import numpy as np
import torch

from cisctool.console import RateColumn, progress_bar
from cisctool.data.masks import read_image, write_mask
from cisctool.data.splits import SplitEntry
from cisctool.data.workers import inference_loader
from cisctool.errors import InputError
from cisctool.report.pictures import blend, save_panels
from cisctool.store.atomic import atomic_write
from cisctool.store.checkpoints import load_inference_model

IGNORE_INDEX = 255


def predict_images(
    checkpoint: Path, images: list[Path], out: Path, device: str, *, overlay: bool = False, batch_size: int = 8
) -> list[str]:
    """Write `<out>/<stem>.png` (palette index = class) for every image; returns the checkpoint's class names."""
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            raise InputError(f"{image}: same file name as {stems[image.stem]}; masks would overwrite each other")
        stems[image.stem] = image
    model, trained = load_inference_model(checkpoint)
    model.eval().to(device)
    entries = [SplitEntry(stem, path, None) for stem, path in stems.items()]
    # no config of this host's (the checkpoint's `train.workers` was the training host's): decode in this process
    loader = inference_loader(entries, trained.data.num_classes, IGNORE_INDEX, device, with_masks=False, workers=0,
                              batch_size=batch_size)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar(RateColumn("img")) as bar, torch.inference_mode():
        task = bar.add_task("predict", total=len(entries))
        for batch in loader:
            labels = model(batch["image"].to(device)).logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
            for slot, index in enumerate(batch["index"].tolist()):
                height, width = (int(value) for value in batch["sizes"][slot])
                entry = entries[index]
                mask = np.ascontiguousarray(labels[slot, :height, :width])
                atomic_write(out / f"{entry.id}.png", lambda tmp: write_mask(tmp, mask, fmt="PNG"))
                if overlay:
                    picture = read_image(entry.image)
                    save_panels(out / "overlay" / f"{entry.id}.png", [picture, blend(picture, mask)])
            bar.advance(task, len(batch["index"]))
    return list(trained.class_names)
