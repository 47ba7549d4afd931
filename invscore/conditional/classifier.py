"""A small noise-conditional classifier for vector data and a generic training loop.

The classifier sees inputs in VE coordinates (``x = x0 + σ z``, the noise convention of every invscore
classifier, recorded as ``'edm-ve-sigma'``) and is trained by cross-entropy on noisy inputs with σ drawn
as for the score model (log-normal, Karras et al. 2022) — the noisy classifier of Dhariwal & Nichol
2021, Sec. 4. Image classifiers live in :mod:`invscore.nets.classifier`; both train with
:func:`fit_classifier`.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from ..sde import bcast
from ..utils import per_sample

__all__ = ["MLPClassifier", "fit_classifier", "NOISE_CONVENTION"]

NOISE_CONVENTION = "edm-ve-sigma"


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
        sigma = per_sample(sigma, x)
        c_in = 1 / torch.sqrt(sigma**2 + self.sigma_data**2)
        return self.net(torch.cat([c_in[:, None] * x.flatten(1), 0.25 * torch.log(sigma)[:, None]], dim=1))


def fit_classifier(clf: nn.Module, data, steps: int = 500, batch: int = 256, lr: float = 2e-3,
                   p_mean: float = -1.2, p_std: float = 1.2, sigma_max: float = 80.0, generator=None) -> list[float]:
    """Train ``clf(x0 + σ n, σ)`` by cross-entropy; ``data(n, generator) -> (x0, labels)`` draws a batch.
    ``ln σ ~ N(p_mean, p_std²)`` mixed half-and-half with log-uniform on [1e-3, sigma_max] so the large
    noise levels where guidance starts are covered. Returns the loss curve."""
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
        loss = F.cross_entropy(clf(x0 + bcast(sigma, x0) * noise, sigma), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    clf.eval()
    return losses
