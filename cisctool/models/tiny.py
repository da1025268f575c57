"""A ~0.26M-parameter backbone for demos and tests: trains in minutes on a CPU.

It has no ImageNet weights; it exists so the whole pipeline can run end to end on
small (96–128 px) images without a GPU.
"""

from torch import Tensor, nn


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3×3 conv -> BN -> ReLU; B×in×H×W -> B×out×ceil(H/stride)×ceil(W/stride)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(nn.Module):
    """Six conv-BN-ReLU layers; forward(x) -> (low, high).

    x: B×3×H×W. low: B×32×ceil(H/4)×ceil(W/4). high: B×128×ceil(H/8)×ceil(W/8).
    """

    low_level_channels = 32
    high_level_channels = 128
    output_stride = 8
    # Its 12–16 px high-level maps (96–128 px inputs) are too small for the usual rates.
    atrous_rates = (2, 4, 6)

    def __init__(self) -> None:
        super().__init__()
        self.low_level = nn.Sequential(
            _conv_bn_relu(3, 24, stride=2),
            _conv_bn_relu(24, 32, stride=2),
            _conv_bn_relu(32, 32),
        )
        self.high_level = nn.Sequential(
            _conv_bn_relu(32, 64, stride=2),
            _conv_bn_relu(64, 128),
            _conv_bn_relu(128, 128),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low = self.low_level(x)
        return low, self.high_level(low)
