"""DiffPIR (Zhu, Zhang, Liang, Cao, Wen, Timofte & Van Gool 2023, "Denoising Diffusion Models for Plug-and-Play
Image Restoration", Algorithm 1) as a registered method.

Each step is one half-quadratic-splitting iteration around the diffusion denoiser:

1. x̂0 = D(x_t) (Tweedie, one network evaluation);
2. data step (eq. 13 in the authors' README form): ``x̂0' = argmin_x ‖y − A x‖² + ρ_t ‖x − x̂0‖²`` with
   ``ρ_t = λ σ_y² / r_t²``, r_t = σ/α the noise-to-signal ratio (the paper's σ̄_t);
3. re-noising (eq. 15): ``ε̂ = (x_t − α_t x̂0')/σ_t``, ``x_s = α_s x̂0' + σ_s (√(1−ζ) ε̂ + √ζ ε)``.

The data step is closed-form in the SVD basis for SVD operators, conjugate gradients for other linear
operators, and gradient steps through A (never through the network) for nonlinear ones.
"""
from __future__ import annotations

import torch

from ..samplers.common import SampleResult, emit, prepare
from ..sde import bcast, randn_like
from ..utils import per_sample
from .guided import Guided
from .methods import Method, register_method

__all__ = ["DiffPIRMethod", "data_prox", "DIFFPIR_SIGMA_FLOOR"]

#: the σ_y the data step assumes when the measurement is noise-free: the official code's
#: ``sigma = max(0.001, noise_level_img)`` in [0, 1] units, i.e. 0.002 in invscore's [-1, 1] units
DIFFPIR_SIGMA_FLOOR = 2e-3


def _prox_svd(op, x0, y, rho):
    """(AᵀA + ρI)⁻¹(Aᵀy + ρ x̂0) coordinate-wise in the SVD basis: z_i ← (s_i (Uᵀy)_i + ρ z_i)/(s_i² + ρ)."""
    z = op.V_T(x0)
    r = op.singular_values.numel()
    s = op.singular_values.to(device=x0.device, dtype=x0.real.dtype)
    u = op.U_T(y)[:, :r]
    rho = rho.reshape(-1, 1)
    head = (s * u + rho * z[:, :r]) / (s**2 + rho)  # s_i = 0 keeps z_i: the null space follows the prior
    return op.V(torch.cat([head, z[:, r:]], dim=1) if r < z.shape[1] else head)


def _prox_cg(op, x0, y, rho, iters):
    """The same normal equations by ``iters`` CG steps on the correction δ = x − x̂0:
    (AᵀA + ρI) δ = Aᵀ(y − A x̂0). No convergence test, so no host sync: a fixed number of iterations."""
    from operators import conjugate_gradient
    rb = bcast(rho, x0)
    delta = conjugate_gradient(lambda w: op._AtA(w) + rb * w, op._A_T(y - op._A(x0)), tol=0.0,
                               maxiter=iters, check_every=iters + 1)
    return x0 + delta


def _prox_grad(op, x0, y, rho, iters, step):
    """Nonlinear A: ``iters`` gradient steps on ½‖y − A(x)‖² + ½ρ‖x − x̂0‖² from x̂0, step ``step/(1 + ρ)``
    (exact-rate for ‖A'‖ ≤ 1, as masks and pooling; cf. the official code's ``γ/(1 + ρ_t)`` for SR)."""
    x, rb = x0.detach(), bcast(rho, x0)
    for _ in range(iters):
        with torch.enable_grad():
            xg = x.requires_grad_(True)
            g = torch.autograd.grad(0.5 * (y - op._A(xg)).pow(2).sum(), xg)[0]
        x = (x - step / (1 + rb) * (g + rb * (x - x0))).detach()
    return x


def data_prox(op, x0, y, rho, cg_iters: int = 20, grad_step: float = 1.0):
    """DiffPIR's data sub-problem (Zhu et al. 2023, eq. 13): ``argmin_x ‖y − A(x)‖² + ρ ‖x − x̂0‖²`` per
    image, ``rho`` of shape (B,). SVD operators: exact; linear: ``cg_iters`` CG steps; others:
    ``cg_iters`` gradient steps of size ``grad_step/(1 + ρ)``."""
    from operators import LinearOperator, SVDOperator
    if isinstance(op, SVDOperator):
        return _prox_svd(op, x0, y, rho)
    if isinstance(op, LinearOperator):
        return _prox_cg(op, x0, y, rho, int(cg_iters))
    return _prox_grad(op, x0, y, rho, int(cg_iters), float(grad_step))


@torch.no_grad()
def sample_diffpir(model, op, x, ts, y, sigma_y, lam, zeta, cg_iters=20, grad_step=1.0, generator=None,
                   callback=None, return_trajectory=False):
    """The DiffPIR loop (Zhu et al. 2023, Algorithm 1) over the time grid ``ts`` for any linear SDE;
    one network evaluation per step. Returns the last data-consistent x̂0' (the paper's x_0)."""
    ts, guard, nfe0 = prepare(model, x, ts, "diffpir")
    sde, traj = model.sde, []
    s2 = max(float(sigma_y), DIFFPIR_SIGMA_FLOOR) ** 2
    n = len(ts) - 1
    for i in range(n):
        t, s = ts[i], ts[i + 1]
        x0 = model.x0(x, t)
        rho = lam * s2 / per_sample(sde.ratio(t), x) ** 2
        x0 = data_prox(op, x0, y, rho, cg_iters, grad_step)
        if i == n - 1:
            x = x0
        else:
            eps = (x - bcast(sde.alpha(t), x) * x0) / bcast(sde.sigma(t), x)
            mix = (1 - zeta) ** 0.5 * eps + zeta**0.5 * randn_like(x, generator)
            x = bcast(sde.alpha(s), x) * x0 + bcast(sde.sigma(s), x) * mix
            x = model.post_step(x, s, generator)
        guard.update(i, x)
        emit(callback, traj, return_trajectory, i, s, x, x0)
    guard.check()
    return SampleResult(x, model.nfe - nfe0, traj)


@register_method
class DiffPIRMethod(Method):
    """DiffPIR (Zhu et al. 2023, Algorithm 1): denoise, proximal data step with ρ_t = λ σ_y²/r_t², re-noise
    with ζ (see :func:`sample_diffpir`). One network evaluation per step, no backward pass.

    ``lam`` is λ in invscore's units: ρ_t = λ σ_y²/r_t² with σ_y and r_t both in data units. The official
    code takes σ_n in [0, 1] units while its images live in [-1, 1] (σ_y = 2σ_n), so its λ is 4 × ours:
    the default 1.75 is the official λ = 7 (deepinv's default; the official deblurring note
    ``zeta=0.28; lambda_=7``). ``zeta = 0.3`` rounds that note's ζ. λ = 1 is the exact proximal step of
    the Gaussian likelihood under a N(x̂0, r_t² I) prior surrogate."""

    name, needs, steps = "diffpir", "any", 100
    description = "DiffPIR: denoise, proximal data step (SVD closed form / CG / gradient), re-noise with zeta"
    defaults = {"lam": 1.75, "zeta": 0.3, "cg_iters": 20, "grad_step": 1.0}

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if not 0 <= float(o["zeta"]) <= 1:
            raise ValueError(f"diffpir needs 0 <= zeta <= 1, got {o['zeta']}; zeta mixes fresh noise into each step")
        if not float(o["lam"]) > 0:
            raise ValueError(f"diffpir needs lam > 0, got {o['lam']}; it scales the data step's rho_t")
        if int(o["cg_iters"]) < 1:
            raise ValueError(f"diffpir needs cg_iters >= 1, got {o['cg_iters']}")

    def run(self, model, op, y, ts, sigma_y, guidance=(), generator=None, **kw):
        shape = (y.shape[0], *op.input_shape)
        x = model.sde.prior_sampling(shape, generator=generator, device=y.device, dtype=y.dtype)
        guided = Guided(model, list(guidance)) if guidance else model
        o = self.options
        return sample_diffpir(guided, op, x, ts, y, sigma_y, float(o["lam"]), float(o["zeta"]),
                              int(o["cg_iters"]), float(o["grad_step"]), generator=generator, **kw)
