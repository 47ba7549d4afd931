"""Probability-flow ODE solvers (Song et al. 2021, Sec. 4.3, eq. 13) and DDIM (Song, Meng & Ermon 2021).

The probability-flow ODE ``dx/dt = f(t) x − ½ g(t)² ∇log p_t(x)`` has the same marginals as the
forward SDE. Fixed-step Euler and Heun (Karras et al. 2022, Algorithm 1) and an adaptive
Dormand–Prince 5(4) solver (Dormand & Prince 1980) integrate it; the latter is shared with the
likelihood computation.
"""
from __future__ import annotations

import torch

from ..sde import randn_like
from .common import SampleResult, check_noise_scale, emit, finish, prepare
from .pc import posterior_step

__all__ = ["pf_velocity", "sample_euler", "sample_heun", "sample_rk45", "sample_ddim", "rk45"]


def pf_velocity(model, x, t):
    """Probability-flow velocity ``f(t) x − ½ g(t)² score(x, t)`` (Song et al. 2021, eq. 13), from
    :meth:`SDE.reverse`."""
    return model.sde.reverse(model.score, probability_flow=True).sde(x, t)[0]


@torch.no_grad()
def sample_euler(model, x, ts, generator=None, callback=None, return_trajectory=False,
                 denoise: bool = False) -> SampleResult:
    """Euler's method on the probability-flow ODE: ``x ← x + v(x, t)(s − t)``; one NFE per step.
    ``denoise``: return the Tweedie estimate at the last time (see :func:`~.common.finish`)."""
    ts, guard, nfe0 = prepare(model, x, ts, "euler")
    traj = []
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x = model.post_step(x + pf_velocity(model, x, t) * (s - t), s, generator)
        guard.update(i, x)
        emit(callback, traj, return_trajectory, i, s, x)
    guard.check()
    return SampleResult(finish(model, x, ts[-1], generator, denoise), model.nfe - nfe0, traj)


@torch.no_grad()
def sample_heun(model, x, ts, generator=None, callback=None, return_trajectory=False,
                denoise: bool = False) -> SampleResult:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1, deterministic): an Euler step, then the
    trapezoidal correction ``x ← x + ½ (v(x, t) + v(x', s))(s − t)``; two NFE per step. ``denoise``: end
    with the Tweedie estimate, Algorithm 1's last Euler step to σ = 0 (see :func:`~.common.finish`)."""
    ts, guard, nfe0 = prepare(model, x, ts, "heun")
    traj = []
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        v = pf_velocity(model, x, t)
        x_pred = x + v * (s - t)
        x = x + 0.5 * (v + pf_velocity(model, x_pred, s)) * (s - t)
        x = model.post_step(x, s, generator)
        guard.update(i, x)
        emit(callback, traj, return_trajectory, i, s, x)
    guard.check()
    return SampleResult(finish(model, x, ts[-1], generator, denoise), model.nfe - nfe0, traj)


@torch.no_grad()
def sample_ddim(model, x, ts, eta: float = 0.0, generator=None, callback=None,
                return_trajectory=False, denoise: bool = False, noise_scale: float = 1.0) -> SampleResult:
    """DDIM (Song, Meng & Ermon 2021, eq. 12) for any linear SDE; ``eta = 0`` is deterministic (a
    first-order solver of the probability-flow ODE in the (σ/α) variable), ``eta = 1`` ancestral.
    ``denoise``: return the Tweedie estimate at the last time (see :func:`~.common.finish`).
    ``noise_scale``: the injected noise is ``noise_scale · c z`` (EDM's S_noise, Karras et al. 2022, Alg. 2;
    k-diffusion's ``s_noise``): 1 samples the model; below 1 a low-temperature chain that the denoiser
    pulls toward the conditional mean, higher PSNR and less texture (deepinv's DDRM draws its noise at 1/√2)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    check_noise_scale(noise_scale)
    ts, guard, nfe0 = prepare(model, x, ts, "ddim")
    traj = []
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        x0 = model.x0(x, t)
        z = noise_scale * randn_like(x, generator) if eta > 0 else torch.zeros_like(x)
        x, _ = posterior_step(model.sde, x, x0, t, s, eta, z)
        x = model.post_step(x, s, generator)
        guard.update(i, x)
        emit(callback, traj, return_trajectory, i, s, x, x0)
    guard.check()
    return SampleResult(finish(model, x, ts[-1], generator, denoise), model.nfe - nfe0, traj)


# Dormand–Prince 5(4) tableau (Dormand & Prince 1980; Hairer, Nørsett & Wanner, Table 5.2)
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def rk45(func, y, t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5, h0: float | None = None,
         max_steps: int = 100_000):
    """Adaptive Dormand–Prince 5(4) integration of ``dy/dt = func(t, y)`` from t0 to t1 (either direction).

    Error control: accept a step when the RMS of ``err / (atol + rtol·max(|y|, |y_new|))`` is ≤ 1, and
    scale h by ``0.9·err^{-1/5}`` clipped to [0.2, 5] (Hairer et al. 1993, II.4). The accept/reject test
    reads one scalar on the host per step — inherent to adaptive stepping. Returns ``(y(t1), n_evals)``.
    """
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    h = h0 if h0 is not None else span / 100
    t, n_eval = t0, 1
    k1 = func(torch.tensor(t, dtype=y.dtype, device=y.device), y)
    for _ in range(max_steps):
        if direction * (t1 - t) <= 1e-12 * max(1.0, span):
            return y, n_eval
        h = min(h, abs(t1 - t))
        ks = [k1]
        for c, a in zip(_C[1:], _A[1:]):
            yi = y + direction * h * sum(ai * k for ai, k in zip(a, ks) if ai != 0.0)
            ks.append(func(torch.tensor(t + direction * c * h, dtype=y.dtype, device=y.device), yi))
        n_eval += 6
        y_new = yi  # the 7th stage's input is the 5th-order solution (FSAL)
        err = direction * h * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        err_norm = float(torch.sqrt(torch.mean((err / scale) ** 2)))
        if not err_norm == err_norm:  # NaN
            raise FloatingPointError(f"rk45: non-finite error estimate at t = {t:.4g}; the vector field "
                                     "returned NaN or inf there")
        if err_norm <= 1.0:
            t, y, k1 = t + direction * h, y_new, ks[-1]
        h = h * min(5.0, max(0.2, 0.9 * (err_norm + 1e-16) ** -0.2))
    raise RuntimeError(f"rk45 did not reach t1 = {t1} in {max_steps} steps (at t = {t}); loosen rtol/atol")


@torch.no_grad()
def sample_rk45(model, x, t0: float | None = None, t1: float | None = None, rtol: float = 1e-5,
                atol: float = 1e-5, generator=None) -> SampleResult:
    """Solve the probability-flow ODE from ``t0`` (default T) to ``t1`` (default t_min) adaptively —
    Song et al.'s black-box ODE sampler with RK45 (Sec. 4.3) — on the caller's device."""
    sde = model.sde
    t0 = sde.T if t0 is None else float(t0)
    t1 = sde.t_min if t1 is None else float(t1)
    sde.check_t(torch.tensor([t0, t1]))
    nfe0 = model.nfe
    y, _ = rk45(lambda t, v: pf_velocity(model, v, t), x, t0, t1, rtol, atol)
    if not bool(torch.isfinite(y).all()):
        raise FloatingPointError("rk45 sampler produced NaN or inf; check the prior on noisy inputs")
    return SampleResult(model.post_step(y, torch.tensor(t1, dtype=y.dtype, device=y.device), generator, final=True),
                        model.nfe - nfe0)
