"""One entry point for posterior sampling: ``solve(prior, operator, y, method=...)``."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..priors.base import Diffusion
from ..samplers import sample_ddim, sample_pc, time_grid
from ..sde import SDE, make_sde
from .guided import Guided
from .measurement import DDRMCorrection, DPS, MMPS, PiGDM, Projection
from .smc import sample_smc

__all__ = ["solve", "SolveResult", "METHODS"]

#: method -> (one-line description, default steps, grid)
METHODS = {
    "smc": ("SMC with Gaussian twists, asymptotically exact; population=True: one cloud per y (SVD operators)", 50,
            "uniform"),
    "mmps": ("MMPS: moment-matched Gaussian p(x0|x_t) with Tweedie's covariance, CG (linear operators)", 20, "edm"),
    "pigdm": ("ΠGDM: pseudoinverse guidance, one VJP per step (linear operators)", 50, "uniform"),
    "dps": ("DPS: gradient of ‖y − A(x̂0)‖ through the prior (any differentiable operator)", 100, "uniform"),
    "ddrm": ("DDRM: spectral DDIM with eta, eta_b (SVD operators)", 50, "uniform"),
    "projection": ("Song et al. imputation: predictor–corrector + projection (SVD operators)", 100, "uniform"),
}


#: each method's options and their defaults
_OPTIONS = {
    "smc": {"particles": 16, "ess_threshold": 0.5, "twist_std": 1.0, "population": False},
    "mmps": {"cg_iters": 1, "weight": 1.0, "eta": 1.0},
    "pigdm": {"weight": 1.0, "eta": 1.0},
    "dps": {"zeta": 1.0},
    "ddrm": {"eta": 0.85, "eta_b": 1.0},
    "projection": {"corrector": "langevin", "snr": 0.16, "n_corrector": 1},
}


@dataclass
class SolveResult:
    """Posterior samples ``x`` (one per measurement), network evaluations per image, wall seconds."""

    x: torch.Tensor
    nfe: int
    seconds: float
    method: str
    trajectory: list = field(default_factory=list)


def _diffusion(prior, sde) -> Diffusion:
    if isinstance(prior, Diffusion):
        return prior
    sde = make_sde(sde) if isinstance(sde, str) else sde
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be 've', 'vp', 'subvp' or an invscore.SDE, got {type(sde).__name__}")
    return Diffusion(prior, sde)


def solve(prior, operator, y: torch.Tensor, method: str = "pigdm", steps: int | None = None,
          sigma_y: float | None = None, sde="vp", grid: str | None = None, generator=None, guidance=(),
          callback=None, return_trajectory: bool = False, **options) -> SolveResult:
    """Sample x ~ p(x | y) for ``y = operator(x) + noise`` with a frozen prior.

    ``prior``: a Prior, a callable denoiser ``D(x, sigma)``, or a :class:`Diffusion` (then ``sde`` is
    ignored). ``sigma_y``: the noise level the method assumes (default: the operator's). ``grid``: the time
    grid, 'uniform' or 'edm' (Karras et al. 2022, eq. 5; default: the method's, in ``METHODS``). ``guidance``:
    extra terms, e.g. ``[ClassifierGuidance(clf, 3, gamma)]`` to inpaint *as* class 3. ``options`` go to
    the method (defaults in ``_OPTIONS``): ``particles``, ``ess_threshold``, ``twist_std``, ``population``
    (smc; ``population=True``: each run of identical rows of y is one particle cloud, see ``sample_smc``); ``zeta`` (dps);
    ``eta``, ``eta_b`` (ddrm); ``weight``, ``eta`` (pigdm); ``cg_iters``, ``weight``, ``eta`` (mmps);
    ``corrector``, ``snr``, ``n_corrector`` (projection). The prior's sample shape must be the operator's
    input shape. Returns samples, NFE per image and wall time.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    if not isinstance(y, torch.Tensor) or not torch.is_floating_point(y):
        raise TypeError(f"y must be a floating-point tensor, got {type(y).__name__}")
    operator.check_output(y)
    if sigma_y is None:
        sigma_y = operator.sigma_y
    if not sigma_y >= 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    model = _diffusion(prior, sde)
    steps = METHODS[method][1] if steps is None else int(steps)
    ts = time_grid(model.sde, steps, grid or METHODS[method][2], device=y.device, dtype=y.dtype)
    shape = (y.shape[0], *operator.input_shape)
    model.prior.check_input(torch.empty((1, *operator.input_shape), dtype=y.dtype))
    allowed = _OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {method!r} does not take {unknown}; its options are {sorted(allowed)}")
    options = {**allowed, **options}
    start = time.perf_counter()
    kw = dict(generator=generator, callback=callback, return_trajectory=return_trajectory)
    try:
        if method == "smc":
            if guidance:
                raise ValueError("smc does not take extra guidance terms; use 'pigdm' or 'dps' with guidance")
            particles = int(options["particles"])
            res = sample_smc(model, operator, y, ts, sigma_y=sigma_y, particles=particles,
                             ess_threshold=options["ess_threshold"], twist_std=options["twist_std"],
                             population=bool(options["population"]), **kw)
            if not options["population"]:
                res.nfe *= particles  # each network call evaluates K particles of every image
        else:
            x = model.sde.prior_sampling(shape, generator=generator, device=y.device, dtype=y.dtype)
            if method == "projection":
                guided = Guided(model, [Projection(operator, y, sigma_y), *guidance])
                res = sample_pc(guided, x, ts, predictor="reverse_diffusion", **options, **kw)
            elif method == "ddrm":
                term = DDRMCorrection(operator, y, sigma_y, eta=options["eta"], eta_b=options["eta_b"])
                res = sample_ddim(Guided(model, [term, *guidance]), x, ts, eta=options["eta"], **kw)
            elif method == "dps":
                guided = Guided(model, [DPS(operator, y, zeta=options["zeta"]), *guidance])
                # the last state, not the predictor's mean: it carries DPS's last gradient correction
                res = sample_pc(guided, x, ts, predictor="ancestral", corrector="none", return_mean=False, **kw)
            elif method == "mmps":
                term = MMPS(operator, y, sigma_y, cg_iters=options["cg_iters"], weight=options["weight"])
                res = sample_ddim(Guided(model, [term, *guidance]), x, ts, eta=options["eta"], **kw)
            else:
                guided = Guided(model, [PiGDM(operator, y, sigma_y, weight=options["weight"]), *guidance])
                res = sample_ddim(guided, x, ts, eta=options["eta"], **kw)
    except FloatingPointError as err:
        raise FloatingPointError(f"method {method!r}: {err}") from None
    if y.device.type == "cuda":
        torch.cuda.synchronize(y.device)
    return SolveResult(res.x, res.nfe, time.perf_counter() - start, method, res.trajectory)
