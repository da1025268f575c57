"""What a DINOv2 ViT-S with the DPT head costs on this machine, and which feature map the CISC maps should read.

    python benchmarks/bench_vit.py --data /tmp/vitdemo [--steps 20 300] [--work /tmp/bench-vit]

On the demo data (`cisctool data make-demo /tmp/vitdemo`), from random weights (no DINOv2 file):
  (a) training: `cisctool train` of round 0 at crop 98 (AdamW) run twice, for the two step counts of
      `--steps`; steps/s = the step difference over the wall-time difference (start-up and the val
      pass cancel), and the peak RSS of the longer run; the demo's own MobileNetV2 at crop 96 in the
      same way for comparison;
  (b) `cisctool index build`, then `cisctool rectify --round 1` of the ViT's round-0 model (the longer run) over the unlabeled
      images: its images/s and the quality report's S_ŷ AUROC (the fusion output, which rectify reads);
  (c) S_ŷ's AUROC (right vs wrong pseudo-label pixels, the quality report's histograms) with each
      candidate CISC feature map of that model: the DPT fusion output and the ViT's last patch tokens,
      guides the nearest labeled prototype of the predicted class (benchmarks/cisc_features.py's rule).
Writes a JSON record.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from cisctool.config import load_config
from cisctool.report.quality import SignalHistograms
from cisctool.store.checkpoints import load_inference_model
from cisctool.store.layout import RunLayout

from cisc_features import _batches, _similarity, labeled_prototypes
from records import progress, write_record

VIT = {"model.backbone": "dinov2_small", "model.pretrained": "", "train.crop_size": 98, "train.optimizer": "adamw",
       "train.lr": 1e-4, "train.workers": 0, "rectify.batch_size": 8}  # fmt: skip
CNN = {"train.workers": 0}  # the demo's own model (MobileNetV2, ImageNet file when installed) at crop 96
SOURCES = ("fusion", "tokens")


def cisctool(workdir: Path, config: Path, settings: dict, *args: str) -> tuple[float, float]:
    """Run the installed cisctool; (wall seconds, peak RSS MiB of that process)."""
    command = [sys.executable, "-m", "cisctool", "--config", str(config), "--set", f"workdir={json.dumps(str(workdir))}"]
    for key, value in settings.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    started = time.perf_counter()
    process = subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {process.stderr.read()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def training_cost(work: Path, config: Path, settings: dict, steps: tuple[int, int]) -> dict:
    """steps/s from two runs of different lengths, and the longer run's peak RSS."""
    runs = []
    for count in steps:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        runs.append(cisctool(work, config, settings, "train", "--max-steps", str(count), "--device", "cpu"))
        progress(f"{settings.get('model.backbone', 'demo model')}: {count} steps in {runs[-1][0]:.1f} s")
    return {"steps": list(steps), "seconds": [run[0] for run in runs],
            "steps_per_second": (steps[1] - steps[0]) / (runs[1][0] - runs[0][0]), "peak_rss_mib": runs[1][1]}  # fmt: skip


def feature_aurocs(config_path: Path, work: Path) -> dict:
    """Pooled and class-mean S_ŷ AUROC per candidate feature map of the round-0 ViT."""
    config = load_config(config_path, {"workdir": str(work), **VIT})
    model, _ = load_inference_model(RunLayout.of(config).model(0), expected=config)
    num_classes, ignore = config.data.num_classes, config.data.ignore_index
    guides = labeled_prototypes(config, model, _forward, SOURCES)
    with torch.inference_mode():
        histograms = {source: SignalHistograms(num_classes) for source in SOURCES}
        for batch in _batches(config, config.data.unlabeled):
            logits, features = _forward(model, batch["image"])
            prediction = logits.argmax(dim=1)
            maps = {source: _similarity(config, features[source], prediction, guides[source]) for source in SOURCES}
            scored = (batch["mask"] != ignore) & torch.stack([~torch.isnan(m) for m in maps.values()]).all(dim=0)
            right, predicted = (prediction == batch["mask"])[scored].numpy(), prediction[scored].numpy()
            for source, similarity in maps.items():
                histograms[source].add(((similarity[scored] + 1) / 2).numpy(), predicted, right)
    return {source: {"pooled": hist.pooled_auroc(), "class_mean": hist.class_mean_auroc(),
                     "pixels": int(hist.counts.sum())} for source, hist in histograms.items()}  # fmt: skip


def _forward(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and both candidate maps from one forward (the model's `cisc_features` switched per source)."""
    model.cisc_features = "fusion"
    output = model(images)
    model.cisc_features = "tokens"
    tokens = model(images).features
    model.cisc_features = "fusion"
    return output.logits, {"fusion": output.features, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a demo data folder (cisctool data make-demo)")
    parser.add_argument("--steps", type=int, nargs=2, default=(20, 300))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-vit"))
    args = parser.parse_args()
    config = args.data / "cisctool.toml"
    steps = tuple(args.steps)
    cnn = training_cost(args.work / "cnn", config, CNN, steps)
    vit = training_cost(args.work / "vit", config, VIT, steps)
    cisctool(args.work / "vit", config, VIT, "index", "build", "--round", "0", "--device", "cpu")
    seconds, rss = cisctool(args.work / "vit", config, VIT, "rectify", "--round", "1", "--device", "cpu")
    report = json.loads((args.work / "vit/runs/demo/round1/pseudo_quality.json").read_text())
    rectify = {"wall_seconds": seconds, "peak_rss_mib": rss,
               **{key: report.get(key) for key in ("images", "seconds", "images_per_second")},
               "cisc_auroc": report["auroc"]["cisc"]}  # fmt: skip
    progress(f"rectify: {rectify['images_per_second']} img/s")
    aurocs = feature_aurocs(config, args.work / "vit")
    payload = {"data": str(args.data), "torch_threads": torch.get_num_threads(), "vit": vit, "cnn_demo_model": cnn,
               "rectify": rectify, "cisc_feature_auroc": aurocs, "weights": "random init (no DINOv2 file)",
               "peak_rss_note": "ru_maxrss of the cisctool process", "self_rss_mib": resource.getrusage(
                   resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip
    print(json.dumps(payload, indent=2))
    print(f"wrote {write_record('vit-cpu', payload)}")


if __name__ == "__main__":
    main()
