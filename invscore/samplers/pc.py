"""Predictor–corrector sampling of the reverse-time SDE (Song et al. 2021, Sec. 4.2, Algorithms 2–3).

A predictor advances the reverse SDE from t to s < t; a corrector runs score-based MCMC at s. Each
predictor is a function ``(model, x, t, s, generator) -> (x, x_mean)``; each corrector
``(model, x, t, t_prev, generator) -> (x, x_mean)``. They are registered by name, so the loop
never branches on a type.
"""
from __future__ import annotations

import torch

from ..sde import bcast, randn_like
from .common import SampleResult, emit, prepare

__all__ = ["PREDICTORS", "CORRECTORS", "sample_pc", "euler_maruyama", "reverse_diffusion", "ancestral",
           "langevin", "posterior_step"]


def euler_maruyama(model, x, t, s, generator=None):
    """Euler–Maruyama on the reverse SDE (eq. 6): ``x ← x − [f x − g² ∇log p_t] h + g √h z``, h = t − s."""
    h = t - s
    drift, g = model.sde.reverse(model.score).sde(x, t)
    x_mean = x - drift * h
    return x_mean + bcast(g * torch.sqrt(h), x) * randn_like(x, generator), x_mean


def reverse_diffusion(model, x, t, s, generator=None):
    """Reverse diffusion predictor (Song et al. eq. 46): ``x ← x − f_i + G_i² ∇log p_t + G_i z`` with the
    forward chain's ``(f_i, G_i)`` from :meth:`SDE.discretize` (:meth:`ReverseSDE.step`)."""
    x_mean, G = model.sde.reverse(model.score).step(x, t, t - s)
    return x_mean + bcast(G, x) * randn_like(x, generator), x_mean


def posterior_step(sde, x, x0, t, s, eta, z):
    """One step of q(x_s | x_t, x0) with its noise scaled by ``eta`` — DDIM (Song, Meng & Ermon 2021,
    eq. 12) in the α/σ form that holds for every linear SDE:

        c² = η² σ_s² (1 − (α_t σ_s / (α_s σ_t))²),   x_s = α_s x0 + √(σ_s² − c²) ε̂ + c z,   ε̂ = (x − α_t x0)/σ_t.

    ``eta = 1`` is ancestral sampling (DDPM's posterior variance β̃; SMLD's ancestral step for VE),
    ``eta = 0`` the deterministic DDIM / probability-flow step. Returns ``(x_s, mean)``.
    """
    mean, c2 = posterior_kernel(sde, x, x0, t, s, eta)
    return mean + bcast(torch.sqrt(c2), x) * z, mean


def posterior_kernel(sde, x, x0, t, s, eta=1.0):
    """Mean and variance ``c²`` of the step of :func:`posterior_step` (the Gaussian N(mean, c² I))."""
    a_t, a_s, s_t, s_s = sde.alpha(t), sde.alpha(s), sde.sigma(t), sde.sigma(s)
    c2 = eta**2 * s_s**2 * (1 - (a_t * s_s / (a_s * s_t)) ** 2).clamp_min(0)
    eps = (x - bcast(a_t, x) * x0) / bcast(s_t, x)
    return bcast(a_s, x) * x0 + bcast(torch.sqrt((s_s**2 - c2).clamp_min(0)), x) * eps, c2


def ancestral(model, x, t, s, generator=None):
    """Ancestral sampling (Ho et al. 2020 Alg. 2; Song et al. 2021 App. F): draw from q(x_s | x_t, x0 = x̂0)."""
    return posterior_step(model.sde, x, model.x0(x, t), t, s, 1.0, randn_like(x, generator))


def none_predictor(model, x, t, s, generator=None):
    """No predictor (corrector-only sampling, i.e. annealed Langevin dynamics)."""
    return x, x


def langevin(model, x, t, t_prev, generator=None, snr: float = 0.16, n_steps: int = 1):
    """Langevin corrector with the signal-to-noise step rule (Song et al. 2021, Algorithm 5):
    ``ε = 2 α_i (r ‖z‖ / ‖∇log p‖)²``, ``x ← x + ε ∇log p + √(2ε) z``, with ``α_i = (α(t_prev)/α(t))²``
    (1 for VE, 1 − β_i for VP). As in Song et al.'s code the norms are batch means: per-sample norms
    make the step explode in low dimension, where ‖∇log p‖ of one sample can be near zero."""
    a = torch.exp(2 * (model.sde.log_alpha(t_prev) - model.sde.log_alpha(t)))
    x_mean = x
    for _ in range(n_steps):
        grad = model.score(x, t)
        z = randn_like(x, generator)
        gn = grad.flatten(1).norm(dim=1).mean()
        zn = z.flatten(1).norm(dim=1).mean()
        step = 2 * a * (snr * zn / gn.clamp_min(1e-20)) ** 2
        x_mean = x + step * grad
        x = x_mean + torch.sqrt(2 * step) * z
    return x, x_mean


def no_corrector(model, x, t, t_prev, generator=None, **_):
    """No corrector."""
    return x, x


PREDICTORS = {"euler_maruyama": euler_maruyama, "reverse_diffusion": reverse_diffusion,
              "ancestral": ancestral, "none": none_predictor}
CORRECTORS = {"langevin": langevin, "none": no_corrector}


def _lookup(table, name, what):
    if callable(name):
        return name
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]


@torch.no_grad()
def sample_pc(model, x, ts, predictor="reverse_diffusion", corrector="none", snr=0.16, n_corrector=1,
              generator=None, callback=None, return_trajectory=False, return_mean: bool = True) -> SampleResult:
    """Predictor–corrector sampler (Song et al. 2021, Algorithm 1 generalised; Algorithms 2–3).

    ``model`` is a :class:`~invscore.priors.Diffusion` (or a conditional wrapper of one), ``x`` the start
    state at ``ts[0]``, ``ts`` a decreasing time grid. After every predictor and corrector move the
    model's ``post_step`` hook runs (projections for inpainting live there). Returns the last predictor
    step's noise-free mean (as Song et al.; ``return_mean=False`` returns the last state, which keeps
    corrections a post-step made to it), or the last corrector state, and the number of network
    evaluations.
    """
    predict = _lookup(PREDICTORS, predictor, "predictor")
    correct = _lookup(CORRECTORS, corrector, "corrector")
    ts, guard, nfe0 = prepare(model, x, ts, "pc")
    traj = []
    x_mean = x
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x, x_mean = predict(model, x, t, s, generator)
        x = model.post_step(x, s, generator)
        if correct is not no_corrector:
            x, x_mean = correct(model, x, s, t, generator, snr=snr, n_steps=n_corrector)
            x = model.post_step(x, s, generator)
        guard.update(i, x_mean)
        emit(callback, traj, return_trajectory, i, s, x)
    # A corrector's noise-free mean x + ε∇log p is a shrunk sample (by ε/var: ~5% of the std at snr 0.16),
    # so with a corrector the last Langevin state is returned; without one, the predictor's mean (Song et al.).
    out = x if (correct is not no_corrector or not return_mean) else x_mean
    out = model.post_step(out, ts[-1], generator, final=True)
    guard.check()
    return SampleResult(out, model.nfe - nfe0, traj)
