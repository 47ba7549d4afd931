"""Forward SDEs of Song et al. 2021 (Score SDE): VE, VP and sub-VP; EDM's σ(t) = t (Karras et al. 2022); and
DDPM's discrete table, :class:`DiscreteVPSDE` (in :mod:`invscore.sde_discrete`, re-exported here).

Every SDE here is linear with a Gaussian perturbation kernel

    x_t = alpha(t) * x_0 + sigma(t) * z,        z ~ N(0, I)             (Song et al. 2021, eq. 29, 33)

and is described by its drift ``f(t) x`` and diffusion ``g(t)`` (eq. 5). What differs between VE, VP and
sub-VP lives here and nowhere else: samplers only call the methods below, so they never branch on the
type of the SDE. Times are tensors, either 0-d or of shape ``(B,)``.
"""
from __future__ import annotations

import abc
import math

import torch

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "EDMSDE", "DiscreteVPSDE", "FlowSDE", "ReverseSDE", "bcast",
           "make_sde"]


def bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a 0-d or per-sample ``(B,)`` tensor so it broadcasts against ``x`` of shape ``(B, ...)``."""
    if v.ndim == 0:
        return v
    return v.reshape(-1, *([1] * (x.ndim - 1)))


class SDE(abc.ABC):
    """A linear forward SDE ``dx = f(t) x dt + g(t) dw`` on ``t ∈ [t_min, T]`` (Song et al. 2021, eq. 5).

    Subclasses give ``log_alpha(t)``, ``sigma(t)``, ``f(t)``, ``g2(t)``, ``ratio_to_t`` and the prior's
    scale; everything else (marginals, the reverse SDE, the probability-flow ODE, prior sampling and
    log-density, the SMLD/DDPM discretisation) is derived here.
    """

    T: float = 1.0
    t_min: float = 1e-5

    # -- what a subclass defines -------------------------------------------------------------
    @abc.abstractmethod
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """log of the signal scale alpha(t) of the perturbation kernel."""

    @abc.abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise std sigma(t) of the perturbation kernel."""

    @abc.abstractmethod
    def f(self, t: torch.Tensor) -> torch.Tensor:
        """Scalar drift coefficient: the drift is ``f(t) * x`` (= d log alpha / dt)."""

    @abc.abstractmethod
    def g2(self, t: torch.Tensor) -> torch.Tensor:
        """Squared diffusion g(t)² (= d sigma²/dt − 2 f sigma²)."""

    @abc.abstractmethod
    def ratio_to_t(self, r: torch.Tensor) -> torch.Tensor:
        """Invert the noise-to-signal ratio: the t with sigma(t) / alpha(t) = r."""

    prior_std: float = 1.0

    # -- derived ------------------------------------------------------------------------------
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Signal scale alpha(t) of the perturbation kernel."""
        return torch.exp(self.log_alpha(t))

    def ratio(self, t: torch.Tensor) -> torch.Tensor:
        """Noise-to-signal ratio sigma(t)/alpha(t): the VE noise level of x_t / alpha(t) (EDM eq. 4)."""
        return self.sigma(t) / self.alpha(t)

    def check_t(self, t: torch.Tensor) -> None:
        """Raise if any time lies outside ``[t_min, T]`` (host check; call outside hot loops)."""
        t = torch.as_tensor(t)
        lo, hi = float(t.min()), float(t.max())
        if lo < self.t_min * (1 - 1e-6) or hi > self.T * (1 + 1e-6):
            raise ValueError(
                f"time outside the SDE's range: got t in [{lo:.3g}, {hi:.3g}], expected "
                f"[t_min={self.t_min:g}, T={self.T:g}]; build time grids with invscore.samplers.time_grid"
            )

    def sde(self, x: torch.Tensor, t: torch.Tensor):
        """Drift ``f(t) x`` and diffusion ``g(t)`` of the forward SDE (eq. 5)."""
        return bcast(self.f(t), x) * x, torch.sqrt(self.g2(t))

    def marginal_prob(self, x0: torch.Tensor, t: torch.Tensor):
        """Mean ``alpha(t) x0`` and std ``sigma(t)`` of the perturbation kernel p_0t(x_t | x_0)."""
        return bcast(self.alpha(t), x0) * x0, self.sigma(t)

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None):
        """Draw x_t ~ p_0t(x_t | x_0); returns ``(x_t, z)``."""
        z = randn_like(x0, generator)
        mean, std = self.marginal_prob(x0, t)
        return mean + bcast(std, x0) * z, z

    def prior_sampling(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """Sample the reference distribution p_T = N(0, prior_std² I)."""
        return self.prior_std * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of p_T = N(0, prior_std² I), summed over all but the batch dimension."""
        d = z[0].numel()
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - z.flatten(1).pow(2).sum(1) / (2 * s2)

    def transition(self, t: torch.Tensor, s: torch.Tensor):
        """Scale and std of p(x_t | x_s) for s < t: ``alpha_t/alpha_s`` and ``sqrt(sigma_t² − a² sigma_s²)``."""
        a = torch.exp(self.log_alpha(t) - self.log_alpha(s))
        var = self.sigma(t) ** 2 - a**2 * self.sigma(s) ** 2
        return a, torch.sqrt(var.clamp_min(0))

    def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor):
        """The Markov chain of the SDE over a step ``dt``: ``x_t = x_{t−dt} + f_i + G_i z``.

        Exact transition of the linear SDE, which is the SMLD chain for VE and the DDPM chain for VP
        (Song et al. 2021, eqs. 1–3 and Appendix B): ``f_i = (a − 1) x`` and ``G_i = std`` with
        ``(a, std) = transition(t, t − dt)``.
        """
        a, std = self.transition(t, t - dt)
        return (bcast(a, x) - 1) * x, std

    def reverse(self, score_fn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (eq. 6) or the probability-flow ODE (eq. 13) for ``score_fn(x, t)``."""
        return ReverseSDE(self, score_fn, probability_flow)

    def time_to_ratio_grid(self, ratios: torch.Tensor) -> torch.Tensor:
        """Map noise-to-signal ratios to times, clamped into ``[t_min, T]``."""
        return self.ratio_to_t(ratios).clamp(self.t_min, self.T)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:g}" for k, v in vars(self).items() if isinstance(v, float))
        return f"{type(self).__name__}({params})"


class ReverseSDE:
    """Reverse-time SDE ``dx = [f x − g² ∇log p_t(x)] dt + g dw̄`` (Song et al. 2021, eq. 6), or with
    ``probability_flow`` the ODE ``dx/dt = f x − ½ g² ∇log p_t(x)`` (eq. 13), for ``score_fn(x, t)``; its
    discrete form is :meth:`step`. The samplers' drifts (invscore.samplers.pc and .ode) all come from here."""

    def __init__(self, sde: SDE, score_fn, probability_flow: bool = False):
        self.fwd, self.score_fn, self.probability_flow = sde, score_fn, probability_flow
        self._w = 0.5 if probability_flow else 1.0

    def sde(self, x: torch.Tensor, t: torch.Tensor):
        """Drift and diffusion of the reverse process (in forward time: integrate with dt < 0)."""
        g2 = self.fwd.g2(t)
        # g² from g2(t) itself: squaring the diffusion sqrt(g2) would add a rounding error
        drift = bcast(self.fwd.f(t), x) * x - self._w * bcast(g2, x) * self.score_fn(x, t)
        return drift, torch.zeros_like(g2) if self.probability_flow else torch.sqrt(g2)

    def step(self, x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor):
        """Reverse-diffusion step from t to t − dt (Song et al. eq. 46): ``x_{t−dt} = m + G_i z`` with mean
        ``m = x − f_i + G_i² s`` (½ G_i² s and no noise for the probability flow) and the forward chain's
        ``(f_i, G_i)`` from :meth:`SDE.discretize`. Returns ``(m, G_i)``."""
        f, G = self.fwd.discretize(x, t, dt)
        mean = x - f + self._w * bcast(G**2, x) * self.score_fn(x, t)
        return mean, torch.zeros_like(G) if self.probability_flow else G

    def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor):
        """Song et al.'s form of :meth:`step`: ``(rev_f, rev_G)`` with ``x_{t−dt} = x − rev_f + rev_G z``."""
        mean, G = self.step(x, t, dt)
        return x - mean, G


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, from ``generator`` (on ``x``'s device and dtype)."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class VESDE(SDE):
    """Variance exploding SDE (SMLD/NCSN): ``sigma(t) = σ_min (σ_max/σ_min)^t``, ``alpha = 1``,
    ``g² = d sigma²/dt = 2 sigma² log(σ_max/σ_min)`` (Song et al. 2021, eq. 30)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0, t_min: float = 1e-5):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"{type(self).__name__} needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.T, self.t_min = float(sigma_min), float(sigma_max), float(T), float(t_min)
        self.prior_std = self.sigma_max

    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def log_alpha(self, t):
        return torch.zeros_like(torch.as_tensor(t))

    def sigma(self, t):
        return self.sigma_min * torch.exp(torch.as_tensor(t) / self.T * self._log_ratio())

    def f(self, t):
        return torch.zeros_like(torch.as_tensor(t))

    def g2(self, t):
        return 2 * self.sigma(t) ** 2 * self._log_ratio() / self.T

    def ratio_to_t(self, r):
        return torch.log(torch.as_tensor(r) / self.sigma_min) / self._log_ratio() * self.T


class VPSDE(SDE):
    """Variance preserving SDE (DDPM), linear ``beta(t) = β_0 + t (β_1 − β_0)``:
    ``f = −½ beta(t)``, ``g² = beta(t)``, ``alpha = exp(−½ ∫beta)``, ``sigma² = 1 − alpha²`` (eq. 32–33)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, t_min: float = 1e-5):
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"VPSDE needs 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.T, self.t_min = float(beta_min), float(beta_max), float(T), float(t_min)

    def beta(self, t):
        """Noise rate beta(t), linear in t."""
        return self.beta_min + torch.as_tensor(t) / self.T * (self.beta_max - self.beta_min)

    def int_beta(self, t):
        """∫_0^t beta(s) ds."""
        t = torch.as_tensor(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T

    def log_alpha(self, t):
        return -0.5 * self.int_beta(t)

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.int_beta(t)))

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def _t_of_int_beta(self, B):
        # solve ½ (β1 − β0)/T t² + β0 t − B = 0 for t >= 0 (stable form of the quadratic root)
        a = 0.5 * (self.beta_max - self.beta_min) / self.T
        return 2 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 4 * a * B))

    def ratio_to_t(self, r):
        # sigma/alpha = r  <=>  alpha² = 1/(1+r²)  <=>  ∫beta = log(1 + r²)
        return self._t_of_int_beta(torch.log1p(torch.as_tensor(r) ** 2))


class SubVPSDE(VPSDE):
    """sub-VP SDE: VP's drift with ``g² = beta(t) (1 − exp(−2∫beta))``, so ``sigma = 1 − alpha²``
    (Song et al. 2021, eq. 34); its variance is bounded by VP's at every t."""

    def sigma(self, t):
        return -torch.expm1(-self.int_beta(t))

    def g2(self, t):
        return self.beta(t) * -torch.expm1(-2 * self.int_beta(t))

    def ratio_to_t(self, r):
        # (1 − a²)/a = r  =>  a = (sqrt(r² + 4) − r)/2,  ∫beta = −2 log a
        r = torch.as_tensor(r)
        a = 2 / (torch.sqrt(r**2 + 4) + r)
        return self._t_of_int_beta(-2 * torch.log(a))


class EDMSDE(VESDE):
    """EDM's SDE (Karras et al. 2022, Sec. 3 and Table 1): σ(t) = t, s(t) = 1 — the VE SDE whose time is its
    noise level, ``alpha = 1``, ``f = 0``, ``g² = dσ²/dt = 2t`` on ``t ∈ [σ_min, σ_max]``. Its probability-flow
    ODE is ``dx/dt = −t ∇log p_t(x) = (x − D(x; t))/t`` (eq. 4), so Heun on the ``'edm'`` time grid (eq. 5)
    is EDM's deterministic sampler, Algorithm 1."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        super().__init__(sigma_min, sigma_max, T=sigma_max, t_min=sigma_min)

    def sigma(self, t):
        return torch.as_tensor(t).clone()

    def g2(self, t):
        return 2 * torch.as_tensor(t)

    def ratio_to_t(self, r):
        return torch.as_tensor(r).clone()


_SDES = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE, "edm": EDMSDE}


def make_sde(name: str, **kwargs) -> SDE:
    """Build an SDE by name: ``'ve'``, ``'vp'``, ``'subvp'``, ``'edm'`` or ``'flow'`` (rectified flow's path)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _SDES:
        raise ValueError(f"unknown SDE {name!r}; expected one of {sorted(_SDES)}")
    return _SDES[key](**kwargs)


from .sde_discrete import DiscreteVPSDE  # noqa: E402  (it subclasses SDE, defined above)
from .sde_flow import FlowSDE  # noqa: E402

_SDES["flow"] = FlowSDE
