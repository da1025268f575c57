from pathlib import Path

import numpy as np
import torch

from cisctool.config import Config, with_overrides
from cisctool.data.datasets import InferenceDataset, pad_collate
from cisctool.data.splits import split_entries
from cisctool.method.signals import predict
from cisctool.steps.signal_stream import SIZE_DIVISOR, guided_model, sample_statistics
from cisctool.store.layout import RunLayout


def test_sample_statistics_are_the_pixel_averages_of_the_sampled_images(
    demo_config: Config, trained_workdir: Path
):
    config = with_overrides(demo_config, {"workdir": str(trained_workdir), "rectify.batch_size": 1,
                                          "rectify.tta_scales": [1.0, 1.5], "rectify.tta_flip": True})  # fmt: skip
    entries = split_entries(config, "unlabeled")
    model, _ = guided_model(config, RunLayout.of(config).model(0), None, "cpu")
    positions = [0, 2, 3, 5]
    predicted, confidence = sample_statistics(config, model, entries, positions, "cpu")
    dataset = InferenceDataset(entries, config.data.num_classes, config.data.ignore_index, with_masks=False)
    total, largest, pixels = np.zeros(config.data.num_classes), 0.0, 0
    with torch.inference_mode():
        for position in positions:  # one image a batch, padded as the stream pads it; padding not counted
            batch = pad_collate([dataset[position]], config.data.ignore_index, size_divisor=SIZE_DIVISOR)
            probabilities, _ = predict(model, batch["image"], (1.0, 1.5), flip=True)
            height, width = batch["sizes"][0].tolist()
            total += probabilities[0, :, :height, :width].sum(dim=(1, 2)).double().numpy()
            largest += float(probabilities[0, :, :height, :width].max(dim=0).values.double().sum())
            pixels += height * width
    assert np.allclose(predicted, total / pixels, atol=1e-4)
    assert abs(confidence - largest / pixels) < 1e-4
    assert 1 / config.data.num_classes < confidence <= 1
    assert abs(predicted.sum() - 1) < 1e-5
