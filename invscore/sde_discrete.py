"""DDPM's discrete noise schedule as an SDE (Ho et al. 2020; Song et al. 2021, App. B): a table of
ᾱ_0 … ᾱ_{N−1} made continuous, so a model trained on N discrete steps runs under every sampler."""
from __future__ import annotations

import math

import torch

from .sde import SDE

__all__ = ["DiscreteVPSDE"]


def _float_t(t) -> torch.Tensor:
    """``t`` as a floating-point tensor (integers and Python numbers get the default dtype)."""
    t = torch.as_tensor(t)
    return t if torch.is_floating_point(t) else t.to(torch.get_default_dtype())


class DiscreteVPSDE(SDE):
    """The VP SDE of a discrete DDPM schedule: a table ``ᾱ_0 > … > ᾱ_{N−1}`` (``alphas_cumprod``), whose Markov
    chain ``x_i = sqrt(1 − β_i) x_{i−1} + sqrt(β_i) z``, ``β_i = 1 − ᾱ_i/ᾱ_{i−1}`` (Ho et al. 2020, eq. 2 and 4)
    is Song et al.'s discretisation of VP (2021, Appendix B), so a model trained on the table is run by every
    sampler at the timesteps it was trained on.

    Continuous time: step ``i`` sits at ``t_i = (i + 1)/N`` (``T = 1``, ``t_min = t_0 = 1/N``; the data,
    ``ᾱ = 1``, at ``t = 0``), and ``log ᾱ(t)`` is piecewise linear between the knots ``(k/N, log ᾱ_{k−1})``,
    ``k = 0 … N`` (with ``ᾱ_{−1} = 1``). Hence ``alpha(t_i)² = ᾱ_i`` exactly, ``sigma² = 1 − alpha²`` (VP),
    ``f = d log alpha/dt`` is constant on each step (``½ N log(1 − β_i)`` on ``(t_{i−1}, t_i)``; the right
    segment at a knot), ``g² = −2 f`` (``= −N log(1 − β_i) ≈ N β_i``), :meth:`ratio_to_t` inverts exactly by
    the same interpolation, and :meth:`discretize` from ``t_{i−1}`` to ``t_i`` is DDPM's ``β_i``. Beyond ``T``
    the last segment is extended (for clamping callers); below 0, ``alpha = 1``. The network's conditioning
    is :meth:`timestep` ``i(t) = N t − 1`` (fractional between trained steps); see NetworkPrior's
    ``time_input='step'`` (interpolated) and ``'step_nearest'`` (snapped to a trained step).
    """

    T = 1.0

    def __init__(self, alphas_cumprod):
        ac = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).flatten()
        if ac.numel() < 2:
            raise ValueError(f"DiscreteVPSDE needs at least 2 steps in alphas_cumprod, got {ac.numel()}")
        if not bool(((ac > 0) & (ac < 1)).all()) or not bool((ac[1:] < ac[:-1]).all()):
            raise ValueError("DiscreteVPSDE needs alphas_cumprod strictly decreasing in (0, 1); got values in "
                             f"[{float(ac.min()):.3g}, {float(ac.max()):.3g}]")
        self.alphas_cumprod = ac
        self._N = int(ac.numel())
        self.T, self.t_min = 1.0, 1.0 / self._N
        # knots k/N, k = 0..N, of log ᾱ: 0 (the data) then log ᾱ_0 … log ᾱ_{N−1}
        self._logac = torch.cat([ac.new_zeros(1), torch.log(ac)])
        self._cache: dict = {}

    # -- construction from a schedule ----------------------------------------------------------
    @classmethod
    def from_betas(cls, betas) -> "DiscreteVPSDE":
        """The SDE of per-step noise rates ``β_i`` in (0, 1): ``ᾱ_i = Π_{j≤i} (1 − β_j)`` (Ho et al. 2020)."""
        b = torch.as_tensor(betas).detach().to("cpu", torch.float64).flatten()
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError(f"betas must lie in (0, 1); got values in [{float(b.min()):.3g}, {float(b.max()):.3g}]")
        return cls(torch.exp(torch.cumsum(torch.log1p(-b), 0)))

    @classmethod
    def schedule(cls, kind: str = "linear", num_steps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> "DiscreteVPSDE":
        """A standard schedule of ``num_steps`` steps:

        - ``'linear'``: ``β_i`` linear from ``beta_start`` to ``beta_end`` (DDPM, Ho et al. 2020; with N = 1000
          it is VPSDE(0.1, 20) discretised, Song et al. 2021, eq. 32);
        - ``'scaled_linear'``: ``sqrt(β_i)`` linear from ``sqrt(beta_start)`` to ``sqrt(beta_end)`` (Stable
          Diffusion; pass its beta_start=0.00085, beta_end=0.012);
        - ``'cosine'``: ``ᾱ(u) = cos²((u + s)/(1 + s)·π/2)/cos²(s/(1+s)·π/2)``, ``s = 0.008``,
          ``β_i = min(1 − ᾱ((i+1)/N)/ᾱ(i/N), 0.999)`` (Nichol & Dhariwal 2021, eq. 17; beta_start/end unused).
        """
        n = int(num_steps)
        if n < 2:
            raise ValueError(f"num_steps must be >= 2, got {num_steps}")
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
        elif kind == "cosine":
            s = 0.008
            u = torch.arange(n + 1, dtype=torch.float64) / n
            fbar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - fbar[1:] / fbar[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"unknown schedule {kind!r}; expected 'linear', 'scaled_linear' or 'cosine'")
        return cls.from_betas(betas)

    # -- the table --------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """N, the number of trained steps."""
        return self._N

    @property
    def betas(self) -> torch.Tensor:
        """DDPM's ``β_i = 1 − ᾱ_i/ᾱ_{i−1}`` (float64, ``ᾱ_{−1} = 1``)."""
        return -torch.expm1(self._logac[1:] - self._logac[:-1])

    def timestep(self, t) -> torch.Tensor:
        """The fractional step index ``i(t) = N t − 1`` in ``[0, N − 1]`` a network is conditioned on (clamped)."""
        t = _float_t(t)
        return (t * self._N - 1).clamp(0, self._N - 1)

    def step_to_t(self, i) -> torch.Tensor:
        """The time ``t_i = (i + 1)/N`` of (possibly fractional) step ``i``: the inverse of :meth:`timestep`."""
        return (_float_t(i) + 1) / self._N

    def _table(self, t: torch.Tensor) -> torch.Tensor:
        key = (t.device, t.dtype)
        tab = self._cache.get(key)
        if tab is None:
            tab = self._cache[key] = self._logac.to(device=t.device, dtype=t.dtype)
        return tab

    def _segment(self, t: torch.Tensor):
        """Knot index k in [0, N−1] and the slope of log ᾱ (per unit t) on [k/N, (k+1)/N]."""
        L = self._table(t)
        k = torch.floor(t * self._N).clamp(0, self._N - 1).long()
        return k, L, (L[k + 1] - L[k]) * self._N

    def _log_ac(self, t) -> torch.Tensor:
        """log ᾱ(t), piecewise linear in t (extended linearly beyond T; 0 for t <= 0)."""
        t = _float_t(t).clamp_min(0)
        k, L, slope = self._segment(t)
        return L[k] + (t * self._N - k) * (L[k + 1] - L[k])

    # -- the SDE ------------------------------------------------------------------------------------
    def log_alpha(self, t):
        return 0.5 * self._log_ac(t)

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self._log_ac(t)))

    def ratio(self, t):
        # sigma/alpha = sqrt(1/ᾱ − 1), without the cancellation of 1 − ᾱ for small t
        return torch.sqrt(torch.expm1(-self._log_ac(t)))

    def f(self, t):
        t = _float_t(t)
        _, _, slope = self._segment(t)
        return torch.where(t < 0, torch.zeros_like(slope), 0.5 * slope)

    def g2(self, t):
        return -2 * self.f(t)

    def transition(self, t, s):
        # VP: sigma_t² − a² sigma_s² = 1 − alpha_t²/alpha_s², computed without cancellation
        d = self._log_ac(t) - self._log_ac(s)
        return torch.exp(0.5 * d), torch.sqrt((-torch.expm1(d)).clamp_min(0))

    def ratio_to_t(self, r):
        r = _float_t(r)
        L = self._table(r)
        target = torch.log1p(r**2)  # −log ᾱ, increasing along the knots
        neg = -L
        k = (torch.searchsorted(neg, target.reshape(-1).contiguous(), right=True) - 1).clamp(0, self._N - 1)
        k = k.reshape(target.shape)
        w = (target - neg[k]) / (neg[k + 1] - neg[k])
        return ((k + w) / self._N).clamp_min(0)

    def __repr__(self) -> str:
        ac = self.alphas_cumprod
        return f"DiscreteVPSDE(num_steps={self._N}, alphas_cumprod=[{float(ac[0]):.6g} … {float(ac[-1]):.6g}])"
