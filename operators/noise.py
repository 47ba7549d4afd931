"""Measurement noise models: y = A(x) + n.

Each model is a stateless ``nn.Module``; ``forward(ay, generator)`` returns a noisy copy of the clean
measurement ``ay`` and never touches the global RNG (see docs/CONVENTIONS.md, "Randomness").
``sigma`` is the Gaussian standard deviation in data-space units that samplers read as ``sigma_y``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NoiseModel", "NoNoise", "GaussianNoise", "PoissonNoise"]


def _randn_like(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # torch.randn_like takes no generator; draw with an explicit one so runs are reproducible.
    return torch.randn(t.shape, generator=generator, dtype=t.dtype, device=t.device)


class NoiseModel(nn.Module):
    """Base class of a measurement noise model p(y | A x)."""

    kind: str = "none"

    @property
    def sigma(self) -> float:
        """Standard deviation of additive Gaussian noise (0 for none / non-Gaussian models)."""
        return 0.0

    def forward(self, ay: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError


class NoNoise(NoiseModel):
    """Noise-free measurement, y = A x."""

    def forward(self, ay, generator=None):
        return ay

    def extra_repr(self) -> str:
        return ""


class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise, y = A x + sigma_y z with z ~ N(0, I).

    The likelihood p(y|x) = N(y; Ax, sigma_y^2 I) used by DPS (Chung et al. 2023, eq. 9) and DDRM
    (Kawar et al. 2022, eq. 2).
    """

    kind = "gaussian"

    def __init__(self, sigma: float):
        super().__init__()
        sigma = float(sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"the Gaussian noise std sigma_y must be a finite number >= 0, got {sigma}")
        self._sigma = sigma

    @property
    def sigma(self) -> float:
        return self._sigma

    def forward(self, ay, generator=None):
        if self._sigma == 0:
            return ay
        return ay + self._sigma * _randn_like(ay, generator)

    def extra_repr(self) -> str:
        return f"sigma={self._sigma}"


class PoissonNoise(NoiseModel):
    """Scaled Poisson (shot) noise, y = gain * Poisson(max(A x, 0) / gain).

    E[y] = A x and Var[y] = gain * A x, as in DPS's Poisson experiments (Chung et al. 2023, eq. 11).
    The rate must be non-negative, so negative A x (possible in [-1, 1] data space) is clipped to 0;
    shift the data to a non-negative range first if that matters. The noise is signal dependent, so
    ``sigma`` reports 0.0 and ``kind == 'poisson'`` tells samplers to use a Poisson likelihood.
    """

    kind = "poisson"

    def __init__(self, gain: float):
        super().__init__()
        gain = float(gain)
        if not math.isfinite(gain) or gain <= 0:
            raise ValueError(f"PoissonNoise: expected gain > 0, got {gain}")
        self.gain = gain

    def forward(self, ay, generator=None):
        rate = ay.clamp_min(0) / self.gain
        return self.gain * torch.poisson(rate, generator=generator)

    def extra_repr(self) -> str:
        return f"gain={self.gain}"


def as_noise(noise: NoiseModel | float | None) -> NoiseModel:
    """Accept a NoiseModel, a float sigma_y (Gaussian) or None (no noise)."""
    if noise is None:
        return NoNoise()
    if isinstance(noise, NoiseModel):
        return noise
    if isinstance(noise, (int, float)):
        return NoNoise() if noise == 0 else GaussianNoise(noise)  # GaussianNoise refuses < 0 and NaN
    raise TypeError(f"expected a NoiseModel, a float sigma_y or None, got {type(noise).__name__}")
