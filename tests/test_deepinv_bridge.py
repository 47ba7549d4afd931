"""The deepinv bridges that let deepinv's samplers run on invscore's problems: the decomposable physics
built from an operator's SVD, the [0, 1] measurement, and the prior as a deepinv denoiser on u ∈ [0, 1]."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import operators
from invscore.priors import GaussianMixture
from invscore.testing import grid_mixture

dinv = pytest.importorskip("deepinv")
from invscore.priors.deepinv_bridge import UnitDenoiser  # noqa: E402  (needs deepinv)

D = torch.float64
SIZE = (3, 8, 8)
SVD_OPS = [("inpaint_random", {"missing_ratio": 0.5}), ("blur_gaussian_fft", {"sigma": 1.2}),
           ("sr_avgpool", {"factor": 2}), ("grayscale", {})]


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _dot(a, b):
    return float((a * b).sum())


@pytest.mark.parametrize("name,kw", SVD_OPS)
def test_decomposable_physics_is_the_operator(name, kw):
    """A = U diag(mask) Vᵀ from the operator's SVD equals op.A and op.A_T (float64), is adjoint, and has
    real orthonormal factors; the noise std is σ_y/(2c) in the [0, 1] units of x = c(2u − 1)."""
    op = operators.make(name, img_size=SIZE, noise=0.1, dtype=D, **kw)
    phys = operators.to_deepinv(op, decomposable=True, unit_scale=2.0)
    assert isinstance(phys, dinv.physics.DecomposablePhysics)
    x = torch.randn(2, *SIZE, generator=_g(0), dtype=D)
    y = torch.randn(2, *op.output_shape, generator=_g(1), dtype=D)
    torch.testing.assert_close(phys.A(x), op.A(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(phys.A_adjoint(y), op.A_T(y), rtol=1e-12, atol=1e-12)
    assert abs(_dot(phys.A(x), y) - _dot(x, phys.A_adjoint(y))) < 1e-10 * abs(_dot(phys.A(x), y))
    z = phys.V_adjoint(x)
    assert not torch.is_complex(z) and z.shape[1] == phys.mask.shape[1]
    torch.testing.assert_close(phys.V(z), x)
    assert float(phys.noise_model.sigma) == pytest.approx(0.1 / 4)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3)])
def test_decomposable_physics_of_wide_and_tall_matrices(shape):
    """Spectral space max(n, m): a tall A (m > n) keeps all its measurement coordinates."""
    M = torch.randn(*shape, generator=_g(2), dtype=D)
    op = operators.DenseOperator(M, input_shape=(1, 1, shape[1]), output_shape=(1, 1, shape[0]), noise=0.3)
    phys = operators.to_deepinv(op, decomposable=True)
    x = torch.randn(4, 1, 1, shape[1], generator=_g(3), dtype=D)
    y = torch.randn(4, 1, 1, shape[0], generator=_g(4), dtype=D)
    torch.testing.assert_close(phys.A(x), x @ M.T)
    torch.testing.assert_close(phys.A_adjoint(y), y @ M)
    torch.testing.assert_close(phys.A_dagger(y), y @ torch.linalg.pinv(M).T)
    assert float(phys.noise_model.sigma) == pytest.approx(0.3)  # unit_scale=None: x units


def test_decomposable_physics_refuses_what_it_cannot_represent():
    with pytest.raises(TypeError, match=r"decomposable=True\) needs an SVD operator.*decomposable=False"):
        operators.to_deepinv(operators.make("blur_gaussian", img_size=SIZE), decomposable=True)
    with pytest.raises(ValueError, match="symmetric kernel"):
        operators.to_deepinv(operators.make("blur_motion_fft", img_size=SIZE), decomposable=True)
    with pytest.raises(ValueError, match="unit_scale needs Gaussian or no noise"):
        operators.to_deepinv(operators.make("inpaint_center", img_size=SIZE, noise=operators.PoissonNoise(0.1)),
                             unit_scale=1.0)
    with pytest.raises(ValueError, match="unit_scale needs a linear operator"):
        operators.to_deepinv(operators.FunctionOperator(torch.tanh, SIZE), unit_scale=1.0)


def test_unit_measurement_is_the_same_problem_in_u():
    """y = A x + σ n with x = c(2u − 1) gives y_u = A u + σ/(2c) n exactly (A linear)."""
    c = 3.0
    op = operators.make("sr_avgpool", img_size=SIZE, factor=2, dtype=D)
    u = torch.rand(2, *SIZE, generator=_g(5), dtype=D)
    n = torch.randn(2, *op.output_shape, generator=_g(6), dtype=D)
    y = op.A(c * (2 * u - 1)) + 0.2 * n
    torch.testing.assert_close(operators.to_unit_measurement(op, y, unit_scale=c), op.A(u) + 0.2 / (2 * c) * n)


@pytest.mark.parametrize("c", [1.0, 20.0])
def test_unit_denoiser_is_the_exact_denoiser_of_the_prior_in_u(c):
    """For a mixture prior on x, u = (x/c + 1)/2 has the mixture with means (μ/c + 1)/2 and covariances
    C/(4c²); the bridge must be that mixture's own MMSE denoiser at σ_u (closed form, float64)."""
    prior = grid_mixture(4, spacing=c / 4)
    in_u = GaussianMixture(prior.log_w.exp(), (prior.means / c + 1) / 2, prior.lam[:, 0] / (4 * c**2))
    den = UnitDenoiser(prior, scale=c)
    u = torch.rand(6, 1, 1, 4, generator=_g(7), dtype=D)  # deepinv's image layout of a vector
    sigma = torch.tensor([0.01, 0.05, 0.1, 0.3, 0.7, 1.0], dtype=D)
    out = den(u, sigma)
    assert out.shape == u.shape and den.calls == 1
    torch.testing.assert_close(out.reshape(6, 4), in_u.denoise(u.reshape(6, 4), sigma), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(den(u, 0.3), den(u, torch.full((6,), 0.3, dtype=D)))  # a float σ too
    assert den.calls == 3


def test_unit_denoiser_keeps_the_caller_dtype_and_clamps_sigma():
    """A float32 network under deepinv's float64 states: the prior sees float32, σ ≥ sigma_min."""
    seen = {}

    def D32(x, sigma):
        seen.update(dtype=x.dtype, sigma=sigma.clone())
        return x * 0

    den = UnitDenoiser(D32, dtype=torch.float32, sigma_min=0.002)
    out = den(torch.full((2, 1, 2, 2), 0.5, dtype=D), 0.0)
    assert seen["dtype"] == torch.float32 and torch.all(seen["sigma"] == 0.002)
    assert out.dtype == D and torch.all(out == 0.5)  # D(x) = 0 in x is u = 1/2
    with pytest.raises(ValueError, match="scale must be > 0"):
        UnitDenoiser(D32, scale=0)


def test_deepinv_ddrm_runs_on_the_bridges_and_counts_its_calls():
    """deepinv's own DDRM on a mixture problem through both bridges: one call per σ, finite samples."""
    from invscore.testing import mixture_problem
    p = mixture_problem(4, 2, seed=0)
    c = 20.0
    op = operators.DenseOperator(p.A, input_shape=(1, 1, 4), output_shape=(1, 1, 2), noise=p.sigma_y)
    phys = operators.to_deepinv(op, decomposable=True, unit_scale=c)
    y_u = operators.to_unit_measurement(op, p.y.reshape(1, 1, 1, 2).expand(3, 1, 1, 2), unit_scale=c)
    den = UnitDenoiser(p.prior, scale=c)
    torch.manual_seed(0)
    u = dinv.sampling.DDRM(den, sigmas=torch.linspace(1, 0, 6).numpy(), eta=0.85)(y_u, phys)
    assert den.calls == 6 and u.shape == (3, 1, 1, 4) and torch.isfinite(u).all()


def test_importing_the_libraries_does_not_import_deepinv():
    code = "import sys, operators, invscore, invscore.metrics; assert 'deepinv' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_noise_free_operator_tells_deepinv_sigma_zero():
    """deepinv's DDRM assumes σ = 0.01 when the physics names no σ; a noise-free operator must say 0."""
    phys = operators.to_deepinv(operators.make("grayscale", img_size=SIZE), decomposable=True)
    assert float(phys.noise_model.sigma) == 0.0
