"""A DINOv2 ViT-S with the DPT head through every step of a round, then predict, from random weights on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cisctool.data.demo import make_demo
from helpers import cisctool


@pytest.mark.slow
def test_vit_small_runs_train_index_rectify_train(tmp_path: Path):
    """`cisctool --set model.backbone='"dinov2_small"' --set train.crop_size=98 run --rounds 1`, made short."""
    config = make_demo(tmp_path / "data", seed=1, num_labeled=8, num_unlabeled=6, num_val=4)
    settings = {"model.backbone": "dinov2_small", "train.crop_size": 98, "model.pretrained": "",
                "rectify.tta_scales": [1.0]}  # fmt: skip
    completed = cisctool(tmp_path, config, "run", "--rounds", "1", "--device", "cpu", settings=settings)
    assert completed.returncode == 0, completed.stderr[-2000:]
    for step in ("train 0", "index 0", "rectify 1", "train 1"):
        assert step in completed.stdout, step
    rounds = tmp_path / "runs/demo"
    assert (rounds / "round0/model.pt").is_file() and (rounds / "round1/model.pt").is_file()
    quality = json.loads((rounds / "round1/pseudo_quality.json").read_text())
    assert quality["images_total"] == 6 and "cisc" in quality["auroc"]
    resolved = (rounds / "config.resolved.toml").read_text()
    assert 'backbone = "dinov2_small"' in resolved and "crop_size = 98" in resolved
    images = sorted((tmp_path / "data/images").glob("*.png"))[:2]
    predicted = subprocess.run(
        [sys.executable, "-m", "cisctool", "predict", str(rounds / "round1/model.pt"), *map(str, images),
         "--out", str(tmp_path / "masks"), "--device", "cpu"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert sorted(path.name for path in (tmp_path / "masks").glob("*.png")) == [image.name for image in images]
