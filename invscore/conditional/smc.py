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


class _LinearGaussian:
    """p(y | x̄) = Π_i N(ȳ_i; (Vᵀx̄)_i, ν_i² + v) over the measured spectral coordinates, for each particle:
    ȳ = diag(1/s) Uᵀy repeated K times, ν_i = σ_y/s_i (unmeasured coordinates, ν = ∞, count zero)."""

    def __init__(self, op, y, sigma_y, K: int):
        self.op = op
        self.ybar = op.y_spectral(y).repeat_interleave(K, dim=0)  # (BK, R)
        self.R = self.ybar.shape[1]
        nu = op.spectral_noise_std(sigma_y).to(device=y.device, dtype=y.dtype)
        self.meas = torch.isfinite(nu)
        self.nu2 = torch.where(self.meas, nu**2, torch.zeros_like(nu))

    def log_normal(self, u, var):
        """Σ_i log N(ȳ_i; u_i, var_i) over the measured coordinates i; ``u`` (BK, R)."""
        return torch.where(self.meas, _log_normal(self.ybar, u, var), torch.zeros_like(u)).sum(1)

    def log_twist(self, u, r2):
        """The linear twist Σ_i log N(ȳ_i; u_i, ν_i² + r²)."""
        return self.log_normal(u, self.nu2 + r2)

    def coords(self, v, alpha):
        """Spectral coordinates u = Vᵀ v/α of states ``v``."""
        return self.op.V_T(v / alpha)


def _check(op, y, particles, twist_std, population):
    """Validate the inputs once; returns the operator in a real spectral basis, one y per cloud, B and K."""
    from operators import real_svd
    require_svd(op, "smc")
    op.check_output(y)
    if not float(twist_std) > 0:
        raise ValueError(f"twist_std must be > 0, got {twist_std}")
    B, K = y.shape[0], int(particles)
    if population:
        y, B, K = _clouds(y)
    if K < 1:
        raise ValueError(f"particles must be >= 1, got {particles}")
    # the same operator in a real basis where it has one (an FFT blur with a symmetric kernel: Hartley)
    return real_svd(op, "SMC"), y, B, K


def _tweedie_twist_weights(lik, sde, x0, t, twist_var):
    """log p̂_t(y | x_t) = Σ_i log N(ȳ_i; (Vᵀx̂0)_i, ν_i² + r_t²σ_d²/(r_t² + σ_d²)): the Tweedie twist that
    completes the weight of the target γ_t ∝ p(x_{t:T}) p̂_t(y | x_t) (Var[x0 | x_t] as in ΠGDM)."""
    r2t = sde.ratio(t) ** 2
    return lik.log_twist(lik.op.V_T(x0)[:, :lik.R], twist_var * r2t / (twist_var + r2t))


def _resample(lw, ess_threshold, generator, keep, offsets):
    """Systematic resampling of the groups (rows of ``lw``, (B, K)) whose effective sample size
    ESS = (Σw)²/Σw² falls below ``ess_threshold · K`` — decided on the device, no host sync; the
    uniforms are drawn every step. Returns flat particle indices (BK,) and the log-weights after it."""
    ess = torch.exp(2 * torch.logsumexp(lw, 1) - torch.logsumexp(2 * lw, 1))
    flag = (ess < ess_threshold * lw.shape[1])[:, None]
    flat = (torch.where(flag, _systematic(lw, generator), keep) + offsets).reshape(-1)
    return flat, torch.where(flag, torch.zeros_like(lw), lw).reshape(-1)


def _proposal(lik, sde, x, x0, t, s, generator):
    """Move the particles t → s with the proposal optimal for the linear twist.

    The prior's ancestral kernel q(x_s | x_t, x̂0) = N(m, c² I) (Ho et al. 2020, eq. 6–7, any linear SDE) is,
    per spectral coordinate of u_s = Vᵀx_s/α_s, N(u_m, v̄) with v̄ = c²/α_s²; times the twist N(ȳ; u_s, τ),
    τ = ν² + r_s², it is N(mean_q, var_q) with var_q = (1/v̄ + 1/τ)⁻¹, mean_q = var_q (u_m/v̄ + ȳ/τ), and
    normaliser Z(x_t) = N(ȳ; u_m, v̄ + τ). Returns x_s, log Z(x_t) and the linear twist at x_s, the
    parts of the incremental weight p/q = Z(x_t)/twist(x_s)."""
    a_s, R = sde.alpha(s), lik.R
    m, c2 = posterior_kernel(sde, x, x0, t, s)
    zm = lik.coords(m, a_s)
    vbar, r2s = c2 / a_s**2, sde.ratio(s) ** 2
    tw = lik.nu2 + r2s
    log_z = lik.log_normal(zm[:, :R], vbar + tw)
    e = lik.op.V_T(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    z = zm + torch.sqrt(vbar) * e
    var_q = 1 / (1 / vbar.clamp_min(1e-30) + 1 / tw)
    mean_q = var_q * (zm[:, :R] / vbar.clamp_min(1e-30) + lik.ybar / tw)
    head = torch.where(lik.meas, mean_q + torch.sqrt(var_q) * e[:, :R], z[:, :R])
    z = torch.cat([head, z[:, R:]], dim=1) if R < z.shape[1] else head
    return a_s * lik.op.V(z), log_z, lik.log_twist(head, r2s)


def _final_weights(lik, sde, x, logw, t_min):
    """The last target: p(x_{t_min}) times the likelihood itself (r_min ≈ 0, no further network call)."""
    return logw + lik.log_twist(lik.coords(x, sde.alpha(t_min))[:, :lik.R], sde.ratio(t_min) ** 2)


def _select(x, lw, offsets, population, return_particles, generator):
    """The returned samples: all particles, one resampled cloud (population), or one draw per group
    from its weights softmax(lw) (multinomial). ``x`` (BK, ...), ``lw`` (B, K)."""
    B, K = lw.shape
    if return_particles:
        return x.view(B, K, *x.shape[1:])
    if population:
        return x[(_systematic(lw, generator) + offsets).reshape(-1)]
    pick = torch.multinomial(torch.softmax(lw, 1), 1, generator=generator)[:, 0]
    return x.view(B, K, *x.shape[1:])[torch.arange(B, device=x.device), pick]


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
    op, y, B, K = _check(op, y, particles, twist_std, population)
    sde = model.sde
    x = sde.prior_sampling((B * K, *op.input_shape), generator=generator, device=y.device, dtype=y.dtype)
    ts, guard, nfe0 = prepare(model, x, ts, "smc")
    lik, twist_var = _LinearGaussian(op, y, sigma_y, K), float(twist_std) ** 2
    logw = torch.zeros(B * K, dtype=x.dtype, device=x.device)
    keep = torch.arange(K, device=x.device).expand(B, K)
    offsets = K * torch.arange(B, device=x.device)[:, None]
    traj = []
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x0 = model.x0(x, t)
        lt = _tweedie_twist_weights(lik, sde, x0, t, twist_var)
        flat, logw = _resample((logw + lt).view(B, K), ess_threshold, generator, keep, offsets)
        x, x0, lt = x[flat], x0[flat], lt[flat]
        x, log_z, lt_s = _proposal(lik, sde, x, x0, t, s, generator)
        logw = logw + log_z - lt - lt_s
        guard.update(i, x)
        emit(callback, traj, return_trajectory, i, s, x)
    lw = _final_weights(lik, sde, x, logw, ts[-1]).view(B, K)
    guard.check()
    if return_particles:
        traj.append(lw)
    return SampleResult(_select(x, lw, offsets, population, return_particles, generator), model.nfe - nfe0, traj)
