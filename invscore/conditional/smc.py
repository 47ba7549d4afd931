"""Sequential Monte Carlo posterior sampling for linear-Gaussian measurements with an SVD operator —
asymptotically exact as the number of particles grows (in the spirit of MCGdiff, Cardoso et al. 2024,
and the twisted diffusion sampler, Wu et al. 2023).

Each image carries K particles that follow the prior's ancestral kernel p(x_s | x_t) ≈ N(m, c² I)
(the DDPM posterior around the Tweedie estimate), in the operator's spectral coordinates
(u = Vᵀx/α, ȳ = diag(1/s)Uᵀy, ν_i = σ_y/s_i, r = σ/α). Two Gaussian approximations of p(y | x_t) are used:

- the *linear twist* ``Π_i N(ȳ_i; u_i, ν_i² + r²)`` (exact for a flat prior) defines the proposal: being
  linear in x_s, the optimal proposal ∝ p(x_s | x_t)·twist(x_s) and its normaliser Z(x_t) are closed form
  per coordinate, so particles move towards y without any gradient;
- the *Tweedie twist* ``Π_i N(ȳ_i; (Vᵀx̂0)_i, ν_i² + r²σ_d²/(r² + σ_d²))`` defines the intermediate
  targets γ_t ∝ p(x_{t:T}) p̂_t(y | x_t) at which particles are resampled: it knows which mode x_t is
  heading for long before the linear twist does (essential in high dimension).

The incremental weight is ``Z(x_t) p̂_s(y|x_s) / (twist(x_s) p̂_t(y|x_t))`` and the last target is the
likelihood itself, so the weighted particles target p(x | y) at t_min whatever the twists' quality
(Del Moral 2004; Wu et al. 2023, TDS; Cardoso et al. 2024, MCGdiff): errors in mode weights that
DPS-like heuristics make are corrected by resampling. Cost: K network evaluations per step and image,
no backward pass.

With ``population=True`` each run of K identical consecutive rows of y (one measurement, K samples) is one
particle cloud (the use of MCGdiff's particles as the posterior approximation): one network evaluation per
step and sample instead of K per sample, and resampling moves particles between all K samples, which can
correct mode weights that a few particles per sample cannot. The price: the returned samples are a
resampled cloud, not independent (they may repeat, and their mode proportions are correlated).
"""
from __future__ import annotations

import math

import torch

from ..samplers.common import SampleResult, emit, prepare
from ..samplers.pc import posterior_kernel
from .measurement import require_svd

__all__ = ["sample_smc"]


def _log_normal(x, mean, var):
    return -0.5 * (torch.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def _systematic(logw, generator):
    """Systematic resampling (Kitagawa 1996) of each row of ``logw`` (B, K); returns indices (B, K)."""
    B, K = logw.shape
    w = torch.softmax(logw, dim=1)
    cdf = torch.cumsum(w, dim=1)
    cdf[:, -1] = 1.0
    u = (torch.rand(B, 1, generator=generator, device=logw.device, dtype=logw.dtype)
         + torch.arange(K, device=logw.device, dtype=logw.dtype)) / K
    return torch.searchsorted(cdf, u).clamp_max(K - 1)


def _clouds(y):
    """Split a batch into clouds of identical consecutive measurements, all of one size K (host syncs here,
    once, before the loop); returns (one y per cloud, number of clouds, K)."""
    B = y.shape[0]
    same = (y[1:] == y[:-1]).flatten(1).all(1)
    K = B if bool(same.all()) else int(torch.nonzero(~same)[0, 0]) + 1
    if K < 2 or B % K or not bool((y.reshape(B // K, K, -1) == y[::K].reshape(B // K, 1, -1)).all()):
        raise ValueError("population=True makes each run of identical consecutive rows of y one particle cloud, "
                         "so the batch must be groups of K >= 2 copies of the same measurement (e.g. "
                         "y.repeat_interleave(K, 0), or the CLI's samples=K); got a batch that is not. Use "
                         "population=False (K particles per row) otherwise.")
    return y[::K], B // K, K


@torch.no_grad()
def sample_smc(model, op, y, ts, particles: int = 16, sigma_y=None, ess_threshold: float = 0.5, twist_std: float = 1.0,
               population: bool = False, generator=None, callback=None, return_trajectory=False,
               return_particles=False) -> SampleResult:
    """Draw one posterior sample per measurement in ``y`` (B, ...) with ``particles`` particles each.

    ``model``: a :class:`~invscore.priors.Diffusion`; ``op``: a real ``operators.SVDOperator``; ``ts``: a
    decreasing time grid. Resamples a group when its effective sample size falls below
    ``ess_threshold · K`` (decided on the device, no host sync). ``twist_std``: the spread σ_d of the
    data around its Tweedie estimate assumed by the twist, Var[x0 | x_t] ≈ r²σ_d²/(r² + σ_d²) (ΠGDM's
    choice with σ_d = 1; the data's standard deviation is the natural value); it changes efficiency, not the
    target. ``population``: each run of identical consecutive rows of y is one particle cloud (see the module
    docstring; ``particles`` is then unused). With ``return_particles`` the result's ``x`` holds all
    particles ``(B, K, ...)`` and the log-weights are in ``trajectory``'s last entry.
    """
    require_svd(op, "smc")
    op.check_output(y)
    if not float(twist_std) > 0:
        raise ValueError(f"twist_std must be > 0, got {twist_std}")
    sde, B, K = model.sde, y.shape[0], int(particles)
    if population:
        y, B, K = _clouds(y)
    if K < 1:
        raise ValueError(f"particles must be >= 1, got {particles}")
    shape = (B * K, *op.input_shape)
    x = sde.prior_sampling(shape, generator=generator, device=y.device, dtype=y.dtype)
    if torch.is_complex(op.V_T(x[:1])):
        # the same operator in a real basis where it has one (an FFT blur with a symmetric kernel: Hartley)
        if not hasattr(op, "real_svd"):
            raise TypeError(f"SMC needs real spectral coordinates; {type(op).__name__} has complex ones and no "
                            "real_svd(). Use 'mmps', 'pigdm' or 'dps' for it.")
        op = op.real_svd()
    ts, guard, nfe0 = prepare(model, x, ts, "smc")
    ybar = op.y_spectral(y).repeat_interleave(K, dim=0)  # (BK, R)
    R = ybar.shape[1]
    nu = op.spectral_noise_std(sigma_y).to(device=y.device, dtype=y.dtype)
    meas = torch.isfinite(nu)
    nu2 = torch.where(meas, nu**2, torch.zeros_like(nu))

    def log_twist(u, r2):
        return torch.where(meas, _log_normal(ybar, u, nu2 + r2), torch.zeros_like(u)).sum(1)

    def coords(v, t):
        return op.V_T(v / sde.alpha(t))

    twist_var = float(twist_std) ** 2

    logw = torch.zeros(B * K, dtype=x.dtype, device=x.device)
    arange_k = torch.arange(K, device=x.device).expand(B, K)
    offsets = K * torch.arange(B, device=x.device)[:, None]
    traj = []
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        a_s = sde.alpha(s)
        x0 = model.x0(x, t)
        # complete the weight of the target γ_t ∝ p(x_{t:T}) p̂_t(y | x_t) with the Tweedie twist
        r2t = sde.ratio(t) ** 2
        lt = log_twist(op.V_T(x0)[:, :R], twist_var * r2t / (twist_var + r2t))
        logw = logw + lt
        # resample groups whose ESS dropped (decided on the device: no host sync)
        lw = logw.view(B, K)
        ess = torch.exp(2 * torch.logsumexp(lw, 1) - torch.logsumexp(2 * lw, 1))
        flag = (ess < ess_threshold * K)[:, None]
        flat = (torch.where(flag, _systematic(lw, generator), arange_k) + offsets).reshape(-1)
        x, x0, lt = x[flat], x0[flat], lt[flat]
        logw = torch.where(flag, torch.zeros_like(lw), lw).reshape(-1)
        # ancestral kernel N(m, c² I) = q(x_s | x_t, x0_hat) (Ho et al. 2020, eq. 6–7, any linear SDE)
        m, c2 = posterior_kernel(sde, x, x0, t, s)
        zm = coords(m, s)
        vbar, r2s = c2 / a_s**2, sde.ratio(s) ** 2
        tw = nu2 + r2s
        # proposal optimal for the linear twist N(ȳ; u_s, ν² + r_s²); p/q = Z(x_t) / twist(x_s)
        log_z = torch.where(meas, _log_normal(ybar, zm[:, :R], vbar + tw), torch.zeros_like(ybar)).sum(1)
        e = op.V_T(torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype))
        z = zm + torch.sqrt(vbar) * e
        var_q = 1 / (1 / vbar.clamp_min(1e-30) + 1 / tw)
        mean_q = var_q * (zm[:, :R] / vbar.clamp_min(1e-30) + ybar / tw)
        head = torch.where(meas, mean_q + torch.sqrt(var_q) * e[:, :R], z[:, :R])
        z = torch.cat([head, z[:, R:]], dim=1) if R < z.shape[1] else head
        x = a_s * op.V(z)
        logw = logw + log_z - lt - log_twist(head, r2s)
        guard.update(i, x)
        emit(callback, traj, return_trajectory, i, s, x)
    # the last target: p(x_{t_min}) times the likelihood itself (r_min ≈ 0, no further network call)
    logw = logw + log_twist(coords(x, ts[-1])[:, :R], sde.ratio(ts[-1]) ** 2)
    guard.check()
    nfe = model.nfe - nfe0
    lw = logw.view(B, K)
    if return_particles:
        traj.append(lw)
        return SampleResult(x.view(B, K, *op.input_shape), nfe, traj)
    if population:
        return SampleResult(x[(_systematic(lw, generator) + offsets).reshape(-1)], nfe, traj)
    pick = torch.multinomial(torch.softmax(lw, 1), 1, generator=generator)[:, 0]
    return SampleResult(x.view(B, K, *op.input_shape)[torch.arange(B, device=x.device), pick], nfe, traj)
