"""DeepLabV3+: backbone -> ASPP on high-level features -> decoder fused with low-level features.

Besides logits the model returns the decoder's last activation (post-ReLU, so
non-negative and cosine similarities lie in [0, 1]): CISC-R compares pixels in
that feature space.

DeepLabV3+ predicts at stride 4. With `decoder_stride = 2` one more stage fuses the
backbone's stride-2 features before the classifier, for classes thinner than 4 px
(a perfect stride-4 map keeps 44 % of the aerial benchmark's 2–4 px roads, a stride-2
map 85 %: benchmarks/stride_ceiling.py). The CISC features stay the stride-4 decoder's.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOW_LEVEL_PROJECTION = 48
FINE_LEVEL_PROJECTION = 24
DECODER_STRIDES = (4, 2)


class BackboneFeatures(NamedTuple):
    """What a backbone gives the head: fine B×F×ceil(H/2)×ceil(W/2), low B×L×ceil(H/4)×ceil(W/4),
    high B×S×h×w at the output stride."""

    fine: Tensor
    low: Tensor
    high: Tensor


class SegmentationOutput(NamedTuple):
    """logits: B×C×H×W (input size). features: B×D×ceil(H/4)×ceil(W/4), D = feature_dim, ≥ 0."""

    logits: Tensor
    features: Tensor


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    """conv (no bias) -> BN -> ReLU; padding keeps the spatial size."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: multi-scale context at the backbone's output stride.

    Branches: 1×1, one 3×3 per atrous rate, global image pooling; concatenated and
    projected to `out_channels`. B×in×h×w -> B×out×h×w.
    """

    def __init__(
        self,
        in_channels: int,
        atrous_rates: tuple[int, ...],
        out_channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels, 1)]
            + [conv_bn_relu(in_channels, out_channels, 3, rate) for rate in atrous_rates]
        )
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, out_channels, 1)
        )
        self.project = nn.Sequential(
            conv_bn_relu(out_channels * (len(atrous_rates) + 2), out_channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class Decoder(nn.Module):
    """Sharpens ASPP output with low-level detail.

    low: B×L×h4×w4, context: B×A×h×w -> B×channels×h4×w4 (post-ReLU).
    """

    def __init__(self, low_level_channels: int, context_channels: int, channels: int) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(low_level_channels, LOW_LEVEL_PROJECTION, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(context_channels + LOW_LEVEL_PROJECTION, channels, 3),
            conv_bn_relu(channels, channels, 3),
        )

    def forward(self, low: Tensor, context: Tensor) -> Tensor:
        context = F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([self.reduce(low), context], dim=1))


class FineDecoder(nn.Module):
    """A second decoder stage at stride 2: the stride-4 features, upsampled, fused with the
    backbone's stride-2 features by one 3×3 conv at half the width.

    fine: B×F×h2×w2, features: B×D×h4×w4 -> B×D/2×h2×w2 (post-ReLU).
    """

    def __init__(self, fine_level_channels: int, channels: int) -> None:
        super().__init__()
        self.out_channels = max(channels // 2, 1)
        self.reduce = conv_bn_relu(fine_level_channels, FINE_LEVEL_PROJECTION, 1)
        self.fuse = conv_bn_relu(channels + FINE_LEVEL_PROJECTION, self.out_channels, 3)

    def forward(self, fine: Tensor, features: Tensor) -> Tensor:
        features = F.interpolate(features, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([self.reduce(fine), features], dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ over any backbone exposing `fine_level_channels`, `low_level_channels`,
    `high_level_channels`, `atrous_rates` and forward(x) -> BackboneFeatures.

    forward(x: B×3×H×W) -> SegmentationOutput(logits B×num_classes×H×W,
    features B×feature_dim×ceil(H/4)×ceil(W/4)); any H, W. The classifier reads the
    stride-4 features, or with `decoder_stride = 2` the fine decoder's stride-2 map.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        head_channels: int = 256,
        dropout: float = 0.1,
        decoder_stride: int = 4,
    ) -> None:
        super().__init__()
        if decoder_stride not in DECODER_STRIDES:
            raise ValueError(f"decoder_stride must be 4 or 2, got {decoder_stride}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.feature_dim = head_channels
        rates = tuple(backbone.atrous_rates)
        self.aspp = ASPP(backbone.high_level_channels, rates, head_channels, dropout=dropout)
        self.decoder = Decoder(backbone.low_level_channels, head_channels, head_channels)
        self.fine_decoder = FineDecoder(backbone.fine_level_channels, head_channels) if decoder_stride == 2 else None
        classifier_channels = head_channels if self.fine_decoder is None else self.fine_decoder.out_channels
        self.classifier = nn.Conv2d(classifier_channels, num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming for convs, identity BN; pretrained backbone weights are loaded afterwards."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> SegmentationOutput:
        levels = self.backbone(x)
        features = self.decoder(levels.low, self.aspp(levels.high))
        head = features if self.fine_decoder is None else self.fine_decoder(levels.fine, features)
        logits = F.interpolate(
            self.classifier(head), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return SegmentationOutput(logits, features)
