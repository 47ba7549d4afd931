"""Measurement terms: ∇ log p_t(y | x_t) or a data-consistency correction after each step.

All work in the operator's spectral coordinates where it has an SVD (``operators.SVDOperator``:
``V_T``, ``V``, ``U_T``, ``U``, singular values ``s``; ``ȳ = diag(1/s) Uᵀy``, per-coordinate noise
``ν_i = σ_y / s_i``), and in the variance-exploding view ``x̄ = x_t / α`` with noise ``r = σ/α``, so
the same code serves VE, VP and sub-VP and every SVD operator (masks, colour, pooling, FFT blur).
"""
from __future__ import annotations

import torch

from ..samplers.common import check_noise_scale
from ..sde import bcast
from ..utils import per_sample
from .guided import Term

__all__ = ["Projection", "DDRMCorrection", "DPS", "PiGDM", "MMPS", "require_svd"]


def require_svd(op, method: str):
    """Raise a TypeError naming the methods that take ``op`` when ``method`` needs an SVD operator."""
    from operators import SVDOperator
    if not isinstance(op, SVDOperator):
        from .methods import methods_for  # the registry knows which methods take which operators
        raise TypeError(f"method {method!r} needs an operator with an SVD (operators.SVDOperator: masks, "
                        f"grayscale, average-pool SR, FFT blur, dense); got {type(op).__name__}. "
                        f"Methods that take it: {', '.join(methods_for(op)) or 'none'}")


def _spectral_noise(op, x, generator):
    # Noise drawn in image space and transformed, so complex (FFT) coordinates keep Hermitian symmetry.
    e = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return op.V_T(e)


class _SpectralTerm(Term):
    def __init__(self, op, y, sigma_y=None, method="projection"):
        require_svd(op, method)
        op.check_output(y)
        self.op = op
        self.ybar = op.y_spectral(y)  # (B, R)
        self.nu = op.spectral_noise_std(sigma_y).to(y.device, y.real.dtype)  # (R,), inf where unmeasured
        self.measured = torch.isfinite(self.nu)
        self.R = self.ybar.shape[1]

    def _rebuild(self, z_full, head, a, x):
        """Map spectral coordinates back to x_t = α V z, keeping unmeasured coordinates of ``z_full``."""
        R = self.R
        head = torch.where(self.measured, head, z_full[:, :R])
        z = torch.cat([head, z_full[:, R:]], dim=1) if R < z_full.shape[1] else head
        return bcast(a, x) * self.op.V(z)


class Projection(_SpectralTerm):
    """Imputation by projection (Song et al. 2021, App. I.1; colorization I.2, through the operator's SVD):
    after each step the measured spectral coordinates of x̄ = x_t/α are replaced by the measurement
    diffused to the same noise level, ``ȳ + sqrt(r² − ν²) ε``. Noise-aware for ``σ_y > 0``: where the
    measurement is noisier than the state (``ν > r``) they are averaged with precision weights,
    ``x̄ ← (ν² x̄ + r² ȳ)/(r² + ν²)``, so a noisy y is not taken as exact (cf. DDRM eq. 8)."""

    def post(self, x, t, generator=None, final=False, model=None):
        sde = model.sde
        a, r = sde.alpha(t), per_sample(sde.ratio(t), x)[:, None]
        z = self.op.V_T(x / bcast(a, x))
        cur = z[:, :self.R]
        eps = 0 if final else _spectral_noise(self.op, x, generator)[:, :self.R]
        nu = self.nu
        exact = self.ybar + torch.sqrt((r**2 - nu**2).clamp_min(0)) * eps
        nu2 = torch.where(self.measured, nu**2, torch.zeros_like(nu))
        blend = (nu2 * cur + r**2 * self.ybar) / (r**2 + nu2).clamp_min(1e-30)
        head = torch.where(r >= nu, exact, blend)
        return self._rebuild(z, head, a, x)


class DDRMCorrection(_SpectralTerm):
    """DDRM (Kawar et al. 2022, eq. 7–8) as a correction after a DDIM step with the same η, in the operator's
    spectral coordinates z = Vᵀx_t/α, from the step's Tweedie estimate z̄0 (noise ratio r_t → r_s):

    - unmeasured (s_i = 0, or ν_i >= ``nu_max``; eq. 7 top): ``z̄0 + sqrt(1−η²) r_s (z_t − z̄0)/r_t + η r_s ε``
    - ``r_s < ν`` (measurement noisier): ``z̄0 + sqrt(1−η²) r_s (ȳ − z̄0)/ν + η r_s ε``
    - ``r_s ≥ ν``: ``(1 − η_b) z̄0 + η_b ȳ + sqrt(r_s² − η_b² ν²) ε``.

    The DDIM step (noise ``c = η r_s sqrt(1 − r_s²/r_t²)``, deterministic part
    ``sqrt(r_s² − c²)(z_t − z̄0)/r_t``) is turned into eq. 7 on the unmeasured coordinates by adding
    ``(sqrt(1−η²) r_s − sqrt(r_s² − c²))(z_t − z̄0)/r_t`` and independent noise of variance
    ``η² r_s² − c² = η² r_s⁴/r_t²``, so other guidance terms that shifted the DDIM step's Tweedie estimate
    keep their effect.

    ``unmeasured="ddim"`` keeps the DDIM step there instead (the version before this one). The trade-off,
    measured: eq. 7 redraws noise around z̄0 (η = 1 forgets z_t), which moves samples between modes — on
    held-out mixture problems (``invscore.testing.mixture_problem``, seed 5, 100 steps from the SDE's T, before
    ``r_max``) the SW to the exact posterior falls from 72.7 to 7.9 × floor (d=8, d_y=4) and from 9.6 to 6.9
    (d=8, d_y=1) — but, with a
    Tweedie *mean* in place of a sample, it under-disperses a unit Gaussian prior: variance 0.71 instead of
    1 on the unmeasured coordinates at η = 0.85 (0.94 with the DDIM form), 0.46 at η = 1.

    ``nu_max``: coordinates whose ȳ is noisier than this (``ν_i = σ_y/s_i >= nu_max``, data units) count as
    unmeasured (eq. 7) — the cut deepinv's DDRM makes (``s_i <= σ_y`` in its [0, 1] units, i.e. ν_i at or
    above its σ_max, 2 in [-1, 1] units) and the official code's initialisation makes (``s_i σ_T <= σ_y``).
    Why: eq. 8's ``r_s < ν`` branch adds the *same* vector (ȳ − z̄0)/ν ≈ n, ȳ's noise, at every step; where
    ν is far above the data's scale ȳ says almost nothing, and at small r the Tweedie estimate keeps what
    earlier steps added, so that fixed noise piles up with the number of steps. Measured: a Gaussian
    coordinate with ν = 10 and prior sd 0.1 (``tests/test_ddrm.py``) drifts by −0.06 / −0.22 posterior sd
    at 20 / 200 steps without the cut, ≤ 0.02 with it; FFT Gaussian deblurring of 8 held-out Fashion-MNIST
    images (σ_y = 0.05, η = 0.85, 3 seeds) gives 22.08 / 22.31 / 21.87 dB at 20 / 50 / 100 steps without
    the cut, 21.98 / 22.53 / 22.73 with ``nu_max = 2``. ``nu_max = inf`` is eq. 8 on every s_i > 0.

    ``noise_scale`` multiplies every ε above and in :meth:`initial` (with the DDIM step's, see
    :func:`~invscore.samplers.sample_ddim`): 1 is DDRM; deepinv's implementation draws at 1/√2.
    """

    def __init__(self, op, y, sigma_y=None, eta: float = 0.85, eta_b: float = 1.0, unmeasured: str = "kawar",
                 nu_max: float = 2.0, noise_scale: float = 1.0):
        super().__init__(op, y, sigma_y, "ddrm")
        self.noise_scale = check_noise_scale(noise_scale)
        if not 0 <= eta <= 1:
            raise ValueError(f"DDRM needs 0 <= eta <= 1, got {eta}")
        if unmeasured not in ("kawar", "ddim"):
            raise ValueError(f"unmeasured must be 'kawar' (eq. 7) or 'ddim', got {unmeasured!r}")
        if isinstance(nu_max, bool) or not isinstance(nu_max, (int, float)) or not nu_max > 0:
            raise ValueError(f"DDRM needs a number nu_max > 0 (data units; inf keeps every coordinate with s > 0), "
                             f"got {nu_max!r}")
        # eq. 8 would pile up ȳ's noise on coordinates whose ȳ is mostly noise; eq. 7 does not (docstring)
        self.nu = torch.where(self.nu < nu_max, self.nu, torch.full_like(self.nu, float("inf")))
        self.measured = torch.isfinite(self.nu)
        self.unmeasured, self.nu_max = unmeasured, float(nu_max)
        self.eta, self.eta_b, self._x0, self._xt, self._t = float(eta), float(eta_b), None, None, None

    def initial(self, x, t, model, generator=None):
        """DDRM's start at noise ratio r_T (Kawar et al. 2022, eq. 7–8 at t = T): z_i = ȳ_i + sqrt(r_T² − ν_i²) ε_i
        where measured with ν_i <= r_T, z_i = r_T ε_i elsewhere; returns x_T = α_T V z."""
        sde = model.sde
        a, r = sde.alpha(t), per_sample(sde.ratio(t), x)[:, None]
        z = r * self.noise_scale * _spectral_noise(self.op, x, generator)
        # a coordinate noisier than the start (ν > r_T, only below nu_max) starts unmeasured: ȳ alone would
        # carry more noise than the state's r_T
        head = torch.where(r >= self.nu, self.ybar + torch.sqrt((r**2 - self.nu**2).clamp_min(0)) * z[:, :self.R] / r,
                           z[:, :self.R])
        return self._rebuild(z, head, a, x)

    def score(self, x, t, x0, model):
        self._x0, self._xt, self._t = x0.detach(), x.detach(), t
        return None

    def post(self, x, t, generator=None, final=False, model=None):
        if self._x0 is None:
            return x
        sde = model.sde
        a, r = sde.alpha(t), per_sample(sde.ratio(t), x)[:, None]
        z = self.op.V_T(x / bcast(a, x))
        z0_full = self.op.V_T(self._x0)
        z0 = z0_full[:, :self.R]
        nu, eta, eta_b = self.nu, self.eta, self.eta_b
        # one draw serves both parts: measured and unmeasured coordinates of an orthonormal V are independent
        e = None if final else self.noise_scale * _spectral_noise(self.op, x, generator)
        eps = 0 if final else e[:, :self.R]
        if not final and self.unmeasured == "kawar":
            # unmeasured coordinates: DDIM(η) -> DDRM eq. 7 (top)
            r_t = per_sample(sde.ratio(self._t), x)[:, None]
            rho2 = (r / r_t) ** 2
            c2 = eta**2 * r**2 * (1 - rho2)
            coef = ((1 - eta**2) ** 0.5 * r - torch.sqrt((r**2 - c2).clamp_min(0))) / r_t
            zt = self.op.V_T(self._xt / bcast(sde.alpha(self._t), x))
            z = z + coef * (zt - z0_full) + eta * r * torch.sqrt(rho2) * e
        nu_safe = torch.where(self.measured, nu, torch.ones_like(nu)).clamp_min(1e-30)
        noisy = z0 + (1 - eta**2) ** 0.5 * r * (self.ybar - z0) / nu_safe + eta * r * eps
        clean = (1 - eta_b) * z0 + eta_b * self.ybar + torch.sqrt((r**2 - eta_b**2 * nu**2).clamp_min(0)) * eps
        head = torch.where(r < nu, noisy, clean)
        if final:
            self._x0 = self._xt = self._t = None
        return self._rebuild(z, head, a, x)


class DPS(Term):
    """Diffusion posterior sampling (Chung et al. 2023, Algorithm 1): after each step,
    ``x ← x − ζ_i ∇_{x_t} ‖y − A(x̂0(x_t))‖²`` with the paper's step rule ``ζ_i = ζ'/‖y − A(x̂0)‖``.
    Works with any differentiable operator, linear or not; costs a backward pass per step. This is the
    algorithm as printed: the authors' code steps along ∇‖r‖ (not ∇‖r‖²), so their ζ' is twice ours."""

    needs_grad = True

    def __init__(self, op, y, zeta: float = 1.0):
        op.check_output(y)
        self.op, self.y, self.zeta, self._corr = op, y, float(zeta), None

    def score(self, x, t, x0, model):
        res = (self.y - self.op(x0)).flatten(1)
        sq = res.pow(2).sum(1)
        grad = torch.autograd.grad(sq.sum(), x, retain_graph=_keep(model, self))[0]
        self._corr = -self.zeta * grad / bcast(sq.detach().sqrt().clamp_min(1e-12), x)
        return None

    def post(self, x, t, generator=None, final=False, model=None):
        if self._corr is None:
            return x
        x, self._corr = x + self._corr, None
        return x


def _keep(model, term) -> bool:
    """Keep x̂0's graph after ``term``'s backward pass unless the guided model says it is the last user."""
    keep = getattr(model, "keep_graph", None)
    return True if keep is None else keep(term)


def _require_linear(op, method: str):
    from operators import LinearOperator
    if not isinstance(op, LinearOperator):
        raise TypeError(f"{method} needs a linear operator (operators.LinearOperator); got {type(op).__name__}. "
                        "Use method 'dps' for nonlinear operators.")


class PiGDM(Term):
    """Pseudoinverse-guided diffusion (ΠGDM; Song, Vahdat, Mardani & Kautz 2023, eq. 7–8):

        ∇ log p_t(y | x_t) ≈ (∂x̂0/∂x_t)ᵀ Aᵀ (r_t² A Aᵀ + σ_y² I)⁻¹ (y − A x̂0),   r_t² = r²/(1 + r²),

    one vector–Jacobian product per step. The inverse is diagonal in U for SVD operators, conjugate
    gradients otherwise."""

    needs_grad = True

    def __init__(self, op, y, sigma_y=None, weight: float = 1.0):
        _require_linear(op, "ΠGDM")
        op.check_output(y)
        self.op, self.y, self.weight = op, y, float(weight)
        self.sigma_y = op.noise_std(sigma_y)

    def _inv(self, v, r2):
        from operators import SVDOperator, conjugate_gradient
        op, s2 = self.op, self.sigma_y**2
        if isinstance(op, SVDOperator):
            u = op.U_T(v)
            sv = op.singular_values
            denom = torch.full((u.shape[1],), s2, dtype=sv.dtype, device=sv.device)[None].repeat(u.shape[0], 1)
            denom[:, :sv.numel()] = r2[:, None] * sv**2 + s2
            return op.U(u / denom.clamp_min(1e-12))
        r2b = r2.reshape(-1, *([1] * (v.ndim - 1)))
        return conjugate_gradient(lambda w: r2b * op.A(op.A_T(w)) + s2 * w, v, tol=1e-6)

    def score(self, x, t, x0, model):
        r = per_sample(model.sde.ratio(t), x)
        r2 = r**2 / (1 + r**2)
        v = self._inv((self.y - self.op(x0.detach())), r2)
        g = torch.autograd.grad(x0, x, grad_outputs=self.op.A_T(v), retain_graph=_keep(model, self))[0]
        return self.weight * g


class MMPS(Term):
    """Moment-matching posterior sampling (Rozet, Andry, Lanusse & Louppe 2024, Sec. 3; the covariance as in
    TMPD, Boys et al. 2023): p(x0 | x_t) is replaced by the Gaussian with its *true* first two moments,
    the Tweedie mean x̂0 and Tweedie's second-order covariance ``V = Cov[x0 | x_t] = r² ∂x̂0/∂x̄`` (x̄ = x_t/α),
    so that

        ∇ log p_t(y | x_t) ≈ (∂x̂0/∂x_t)ᵀ Aᵀ (σ_y² I + A V Aᵀ)⁻¹ (y − A x̂0).

    ΠGDM is the special case V = r²/(1 + r²) I (unit-variance data); V from the network knows the data's
    scale and which directions x_t has already resolved. ``(σ_y² I + A V Aᵀ) v = y − A x̂0`` is solved by
    ``cg_iters`` conjugate-gradient steps, each one vector–Jacobian product through the same forward pass
    (∂x̂0/∂x̄ is symmetric for an exact denoiser, a Hessian plus identity). The guidance ``Jᵀ Aᵀ v`` is not
    one more VJP: v is a combination of the CG directions, so it is the same combination of their VJPs
    (:func:`_cg_with_vjp`). Cost per step: one network evaluation and ``cg_iters`` backward passes, the last
    of which frees the graph. For a Gaussian prior the approximation is exact."""

    needs_grad = True

    def __init__(self, op, y, sigma_y=None, cg_iters: int = 1, weight: float = 1.0):
        _require_linear(op, "MMPS")
        op.check_output(y)
        if int(cg_iters) < 1:
            raise ValueError(f"cg_iters must be >= 1, got {cg_iters}")
        self.op, self.y, self.weight, self.cg_iters = op, y, float(weight), int(cg_iters)
        self.sigma_y = op.noise_std(sigma_y)

    def score(self, x, t, x0, model):
        sde, op, last = model.sde, self.op, self.cg_iters - 1
        # Cov[x0 | x_t] = r² ∂x̂0/∂x̄ = r² α ∂x̂0/∂x_t
        c = bcast(per_sample(sde.ratio(t), x) ** 2 * per_sample(sde.alpha(t), x), x)
        keep = _keep(model, self)

        def matvec(w, k):
            # only the last CG step may free the graph: no backward pass follows it in this term
            u = torch.autograd.grad(x0, x, grad_outputs=op.A_T(w), retain_graph=keep or k < last)[0]
            return self.sigma_y**2 * w + op.A(c * u), u

        return self.weight * _cg_with_vjp(matvec, self.y - op(x0.detach()), self.cg_iters)


def _bdot(a, b):
    return (a * b).flatten(1).sum(1)


def _cg_with_vjp(matvec, b, iters: int, tol: float = 1e-6):
    """``L v`` for the solution v of ``M v = b`` after ``iters`` conjugate-gradient steps (Hestenes & Stiefel
    1952, started at 0, with :func:`operators.conjugate_gradient`'s per-sample freezing and no convergence
    test), where ``matvec(p, k)`` returns ``(M p, L p)`` for a linear L. Since ``v = Σ_k α_k p_k``,
    ``L v = Σ_k α_k L p_k`` is accumulated from the matvecs: for MMPS, L = (∂x̂0/∂x_t)ᵀ Aᵀ, and the guidance
    needs no backward pass of its own, and the last CG step's backward pass may free the graph."""
    r = b
    p = r
    rs = _bdot(r, r)
    thresh = (tol**2) * rs  # samples whose residual reached round-off are frozen, as in conjugate_gradient
    zero = torch.zeros_like(rs)
    out = None
    for k in range(iters):
        active = rs > thresh
        mp, lp = matvec(p, k)
        pmp = _bdot(p, mp)
        ok = active & (pmp > 0)
        alpha = torch.where(ok, rs / torch.where(ok, pmp, torch.ones_like(pmp)), zero)
        step = alpha.view(-1, *([1] * (lp.dim() - 1))) * lp
        out = step if out is None else out + step
        if k == iters - 1:
            break
        r = r - alpha.view(-1, *([1] * (b.dim() - 1))) * mp
        rs_new = torch.where(ok, _bdot(r, r), rs)
        beta = torch.where(ok, rs_new / torch.where(ok, rs, torch.ones_like(rs)), zero)
        p = r + beta.view(-1, *([1] * (b.dim() - 1))) * p
        rs = rs_new
    return out
