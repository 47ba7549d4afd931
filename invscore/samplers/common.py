"""Pieces every sampler shares: time grids, the result record, input checks and the NaN guard."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..sde import SDE

#: the time grids :func:`time_grid` builds
GRIDS = ("uniform", "edm", "linear")

__all__ = ["SampleResult", "GRIDS", "time_grid", "check_noise_scale", "FiniteGuard", "check_start", "prepare", "emit", "finish"]


@dataclass
class SampleResult:
    """Samples ``x``, the number of network evaluations ``nfe`` and, on request, the trajectory."""

    x: torch.Tensor
    nfe: int
    trajectory: list = field(default_factory=list)


def time_grid(sde: SDE, steps: int, kind: str = "uniform", rho: float = 7.0, device=None,
              dtype=torch.float64, r_max: float | None = None) -> torch.Tensor:
    """Decreasing times ``T = t_0 > … > t_steps = t_min``; with ``r_max``, ``t_0`` is instead the time whose
    noise-to-signal ratio σ/α is ``r_max`` (clamped to T), for samplers that start from a measurement.

    ``'uniform'`` is uniform in t (Song et al. 2021); ``'edm'`` spaces the noise-to-signal ratio
    ``r = sigma/alpha`` as ``r_i = (r_max^{1/ρ} + i/N (r_min^{1/ρ} − r_max^{1/ρ}))^ρ`` (Karras et al. 2022,
    eq. 5) and maps back to t, which spends steps where the data's structure is resolved; ``'linear'`` is
    uniform in r, ``r_i = r_max (1 − i/N)`` with ``t_N = t_min`` (deepinv's DDRM and DiffPIR schedules,
    σ = linspace(σ_max, 0)): the last network call is at r_max/N, so a short chain returns the Tweedie
    estimate at that level, which averages over the detail below it.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t0 = float(sde.T)
    if r_max is not None:
        lo, hi = (float(sde.ratio(torch.tensor(t, dtype=torch.float64))) for t in (sde.t_min, sde.T))
        if not r_max > lo:  # also refuses NaN
            raise ValueError(f"the grid's start ratio sigma/alpha = {r_max:g} is not above the SDE's smallest "
                             f"({lo:.3g} at t_min): raise the method's r_max")
        t0 = float(sde.time_to_ratio_grid(torch.tensor(min(float(r_max), hi), dtype=torch.float64)))
    if kind == "uniform":
        ts = torch.linspace(t0, sde.t_min, int(steps) + 1, dtype=torch.float64)
    elif kind == "edm":
        r_max = sde.ratio(torch.tensor(t0, dtype=torch.float64))
        r_min = sde.ratio(torch.tensor(sde.t_min, dtype=torch.float64))
        i = torch.linspace(0, 1, int(steps) + 1, dtype=torch.float64)
        r = (r_max ** (1 / rho) + i * (r_min ** (1 / rho) - r_max ** (1 / rho))) ** rho
        ts = sde.time_to_ratio_grid(r)
        ts[0], ts[-1] = t0, sde.t_min
    elif kind == "linear":
        r_max = sde.ratio(torch.tensor(t0, dtype=torch.float64))
        r = r_max * torch.linspace(1, 0, int(steps) + 1, dtype=torch.float64)[:-1]
        ts = torch.cat([sde.time_to_ratio_grid(r), torch.tensor([sde.t_min], dtype=torch.float64)])
        ts[0] = t0
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError(f"a linear grid of {steps} steps from sigma/alpha = {float(r_max):.3g} has steps below "
                             f"the SDE's smallest ratio; use fewer steps or another grid")
    else:
        raise ValueError(f"unknown time grid {kind!r}; expected one of {GRIDS}")
    return ts.to(device=device, dtype=dtype)


def check_noise_scale(noise_scale) -> float:
    """``noise_scale`` as a float in [0, 1], or a one-line ValueError (above 1 the chain over-disperses, and no
    method here is measured there)."""
    if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)) or not 0 <= noise_scale <= 1:
        raise ValueError(f"noise_scale multiplies the injected noise: a number in [0, 1] (1: sample the model; "
                         f"1/√2 ≈ 0.707: deepinv's DDRM), got {noise_scale!r}")
    return float(noise_scale)


def check_start(x: torch.Tensor, ts: torch.Tensor, sde: SDE) -> torch.Tensor:
    """Validate a start state and a time grid once, before the loop; returns ``ts`` on x's device/dtype."""
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise TypeError(f"the start state must be a floating-point tensor, got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}")
    if x.ndim < 2:
        raise ValueError(f"the start state must be batched, shape (B, ...); got {tuple(x.shape)}")
    ts = torch.as_tensor(ts)
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"the time grid must be 1-D with at least 2 times (steps >= 1); got shape {tuple(ts.shape)}")
    sde.check_t(ts)
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("the time grid must be strictly decreasing (from T to t_min)")
    return ts.to(device=x.device, dtype=x.dtype)


class FiniteGuard:
    """Tracks, on the device, the first step at which the state stopped being finite; checks on the host
    only every ``every`` steps and at the end, so a sampling loop does not sync at each step."""

    def __init__(self, x: torch.Tensor, ts: torch.Tensor, name: str, every: int = 25):
        self.first_bad = torch.full((), -1, dtype=torch.long, device=x.device)
        self.ts, self.name, self.every = ts, name, every

    def update(self, i: int, x: torch.Tensor) -> None:
        """Record step ``i`` as the first bad one if ``x`` has a NaN/inf (on the device)."""
        bad = ~torch.isfinite(x).all()
        self.first_bad = torch.where((self.first_bad < 0) & bad, torch.full_like(self.first_bad, i), self.first_bad)
        if (i + 1) % self.every == 0:
            self.check()

    def check(self) -> None:
        """Raise FloatingPointError naming the first non-finite step, if any (one host sync)."""
        b = int(self.first_bad)
        if b >= 0:
            raise FloatingPointError(
                f"sampler {self.name!r} produced NaN or inf at step {b} (t = {float(self.ts[b]):.4g} -> "
                f"{float(self.ts[b + 1]):.4g}); sampling stopped. The prior or a guidance term returned "
                "non-finite values there: check the prior on noisy inputs at that noise level, lower the "
                "guidance scale, or use more steps / float64."
            )


def prepare(model, x, ts, name):
    """Common loop set-up: validated grid, NaN guard and the NFE count at start."""
    ts = check_start(x, ts, model.sde)
    return ts, FiniteGuard(x, ts, name), model.nfe


def emit(callback, trajectory, keep, i, t, x, x0=None):
    """Call the per-step callback ``{'i', 't', 'x', 'denoised'}`` (k-diffusion's convention) and record."""
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "denoised": x0})
    if keep:
        trajectory.append(x.detach().clone())


def finish(model, x, t, generator, denoise: bool = False):
    """The state handed back at the grid's last time ``t``: with ``denoise`` first the Tweedie estimate
    x̂0 = E[x0 | x_t] (Efron 2011; one more NFE) — for σ(t) = t the final Euler step to σ = 0 of Karras et
    al. 2022, Algorithm 1 — then the model's final post-step (projections restore the measured part)."""
    if denoise:
        x = model.x0(x, t)
    return model.post_step(x, t, generator, final=True)
