"""Unconditional reverse-time samplers. Each takes a :class:`~invscore.priors.Diffusion` (possibly wrapped
by conditional terms), a start state, a time grid, a generator and a callback, and returns a
:class:`SampleResult` with the NFE. :func:`sample` is the one-call convenience."""
from __future__ import annotations

import torch

from .common import SampleResult, time_grid
from .consistency import sample_consistency
from .likelihood import bits_per_dim, decode, dequantize, encode, log_likelihood
from .ode import pf_velocity, rk45, sample_ddim, sample_euler, sample_heun, sample_rk45
from .pc import CORRECTORS, PREDICTORS, sample_pc

__all__ = ["SampleResult", "time_grid", "sample_pc", "sample_euler", "sample_heun", "sample_rk45",
           "sample_ddim", "sample_consistency", "log_likelihood", "encode", "decode", "bits_per_dim", "dequantize", "pf_velocity",
           "rk45", "PREDICTORS", "CORRECTORS", "SAMPLERS", "sample"]

#: name -> (function, keyword arguments); fixed-grid samplers take ``(model, x, ts, **kw)``
SAMPLERS = {
    "pc": (sample_pc, {"predictor": "reverse_diffusion", "corrector": "langevin"}),
    "euler_maruyama": (sample_pc, {"predictor": "euler_maruyama", "corrector": "none"}),
    "reverse_diffusion": (sample_pc, {"predictor": "reverse_diffusion", "corrector": "none"}),
    "ancestral": (sample_pc, {"predictor": "ancestral", "corrector": "none"}),
    "ode_euler": (sample_euler, {}),
    "ode_heun": (sample_heun, {}),
    "ddim": (sample_ddim, {"eta": 0.0}),
    "rk45": (sample_rk45, {}),
    "consistency": (sample_consistency, {}),  # for consistency models (invscore.nets.ConsistencyDenoiser)
}


def sample(model, shape, method: str = "ode_heun", steps: int = 50, grid: str | None = None, generator=None,
           device=None, dtype=torch.float32, callback=None, **kwargs) -> SampleResult:
    """Draw ``shape`` samples from ``model`` (a Diffusion): start at ``sde.prior_sampling`` and run
    ``method`` (one of :data:`SAMPLERS`) over ``steps`` steps of a ``grid`` ('uniform', 'edm' or 'linear'; default
    'edm' for ODE/DDIM samplers, 'uniform' for SDE ones, as their papers). ``'rk45'`` chooses its own
    steps (tolerances ``rtol``, ``atol``) and takes no grid or callback."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; expected one of {sorted(SAMPLERS)}")
    fn, defaults = SAMPLERS[method]
    kw = {**defaults, **kwargs}
    if device is None:
        device = next((b.device for b in model.prior.buffers()), None)
        device = device or next((p.device for p in model.prior.parameters()), torch.device("cpu"))
    x = model.sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
    if fn is sample_rk45:
        return fn(model, x, generator=generator, **kw)
    grid = grid or ("edm" if fn in (sample_euler, sample_heun, sample_ddim, sample_consistency) else "uniform")
    ts = time_grid(model.sde, steps, grid, device=device, dtype=dtype)
    return fn(model, x, ts, generator=generator, callback=callback, **kw)
