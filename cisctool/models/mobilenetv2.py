"""MobileNetV2 (width 1.0) backbone, torchvision-compatible keys, dilated to output stride 16 or 8.

Once the running stride reaches the output stride, later stride-2 blocks keep stride 1
and dilate their depthwise 3×3 instead; weight shapes are unchanged, so ImageNet
weights load as they are.
"""

from torch import Tensor, nn

from cisctool.models.deeplabv3plus import BackboneFeatures

# (expand ratio t, output channels c, repeats n, first stride s) per block group.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
FINE_LEVEL_END = 2  # features[:2] ends at stride 2 with 16 channels
LOW_LEVEL_END = 4  # features[:4] ends at stride 4 with 24 channels


class ConvBNReLU6(nn.Sequential):
    """conv (no bias) -> BN -> ReLU6; keys `0.weight`, `1.*`. Padding keeps size at stride 1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1×1 expand (none when t = 1), depthwise 3×3, linear 1×1 project; residual if shapes match.

    B×in×H×W -> B×out×H/stride×W/stride.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dilation: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, 1))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """`features` only (no classifier); forward(x) -> BackboneFeatures(fine, low, high).

    x: B×3×H×W. fine (features[:2]): B×16×ceil(H/2)×ceil(W/2). low (features[:4]): B×24×ceil(H/4)×ceil(W/4).
    high (features[4:]): B×1280×ceil(H/os)×ceil(W/os), os = `output_stride` (16 or 8).
    """

    fine_level_channels = 16
    low_level_channels = 24
    high_level_channels = LAST_CHANNELS

    def __init__(self, output_stride: int = 16) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        self.output_stride = output_stride
        # DeepLab's rates for os 16; denser features at os 8 need twice the rate.
        self.atrous_rates = tuple(rate * 16 // output_stride for rate in (6, 12, 18))
        layers: list[nn.Module] = [ConvBNReLU6(3, STEM_CHANNELS, 3, stride=2)]
        in_channels, current_stride, dilation = STEM_CHANNELS, 2, 1
        for expand_ratio, out_channels, repeats, stride in INVERTED_RESIDUAL_SETTINGS:
            first_dilation = dilation
            if current_stride == output_stride:
                dilation *= stride
                stride = 1
            else:
                current_stride *= stride
            for index in range(repeats):
                layers.append(
                    InvertedResidual(
                        in_channels,
                        out_channels,
                        stride if index == 0 else 1,
                        first_dilation if index == 0 else dilation,
                        expand_ratio,
                    )
                )
                in_channels = out_channels
        layers.append(ConvBNReLU6(in_channels, LAST_CHANNELS, 1))
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> BackboneFeatures:
        fine = self.features[:FINE_LEVEL_END](x)
        low = self.features[FINE_LEVEL_END:LOW_LEVEL_END](fine)
        return BackboneFeatures(fine, low, self.features[LOW_LEVEL_END:](low))
