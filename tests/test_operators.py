"""Operator invariants over one registry of every operator, in float64 (docs/architecture.md, "Testing what is true")."""
from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch

import operators
from operators import (AvgPool, Blur, BlurFFT, Composed, GaussianNoise, Grayscale, LinearOperator, Mask,
                       NoNoise, PoissonNoise, SVDOperator, gaussian_kernel, motion_kernel)

D = torch.float64
SIZE = (3, 16, 16)


def _mask_png(path: Path, n: int = 16) -> Path:
    from PIL import Image
    img = Image.new("L", (n, n), 255)
    img.paste(0, (4, 4, 10, 12))
    img.save(path)
    return path


def _kwargs(name: str, tmp: Path) -> dict:
    """Small, well-conditioned instances so every invariant can be checked tightly and fast."""
    if name == "dense":
        return dict(d=12, m=5)
    kw = dict(img_size=SIZE)
    # Spatial blurs get better-conditioned kernels: their A⁺ is iterative (CG on AᵀA squares the condition).
    if name.startswith("blur_gaussian"):
        kw.update(sigma=1.0 if name.endswith("fft") else 0.7, size=5)
    if name.startswith("blur_motion"):
        kw.update(size=7 if name.endswith("fft") else 5, seed=3)
    if name.startswith("blur_kernel"):
        kw.update(kernel=torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.5, 0.1], [0.0, 0.2, 0.0]], dtype=D))
    if name == "inpaint_file":
        kw.update(path=_mask_png(tmp / "mask.png"))
    if name == "sr_bicubic":
        kw.update(factor=2)
    return kw


@pytest.fixture(params=operators.available())
def op(request, tmp_path):
    op = operators.make(request.param, dtype=D, **_kwargs(request.param, tmp_path))
    if not isinstance(op, SVDOperator):
        op.pinv_tol, op.pinv_maxiter = 1e-9, 800  # tight CG so A A⁺ A = A is checked, not the solver
    return op


def _rand(shape, seed=0, batch=3):
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=D)


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _dot(a, b):
    return float((a * b).sum()) if not a.is_complex() else complex((a.conj() * b).sum())


# --- linear-operator identities ------------------------------------------------------------------------
def test_adjointness(op):
    x, y = _rand(op.input_shape, 1), _rand(op.output_shape, 2)
    lhs, rhs = _dot(op.A(x), y), _dot(x, op.A_T(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_adjoint_matches_autograd(op):
    x, y = _rand(op.input_shape, 1).requires_grad_(), _rand(op.output_shape, 2)
    (g,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    assert _rel(op.A_T(y), g) < 1e-10


def test_pseudo_inverse(op):
    ax = op.A(_rand(op.input_shape, 1, batch=3 if isinstance(op, SVDOperator) else 1))
    err = _rel(op.A(op.A_pinv(ax)), ax)
    if isinstance(op, SVDOperator):
        # Singular values below svd_rtol·max(s) are treated as 0, which bounds the defect of A A⁺ A.
        s = op.singular_values
        assert err < 1e-10 + 10 * float(s[~op._measured_r].max() / s.max() if (~op._measured_r).any() else 0)
    else:
        assert err < 1e-6
    # A⁺ returns the minimum-norm solution: it lies in the row space, i.e. A⁺ y = A⁺ A A⁺ y.
    xp = op.A_pinv(ax)
    assert _rel(op.A_pinv(op.A(xp)), xp) < 1e-6


def test_AtA(op):
    x = _rand(op.input_shape, 4)
    assert _rel(op.AtA(x), op.A_T(op.A(x))) < 1e-10


def test_batch_independence(op):
    x = _rand(op.input_shape, 5)
    y = op.A(x)
    for i in range(x.shape[0]):
        assert _rel(op.A(x[i:i + 1]), y[i:i + 1]) < 1e-12


def test_differentiable(op):
    """Autograd through A gives the exact gradient of ‖A x‖²: 2 Aᵀ A x for a linear operator."""
    x = _rand(op.input_shape, 6).requires_grad_()
    (g,) = torch.autograd.grad(op.A(x).square().sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    if isinstance(op, LinearOperator):
        assert _rel(g, 2 * op.A_T(op.A(x.detach()))) < 1e-10


def test_stateless_and_moves(op):
    bufs = {k: v.clone() for k, v in op.named_buffers()}
    x = _rand(op.input_shape, 7)
    op.A(x), op.A_T(op.A(x))
    for k, v in op.named_buffers():
        assert torch.equal(v, bufs[k]), k
    op32 = op.to(torch.float32)
    assert op32.A(x.float()).dtype == torch.float32


# --- SVD factors -----------------------------------------------------------------------------------------
def _svd(op):
    if not isinstance(op, SVDOperator):
        pytest.skip("no SVD form")
    return op


def test_svd_factors_orthonormal(op):
    op = _svd(op)
    x, x2, y = _rand(op.input_shape, 1), _rand(op.input_shape, 2), _rand(op.output_shape, 3)
    z = op.V_T(x)
    assert z.shape == (x.shape[0], op.n)
    assert _rel(op.V(z), x) < 1e-12
    # Vᴴ preserves inner products (real part for complex unitary coordinates).
    assert abs(_dot(z, op.V_T(x2)).real - _dot(x, x2)) < 1e-10 * x.norm() * x2.norm()
    w = op.U_T(y)
    assert w.shape == (y.shape[0], op.m)
    assert _rel(op.U(w), y) < 1e-12 and abs(float(w.norm()) - float(y.norm())) < 1e-10 * float(y.norm())
    s = op.singular_values
    assert s.dim() == 1 and s.numel() <= min(op.m, op.n) and (s >= 0).all()


def test_svd_reconstructs_A(op):
    op = _svd(op)
    x, y = _rand(op.input_shape, 1), _rand(op.output_shape, 2)
    assert _rel(op._svd_A(x), op.A(x)) < 1e-10
    assert _rel(op._svd_A_T(y), op.A_T(y)) < 1e-10
    assert _rel(op._svd_A_pinv(y), op.A_pinv(y)) < 1e-10


def test_projections(op):
    op = _svd(op)
    x, x2 = _rand(op.input_shape, 1), _rand(op.input_shape, 2)
    close = lambda a, b, tol: float((a - b).norm()) <= tol * float(x.norm())  # noqa: E731
    p, q = op.project_measured(x), op.project_unmeasured(x)
    assert close(op.project_measured(p), p, 1e-10)                                  # idempotent
    assert close(op.project_unmeasured(q), q, 1e-10)
    assert close(op.project_measured(q), torch.zeros_like(q), 1e-10)                # orthogonal
    assert close(p + q, x, 1e-12)                                                   # complementary
    assert abs(_dot(p, x2) - _dot(x, op.project_measured(x2))) < 1e-10 * float(x.norm() * x2.norm())
    assert close(SVDOperator._project_measured(op, x), p, 1e-10)                   # fast path = SVD form
    assert close(op.A_pinv(op.A(x)), p, 1e-8)                                       # P = A⁺A


def test_replace_measured_is_imputation(op):
    op = _svd(op)
    x, x0 = _rand(op.input_shape, 1), _rand(op.input_shape, 2)
    y = op.A(x0)
    ybar = op.y_spectral(y)
    assert ybar.shape == (x.shape[0], op.r)
    out = op.replace_measured(x, ybar)
    assert _rel(out, op.project_unmeasured(x) + op.A_pinv(y)) < 1e-8
    assert _rel(op.A(out), y) < 1e-8 or not bool(op._measured_r.all()) and _rel(op.A(out), y) < 1e-4
    assert _rel(op.replace_measured(x0, op.y_spectral(op.A(x0))), x0) < 1e-8
    assert op.spectral_noise_std(0.1).shape == (op.r,)


# --- composition -----------------------------------------------------------------------------------------
def test_composition_adjoint_and_shapes():
    blur = BlurFFT(gaussian_kernel(1.0, 5), SIZE, dtype=D)
    pool = AvgPool(SIZE, 2, dtype=D, noise=0.1)
    gray = Grayscale((3, 8, 8), dtype=D)
    op = Composed(gray, Composed(pool, blur))
    assert isinstance(op, LinearOperator) and op.output_shape == (1, 8, 8) and op.sigma_y == 0.0
    x, y = _rand(SIZE, 1), _rand(op.output_shape, 2)
    assert abs(_dot(op.A(x), y) - _dot(x, op.A_T(y))) < 1e-10 * abs(_dot(op.A(x), y))
    assert _rel(op.A(x), gray.A(pool.A(blur.A(x)))) < 1e-14
    assert Composed(pool, blur).sigma_y == 0.1
    with pytest.raises(ValueError, match="expected.*got"):
        Composed(blur, pool)
    nonlinear = Composed(operators.FunctionOperator(torch.tanh, (3, 8, 8)), pool)
    assert not isinstance(nonlinear, LinearOperator)
    assert _rel(nonlinear(x), torch.tanh(pool(x))) < 1e-14


# --- bad input -------------------------------------------------------------------------------------------
def test_wrong_shapes_raise(op):
    bad = (op.input_shape[0] + 1, *op.input_shape[1:])
    with pytest.raises(ValueError, match=r"expected .* got"):
        op.A(_rand(bad))
    with pytest.raises(ValueError, match=r"expected .* got"):
        op.A(torch.zeros(op.input_shape, dtype=D))  # no batch dimension
    if isinstance(op, LinearOperator):
        with pytest.raises(ValueError, match=r"expected .* got"):
            op.A_T(_rand((*op.output_shape, 2)))


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="binary"):
        Mask(torch.full((8, 8), 0.5))
    with pytest.raises(ValueError, match="summing to 1"):
        Blur(torch.ones(3, 3), SIZE)
    with pytest.warns(UserWarning, match="normalised"):
        op = Blur(torch.ones(3, 3), SIZE, normalize=True, dtype=D)
    assert abs(float(op.kernel.sum()) - 1) < 1e-12
    with pytest.raises(ValueError, match="odd"):
        BlurFFT(torch.full((2, 2), 0.25), SIZE)
    with pytest.raises(ValueError, match="divisible"):
        AvgPool((3, 18, 18), 4)
    with pytest.raises(ValueError, match="divisible"):
        operators.make("sr_bicubic", img_size=(3, 10, 10), factor=4)
    with pytest.raises(ValueError, match="inpaint_center"):
        operators.make("no_such_operator")
    with pytest.raises(ValueError, match="expected 3 weights"):
        Grayscale(SIZE, weights=(1.0, 1.0))


# --- noise and randomness --------------------------------------------------------------------------------
def test_noise_models_and_generators():
    op = operators.make("sr_avgpool", img_size=SIZE, factor=2, noise=0.1, dtype=D)
    x = _rand(SIZE, 1, batch=64)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    y1, y2 = op.measure(x, g()), op.measure(x, g())
    assert torch.equal(y1, y2) and op.sigma_y == 0.1 and isinstance(op.noise, GaussianNoise)
    assert abs(float((y1 - op.A(x)).std()) - 0.1) < 0.01
    assert op.with_noise(None).sigma_y == 0.0 and isinstance(op.noise, NoNoise)
    assert torch.equal(op.measure(x), op.A(x))
    op.with_noise(PoissonNoise(0.01))
    xp = x.abs()
    yp = op.measure(xp, g())
    assert torch.equal(yp, op.measure(xp, g())) and abs(float((yp - op.A(xp)).mean())) < 0.01
    r1 = operators.make("inpaint_random", img_size=SIZE, seed=3).mask
    assert torch.equal(r1, operators.make("inpaint_random", img_size=SIZE, seed=3).mask)
    assert not torch.equal(r1, operators.make("inpaint_random", img_size=SIZE, seed=4).mask)
    k1 = motion_kernel(9, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(k1, motion_kernel(9, 0.5, torch.Generator().manual_seed(0)))
    assert abs(float(k1.sum()) - 1) < 1e-12 and (k1 >= 0).all()


def test_masks_shapes():
    assert operators.make("inpaint_center", img_size=SIZE).observed_fraction == 0.75
    assert operators.make("inpaint_half", img_size=SIZE).observed_fraction == 0.5
    pc = operators.make("inpaint_random", img_size=SIZE, per_channel=True)
    assert pc.mask.shape == SIZE and not torch.equal(pc.mask[0], pc.mask[1])


def test_dense_overdetermined_and_shapes():
    M = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=D)
    op = operators.DenseOperator(M, dtype=D)
    assert op.r == 3 and op.m == 7 and op.n == 3
    x, y = _rand((3,), 1), _rand((7,), 2)
    assert _rel(op._svd_A(x), op.A(x)) < 1e-12 and _rel(op._svd_A_T(y), op.A_T(y)) < 1e-12
    assert _rel(op.A_pinv(y), (torch.linalg.pinv(M) @ y.T).T) < 1e-10
    img = operators.DenseOperator(torch.eye(4, dtype=D)[:2], input_shape=(1, 2, 2), dtype=D)
    xi = _rand((1, 2, 2))
    assert img.A(xi).shape == (3, 2)
    assert torch.equal(img.A(xi), xi.flatten(1)[:, :2])  # the matrix acts on the flattened image


# --- custom operators ------------------------------------------------------------------------------------
class _Shift(LinearOperator):
    """A user operator with only the forward map: circular shift of one pixel, then keep a crop."""

    def __init__(self):
        super().__init__((1, 6, 6), (1, 4, 4))

    def _A(self, x):
        return torch.roll(x, 1, dims=-1)[..., 1:5, 1:5]


def test_custom_subclass_gets_adjoint_and_pinv():
    op = _Shift()
    x, y = _rand((1, 6, 6), 1), _rand((1, 4, 4), 2)
    assert abs(_dot(op.A(x), y) - _dot(x, op.A_T(y))) < 1e-12
    assert _rel(op.A(op.A_pinv(y)), y) < 1e-6


def test_docstring_examples():
    import operators.base
    res = doctest.testmod(operators.base, raise_on_error=False)
    assert res.attempted > 0 and res.failed == 0  # README.md's operator examples: tests/test_readme.py


def test_hartley_blur_is_the_same_operator_in_a_real_basis():
    """operators.HartleyBlur: a real orthonormal SVD of a symmetric FFT blur, A = U diag(s) Vᵀ (float64);
    a motion blur (no real spectrum) is refused with the methods that do work."""
    blur = operators.make("blur_gaussian_fft", img_size=(2, 8, 8), sigma=1.2, dtype=torch.float64)
    hb = blur.real_svd()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 8, 8, generator=g, dtype=torch.float64)
    z = hb.V_T(x)
    assert not torch.is_complex(z)
    torch.testing.assert_close(hb.V(z), x)  # orthonormal, its own inverse
    torch.testing.assert_close(z.norm(dim=1), x.flatten(1).norm(dim=1))
    torch.testing.assert_close(hb.U(hb.singular_values * z), blur(x))
    torch.testing.assert_close(hb.singular_values, blur.singular_values)
    motion = operators.make("blur_motion_fft", img_size=(1, 8, 8), dtype=torch.float64)
    with pytest.raises(ValueError, match="symmetric kernel.*mmps, pigdm, dps"):
        motion.real_svd()


def test_real_svd_returns_a_real_basis_or_names_the_methods_that_work():
    """operators.real_svd: real-coordinate operators pass through, a symmetric FFT blur becomes its Hartley
    form (same A), and an operator with complex coordinates and no real basis is refused in one line."""
    mask = operators.make("inpaint_box", img_size=(1, 8, 8), dtype=torch.float64)
    assert operators.real_svd(mask) is mask
    blur = operators.make("blur_gaussian_fft", img_size=(1, 8, 8), sigma=1.2, dtype=torch.float64)
    hb = operators.real_svd(blur)
    assert isinstance(hb, operators.HartleyBlur)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert not torch.is_complex(hb.V_T(x))
    torch.testing.assert_close(hb(x), blur(x))

    class NoRealBasis(operators.SVDOperator):
        def __init__(self):
            super().__init__((1, 4, 4), (1, 4, 4))
            self._register_svd(torch.ones(16))

        def V_T(self, x):
            return torch.fft.fft2(x, norm="ortho").flatten(1)

    odd = NoRealBasis()
    with pytest.raises(TypeError, match="smc needs real spectral coordinates; NoRealBasis.*'mmps', 'pigdm' or 'dps'"):
        operators.real_svd(odd, "smc")
    with pytest.raises(TypeError, match="smc needs an SVD operator"):
        operators.real_svd(operators.FunctionOperator(lambda x: x, (1, 8, 8)), "smc")
