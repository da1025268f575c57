"""DPT head over a DINOv2 ViT, as UniMatch V2 builds it: 4 blocks' tokens → reassemble → fusion → logits.

Reassemble: each taken block's patch tokens (stride 14) are projected by a 1×1 conv to
`REASSEMBLE_CHANNELS[size][i]` and resized to strides 3.5, 7, 14 and 28 (4× and 2× transposed
convs, identity, a stride-2 conv). Fusion: RefineNet-style blocks (two residual conv units, a
bilinear upsampling, a 1×1 conv) from the coarsest level to the finest, ending at stride 1.75;
the logits come from one more 3×3 conv, ReLU and a 1×1 conv, resized to the input. No batch norm
(UniMatch V2's `use_bn = False`). The parameter names are UniMatch V2's (`head.projects`,
`head.resize_layers`, `head.scratch.layerN_rn`, `head.scratch.refinenetN`, `head.scratch.output_conv`).

CISC-R compares pixels in one named feature map, `CISC_FEATURES`: the fusion output
(`"fusion"`, the last refinenet's B×head_channels map at stride 1.75, which the logits read) or the
ViT's last taken block's patch tokens (`"tokens"`, B×embed_dim at stride 14). The choice rests on
S_ŷ's AUROC (right vs wrong pseudo-label pixels), benchmarks/vit_cisc_features.py; docs/dinov2.md
gives the record. Neither map is post-ReLU, so its cosines span [−1, 1] (the CISC maths clamps
them to [0, 1] where it needs to). An input whose sides are not multiples of 14 is resized to the nearest ones
(bilinear, as UniMatch V2's evaluation does) and the logits back to the input's size.
"""

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from cisctool.models.deeplabv3plus import SegmentationOutput
from cisctool.models.dinov2 import PATCH_SIZE, DinoVisionTransformer

REASSEMBLE_CHANNELS: dict[str, tuple[int, int, int, int]] = {  # UniMatch V2's `out_channels`
    "dinov2_small": (48, 96, 192, 384),
    "dinov2_base": (96, 192, 384, 768),
    "dinov2_large": (256, 512, 1024, 1024),
}
FEATURE_WIDTHS = {"dinov2_small": 64, "dinov2_base": 128, "dinov2_large": 256}  # UniMatch V2's `features`
CiscFeatures = Literal["fusion", "tokens"]
CISC_FEATURES: CiscFeatures = "fusion"


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3×3 convs with bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """(coarser path [+ this level through resConfUnit1]) → resConfUnit2 → upsample → 1×1 conv.

    Upsampled to `size`, or ×2 without one (align_corners=True, as UniMatch V2).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(channels)
        self.resConfUnit2 = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, path: Tensor, level: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if level is not None:
            path = path + self.resConfUnit1(level)
        path = self.resConfUnit2(path)
        resize = {"size": size} if size is not None else {"scale_factor": 2}
        return self.out_conv(F.interpolate(path, **resize, mode="bilinear", align_corners=True))


class DPTHead(nn.Module):
    """forward(4 token maps B×N×E, grid (h, w)) → (logits B×classes×8h×8w, fusion B×channels×8h×8w)."""

    def __init__(self, embed_dim: int, reassemble: tuple[int, ...], channels: int, num_classes: int) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(embed_dim, width, 1) for width in reassemble)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(reassemble[0], reassemble[0], 4, stride=4),
            nn.ConvTranspose2d(reassemble[1], reassemble[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(reassemble[3], reassemble[3], 3, stride=2, padding=1),
        ])  # fmt: skip
        self.scratch = nn.Module()
        for index, width in enumerate(reassemble, start=1):
            setattr(self.scratch, f"layer{index}_rn", nn.Conv2d(width, channels, 3, padding=1, bias=False))
            setattr(self.scratch, f"refinenet{index}", FeatureFusionBlock(channels))
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, num_classes, 1)
        )

    def forward(self, tokens: tuple[Tensor, ...], grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        scratch = self.scratch
        levels = []
        for index, level in enumerate(tokens):
            level = level.transpose(1, 2).reshape(level.shape[0], level.shape[-1], *grid)
            level = self.resize_layers[index](self.projects[index](level))
            levels.append(getattr(scratch, f"layer{index + 1}_rn")(level))
        path = scratch.refinenet4(levels[3], size=tuple(levels[2].shape[-2:]))
        path = scratch.refinenet3(path, levels[2], size=tuple(levels[1].shape[-2:]))
        path = scratch.refinenet2(path, levels[1], size=tuple(levels[0].shape[-2:]))
        fusion = scratch.refinenet1(path, levels[0])
        return scratch.output_conv(fusion), fusion


class DPT(nn.Module):
    """Segmenter: DINOv2 ViT `backbone` + DPT `head`.

    forward(x: B×3×H×W, any H, W) → SegmentationOutput(logits B×num_classes×H×W, features: the
    `cisc_features` map, B×feature_dim×h×w over the whole image).
    """

    def __init__(
        self,
        backbone: DinoVisionTransformer,
        reassemble: tuple[int, ...],
        num_classes: int,
        head_channels: int,
        cisc_features: CiscFeatures = CISC_FEATURES,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = DPTHead(backbone.embed_dim, reassemble, head_channels, num_classes)
        self.num_classes = num_classes
        self.cisc_features = cisc_features

    @property
    def feature_dim(self) -> int:
        """D of the CISC features."""
        return self.head.scratch.output_conv[0].in_channels if self.cisc_features == "fusion" else self.backbone.embed_dim

    def forward(self, x: Tensor) -> SegmentationOutput:
        size = x.shape[-2:]
        fitted = tuple(max(int(side / PATCH_SIZE + 0.5), 1) * PATCH_SIZE for side in size)
        if fitted != tuple(size):
            x = F.interpolate(x, size=fitted, mode="bilinear", align_corners=True)
        vit = self.backbone(x)
        logits, fusion = self.head(vit.patch_tokens, vit.grid)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        if self.cisc_features == "fusion":
            return SegmentationOutput(logits, fusion)
        last = vit.patch_tokens[-1]
        return SegmentationOutput(logits, last.transpose(1, 2).reshape(last.shape[0], last.shape[-1], *vit.grid))
