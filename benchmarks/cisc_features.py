"""Which features should the CISC map read? S_ŷ's AUROC (right vs wrong pseudo-label pixels) by feature source.

    cd benchmarks/work
    python ../cisc_features.py --config shapes/cisctool.toml cmp/runs/demo-compare-s0-suponly/round0/model.pt ...

For each model: pseudo labels of the unlabeled images from the plain view (ŷ = argmax P), then for
each feature map of the network S_ŷ(x) = cos(F(x), g_ŷ), with g_c the nearest labeled prototype of
class c (ground-truth masks, `index.topk = 1`, `rectify.guide_exclude` honoured) built from that
same feature map, upsampled to image size. Scored on the pixels that every source guides, against
the unlabeled images' true masks, pooled and as the mean over predicted classes; the plain
confidence max P and confidence × S are scored on the same pixels. Sources: the decoder output
(what cisctool reads), the ASPP output, the backbone's high-level (output stride)
and low-level (stride 4) features. Writes a JSON record.
"""

import argparse
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from cisctool.config import Config, load_config
from cisctool.data.datasets import InferenceDataset, pad_collate
from cisctool.data.splits import SplitName, split_entries
from cisctool.method.cisc import cisc_maps, predicted_class_similarity, upsample_maps
from cisctool.method.prototypes import class_areas, class_prototypes, present_classes
from cisctool.report.quality import SignalHistograms
from cisctool.store.checkpoints import load_inference_model

from records import progress, write_record

SOURCES = ("decoder", "aspp", "backbone_high", "backbone_low")
Forward = Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]] | None
BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("models", type=Path, nargs="+", help="round-0 model.pt files (one per seed)")
    args = parser.parse_args()
    config = load_config(args.config)
    results = {str(path): _score(config, path) for path in args.models}
    _print(results)
    print(f"wrote {write_record('cisc-features', {'config': str(args.config), 'auroc': results})}")


def _score(config: Config, path: Path) -> dict[str, dict[str, float]]:
    """{signal: {"pooled", "class_mean"}} AUROC for one model, on the pixels every source guides."""
    model, _ = load_inference_model(path, expected=config)
    model.eval()
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    bank = labeled_prototypes(config, model)
    signals = ["confidence", *SOURCES, *(f"confidence_x_{source}" for source in SOURCES)]
    histograms = {name: SignalHistograms(num_classes) for name in signals}
    with torch.inference_mode():
        for batch in _batches(config, "unlabeled"):
            logits, features = _forward(model, batch["image"])
            confidence, prediction = logits.softmax(dim=1).max(dim=1)
            maps = {source: _similarity(config, features[source], prediction, bank[source]) for source in SOURCES}
            scored = (batch["mask"] != ignore) & torch.stack([~torch.isnan(m) for m in maps.values()]).all(dim=0)
            right, predicted = (prediction == batch["mask"])[scored].numpy(), prediction[scored].numpy()
            values = {"confidence": confidence[scored]}
            for source, similarity in maps.items():
                values[source] = (similarity[scored] + 1) / 2  # [−1, 1] → [0, 1], order kept
                values[f"confidence_x_{source}"] = confidence[scored] * similarity[scored].clamp(0, 1)
            for name, value in values.items():
                histograms[name].add(value.numpy(), predicted, right)
    progress(f"{path}: {int(histograms['confidence'].counts.sum())} pixels scored")
    return {
        name: {"pooled": hist.pooled_auroc(), "class_mean": hist.class_mean_auroc()}
        for name, hist in histograms.items()
    }


def _batches(config: Config, split: SplitName) -> Iterator[dict[str, torch.Tensor]]:
    entries = split_entries(config, split, masks_required=True)
    dataset = InferenceDataset(entries, config.data.num_classes, config.data.ignore_index, with_masks=True)
    for start in range(0, len(dataset), BATCH):
        items = [dataset[index] for index in range(start, min(start + BATCH, len(dataset)))]
        yield pad_collate(items, config.data.ignore_index, size_divisor=32)


def _forward(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's logits and every candidate feature map, caught by hooks in its own forward pass."""
    caught: dict[str, torch.Tensor] = {}

    def keep(name: str):
        return lambda module, inputs, output: caught.__setitem__(name, output)

    hooks = [model.aspp.register_forward_hook(keep("aspp")), model.backbone.register_forward_hook(keep("backbone"))]
    try:
        output = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    levels = caught["backbone"]
    return output.logits, {"decoder": output.features, "aspp": caught["aspp"], "backbone_high": levels.high,
                           "backbone_low": levels.low}  # fmt: skip


def labeled_prototypes(
    config: Config, model: torch.nn.Module, forward: Forward = None, sources: tuple[str, ...] = SOURCES
) -> dict[str, list[torch.Tensor | None]]:
    """Per source, per class: N×D prototypes of the labeled images that hold the class (None if none);
    `forward(model, images)` gives the logits and the feature maps by source (default: this script's)."""
    forward = forward or _forward
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    parts: dict[str, list[list[torch.Tensor]]] = {source: [[] for _ in range(num_classes)] for source in sources}
    with torch.inference_mode():
        for batch in _batches(config, "labeled"):
            _, features = forward(model, batch["image"])
            present = present_classes(class_areas(batch["mask"], num_classes, ignore), config.index.min_area)
            for source in sources:
                prototypes, _ = class_prototypes(features[source], batch["mask"], num_classes, ignore)
                for cls in range(num_classes):
                    if cls not in config.rectify.guide_exclude:
                        parts[source][cls].append(prototypes[present[:, cls], cls])
    return {
        source: [torch.cat(rows) if rows and sum(len(r) for r in rows) else None for rows in per_class]
        for source, per_class in parts.items()
    }


def _similarity(
    config: Config, features: torch.Tensor, prediction: torch.Tensor, bank: list[torch.Tensor | None]
) -> torch.Tensor:
    """S_ŷ B×H×W from the nearest labeled prototype of each present predicted class; NaN elsewhere."""
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    own, _ = class_prototypes(features, prediction, num_classes, ignore)
    present = present_classes(class_areas(prediction, num_classes, ignore), config.index.min_area)
    guides = torch.zeros(own.shape)
    slot_classes = torch.full(present.shape, -1, dtype=torch.long)
    for image, cls in zip(*torch.nonzero(present, as_tuple=True), strict=True):
        candidates = bank[int(cls)]
        if candidates is not None:
            guides[image, cls] = candidates[(candidates @ own[image, cls]).argmax()]
            slot_classes[image, cls] = cls
    maps = upsample_maps(cisc_maps(features, guides), tuple(prediction.shape[-2:]))
    return predicted_class_similarity(maps, prediction, slot_classes)


def _print(results: dict[str, dict[str, dict[str, float]]]) -> None:
    """One row per signal: mean ± std over the models of the pooled and the class-mean AUROC."""
    table = Table(title=f"AUROC of right vs wrong pseudo-label pixels guided by every source, {len(results)} models")
    for column in ("signal", "pooled", "mean over classes"):
        table.add_column(column, no_wrap=True, justify="left" if column == "signal" else "right")
    for name in next(iter(results.values())):
        cells = []
        for kind in ("pooled", "class_mean"):
            values = [result[name][kind] for result in results.values()]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        table.add_row(name, *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
