"""Do signals beyond one model's pixel confidences find the images with the most wrong pseudo labels?

    python benchmarks/review_signals.py --data DIR --run RUN[:SECOND_MODEL] [--run ...] [--round 1]

`--data` is a benchmark's folder (`cisctool data make-demo`), each `--run` a run folder of it whose
round `--round` pseudo labels (made by round `--round` − 1's model) are scored against the
unlabeled split's true masks. Per image, besides the review score `squared_doubt` Σ(1 − c)²
(c the stored confidence):
- `views_doubt`: Σ TV(p_plain, p_1.5×)² of the model's two TTA views (do they disagree where it is wrong?);
- `prototype_disagreement`: pixels whose nearest labeled class prototype (the labeled images'
  class means, the fallback guides) is another class than the pseudo label;
- `second_model_doubt`: Σ max(1 − c, 1 − q)², q the probability a second, independently trained
  model (`:SECOND_MODEL`, a model.pt of another run of the same data) gives the pseudo label:
  the disagreement of a two-model ensemble;
- `squared_doubt + views` / `+ second`: the sums, each term divided by its mean over the images.
Writes each signal's share of the wrong pixels in the first 10 % of images as a ratio to the
oracle's (true error counts), per run, and the lowest over the runs: the review target is ≥ 0.8
on every seed.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cisctool.data.datasets import load_pair
from cisctool.data.splits import read_split
from cisctool.data.transforms import normalize
from cisctool.method.cisc import cisc_maps, upsample_maps
from cisctool.method.prototypes import class_prototypes
from cisctool.method.review import efficiency, oracle_efficiency
from cisctool.store.checkpoints import load_model
from cisctool.store.pseudo_labels import PseudoLabels

from records import progress, write_record

COMBINED = {"squared_doubt + views": "views_doubt", "squared_doubt + second": "second_model_doubt"}


def as_batch(image: np.ndarray) -> torch.Tensor:
    return normalize(image).unsqueeze(0)


def view_probabilities(model: torch.nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """Softmax C×H×W of the plain and the 1.5× view (the default TTA's two views)."""
    size = batch.shape[-2:]
    views = [batch, F.interpolate(batch, scale_factor=1.5, mode="bilinear")]
    return [F.interpolate(model(view).logits.float(), size=size, mode="bilinear").softmax(1)[0] for view in views]


def labeled_class_means(model: torch.nn.Module, data: Path, num_classes: int, ignore: int) -> torch.Tensor:
    """1×C×D: each class's mean prototype over the labeled images (zero for a class none has)."""
    sums: torch.Tensor | None = None
    counts = torch.zeros(num_classes)
    for entry in read_split(data / "splits/labeled.txt", data, masks_required=True):
        image, mask = load_pair(entry, num_classes, ignore)
        prototypes, pixels = class_prototypes(model(as_batch(image)).features, torch.from_numpy(mask).long()[None],
                                              num_classes, ignore)  # fmt: skip
        sums = torch.zeros_like(prototypes[0]) if sums is None else sums
        present = pixels[0] > 0
        sums[present] += prototypes[0][present]
        counts[present] += 1
    return F.normalize(sums / counts.clamp(min=1)[:, None], dim=-1)[None]


def image_signals(model, second, means, image, label, confidence, ignore) -> dict[str, float]:
    """Every signal of one image (H×W stored label and confidence)."""
    batch, kept = as_batch(image), label != ignore
    plain, scaled = view_probabilities(model, batch)
    safe = torch.from_numpy(np.where(kept, label, 0)).long()[None]
    similarity = upsample_maps(cisc_maps(model(batch).features, means), tuple(image.shape[:2]))[0]
    doubt = 1.0 - confidence[kept].astype(np.float64)
    signals = {
        "squared_doubt": float((doubt**2).sum()),
        "views_doubt": float((((plain - scaled).abs().sum(0) / 2).numpy()[kept] ** 2).sum()),
        "prototype_disagreement": float((similarity.argmax(0).numpy() != label)[kept].sum()),
    }
    if second is not None:
        other = sum(view_probabilities(second, batch)) / 2
        given = 1.0 - other.gather(0, safe)[0].numpy()[kept].astype(np.float64)
        signals["second_model_doubt"] = float((np.maximum(doubt, given) ** 2).sum())
    return signals


@torch.no_grad()
def measure(data: Path, run: Path, second_path: Path | None, round_index: int) -> dict[str, object]:
    """Each signal's ratio to the oracle at 10 % for one run's pseudo labels."""
    model, config = load_model(run / f"round{round_index - 1}" / "model.pt")
    second = load_model(second_path)[0] if second_path else None
    classes, ignore = config.data.num_classes, config.data.ignore_index
    means = labeled_class_means(model, data, classes, ignore)
    rows, wrong = [], []
    with PseudoLabels(run / f"round{round_index}" / "pseudo.h5") as stored:
        position = {image_id: index for index, image_id in enumerate(stored.ids)}
        for entry in read_split(data / "splits/unlabeled.txt", data, masks_required=True):
            image, truth = load_pair(entry, classes, ignore)
            index = position[entry.id]
            label, confidence = stored.pixels("label", index), stored.pixels("confidence", index)
            counted = (label != ignore) & (truth != ignore)
            wrong.append(int((label[counted] != truth[counted]).sum()))
            rows.append(image_signals(model, second, means, image, label, confidence, ignore))
    wrong_counts = np.array(wrong)
    scores = {name: np.array([row[name] for row in rows]) for name in rows[0]}
    for name, extra in COMBINED.items():
        if extra in scores:
            scores[name] = scores["squared_doubt"] / scores["squared_doubt"].mean() + scores[extra] / scores[extra].mean()
    oracle = oracle_efficiency(wrong_counts)["0.10"]
    return {"oracle_share_at_10": oracle, "second_model": str(second_path or ""),
            "ratio_at_10": {name: efficiency(values, wrong_counts)["0.10"] / oracle for name, values in scores.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run", action="append", required=True, metavar="RUN[:SECOND_MODEL]")
    parser.add_argument("--round", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {}
    for item in args.run:
        run, _, second = item.partition(":")
        runs[run] = measure(args.data, Path(run), Path(second) if second else None, args.round)
        progress(f"{run}: " + ", ".join(f"{name} {ratio:.3f}" for name, ratio in runs[run]["ratio_at_10"].items()))
    names = set.intersection(*(set(result["ratio_at_10"]) for result in runs.values()))
    lowest = {name: min(result["ratio_at_10"][name] for result in runs.values()) for name in sorted(names)}
    progress(f"lowest ratio at 10 % over the runs: {lowest}")
    payload = {"what": "share of wrong pseudo-labelled pixels in the first 10 % of images, as a ratio to the "
                       "oracle order's, per review signal and run", "data": str(args.data), "round": args.round,
               "runs": runs, "lowest_ratio_at_10": lowest}  # fmt: skip
    print(f"wrote {write_record('review-signals', payload)}")


if __name__ == "__main__":
    main()
