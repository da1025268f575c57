"""DINOv2 vision transformers (ViT-S/14, B/14, L/14) in pure torch, with the official parameter names.

The official checkpoint files (`dinov2_vits14_pretrain.pth`, ..., which UniMatch V2 renames
`dinov2_small.pth`, ...) load into these unchanged: same keys (`cls_token`, `pos_embed`,
`mask_token`, `patch_embed.proj`, `blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,
mlp.fc2,ls2.gamma}`, `norm`), same shapes (positional embedding of a 518 px, 37×37-patch input).
The forward is the official one: patch 14, a class token, the positional embedding interpolated
bicubically to the input's patch grid exactly as the official code does it (same scale factor
with its +0.1 offset, so the numbers agree), pre-norm blocks with LayerScale, and the patch tokens
of 4 evenly spaced blocks out, each through the final norm, as UniMatch V2 takes them.
tests/models/test_dinov2.py checks all of it against the official code.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

PATCH_SIZE = 14
PRETRAIN_SIZE = 518  # the official files' positional embedding covers 37×37 patches
INTERPOLATE_OFFSET = 0.1  # the official code's work-around for floating point error in the scale factor
LAYER_SCALE_INIT = 1.0
NORM_EPS = 1e-6


class VitSize(NamedTuple):
    """One DINOv2 size: width, depth, heads, and the 4 blocks UniMatch V2's DPT head reads."""

    embed_dim: int
    depth: int
    num_heads: int
    taken_blocks: tuple[int, int, int, int]


VIT_SIZES: dict[str, VitSize] = {
    "dinov2_small": VitSize(384, 12, 6, (2, 5, 8, 11)),
    "dinov2_base": VitSize(768, 12, 12, (2, 5, 8, 11)),
    "dinov2_large": VitSize(1024, 24, 16, (4, 11, 17, 23)),
}


class VitFeatures(NamedTuple):
    """Per taken block: patch tokens B×N×D (through the final norm, N = h·w row-major) and the
    class token B×D; `grid` is (h, w), the patch grid."""

    patch_tokens: tuple[Tensor, ...]
    class_tokens: tuple[Tensor, ...]
    grid: tuple[int, int]


class PatchEmbed(nn.Module):
    """14×14 patches → tokens: B×3×H×W (multiples of 14) → B×(H/14·W/14)×D."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention; torch's fused kernel, the official code's maths."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim))


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (`gamma`, initialised to 1 as the official files were)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), LAYER_SCALE_INIT))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 → GELU → fc2, hidden width 4·D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """A DINOv2 ViT; forward(x: B×3×H×W, H and W multiples of 14) → VitFeatures of `taken_blocks`.

    `gradient_checkpointing` recomputes each block's activations in the backward pass instead of
    keeping them (training memory for compute; the same numbers).
    """

    def __init__(self, size: VitSize, *, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        dim = size.embed_dim
        self.embed_dim = dim
        self.taken_blocks = size.taken_blocks
        self.gradient_checkpointing = gradient_checkpointing
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (PRETRAIN_SIZE // PATCH_SIZE) ** 2 + 1, dim))
        # masked-image-modelling token of the pretraining; in the files, never used for segmentation
        self.mask_token = nn.Parameter(torch.zeros(1, dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(dim, size.num_heads) for _ in range(size.depth))
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """The official initialisation (timm's ViT): truncated normal 0.02 for linears and the
        positional embedding, a near-zero class token."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_encoding(self, tokens: Tensor, height: int, width: int) -> Tensor:
        """The positional embedding (1×(1+h·w)×D, `tokens`' dtype) for an H×W input: the official bicubic
        resize of the 37×37 grid by the scale factor (h + 0.1)/37, (w + 0.1)/37 (unchanged at 518×518)."""
        grid = self.pos_embed.shape[1] - 1
        if tokens.shape[1] - 1 == grid and height == width:
            return self.pos_embed
        embed = self.pos_embed.float()
        side = math.sqrt(grid)
        rows, cols = height // PATCH_SIZE + INTERPOLATE_OFFSET, width // PATCH_SIZE + INTERPOLATE_OFFSET
        patch_embed = F.interpolate(
            embed[:, 1:].reshape(1, int(side), int(side), self.embed_dim).permute(0, 3, 1, 2),
            scale_factor=(rows / side, cols / side),
            mode="bicubic",
        )
        patch_embed = patch_embed.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dim)
        return torch.cat((embed[:, :1], patch_embed), dim=1).to(tokens.dtype)

    def forward(self, x: Tensor) -> VitFeatures:
        height, width = x.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(f"input {height}×{width} is not a multiple of the patch size {PATCH_SIZE}")
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(tokens, height, width)
        taken = []
        for index, block in enumerate(self.blocks):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
            if index in self.taken_blocks:
                taken.append(self.norm(tokens))
        return VitFeatures(
            tuple(out[:, 1:] for out in taken),
            tuple(out[:, 0] for out in taken),
            (height // PATCH_SIZE, width // PATCH_SIZE),
        )


def dinov2(name: str, *, gradient_checkpointing: bool = False) -> DinoVisionTransformer:
    """The ViT `name` (a VIT_SIZES key) with random weights."""
    return DinoVisionTransformer(VIT_SIZES[name], gradient_checkpointing=gradient_checkpointing)
