"""Forward SDEs of Song et al. 2021 (Score SDE): VE, VP and sub-VP; and EDM's σ(t) = t (Karras et al. 2022).

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

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "EDMSDE", "DiscreteVPSDE", "ReverseSDE", "bcast", "make_sde"]


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


def _float_t(t) -> torch.Tensor:
    """``t`` as a floating-point tensor (integers and Python numbers get the default dtype)."""
    t = torch.as_tensor(t)
    return t if torch.is_floating_point(t) else t.to(torch.get_default_dtype())


class DiscreteVPSDE(SDE):
    """The VP SDE of a discrete DDPM schedule: a table ``ᾱ_0 > … > ᾱ_{N−1}`` (``alphas_cumprod``), whose Markov
    chain ``x_i = sqrt(1 − β_i) x_{i−1} + sqrt(β_i) z``, ``β_i = 1 − ᾱ_i/ᾱ_{i−1}`` (Ho et al. 2020, eq. 2 and 4)
    is Song et al.'s discretisation of VP (2021, Appendix B), so a model trained on the table is run by every
    sampler at the timesteps it was trained on.

    Continuous time: step ``i`` sits at ``t_i = (i + 1)/N`` (``T = 1``, ``t_min = t_0 = 1/N``; the data,
    ``ᾱ = 1``, at ``t = 0``), and ``log ᾱ(t)`` is piecewise linear between the knots ``(k/N, log ᾱ_{k−1})``,
    ``k = 0 … N`` (with ``ᾱ_{−1} = 1``). Hence ``alpha(t_i)² = ᾱ_i`` exactly, ``sigma² = 1 − alpha²`` (VP),
    ``f = d log alpha/dt`` is constant on each step (``½ N log(1 − β_i)`` on ``(t_{i−1}, t_i)``; the right
    segment at a knot), ``g² = −2 f`` (``= −N log(1 − β_i) ≈ N β_i``), :meth:`ratio_to_t` inverts exactly by
    the same interpolation, and :meth:`discretize` from ``t_{i−1}`` to ``t_i`` is DDPM's ``β_i``. Beyond ``T``
    the last segment is extended (for clamping callers); below 0, ``alpha = 1``. The network's conditioning
    is :meth:`timestep` ``i(t) = N t − 1`` (fractional between trained steps); see NetworkPrior's
    ``time_input='step'`` (interpolated) and ``'step_nearest'`` (snapped to a trained step).
    """

    T = 1.0

    def __init__(self, alphas_cumprod):
        ac = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).flatten()
        if ac.numel() < 2:
            raise ValueError(f"DiscreteVPSDE needs at least 2 steps in alphas_cumprod, got {ac.numel()}")
        if not bool(((ac > 0) & (ac < 1)).all()) or not bool((ac[1:] < ac[:-1]).all()):
            raise ValueError("DiscreteVPSDE needs alphas_cumprod strictly decreasing in (0, 1); got values in "
                             f"[{float(ac.min()):.3g}, {float(ac.max()):.3g}]")
        self.alphas_cumprod = ac
        self._N = int(ac.numel())
        self.T, self.t_min = 1.0, 1.0 / self._N
        # knots k/N, k = 0..N, of log ᾱ: 0 (the data) then log ᾱ_0 … log ᾱ_{N−1}
        self._logac = torch.cat([ac.new_zeros(1), torch.log(ac)])
        self._cache: dict = {}

    # -- construction from a schedule ----------------------------------------------------------
    @classmethod
    def from_betas(cls, betas) -> "DiscreteVPSDE":
        """The SDE of per-step noise rates ``β_i`` in (0, 1): ``ᾱ_i = Π_{j≤i} (1 − β_j)`` (Ho et al. 2020)."""
        b = torch.as_tensor(betas).detach().to("cpu", torch.float64).flatten()
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError(f"betas must lie in (0, 1); got values in [{float(b.min()):.3g}, {float(b.max()):.3g}]")
        return cls(torch.exp(torch.cumsum(torch.log1p(-b), 0)))

    @classmethod
    def schedule(cls, kind: str = "linear", num_steps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> "DiscreteVPSDE":
        """A standard schedule of ``num_steps`` steps:

        - ``'linear'``: ``β_i`` linear from ``beta_start`` to ``beta_end`` (DDPM, Ho et al. 2020; with N = 1000
          it is VPSDE(0.1, 20) discretised, Song et al. 2021, eq. 32);
        - ``'scaled_linear'``: ``sqrt(β_i)`` linear from ``sqrt(beta_start)`` to ``sqrt(beta_end)`` (Stable
          Diffusion; pass its beta_start=0.00085, beta_end=0.012);
        - ``'cosine'``: ``ᾱ(u) = cos²((u + s)/(1 + s)·π/2)/cos²(s/(1+s)·π/2)``, ``s = 0.008``,
          ``β_i = min(1 − ᾱ((i+1)/N)/ᾱ(i/N), 0.999)`` (Nichol & Dhariwal 2021, eq. 17; beta_start/end unused).
        """
        n = int(num_steps)
        if n < 2:
            raise ValueError(f"num_steps must be >= 2, got {num_steps}")
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
        elif kind == "cosine":
            s = 0.008
            u = torch.arange(n + 1, dtype=torch.float64) / n
            fbar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - fbar[1:] / fbar[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"unknown schedule {kind!r}; expected 'linear', 'scaled_linear' or 'cosine'")
        return cls.from_betas(betas)

    # -- the table --------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """N, the number of trained steps."""
        return self._N

    @property
    def betas(self) -> torch.Tensor:
        """DDPM's ``β_i = 1 − ᾱ_i/ᾱ_{i−1}`` (float64, ``ᾱ_{−1} = 1``)."""
        return -torch.expm1(self._logac[1:] - self._logac[:-1])

    def timestep(self, t) -> torch.Tensor:
        """The fractional step index ``i(t) = N t − 1`` in ``[0, N − 1]`` a network is conditioned on (clamped)."""
        t = _float_t(t)
        return (t * self._N - 1).clamp(0, self._N - 1)

    def step_to_t(self, i) -> torch.Tensor:
        """The time ``t_i = (i + 1)/N`` of (possibly fractional) step ``i``: the inverse of :meth:`timestep`."""
        return (_float_t(i) + 1) / self._N

    def _table(self, t: torch.Tensor) -> torch.Tensor:
        key = (t.device, t.dtype)
        tab = self._cache.get(key)
        if tab is None:
            tab = self._cache[key] = self._logac.to(device=t.device, dtype=t.dtype)
        return tab

    def _segment(self, t: torch.Tensor):
        """Knot index k in [0, N−1] and the slope of log ᾱ (per unit t) on [k/N, (k+1)/N]."""
        L = self._table(t)
        k = torch.floor(t * self._N).clamp(0, self._N - 1).long()
        return k, L, (L[k + 1] - L[k]) * self._N

    def _log_ac(self, t) -> torch.Tensor:
        """log ᾱ(t), piecewise linear in t (extended linearly beyond T; 0 for t <= 0)."""
        t = _float_t(t).clamp_min(0)
        k, L, slope = self._segment(t)
        return L[k] + (t * self._N - k) * (L[k + 1] - L[k])

    # -- the SDE ------------------------------------------------------------------------------------
    def log_alpha(self, t):
        return 0.5 * self._log_ac(t)

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self._log_ac(t)))

    def ratio(self, t):
        # sigma/alpha = sqrt(1/ᾱ − 1), without the cancellation of 1 − ᾱ for small t
        return torch.sqrt(torch.expm1(-self._log_ac(t)))

    def f(self, t):
        t = _float_t(t)
        _, _, slope = self._segment(t)
        return torch.where(t < 0, torch.zeros_like(slope), 0.5 * slope)

    def g2(self, t):
        return -2 * self.f(t)

    def transition(self, t, s):
        # VP: sigma_t² − a² sigma_s² = 1 − alpha_t²/alpha_s², computed without cancellation
        d = self._log_ac(t) - self._log_ac(s)
        return torch.exp(0.5 * d), torch.sqrt((-torch.expm1(d)).clamp_min(0))

    def ratio_to_t(self, r):
        r = _float_t(r)
        L = self._table(r)
        target = torch.log1p(r**2)  # −log ᾱ, increasing along the knots
        neg = -L
        k = (torch.searchsorted(neg, target.reshape(-1).contiguous(), right=True) - 1).clamp(0, self._N - 1)
        k = k.reshape(target.shape)
        w = (target - neg[k]) / (neg[k + 1] - neg[k])
        return ((k + w) / self._N).clamp_min(0)

    def __repr__(self) -> str:
        ac = self.alphas_cumprod
        return f"DiscreteVPSDE(num_steps={self._N}, alphas_cumprod=[{float(ac[0]):.6g} … {float(ac[-1]):.6g}])"


_SDES = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE, "edm": EDMSDE}


def make_sde(name: str, **kwargs) -> SDE:
    """Build an SDE by name: ``'ve'``, ``'vp'``, ``'subvp'`` or ``'edm'``."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _SDES:
        raise ValueError(f"unknown SDE {name!r}; expected one of {sorted(_SDES)}")
    return _SDES[key](**kwargs)
