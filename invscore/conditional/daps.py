"""DAPS (Zhang, Chu, Berner, Sun, Yue & Anandkumar 2025, "Improving Diffusion Inverse Problem Solving with
Decoupled Noise Annealing", Algorithm 1) as a registered method.

For noise levels σ_0 > … > σ_{N−1} (VE coordinates, σ = r = σ(t)/α(t) of the solve grid) and σ_N = 0:

1. x̂0 = a few-step probability-flow ODE solve from (x_t, σ_i) to σ = 0 (Euler in σ, ``ode_steps`` network
   evaluations, EDM's ρ = 7 spacing down to 0.01, the authors' ``diffusion_scheduler_config``);
2. Langevin MCMC on p(x0 | x_t, y) ∝ N(x0; x̂0, σ_i² I) · exp(−‖y − A(x0)‖²/(2τ²)) (eq. 9–10, the
   "gaussian" prior solver of the official code), gradients through A only, never the network;
3. x_{i+1} = x0 + σ_{i+1} ε: the state is decoupled from the previous one, only x0 carries over.
"""
from __future__ import annotations

import math

import torch

from ..samplers.common import SampleResult, emit, prepare
from ..sde import bcast, randn_like
from .guided import Guided
from .methods import Cost, Method, register_method

__all__ = ["DAPSMethod", "langevin_posterior", "likelihood_curvature", "DAPS_TAU_FLOOR"]

#: the official inpainting config's τ = 0.01 with its loss ‖A x − y‖²/τ² is a Gaussian of std 0.01/√2;
#: used as τ when σ_y = 0 (a noise-free y would make the data term infinitely stiff)
DAPS_TAU_FLOOR = 0.01 / math.sqrt(2)


def _data_grad(op, x, y):
    """Aᵀ(y − A x) for linear A; ∇_x −½‖y − A(x)‖² by autograd through A otherwise."""
    from operators import LinearOperator
    if isinstance(op, LinearOperator):
        return op._A_T(y - op._A(x))
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        return -torch.autograd.grad(0.5 * (y - op._A(xg)).pow(2).sum(), xg)[0]


def likelihood_curvature(op, like: torch.Tensor, iters: int = 20, generator=None) -> torch.Tensor:
    """‖A‖² (largest eigenvalue of AᵀA), a 0-d tensor on ``like``'s device: max s² for SVD operators, power
    iteration for other linear ones (no host sync), 1 for nonlinear operators (masks, pooling, blurs)."""
    from operators import LinearOperator, SVDOperator
    if isinstance(op, SVDOperator):
        return op.singular_values.to(device=like.device, dtype=like.real.dtype).max().square()
    if not isinstance(op, LinearOperator):
        return torch.ones((), device=like.device, dtype=like.dtype)
    v = randn_like(like[:1], generator)
    for _ in range(iters):
        w = op._AtA(v)
        v = w / w.norm().clamp_min(1e-30)
    return (v * op._AtA(v)).sum() / v.pow(2).sum()


def langevin_posterior(op, y, x0hat, r, tau, steps: int, step_size, generator=None):
    """Unadjusted Langevin on log p(x0) = −‖x0 − x̂0‖²/(2r²) − ‖y − A(x0)‖²/(2τ²) (DAPS, eq. 10):
    ``x ← x + η ∇ log p(x) + √(2η) ε`` from x̂0, ``r``, ``step_size`` 0-d or (B,) tensors."""
    x = x0hat
    rb, eta = bcast(r, x), bcast(step_size, x)
    for _ in range(int(steps)):
        grad = (x0hat - x) / rb**2 + _data_grad(op, x, y) / tau**2
        x = x + eta * grad + torch.sqrt(2 * eta) * randn_like(x, generator)
    return x


def _ode_x0(model, x_bar, r, ode_steps: int, sigma_min: float = 0.01, rho: float = 7.0):
    """Euler on the probability-flow ODE dx̄/dσ = (x̄ − D(x̄, σ))/σ (Karras et al. 2022, eq. 3 and 5) from σ = r
    to 0 in ``ode_steps`` evaluations; the last step, to σ = 0, lands on D. Network calls go through
    ``model.x0`` at the time of each σ, so they are counted and guidance terms apply."""
    sde = model.sde
    lo = torch.minimum(r, r.new_tensor(sigma_min))
    k = torch.arange(ode_steps, device=r.device, dtype=r.dtype) / max(ode_steps - 1, 1)
    sig = (r ** (1 / rho) + k * (lo ** (1 / rho) - r ** (1 / rho))) ** rho
    ts = sde.time_to_ratio_grid(sig)
    sig = sde.ratio(ts)  # the σ the network actually sees, after clamping into [t_min, T]
    for j in range(ode_steps):
        t = ts[j]
        d = model.x0(bcast(sde.alpha(t), x_bar) * x_bar, t)
        if j == ode_steps - 1:
            return d
        x_bar = d + (x_bar - d) * (sig[j + 1] / sig[j])  # Euler step: x̄ + (σ' − σ)(x̄ − D)/σ
    return x_bar


@torch.no_grad()
def sample_daps(model, op, x, ts, y, tau, ode_steps, langevin_steps, lr, lr_min_ratio, generator=None,
                callback=None, return_trajectory=False):
    """The DAPS loop (Zhang et al. 2025, Algorithm 1) over the levels σ_i = ratio(ts[i]), i < N. Step size
    η_i = lr · m_i / (‖A‖²/τ² + 1/σ_i²), m_i falling linearly from 1 to ``lr_min_ratio`` (the official
    ``get_lr``): relative to the target's stiffest direction, so lr = 1 is the authors' 5e-5 for a mask
    at τ = 0.01 and stays stable for any σ_y and scale."""
    ts, guard, nfe0 = prepare(model, x, ts, "daps")
    sde, traj, n = model.sde, [], len(ts) - 1
    sig = sde.ratio(ts)
    curv = likelihood_curvature(op, x, generator=generator) / tau**2
    x_bar = x / bcast(sde.alpha(ts[0]), x)  # VE view: x̄ = x0 + σ z
    for i in range(n):
        x0hat = _ode_x0(model, x_bar, sig[i], int(ode_steps))
        m = 1 + (i / n) * (lr_min_ratio - 1)
        eta = lr * m / (curv + 1 / sig[i] ** 2)
        x0 = langevin_posterior(op, y, x0hat, sig[i], tau, langevin_steps, eta, generator)
        x_bar = x0 if i == n - 1 else x0 + sig[i + 1] * randn_like(x0, generator)
        guard.update(i, x_bar)
        emit(callback, traj, return_trajectory, i, ts[i + 1], x_bar, x0hat)
    guard.check()
    return SampleResult(x_bar, model.nfe - nfe0, traj)


@register_method
class DAPSMethod(Method):
    """DAPS (Zhang et al. 2025, Algorithm 1; see :func:`sample_daps`): per annealing level an ``ode_steps``
    probability-flow solve for x̂0, then ``langevin_steps`` Langevin steps on N(x0; x̂0, σ_i²) · p(y | x0),
    then re-noising to the next level. Cost: ``ode_steps`` network evaluations per level, no backward pass.

    Defaults: a cheaper variant of the paper's DAPS-1K (200 levels × 5 ODE steps, 100 Langevin steps,
    lr 5e-5 decaying to 1 %, τ = 0.01): 50 levels × 2 ODE steps = 100 NFE on the EDM grid (the
    authors' 'poly-7' annealing), the paper's Langevin settings. ``tau`` defaults to the operator's σ_y
    (the exact likelihood; floored at :data:`DAPS_TAU_FLOOR`); ``tau=0.00707`` is the authors' choice."""

    name, needs, steps, grid = "daps", "any", 50, "edm"
    description = "DAPS: decoupled annealing, ODE x0 + Langevin on p(x0|x_t,y) per level (any differentiable operator)"
    defaults = {"ode_steps": 2, "langevin_steps": 100, "lr": 1.0, "lr_min_ratio": 0.01, "tau": None}

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        for key in ("ode_steps", "langevin_steps"):
            if int(o[key]) < 1:
                raise ValueError(f"daps needs {key} >= 1, got {o[key]}")
        if not 0 < float(o["lr"]) <= 2 or not 0 < float(o["lr_min_ratio"]) <= 1:
            raise ValueError(f"daps needs 0 < lr <= 2 (a fraction of the stable Langevin step) and "
                             f"0 < lr_min_ratio <= 1; got lr={o['lr']}, lr_min_ratio={o['lr_min_ratio']}")
        if o["tau"] is not None and not float(o["tau"]) > 0:
            raise ValueError(f"daps needs tau > 0 or None (the operator's sigma_y), got {o['tau']}")

    def cost(self) -> Cost:
        return Cost(int(self.options["ode_steps"]))

    def run(self, model, op, y, ts, sigma_y, guidance=(), generator=None, **kw):
        shape = (y.shape[0], *op.input_shape)
        x = model.sde.prior_sampling(shape, generator=generator, device=y.device, dtype=y.dtype)
        guided = Guided(model, list(guidance)) if guidance else model
        o = self.options
        tau = float(o["tau"]) if o["tau"] is not None else max(float(sigma_y), DAPS_TAU_FLOOR)
        return sample_daps(guided, op, x, ts, y, tau, int(o["ode_steps"]), int(o["langevin_steps"]),
                           float(o["lr"]), float(o["lr_min_ratio"]), generator=generator, **kw)
