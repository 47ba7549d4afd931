"""Noise-conditional classifier p_t(c | x_t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .unet import NoiseEmbedding, ResBlock, SelfAttention, _groups, edm_coefficients
from ..utils import per_sample


class NoiseConditionalClassifier(nn.Module):
    """logits = f_θ(c_in(σ)·x, ¼ ln σ): the encoder half of the UNet, global average pool, linear head.

    x is in VE coordinates (x = x0 + σ·z); the input is scaled by EDM's c_in = 1/√(σ²+σd²)
    (Karras et al. 2022, Table 1) so its variance is ≈1 at every σ.  Guidance uses
    ∇_x log softmax(logits)_c, which is the gradient of log p_σ(c | x).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: Sequence[int] = (32, 64, 64),
                 num_res_blocks: int = 1, mid_attention: bool = False, emb_base: int = 32,
                 sigma_data: float = 0.5):
        super().__init__()
        self.sigma_data = float(sigma_data)
        self.num_classes = int(num_classes)
        emb_dim = 4 * channels[0]
        self.embed = NoiseEmbedding(emb_base, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        blocks, ch = [], channels[0]
        for lvl, width in enumerate(channels):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, width, emb_dim))
                ch = width
            if lvl < len(channels) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        if mid_attention:
            blocks.append(SelfAttention(ch))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """x: (B, C, H, W), sigma: (B,) → logits (B, num_classes)."""
        sigma = per_sample(sigma, x)
        _, _, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        emb = self.embed(c_noise)
        h = self.conv_in(c_in.view(-1, 1, 1, 1) * x)
        for m in self.blocks:
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
        return self.head(F.silu(self.norm(h)).mean(dim=(2, 3)))
