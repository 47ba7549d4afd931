"""One entry point for posterior sampling: ``solve(prior, operator, y, method=...)`` — look the method up,
check it against the operator and the prior, run it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..priors.base import Diffusion
from ..samplers import time_grid
from ..sde import SDE, make_sde
from .methods import Method, get_method

__all__ = ["solve", "SolveResult"]


@dataclass
class SolveResult:
    """Posterior samples ``x`` (one per measurement), network evaluations per image (counted), wall seconds,
    and backward passes through the network per image (``vjp``: the method's declared cost × steps)."""

    x: torch.Tensor
    nfe: int
    seconds: float
    method: str
    trajectory: list = field(default_factory=list)
    vjp: int = 0


def _diffusion(prior, sde) -> Diffusion:
    if isinstance(prior, Diffusion):
        return prior
    sde = make_sde(sde) if isinstance(sde, str) else sde
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be 've', 'vp', 'subvp' or an invscore.SDE, got {type(sde).__name__}")
    return Diffusion(prior, sde)


def _check(m: Method, operator, y, guidance) -> None:
    if not isinstance(y, torch.Tensor) or not torch.is_floating_point(y):
        raise TypeError(f"y must be a floating-point tensor, got {type(y).__name__}")
    m.check(operator)
    operator.check_output(y)
    if guidance and not m.takes_guidance:
        raise ValueError(f"{m.name} does not take extra guidance terms; use 'pigdm' or 'dps' with guidance")


def solve(prior, operator, y: torch.Tensor, method: str | Method = "pigdm", steps: int | None = None,
          sigma_y: float | None = None, sde="vp", grid: str | None = None, generator=None, guidance=(),
          callback=None, return_trajectory: bool = False, **options) -> SolveResult:
    """Sample x ~ p(x | y) for ``y = operator(x) + noise`` with a frozen prior.

    ``prior``: a Prior, a callable denoiser ``D(x, sigma)``, or a :class:`Diffusion` (then ``sde`` is
    ignored). ``method``: a name in :data:`~invscore.conditional.METHODS` (``options`` are its options,
    defaults in ``METHODS[name].defaults``) or a :class:`~invscore.conditional.Method` object.
    ``sigma_y``: overrides the noise level the method assumes (by default the operator's noise model's).
    ``steps``/``grid``: default the method's ('uniform', or 'edm' = Karras et al. 2022, eq. 5).
    ``guidance``: extra terms, e.g. ``[ClassifierGuidance(clf, 3, gamma)]`` to inpaint *as* class 3. The
    prior's sample shape must be the operator's input shape. Returns samples, NFE per image, wall time.
    """
    m = get_method(method, **options)
    _check(m, operator, y, guidance)
    sigma_y = operator.noise_std(sigma_y)
    model = _diffusion(prior, sde)
    steps = m.steps if steps is None else int(steps)
    ts = time_grid(model.sde, steps, grid or m.grid, device=y.device, dtype=y.dtype)
    model.prior.check_input(torch.empty((1, *operator.input_shape), dtype=y.dtype))
    start = time.perf_counter()
    try:
        res = m.run(model, operator, y, ts, sigma_y, guidance=guidance, generator=generator, callback=callback,
                    return_trajectory=return_trajectory)
    except FloatingPointError as err:
        raise FloatingPointError(f"method {m.name!r}: {err}") from None
    if y.device.type == "cuda":
        torch.cuda.synchronize(y.device)
    return SolveResult(res.x, res.nfe, time.perf_counter() - start, m.name, res.trajectory, m.cost().vjp * steps)
