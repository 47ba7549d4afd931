"""Multistep consistency sampling (Song et al. 2023, Algorithm 1), for any linear SDE."""
from __future__ import annotations

import torch

from ..sde import bcast, randn_like
from .common import SampleResult, emit, prepare


@torch.no_grad()
def sample_consistency(model, x, ts, generator=None, callback=None, return_trajectory=False) -> SampleResult:
    """x̂0 = f(x_{t_0}, t_0); then at each next time t_k of ``ts[1:-1]``: x_{t_k} = α(t_k)·x̂0 + σ(t_k)·z with
    fresh z ~ N(0, I) and x̂0 = f(x_{t_k}, t_k). ``f`` is the model's x̂0 (a consistency model's map to the
    ODE's origin); the last grid time (t_min) is where the trajectory ends and is not evaluated, so a grid of
    ``steps`` steps spends ``steps`` NFE and ``steps = 1`` is the one-step sample f(x_T, T). With an ordinary
    denoiser this is a re-noise-and-denoise chain, not a solver of its ODE."""
    ts, guard, nfe0 = prepare(model, x, ts, "consistency")
    traj, sde = [], model.sde
    x0 = model.x0(x, ts[0])
    emit(callback, traj, return_trajectory, 0, ts[0], x, x0)
    for i, t in enumerate(ts[1:-1], start=1):
        x = bcast(sde.alpha(t), x) * x0 + bcast(sde.sigma(t), x) * randn_like(x, generator)
        x0 = model.x0(x, t)
        guard.update(i, x0)
        emit(callback, traj, return_trajectory, i, t, x, x0)
    guard.check()
    return SampleResult(model.post_step(x0, ts[-1], generator, final=True), model.nfe - nfe0, traj)
