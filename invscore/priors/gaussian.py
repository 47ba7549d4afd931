"""Closed-form priors whose denoiser — hence score at every t under every SDE — is exact.

For x0 ~ N(mu, C) and x = x0 + sigma z the posterior mean is (Bishop 2006, eq. 2.116)

    D(x, sigma) = mu + C (C + sigma² I)^{-1} (x − mu),

computed in C's eigenbasis. A Gaussian mixture's denoiser is the responsibility-weighted sum of its
components' (e.g. Karras et al. 2022, App. B.3). These make every sampler testable against the truth.
"""
from __future__ import annotations

import math

import torch

from .base import Prior

__all__ = ["Gaussian", "DiagonalGaussian", "StationaryGaussian", "GaussianMixture", "linear_gaussian_update"]

_LOG2PI = math.log(2 * math.pi)


def _flat_sigma2(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    return (s.expand(x.shape[0]) if s.ndim == 0 else s).reshape(-1, 1) ** 2


def linear_gaussian_update(C, means, A, y, sigma_y: float):
    """Condition N(mu_k, C) on ``y = A x + σ_y n`` (Bishop 2006, eq. 2.116–2.117), in the stable gain form
    ``K = C Aᵀ S⁻¹``, ``S = A C Aᵀ + σ_y² I``: posterior means ``mu_k + K (y − A mu_k)`` (rows of ``means``),
    the shared covariance ``C − K A C`` and the log-evidence ``log N(y; A mu_k, S)`` up to a constant."""
    S = A @ C @ A.T + sigma_y**2 * torch.eye(A.shape[0], dtype=C.dtype, device=C.device)
    K = torch.linalg.solve(S, A @ C).T
    resid = y[None] - means @ A.T
    cov = C - K @ A @ C
    log_evidence = -0.5 * (resid * torch.linalg.solve(S, resid.T).T).sum(1)
    return means + resid @ K.T, 0.5 * (cov + cov.T), log_evidence


class GaussianMixture(Prior):
    """Mixture ``Σ_k w_k N(mu_k, C_k)`` over vectors ``(B, d)`` (or any sample shape, flattened).

    ``covs``: ``None`` (identity), a ``(K,)`` tensor of isotropic variances, a ``(d, d)`` covariance shared
    by all components, or ``(K, d, d)`` per component. Each covariance is eigendecomposed once,
    ``C_k = Q_k diag(lam_k) Q_kᵀ``; then the noisy marginal ``N(mu_k, C_k + sigma² I)`` and its posterior
    mean cost one rotation (none for isotropic, one shared one for a shared covariance).
    """

    def __init__(self, weights, means, covs=None, data_shape=None):
        super().__init__()
        means = torch.as_tensor(means)
        K, d = means.shape
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if weights.shape != (K,) or (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum, got {tuple(weights.shape)}")
        self.register_buffer("log_w", torch.log(weights / weights.sum()))
        self.register_buffer("means", means)
        Q = None
        if covs is None:
            lam = torch.ones(K, d, dtype=means.dtype, device=means.device)
        else:
            covs = torch.as_tensor(covs, dtype=means.dtype, device=means.device)
            if not torch.isfinite(covs).all():
                raise ValueError("covs has NaN or inf entries; expected finite variances or covariances")
            if covs.shape == (K,):
                if (covs < 0).any():
                    raise ValueError(f"mixture variances must be >= 0, got {covs.tolist()}; a variance is the "
                                     "square of a standard deviation")
                lam = covs[:, None].expand(K, d).clone()
            elif covs.shape in {(d, d), (K, d, d)}:
                lam, Q = torch.linalg.eigh(_check_covariance(covs))
                lam = lam.clamp_min(0).expand(K, d).clone()  # only round-off below 0 is left to clamp
            else:
                raise ValueError(f"covs must be None, ({K},), ({d}, {d}) or ({K}, {d}, {d}); got {tuple(covs.shape)}")
        self.register_buffer("lam", lam)
        self.register_buffer("Q", Q)
        self.data_shape = tuple(data_shape) if data_shape is not None else (d,)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def data_scale(self) -> float:
        """sqrt(max_i E[x_i²]) with E[x_i²] = Σ_k w_k (μ_ki² + (C_k)_ii), (C_k)_ii = Σ_j Q_ij² λ_kj."""
        diag = self.lam if self.Q is None else (self.Q**2 @ self.lam[..., None])[..., 0] if self.Q.ndim == 3 \
            else self.lam @ (self.Q**2).T
        return float((self.log_w.exp()[:, None] * (self.means**2 + diag)).sum(0).max().sqrt())

    def _rotate(self, v, transpose: bool):
        # v: (B, d) or (B, K, d); returns (B, K, d) in (transpose) or out of each component's eigenbasis
        Q = self.Q
        if Q is None:
            return v if v.ndim == 3 else v[:, None, :].expand(-1, self.means.shape[0], -1)
        if Q.ndim == 2:
            out = v @ Q if transpose else v @ Q.T
            return out if out.ndim == 3 else out[:, None, :].expand(-1, self.means.shape[0], -1)
        eq = "bkd,kde->bke" if transpose else "bke,kde->bkd"
        if v.ndim == 2:
            v = v[:, None, :].expand(-1, Q.shape[0], -1)
        return torch.einsum(eq, v, Q)

    def _components(self, x, sigma):
        """Per-component log-weights of N(x; mu_k, C_k + sigma² I) and rotated residuals."""
        xf = x.reshape(x.shape[0], -1)
        s2 = _flat_sigma2(sigma, xf)[:, :, None]  # (B,1,1)
        u = self._rotate(xf, True) - self._rotate(self.means[None], True)[0][None]  # (B,K,d)
        var = self.lam[None] + s2  # (B,K,d)
        logp = self.log_w - 0.5 * (torch.log(var) + u**2 / var).sum(-1) - 0.5 * self.dim * _LOG2PI
        return logp, u, var

    def denoise(self, x, sigma):
        """Posterior mean Σ_k r_k(x) [mu_k + C_k (C_k + sigma² I)^{-1}(x − mu_k)], r_k ∝ w_k N(x; mu_k, C_k + sigma²I)."""
        logp, u, var = self._components(x, sigma)
        r = torch.softmax(logp, dim=1)
        shrunk = self._rotate(u * (self.lam[None] / var), False)  # (B,K,d)
        out = (r[..., None] * (self.means[None] + shrunk)).sum(1)
        return out.reshape(x.shape)

    def log_prob(self, x, sigma=0.0):
        """log p(x) of the mixture convolved with N(0, sigma² I) (sigma = 0: the prior itself)."""
        return torch.logsumexp(self._components(x, torch.as_tensor(sigma))[0], dim=1)

    def component_posterior(self, x, sigma=0.0):
        """Responsibilities r_k(x) ∝ w_k N(x; mu_k, C_k + sigma² I), shape ``(B, K)``."""
        return torch.softmax(self._components(x, torch.as_tensor(sigma))[0], dim=1)

    def sample(self, n: int, generator=None, return_labels: bool = False):
        """Exact samples: a component k ~ w, then mu_k + Q_k diag(sqrt(lam_k)) z."""
        dev = self.means.device
        k = torch.multinomial(self.log_w.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=dev, dtype=self.means.dtype)
        z = z * self.lam[k].sqrt()
        if self.Q is not None:
            Q = self.Q if self.Q.ndim == 2 else self.Q[k]
            z = z @ Q.T if Q.ndim == 2 else torch.einsum("bde,be->bd", Q, z)
        x = (self.means[k] + z).reshape(n, *self.data_shape)
        return (x, k) if return_labels else x


class Gaussian(GaussianMixture):
    """Gaussian prior N(mu, C) with full covariance C (one-component mixture)."""

    def __init__(self, mean, cov, data_shape=None):
        mean = torch.as_tensor(mean)
        super().__init__(torch.ones(1, dtype=mean.dtype, device=mean.device), mean.reshape(1, -1),
                         torch.as_tensor(cov, dtype=mean.dtype, device=mean.device),
                         data_shape=data_shape)

    def posterior(self, A: torch.Tensor, y: torch.Tensor, sigma_y: float):
        """Closed-form posterior of ``y = A x + sigma_y n`` (Bishop eq. 2.116–2.117): mean and covariance
        ``Σ' = (C⁻¹ + AᵀA/σ_y²)⁻¹``, ``mu' = Σ'(C⁻¹ mu + Aᵀ y/σ_y²)`` computed stably as
        ``mu + C Aᵀ (A C Aᵀ + σ_y² I)⁻¹ (y − A mu)``."""
        if self.Q is None:
            C = torch.diag(self.lam[0])
        else:
            Q = self.Q[0] if self.Q.ndim == 3 else self.Q
            C = (Q * self.lam[0]) @ Q.T
        means, cov, _ = linear_gaussian_update(C, self.means, A, y, sigma_y)
        return means[0], cov


def _check_covariance(c: torch.Tensor) -> torch.Tensor:
    """``c`` (..., d, d) symmetrised, if it is a covariance: symmetric and positive semi-definite up to
    round-off (1000 machine epsilons of its largest entry), else a ValueError saying which it is not."""
    scale = c.abs().amax().clamp_min(torch.finfo(c.dtype).tiny)
    tol = 1e3 * torch.finfo(c.dtype).eps * scale
    if ((c - c.transpose(-1, -2)).abs().amax() > tol).item():
        raise ValueError("the covariance is not symmetric (C != Cᵀ); pass a symmetric positive semi-definite "
                         "matrix, e.g. L @ L.T")
    c = 0.5 * (c + c.transpose(-1, -2))
    low = torch.linalg.eigvalsh(c).amin()
    if (low < -tol).item():
        raise ValueError(f"the covariance is not positive semi-definite (smallest eigenvalue {float(low):.3g} < 0); "
                         "pass a symmetric positive semi-definite matrix, e.g. L @ L.T")
    return c


def _shaped_like(v, ref: torch.Tensor) -> torch.Tensor:
    """``v`` broadcast to ``ref``'s shape and dtype (a copy, so buffers do not alias the caller's tensor)."""
    return torch.as_tensor(v, dtype=ref.dtype).expand_as(ref).clone()


def _positive(t: torch.Tensor, message: str) -> torch.Tensor:
    """``t`` itself if every entry is > 0; else ValueError(message)."""
    if (t <= 0).any():
        raise ValueError(message)
    return t


class DiagonalGaussian(Prior):
    """Gaussian prior N(mu, diag(var)) on tensors of any shape: D = mu + var/(var + sigma²)·(x − mu)."""

    def __init__(self, mean, var):
        super().__init__()
        mean = torch.as_tensor(mean)
        var = _positive(_shaped_like(var, mean), "DiagonalGaussian needs strictly positive variances")
        self.register_buffer("mean", mean)
        self.register_buffer("var", var)
        self.data_shape = tuple(mean.shape)

    @property
    def data_scale(self) -> float:
        """sqrt(max_i (μ_i² + var_i))."""
        return float((self.mean**2 + self.var).max().sqrt())

    def denoise(self, x, sigma):
        s2 = _flat_sigma2(sigma, x).reshape(-1, *([1] * (x.ndim - 1)))
        return self.mean + self.var / (self.var + s2) * (x - self.mean)

    def log_prob(self, x, sigma=0.0):
        """log N(x; mu, diag(var) + sigma² I), summed over a sample."""
        s2 = _flat_sigma2(torch.as_tensor(sigma), x).reshape(-1, *([1] * (x.ndim - 1)))
        v = self.var + s2
        return (-0.5 * (torch.log(v) + _LOG2PI + (x - self.mean) ** 2 / v)).flatten(1).sum(1)

    def sample(self, n: int, generator=None):
        """Exact samples mu + sqrt(var)·z."""
        z = torch.randn(n, *self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.var.sqrt() * z


class StationaryGaussian(Prior):
    """Stationary (circulant) Gaussian image prior: C = Fᴴ diag(P) F with the orthonormal 2-D DFT F,
    so D = mu + F⁻¹[P/(P + sigma²) · F(x − mu)] (a Wiener filter; Wiener 1949). ``spectrum`` P has shape
    ``(C, H, W)`` and must satisfy P(k) = P(−k) so samples are real."""

    def __init__(self, mean, spectrum):
        super().__init__()
        spectrum = _positive(torch.as_tensor(spectrum), "StationaryGaussian needs a strictly positive power spectrum")
        mean = _shaped_like(mean, spectrum)
        flipped = torch.roll(torch.flip(spectrum, (-2, -1)), shifts=(1, 1), dims=(-2, -1))
        if not torch.allclose(spectrum, flipped, rtol=1e-6):
            raise ValueError("the power spectrum must be symmetric, P(k) = P(-k), for real-valued images")
        self.register_buffer("mean", mean)
        self.register_buffer("P", spectrum)
        self.data_shape = tuple(spectrum.shape)

    @property
    def data_scale(self) -> float:
        """sqrt(max (μ² + per-pixel variance)); the orthonormal DFT makes channel c's pixel variance mean(P_c)."""
        var = self.P.flatten(-2).mean(-1)[..., None, None]
        return float((self.mean**2 + var).max().sqrt())

    @classmethod
    def radial(cls, shape, amplitude=1.0, corner=0.1, exponent=2.0, mean=0.0, dtype=torch.float64):
        """Power-law spectrum P(k) = amplitude / (1 + (|k|/corner)²)^(exponent/2), |k| in cycles/pixel —
        the 1/f^exponent statistics of natural images (Field 1987)."""
        C, H, W = shape
        ky = torch.fft.fftfreq(H, dtype=dtype)[:, None]
        kx = torch.fft.fftfreq(W, dtype=dtype)[None, :]
        k2 = (ky**2 + kx**2) / corner**2
        P = amplitude / (1 + k2) ** (exponent / 2)
        return cls(torch.full(shape, float(mean), dtype=dtype), P.expand(C, H, W).clone() * H * W / P.sum())

    def denoise(self, x, sigma):
        s2 = _flat_sigma2(sigma, x).reshape(-1, 1, 1, 1)
        X = torch.fft.fft2(x - self.mean, norm="ortho")
        return self.mean + torch.fft.ifft2(self.P / (self.P + s2) * X, norm="ortho").real

    def log_prob(self, x, sigma=0.0):
        """log N(x; mu, C + sigma² I) via Parseval: −½ Σ_k [log 2π(P+σ²) + |F(x−mu)|²/(P+σ²)]."""
        s2 = _flat_sigma2(torch.as_tensor(sigma), x).reshape(-1, 1, 1, 1)
        v = self.P + s2
        X = torch.fft.fft2(x - self.mean, norm="ortho")
        return (-0.5 * (torch.log(v) + _LOG2PI + X.abs() ** 2 / v)).flatten(1).sum(1)

    def sample(self, n: int, generator=None):
        """Exact samples mu + F⁻¹[sqrt(P)·F z]."""
        z = torch.randn(n, *self.P.shape, generator=generator, device=self.P.device, dtype=self.P.dtype)
        return self.mean + torch.fft.ifft2(self.P.sqrt() * torch.fft.fft2(z, norm="ortho"), norm="ortho").real
