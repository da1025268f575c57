"""What one training step asks of a GPU, from its FLOPs: the step rate a GPU is assumed to reach when
none has been measured, and so the images a second its loaders must deliver.

FLOPs are counted by torch's FlopCounterMode over one forward and backward of the config's model on
meta tensors (no memory, no compute). The effective rate is an assumption, not a measurement:
ResNet training with mixed precision keeps a Hopper GPU's tensor cores far below their peak, batch
norm, ReLU and upsampling being bound by memory. The record carries the assumption beside every figure derived from it.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

from cisctool.config import Config
from cisctool.models import build_configured_model

# Assumed effective TFLOP/s of a whole training step on an H100 with AMP: a pessimistic, a central
# and an optimistic guess (the last, the hardest target for the loaders).
ASSUMED_H100_TFLOPS = (50.0, 100.0, 200.0)


def training_flops_per_image(config: Config) -> float:
    """FLOPs of one crop's forward and backward through the config's model (train mode)."""
    with torch.device("meta"):
        model = build_configured_model(config, imagenet=False).train()
        images = torch.zeros(2, 3, config.train.crop_size, config.train.crop_size)
    with FlopCounterMode(display=False) as counter:
        output = model(images)
        (output.logits.float().mean() + output.features.float().mean()).backward()
    return counter.get_total_flops() / 2


def estimated_step_rates(flops_per_step: float) -> dict[str, float]:
    """Steps/s at each assumed effective rate: {"<T> TFLOP/s": steps/s}."""
    return {f"{tflops:g} TFLOP/s": tflops * 1e12 / flops_per_step for tflops in ASSUMED_H100_TFLOPS}
