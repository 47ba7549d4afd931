"""The frozen prior and its view under an SDE.

A prior is anything that gives the denoiser ``D(x, sigma) ≈ E[x0 | x0 + sigma z = x]`` in
variance-exploding coordinates (Karras et al. 2022, EDM, eq. 2–3). Under a linear SDE with
``x_t = alpha x0 + sigma_t z`` the same denoiser gives, with ``r = sigma_t / alpha`` (EDM eq. 4),

    x0_hat(x_t, t) = D(x_t / alpha, r)                  (Tweedie's formula, Efron 2011)
    score(x_t, t)  = (alpha x0_hat − x_t) / sigma_t²
    eps(x_t, t)    = (x_t − alpha x0_hat) / sigma_t

so one network serves VE, VP and sub-VP sampling. :class:`Diffusion` is that view; samplers and
conditional terms only talk to it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..sde import SDE, bcast
from ..utils import per_sample

__all__ = ["Prior", "CallablePrior", "NetworkPrior", "Diffusion", "freeze", "as_prior"]


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode and stop gradients into its parameters (inputs still get them)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class Prior(nn.Module):
    """A frozen prior: ``denoise(x, sigma)`` returns E[x0 | x] for ``x = x0 + sigma z`` (VE coordinates).

    ``sigma`` is a tensor of shape ``(B,)``. Subclasses implement :meth:`denoise`. A prior stays in eval
    mode whatever ``.train()`` is asked, and its parameters never require gradients.
    """

    #: shape of one sample, e.g. ``(1, 32, 32)``; ``None`` when any shape is accepted
    data_shape: tuple | None = None
    #: ``(σ_min, σ_max)`` the network was trained on (VE σ on [-1, 1] data); ``None`` when unknown.
    #: :func:`~invscore.conditional.solve` warns when the sampling SDE goes far beyond it.
    sigma_range: tuple | None = None

    @property
    def data_scale(self) -> float:
        """The data's scale in state units: 1 for images in [-1, 1] (invscore's convention); analytic priors
        return sqrt(max_i E[x_i²]). Samplers that start below the SDE's prior (DDRM's ``r_max``) scale with it."""
        return 1.0

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.denoise(x, sigma)

    def train(self, mode: bool = True):
        # frozen by contract: a caller's model.train() must not switch dropout/BN statistics on
        return super().train(False)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected and received shape if ``x`` does not fit the prior."""
        if not torch.is_floating_point(x):
            raise TypeError(f"expected a floating-point tensor, got dtype {x.dtype}; convert with x.float()")
        if self.data_shape is not None and tuple(x.shape[1:]) != tuple(self.data_shape):
            raise ValueError(
                f"input shape does not fit the prior: expected (B, {', '.join(map(str, self.data_shape))}), "
                f"got {tuple(x.shape)}; resize the input or use a prior trained for that size"
            )


class CallablePrior(Prior):
    """Wrap a plain callable ``fn(x, sigma) -> x0_hat`` (or an ``nn.Module`` denoiser) as a frozen prior.

    The modules ``fn`` uses are frozen (:func:`freeze`): ``fn`` itself, the object of a bound method, and the
    modules a function or lambda reads from its closure or globals (``lambda x, s: net(x, s)`` freezes
    ``net``). ``data_shape`` ``(C, H, W)`` lets solve check the operator's input against the prior;
    ``sigma_range`` is the ``(σ_min, σ_max)`` it was trained on."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], data_shape=None,
                 sigma_range=None):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"CallablePrior takes a callable denoiser fn(x, sigma) -> x0_hat, got {type(fn).__name__}")
        for module in _modules_used(fn):
            freeze(module)
        self.fn = fn
        self.data_shape = tuple(data_shape) if data_shape is not None else getattr(fn, "data_shape", None)
        sigma_range = sigma_range if sigma_range is not None else getattr(fn, "sigma_range", None)
        self.sigma_range = tuple(float(s) for s in sigma_range) if sigma_range is not None else None

    def denoise(self, x, sigma):
        return self.fn(x, sigma)


def _modules_used(fn) -> list[nn.Module]:
    """The ``nn.Module`` s a callable runs: itself, a bound method's object, a function's closure and the
    globals its code names (found without calling it)."""
    import inspect
    if isinstance(fn, nn.Module):
        return [fn]
    if isinstance(getattr(fn, "__self__", None), nn.Module):
        return [fn.__self__]
    try:
        found = inspect.getclosurevars(fn)
    except TypeError:  # a builtin or a callable object: nothing to inspect
        return []
    values = [*found.nonlocals.values(), *found.globals.values()]
    return [v for v in values if isinstance(v, nn.Module)]


_PARAMS = ("x0", "eps", "v", "score", "flow")


class NetworkPrior(Prior):
    """Adapter for a network trained under its own SDE and parametrisation (the library API for a
    user's own model). ``net(x_t, c(t))`` predicts, at native time ``t`` with ``x_t = a x0 + s z``:

    - ``'x0'``: x0 directly;              x0 = out
    - ``'eps'`` (DDPM, Ho et al. 2020):   x0 = (x_t − s·out) / a
    - ``'v'`` (Salimans & Ho 2022, VP):   x0 = a x_t − s·out
    - ``'score'`` (Song et al. 2021):     x0 = (x_t + s²·out) / a
    - ``'flow'`` (flow matching / rectified flow, Lipman et al. 2023; Liu et al. 2023): the velocity
      ``out = dx_t/dt = ȧ x0 + ṡ ε``, so x0 = (s·out − ṡ x_t) / (ȧ s − ṡ a) with ȧ = f a and
      ṡ = (g² + 2 f s²) / (2 s) from the SDE; on :class:`~invscore.sde_flow.FlowSDE` (a = 1 − t, s = t)
      this is x0 = x_t − t·out

    ``time_input`` maps the native time to the network's conditioning: ``'t'`` (continuous time),
    ``'sigma'`` (the native std, as NCSN/NCSN++ VE models), ``'ddpm'`` (``t·(N−1)`` for N-step DDPM
    models under a continuous VPSDE), or a callable ``(t, sde) -> tensor``. A VE query ``(x, sigma)`` becomes
    the native time ``t = sde.ratio_to_t(sigma)`` and input ``a(t)·x``.

    For a model trained on a discrete schedule (an SDE with ``timestep``, i.e.
    :class:`~invscore.sde.DiscreteVPSDE`) two more, between which the trade-off is exactness of the noise
    level against exactness of the conditioning:

    - ``'step'``: the network gets the fractional step ``sde.timestep(t)`` and ``a(t)``, ``s(t)`` are exact at
      ``t``, so the noise level of ``a(t)·x`` is exactly the query's; between trained steps the network sees a
      non-integer step it was never trained on (its time embedding interpolates; for standard sinusoidal
      embeddings this is smooth and harmless, and exact for a network that interpolates its table).
    - ``'step_nearest'``: ``t`` is snapped to the nearest trained step ``t_i`` (``i = round(timestep(t))``), the
      network gets the integral step ``i`` (a float tensor of whole numbers; ``.long()`` it if the network
      wants integers) and ``a(t_i)``, ``s(t_i)`` are used throughout: the network is evaluated exactly where it
      was trained, but the query's noise level is then off by up to half a step (``x·a(t_i)`` carries noise
      ``a(t_i)·sigma`` where the network assumes ``s(t_i)``). Exact on the trained grid; samplers whose
      times lie on the grid (e.g. ``time_grid`` 'uniform' with N/steps integral) lose nothing.

    ``sigma_range`` (trained VE σ on [-1, 1]) defaults to the SDE's ``(σ/α at t_min, σ/α at T)``.
    """

    def __init__(self, net: nn.Module, sde: SDE, parametrization: str = "eps", time_input="t",
                 num_steps: int = 1000, data_shape=None, sigma_range=None):
        super().__init__()
        if parametrization not in _PARAMS:
            raise ValueError(f"unknown parametrization {parametrization!r}; expected one of {_PARAMS}")
        if parametrization == "v":
            t = torch.linspace(sde.t_min, sde.T, 7, dtype=torch.float64)
            if not torch.allclose(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones_like(t), atol=1e-6):
                raise ValueError("the 'v' parametrization needs a variance-preserving SDE (alpha² + sigma² = 1); "
                                 f"got {sde!r}: use VPSDE or another parametrization")
        self.net = freeze(net)
        self.sde, self.parametrization, self.num_steps = sde, parametrization, num_steps
        needs = {"step": ("timestep",), "step_nearest": ("timestep", "step_to_t")}
        needs = needs.get(time_input, ()) if isinstance(time_input, str) else ()
        if not all(callable(getattr(sde, m, None)) for m in needs):
            raise ValueError(f"time_input={time_input!r} needs a discrete-schedule SDE with timestep(t) "
                             f"(DiscreteVPSDE); got {sde!r}")
        self.time_input = time_input
        self.data_shape = tuple(data_shape) if data_shape is not None else None
        if sigma_range is None:
            ends = torch.tensor([sde.t_min, sde.T], dtype=torch.float64)
            sigma_range = sde.ratio(ends).tolist()
        self.sigma_range = tuple(float(s) for s in sigma_range)

    def _cond(self, t):
        ti = self.time_input
        if callable(ti):
            return ti(t, self.sde)
        if ti == "t":
            return t
        if ti == "sigma":
            return self.sde.sigma(t)
        if ti == "ddpm":
            return t / self.sde.T * (self.num_steps - 1)
        if ti == "step":
            return self.sde.timestep(t)
        if ti == "step_nearest":
            return torch.round(self.sde.timestep(t))
        raise ValueError(f"unknown time_input {ti!r}; expected 't', 'sigma', 'ddpm', 'step', 'step_nearest' or a "
                         "callable (t, sde)")

    def denoise(self, x, sigma):
        t = self.sde.ratio_to_t(sigma).clamp(self.sde.t_min, self.sde.T)
        if self.time_input == "step_nearest":
            # evaluate at the nearest trained step: its alpha, sigma and integral index (see the class docstring)
            t = self.sde.step_to_t(torch.round(self.sde.timestep(t))).to(t.dtype)
        a, s = bcast(self.sde.alpha(t), x), bcast(self.sde.sigma(t), x)
        xt = a * x
        out = self.net(xt, self._cond(t))
        p = self.parametrization
        if p == "x0":
            return out
        if p == "eps":
            return (xt - s * out) / a
        if p == "v":
            return a * xt - s * out
        if p == "flow":
            f, g2 = bcast(self.sde.f(t), x), bcast(self.sde.g2(t), x)
            da, ds = f * a, (g2 + 2 * f * s**2) / (2 * s)
            return (s * out - ds * xt) / (da * s - ds * a)
        return (xt + s**2 * out) / a


def _name(prior) -> str:
    fn = getattr(prior, "fn", None)
    inner = getattr(fn, "__qualname__", type(fn).__name__) if fn is not None else None
    return f"{type(prior).__name__}({inner})" if inner else type(prior).__name__


def as_prior(obj) -> Prior:
    """Return ``obj`` if it is a :class:`Prior`, else wrap a callable denoiser ``D(x, sigma)``."""
    if isinstance(obj, Prior):
        return obj
    if callable(obj):
        return CallablePrior(obj)
    raise TypeError(f"expected a Prior or a callable denoiser D(x, sigma), got {type(obj).__name__}")


class Diffusion:
    """A frozen prior seen through a forward SDE: Tweedie estimate, score and noise prediction at time t.

    Counts network evaluations in :attr:`nfe` and backward passes through the network in :attr:`vjp` (a
    gradient hook on each differentiable x̂0 fires once per backward pass through it); both are Python ints,
    so counting never syncs a device.
    Conditional terms subclass or wrap this and override :meth:`x0`; the score and eps follow from it,
    so every sampler is guided the same way (Dhariwal & Nichol 2021, Algorithm 2 vs eq. 12–14: adding
    ``∇ log p`` to the score is the same as shifting eps by ``−sigma ∇ log p``).
    """

    def __init__(self, prior, sde: SDE):
        self.prior, self.sde = as_prior(prior), sde
        self.nfe = 0
        self.vjp = 0

    def _count_backward(self, grad):
        self.vjp += 1

    def x0(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Tweedie estimate E[x0 | x_t] = D(x_t / alpha(t), sigma(t)/alpha(t))."""
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        a = bcast(self.sde.alpha(t), x)
        self.nfe += 1
        # a float64 closed-form prior must not promote a float32 state: the sampler's dtype is the caller's
        out = self.prior.denoise(x / a, per_sample(self.sde.ratio(t), x))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise TypeError(f"prior {_name(self.prior)} returned {got} for an input of shape {tuple(x.shape)}; a "
                            "denoiser D(x, sigma) must return a tensor of its input's shape")
        out = out.to(x.dtype)
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def score_from_x0(self, x, t, x0):
        """``(alpha x0 − x) / sigma²``: the score implied by a Tweedie estimate (no network call)."""
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        return (bcast(self.sde.alpha(t), x) * x0 - x) / bcast(self.sde.sigma(t) ** 2, x)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """∇_x log p_t(x) from the Tweedie estimate."""
        return self.score_from_x0(x, t, self.x0(x, t))

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Noise prediction ``(x − alpha x0_hat) / sigma`` (= −sigma · score)."""
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        return (x - bcast(self.sde.alpha(t), x) * self.x0(x, t)) / bcast(self.sde.sigma(t), x)

    def post_step(self, x: torch.Tensor, t: torch.Tensor, generator=None, final: bool = False) -> torch.Tensor:
        """Correction applied after every sampler step (identity here; projections override it).
        ``final`` marks the noise-free state returned to the user."""
        return x
