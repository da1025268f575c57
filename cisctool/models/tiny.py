"""A small backbone for demos and tests: trains in a minute or two on a CPU.

Eight conv-BN-ReLU layers, low level at stride 4 and high level at stride 16.
It has no ImageNet weights; it exists so the whole pipeline runs end to end on
small (96–128 px) images without a GPU.
"""

from torch import Tensor, nn

from cisctool.models.deeplabv3plus import BackboneFeatures

FINE_LEVEL_END = 2  # low_level[:2] ends at stride 2 with 16 channels


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3×3 conv -> BN -> ReLU; B×in×H×W -> B×out×ceil(H/stride)×ceil(W/stride)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(nn.Module):
    """forward(x) -> BackboneFeatures(fine, low, high).

    x: B×3×H×W. fine (low_level[:2]): B×16×ceil(H/2)×ceil(W/2). low: B×24×ceil(H/4)×ceil(W/4).
    high: B×96×ceil(H/16)×ceil(W/16).
    """

    fine_level_channels = 16
    low_level_channels = 24
    high_level_channels = 96
    output_stride = 16
    # Its 6–8 px high-level maps (96–128 px inputs) are too small for the usual rates.
    atrous_rates = (2, 4, 6)

    def __init__(self) -> None:
        super().__init__()
        self.low_level = nn.Sequential(
            _conv_bn_relu(3, 16, stride=2),
            _conv_bn_relu(16, 16),
            _conv_bn_relu(16, 24, stride=2),
            _conv_bn_relu(24, 24),
        )
        self.high_level = nn.Sequential(
            _conv_bn_relu(24, 48, stride=2),
            _conv_bn_relu(48, 48),
            _conv_bn_relu(48, 96, stride=2),
            _conv_bn_relu(96, 96),
        )

    def forward(self, x: Tensor) -> BackboneFeatures:
        fine = self.low_level[:FINE_LEVEL_END](x)
        low = self.low_level[FINE_LEVEL_END:](fine)
        return BackboneFeatures(fine, low, self.high_level(low))
