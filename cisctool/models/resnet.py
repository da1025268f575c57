"""ResNet-50/101 backbones with torchvision-compatible keys, dilated to output stride 16 or 8.

Segmentation needs denser features than classification: the last stage (os 16) or
the last two (os 8) swap their stride 2 for dilation, which keeps the receptive field
and every weight shape, so ImageNet classification weights load unchanged.
"""

from torch import Tensor, nn

from cisctool.models.deeplabv3plus import BackboneFeatures

BLOCK_COUNTS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carries stride and dilation), 1×1 expand to 4× width, plus a shortcut.

    B×in×H×W -> B×(4·width)×H/stride×W/stride.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _make_stage(
    in_channels: int, width: int, blocks: int, stride: int, first_dilation: int, dilation: int
) -> nn.Sequential:
    """One stage; its first block changes the channel count, so it always gets a 1×1 shortcut."""
    out_channels = width * Bottleneck.expansion
    downsample = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )
    layers = [Bottleneck(in_channels, width, stride, first_dilation, downsample)]
    layers += [Bottleneck(out_channels, width, 1, dilation, None) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Bottleneck ResNet without `fc`; forward(x) -> BackboneFeatures(fine, low, high).

    x: B×3×H×W. fine (the stem, before max-pooling): B×64×ceil(H/2)×ceil(W/2).
    low (layer1): B×256×ceil(H/4)×ceil(W/4).
    high (layer4): B×2048×ceil(H/os)×ceil(W/os), os = `output_stride` (16 or 8).
    """

    fine_level_channels = 64
    low_level_channels = 256
    high_level_channels = 2048

    def __init__(self, block_counts: tuple[int, int, int, int], output_stride: int = 16) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        self.output_stride = output_stride
        # DeepLab's rates for os 16; denser features at os 8 need twice the rate.
        self.atrous_rates = tuple(rate * 16 // output_stride for rate in (6, 12, 18))
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dilated_stages = {16: {4}, 8: {3, 4}}[output_stride]
        in_channels, dilation = 64, 1
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, block_counts), start=1):
            stride = 1 if index == 1 else 2
            first_dilation = dilation
            if index in dilated_stages:
                dilation *= stride
                stride = 1
            stage = _make_stage(in_channels, width, blocks, stride, first_dilation, dilation)
            self.add_module(f"layer{index}", stage)
            in_channels = width * Bottleneck.expansion

    def forward(self, x: Tensor) -> BackboneFeatures:
        fine = self.relu(self.bn1(self.conv1(x)))
        low = self.layer1(self.maxpool(fine))
        return BackboneFeatures(fine, low, self.layer4(self.layer3(self.layer2(low))))


def resnet50(output_stride: int = 16) -> ResNet:
    """ResNet-50 backbone (blocks 3, 4, 6, 3)."""
    return ResNet(BLOCK_COUNTS["resnet50"], output_stride)


def resnet101(output_stride: int = 16) -> ResNet:
    """ResNet-101 backbone (blocks 3, 4, 23, 3)."""
    return ResNet(BLOCK_COUNTS["resnet101"], output_stride)
