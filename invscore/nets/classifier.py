"""Noise-conditional classifiers p_σ(c | x) for classifier guidance (Dhariwal & Nichol 2021, sec. 4), their
loss and a generic fitting loop.

Every classifier sees inputs in VE coordinates (``x = x0 + σ z``, the noise convention
:data:`invscore.checkpoint.NOISE_CONVENTION`) and scales them by EDM's c_in = 1/√(σ² + σ_d²) (Karras et al.
2022, Table 1) so they have unit scale at every noise level: :class:`NoiseConditionalClassifier` for images
(trained by ``python -m invscore.training --task classifier``), :class:`MLPClassifier` for vector data
(trained by :func:`fit_classifier`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ..checkpoint import NOISE_CONVENTION
from ..sde import bcast
from ..utils import per_sample
from .unet import NoiseEmbedding, ResBlock, SelfAttention, _groups, edm_coefficients

__all__ = ["NoiseConditionalClassifier", "MLPClassifier", "classifier_loss", "fit_classifier"]


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


class MLPClassifier(nn.Module):
    """logits = MLP([c_in(σ)·x, ¼ ln σ]) with c_in = 1/sqrt(σ² + σ_d²) (EDM input scaling, Table 1), so the
    input has unit scale at every noise level."""

    noise_convention = NOISE_CONVENTION

    def __init__(self, dim: int, num_classes: int, hidden: int = 128, sigma_data: float = 1.0):
        super().__init__()
        self.sigma_data = float(sigma_data)
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x: (B, dim), sigma: (B,) or a number → logits (B, num_classes)."""
        sigma = per_sample(sigma, x)
        c_in = 1 / torch.sqrt(sigma**2 + self.sigma_data**2)
        return self.net(torch.cat([c_in[:, None] * x.flatten(1), 0.25 * torch.log(sigma)[:, None]], dim=1))


def classifier_loss(clf: nn.Module, x0: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor,
                    noise: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of p_σ(c | x0 + σn) (Dhariwal & Nichol 2021, sec. 4: classifier on noisy inputs)."""
    return F.cross_entropy(clf(x0 + bcast(sigma, x0) * noise, sigma), labels)


def fit_classifier(clf: nn.Module, data, steps: int = 500, batch: int = 256, lr: float = 2e-3,
                   p_mean: float = -1.2, p_std: float = 1.2, sigma_max: float = 80.0, generator=None) -> list[float]:
    """Train ``clf(x0 + σ n, σ)`` by :func:`classifier_loss` with Adam; ``data(n, generator) -> (x0, labels)``
    draws a batch. ``ln σ ~ N(p_mean, p_std²)`` (Karras et al. 2022) mixed half-and-half with log-uniform on
    [1e-3, sigma_max] so the large noise levels where guidance starts are covered. Returns the loss curve."""
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    clf.train()
    losses = []
    for _ in range(steps):
        x0, labels = data(batch, generator)
        # draws happen on the generator's device (a CUDA generator cannot fill CPU tensors)
        kw = dict(generator=generator, dtype=x0.dtype, device=generator.device if generator is not None else x0.device)
        ln_s = p_mean + p_std * torch.randn(batch, **kw)
        ln_u = math.log(1e-3) + (math.log(sigma_max) - math.log(1e-3)) * torch.rand(batch, **kw)
        sigma = torch.where(torch.rand(batch, **kw) < 0.5, ln_s, ln_u).exp().to(x0.device)
        noise = torch.randn(x0.shape, **kw).to(x0.device)
        loss = classifier_loss(clf, x0, labels, sigma, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    clf.eval()
    return losses
