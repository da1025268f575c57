"""Segmentation models: DeepLabV3+ over ResNet-50/101, MobileNetV2 or a tiny CPU backbone; DPT over DINOv2 ViTs."""

from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from cisctool.config import Arch, Backbone, Config, choices
from cisctool.errors import InputError
from cisctool.models.deeplabv3plus import DECODER_STRIDES, DeepLabV3Plus, SegmentationOutput
from cisctool.models.dinov2 import VIT_SIZES, dinov2
from cisctool.models.dpt import DPT, REASSEMBLE_CHANNELS
from cisctool.models.mobilenetv2 import MobileNetV2
from cisctool.models.pretrained import load_pretrained
from cisctool.models.resnet import resnet50, resnet101
from cisctool.models.tiny import TinyBackbone


class _BackboneSpec(NamedTuple):
    build: Callable[[int], nn.Module]  # output_stride -> backbone
    ignored_prefixes: tuple[str, ...] | None  # ImageNet classifier keys; None: no ImageNet file


_BACKBONES: dict[Backbone, _BackboneSpec] = {  # the names are config.Backbone's
    "resnet50": _BackboneSpec(resnet50, ("fc.",)),
    "resnet101": _BackboneSpec(resnet101, ("fc.",)),
    "mobilenetv2": _BackboneSpec(MobileNetV2, ("classifier.",)),
    "tiny": _BackboneSpec(lambda output_stride: TinyBackbone(), None),
}
BACKBONE_NAMES = choices(Backbone)
ARCH_NAMES = choices(Arch)
OUTPUT_STRIDES = (8, 16)

__all__ = [
    "ARCH_NAMES",
    "BACKBONE_NAMES",
    "DECODER_STRIDES",
    "OUTPUT_STRIDES",
    "DPT",
    "DeepLabV3Plus",
    "SegmentationOutput",
    "build_model",
    "build_configured_model",
    "load_pretrained",
]


def build_model(
    arch: str = "deeplabv3plus",
    backbone: str = "resnet50",
    num_classes: int = 21,
    pretrained: str = "",
    output_stride: int = 16,
    head_channels: int = 256,
    decoder_stride: int = 4,
    gradient_checkpointing: bool = False,
) -> DeepLabV3Plus | DPT:
    """A freshly initialised model; non-empty `pretrained` loads an ImageNet file into the backbone
    (for dinov2_*, an official DINOv2 file).

    `arch` names the CNN backbones' head; the dinov2_* ViTs always carry UniMatch V2's DPT head.
    `output_stride` (16 or 8) applies to resnet*/mobilenetv2; "tiny" is always at stride 16, a ViT at 14.
    `head_channels` is the width of ASPP and decoder (DPT: of the fusion blocks), i.e. the feature dim D.
    `decoder_stride` 4 is DeepLabV3+; 2 adds a decoder stage on the backbone's stride-2 features.
    `gradient_checkpointing` (ViTs) recomputes block activations in the backward pass to save memory.
    Bad names or values raise InputError.
    """
    if arch not in ARCH_NAMES:
        raise InputError(f"unknown arch {arch!r}; valid: {', '.join(ARCH_NAMES)}")
    if backbone not in _BACKBONES and backbone not in VIT_SIZES:
        raise InputError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONE_NAMES)}")
    if output_stride not in OUTPUT_STRIDES:
        raise InputError(f"output_stride must be 8 or 16, got {output_stride}")
    if decoder_stride not in DECODER_STRIDES:
        raise InputError(f"decoder_stride must be 4 or 2, got {decoder_stride}")
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    if head_channels < 1:
        raise InputError(f"head_channels must be at least 1, got {head_channels}")
    if backbone in VIT_SIZES:
        if decoder_stride != 4:
            raise InputError(f"decoder_stride = 2 is a DeepLabV3+ stage; {backbone}'s DPT head predicts at stride 1.75")
        vit = dinov2(backbone, gradient_checkpointing=gradient_checkpointing)
        if pretrained:
            load_pretrained(vit, pretrained, ())
        return DPT(vit, REASSEMBLE_CHANNELS[backbone], num_classes, head_channels)
    spec = _BACKBONES[backbone]
    model = DeepLabV3Plus(spec.build(output_stride), num_classes, head_channels, decoder_stride=decoder_stride)
    if pretrained:
        if spec.ignored_prefixes is None:
            raise InputError(
                f"backbone {backbone!r} has no pretrained weights; leave pretrained empty "
                f"(got {pretrained!r})"
            )
        load_pretrained(model.backbone, pretrained, spec.ignored_prefixes)
    return model


def build_configured_model(config: Config, *, imagenet: bool) -> DeepLabV3Plus | DPT:
    """The model `config` describes; with `imagenet`, the backbone starts from `model.pretrained`
    (a checkpoint brings its own weights instead)."""
    return build_model(
        config.model.arch,
        config.model.backbone,
        config.data.num_classes,
        pretrained=config.model.pretrained if imagenet else "",
        output_stride=config.model.output_stride,
        head_channels=config.model.head_channels,
        decoder_stride=config.model.decoder_stride,
        gradient_checkpointing=config.model.gradient_checkpointing,
    )
