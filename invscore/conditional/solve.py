"""One entry point for posterior sampling: ``solve(prior, operator, y, method=...)`` — look the method up,
check it against the operator and the prior, run it."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import torch

from ..priors.base import Diffusion
from ..priors.latent import LatentOperator, LatentPrior
from ..samplers import time_grid
from ..sde import SDE, make_sde
from .methods import Method, get_method

__all__ = ["solve", "SolveResult"]


@dataclass
class SolveResult:
    """Posterior samples ``x`` (one per measurement), network evaluations per image, wall seconds, and
    backward passes through the network per image (``vjp``); both counts are counted as the method runs.
    With a latent prior, ``x`` is decoded, ``latent`` holds the samples z, and ``autoencoder_nfe`` /
    ``autoencoder_vjp`` count the decoder's (and encoder's) forward and backward passes per image: the
    Jacobian cost of latent methods."""

    x: torch.Tensor
    nfe: int
    seconds: float
    method: str
    trajectory: list = field(default_factory=list)
    vjp: int = 0
    latent: torch.Tensor | None = None
    autoencoder_nfe: int = 0
    autoencoder_vjp: int = 0


def _diffusion(prior, sde) -> Diffusion:
    if isinstance(prior, Diffusion):
        return prior
    sde = make_sde(sde) if isinstance(sde, str) else sde
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be 've', 'vp', 'subvp', 'edm', 'flow' or an invscore.SDE, got {type(sde).__name__}")
    return Diffusion(prior, sde)


def _check(m: Method, operator, y, guidance) -> None:
    if not isinstance(y, torch.Tensor) or not torch.is_floating_point(y):
        raise TypeError(f"y must be a floating-point tensor, got {type(y).__name__}")
    m.check(operator)
    operator.check_output(y)
    if y.shape[0] == 0:
        raise ValueError(f"y is an empty batch (shape {tuple(y.shape)}); pass at least one measurement")
    bad = int((~torch.isfinite(y)).sum())  # checked once here, so a NaN is not blamed on the prior mid-sampling
    if bad:
        raise ValueError(f"y has {bad} NaN or inf entries of {y.numel()}; a measurement must be finite: fix the "
                         "data (or give a mask operator the missing pixels) before solving")
    if guidance and not m.takes_guidance:
        raise ValueError(f"{m.name} does not take extra guidance terms; use 'pigdm' or 'dps' with guidance")


#: how far beyond a prior's trained σ_max sampling may start before solve warns: the default VP SDE starts at
#: σ/α ≈ 152, 1.9 × EDM's 80, and issue 13's trial of an EDM-trained denoiser found it better than VE or the
#: prior's own range, so only a larger gap (e.g. a denoiser trained up to σ = 1) is flagged
SIGMA_MARGIN = 2.0


def _steps(steps, default: int) -> int:
    """``steps`` as an int (``None``: the method's default); the sampler's time grid checks that it is >= 1."""
    if steps is None:
        return default
    try:
        whole = not isinstance(steps, bool) and int(steps) == steps
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise TypeError(f"steps must be a whole number of sampling steps (or None for the method's default "
                        f"{default}), got {steps!r}")
    return int(steps)


def _check_dtype(prior, y) -> None:
    """A network prior runs in its weights' dtype: refuse a y of another one rather than fail inside a layer."""
    params = prior.parameters() if isinstance(prior, torch.nn.Module) else ()
    weights = next((p for p in params if p.is_floating_point()), None)
    if weights is not None and weights.dtype != y.dtype:
        raise TypeError(f"y is {str(y.dtype).replace('torch.', '')} but the prior's weights are "
                        f"{str(weights.dtype).replace('torch.', '')}; convert y with y.to({weights.dtype}) or the "
                        f"prior with prior.to({y.dtype})" + ("; sampling in float64 needs both in float64"
                                                       if y.dtype == torch.float64 else ""))


def _check_prior(model: Diffusion, operator, y, t0: float) -> None:
    prior = model.prior
    _check_dtype(prior, y)
    if prior.data_shape is None:
        warnings.warn(f"the prior has no data_shape, so solve cannot check that the operator's input "
                      f"{tuple(operator.input_shape)} is the size it was trained on; pass "
                      "CallablePrior(fn, data_shape=(C, H, W))", stacklevel=3)
    else:
        prior.check_input(torch.empty((1, *operator.input_shape)))
    trained = getattr(prior, "sigma_range", None)
    if trained is not None:
        top = float(model.sde.ratio(torch.tensor(t0, dtype=torch.float64)))  # the grid's start, not always T
        if top > SIGMA_MARGIN * trained[1]:
            warnings.warn(f"sampling starts at sigma {top:.3g} but the prior was trained up to sigma {trained[1]:.3g}: "
                          f"the network is evaluated far outside its training; use an SDE whose largest sigma "
                          f"is at most {SIGMA_MARGIN:g} x {trained[1]:.3g} (e.g. sde=VESDE(sigma_max=...))",
                          stacklevel=3)


def solve(prior, operator, y: torch.Tensor, method: str | Method = "auto", steps: int | None = None,
          sigma_y: float | None = None, sde="vp", grid: str | None = None, generator=None, guidance=(),
          callback=None, return_trajectory: bool = False, **options) -> SolveResult:
    """Sample x ~ p(x | y) for ``y = operator(x) + noise`` with a frozen prior.

    ``prior``: a Prior, a callable denoiser ``D(x, sigma)``, or a :class:`Diffusion` (then ``sde`` is
    ignored). ``method``: a name in :data:`~invscore.conditional.METHODS` (``options`` are its options,
    defaults in ``METHODS[name].defaults``) or a :class:`~invscore.conditional.Method` object.
    ``sigma_y``: overrides the noise level the method assumes (by default the operator's noise model's).
    ``steps``/``grid``: default the method's ('uniform', or 'edm' = Karras et al. 2022, eq. 5).
    ``guidance``: extra terms, e.g. ``[ClassifierGuidance(clf, 3, gamma)]`` to inpaint *as* class 3. The
    prior's sample shape must be the operator's input shape; a :class:`~invscore.priors.latent.LatentPrior`
    samples latents z for ``y = A(𝒟(z)) + n`` (the method sees A ∘ 𝒟) and returns 𝒟(z), with z in
    ``latent``. Returns samples, NFE per image, wall time.
    """
    model = _diffusion(prior, sde)
    latent = model.prior if isinstance(model.prior, LatentPrior) else None
    if latent is not None:  # the method samples z and sees A ∘ 𝒟 (Rombach et al. 2022; PSLD, Rout et al. 2023)
        operator = LatentOperator(operator, latent)
    m = get_method(method, **options)
    m, steps = m.resolve(operator, None if steps is None else _steps(steps, m.steps))
    _check(m, operator, y, guidance)
    sigma_y = operator.noise_std(sigma_y)
    ts = time_grid(model.sde, steps, grid or m.grid, device=y.device, dtype=y.dtype, r_max=m.start_ratio(model.prior))
    _check_prior(model, operator, y, float(ts[0]))
    vjp0, start = model.vjp, time.perf_counter()
    try:
        res = m.run(model, operator, y, ts, sigma_y, guidance=guidance, generator=generator, callback=callback,
                    return_trajectory=return_trajectory)
    except FloatingPointError as err:
        raise FloatingPointError(f"method {m.name!r}: {err}") from None
    z = None
    if latent is not None:
        with torch.no_grad():
            z, res.x = res.x, latent.decode(res.x)
    if y.device.type == "cuda":
        torch.cuda.synchronize(y.device)
    return SolveResult(res.x, res.nfe, time.perf_counter() - start, m.name, res.trajectory,
                       model.vjp - vjp0, z, *((operator.nfe, operator.vjp) if latent is not None else (0, 0)))
