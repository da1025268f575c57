"""The GPU code paths (CUDA, mixed precision, channels-last) give what the CPU paths give.

Skipped where torch sees no GPU (CI); the CPU tests run the same functions with device="cpu".
Mixed precision rounds the forward to float16, so CUDA and CPU agree closely, not bit for bit.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cisctool.config import Config, with_overrides
from cisctool.steps.evaluate import evaluate_round
from cisctool.steps.index import build_round_index
from cisctool.steps.rectify import rectify_round
from cisctool.steps.train import train_round
from cisctool.store.pseudo_labels import PseudoLabels

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def copied(config: Config, source: Path, target: Path) -> Config:
    shutil.copytree(source, target)
    return with_overrides(config, {"workdir": str(target), "rectify.batch_size": 2})


def test_round0_trains_with_amp_on_cuda_and_scores_as_on_the_cpu(demo_config: Config):
    config = with_overrides(demo_config, {"train.max_steps": 30, "train.amp": True, "train.channels_last": True})
    outcome = train_round(config, device="cuda")
    assert outcome.steps == 30 and math.isfinite(outcome.final_loss)
    on_cuda, on_cpu = evaluate_round(config, 0, "cuda"), evaluate_round(config, 0, "cpu")
    assert abs(on_cuda.mean_iou - on_cpu.mean_iou) < 0.02, (on_cuda.mean_iou, on_cpu.mean_iou)
    assert abs(on_cuda.pixel_accuracy - on_cpu.pixel_accuracy) < 0.01


@pytest.mark.parametrize("prior_alignment", [0.0, 1.0])
def test_index_and_rectify_on_cuda_write_the_labels_the_cpu_writes(
    demo_config: Config, trained_workdir: Path, tmp_path: Path, prior_alignment: float
):
    files = {}
    for device in ("cpu", "cuda"):
        config = copied(demo_config, trained_workdir, tmp_path / device)
        config = with_overrides(config, {"rectify.prior_alignment": prior_alignment})
        build_round_index(config, 0, device)
        files[device] = rectify_round(config, 1, device).path
    with PseudoLabels(files["cpu"]) as cpu, PseudoLabels(files["cuda"]) as cuda:
        assert len(cpu) == len(cuda) and cuda.done.all()
        described = [json.loads(stored.attrs["prior_alignment"])["classes"] for stored in (cpu, cuda)]
        factors = [[values["weight"] for values in classes.values()] for classes in described]
        assert np.allclose(*factors, rtol=1e-2) and len(factors[1]) == (6 if prior_alignment else 0)
        labels_agree, weight_gaps = [], []
        for index in range(len(cpu)):
            expected, got = cpu.image(index), cuda.image(index)
            labels_agree.append(np.mean(expected.raw_label == got.raw_label))
            same = expected.raw_label == got.raw_label
            weight_gaps.append(np.abs(expected.weight.astype(np.float32) - got.weight.astype(np.float32))[same])
    assert np.mean(labels_agree) > 0.99, labels_agree
    assert np.mean(np.concatenate(weight_gaps)) < 0.02
