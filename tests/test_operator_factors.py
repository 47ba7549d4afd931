"""Operators against other libraries and exact factorisations: the deepinv bridges, the spatial blur's
matrix forms and pseudo-inverse (its documented tolerance at every registry operator's default size), and
bicubic resizing against kornia. Float64."""
from __future__ import annotations

import warnings

import pytest
import torch

import operators
from operators import Blur, BlurFFT, LinearOperator, SVDOperator, gaussian_kernel, motion_kernel
from test_operators import SIZE, D, _dot, _mask_png, _rand, _rel

# --- deepinv bridges -------------------------------------------------------------------------------------
def test_to_deepinv_matches_deepinv_inpainting():
    dinv = pytest.importorskip("deepinv")
    op = operators.make("inpaint_random", img_size=SIZE, missing_ratio=0.5, dtype=D)
    ref = dinv.physics.Inpainting(SIZE, mask=op.mask.clone())
    phys = operators.to_deepinv(op)
    x = _rand(SIZE, 1)
    for ours, theirs in ((phys.A, ref.A), (phys.A_adjoint, ref.A_adjoint), (phys.A_dagger, ref.A_dagger)):
        assert _rel(ours(x), theirs(x)) < 1e-12
    assert abs(phys.adjointness_test(x).item()) < 1e-10


def test_from_deepinv_blurfft_matches_ours():
    dinv = pytest.importorskip("deepinv")
    k = gaussian_kernel(1.0, 5)
    ref = dinv.physics.BlurFFT(SIZE, filter=k[None, None].to(D))
    wrapped = operators.from_deepinv(ref, SIZE)
    ours = BlurFFT(k, SIZE, dtype=D)
    x = _rand(SIZE, 1)
    assert isinstance(wrapped, LinearOperator)
    assert _rel(wrapped.A(x), ours.A(x)) < 1e-10
    assert _rel(wrapped.A_T(x), ours.A_T(x)) < 1e-10
    assert _rel(wrapped.A_pinv(x), ours.A_pinv(x)) < 1e-8


def test_from_deepinv_inpainting_is_svd():
    dinv = pytest.importorskip("deepinv")
    ours = operators.make("inpaint_center", img_size=SIZE, dtype=D)
    wrapped = operators.from_deepinv(dinv.physics.Inpainting(SIZE, mask=ours.mask.expand(SIZE).clone()), SIZE)
    assert isinstance(wrapped, SVDOperator)
    x = _rand(SIZE, 1)
    assert _rel(wrapped.project_measured(x), ours.project_measured(x)) < 1e-12
    assert _rel(wrapped.replace_measured(x, ours.y_spectral(ours.A(x))), x) < 1e-12


def test_spatial_blur_and_grayscale_match_deepinv():
    dinv = pytest.importorskip("deepinv")
    k = motion_kernel(7, 0.5, torch.Generator().manual_seed(1))
    ours = Blur(k, SIZE, dtype=D)
    ref = dinv.physics.Blur(filter=k[None, None].to(D), padding="reflect")
    x = _rand(SIZE, 1)
    assert _rel(ours.A(x), ref.A(x)) < 1e-10
    assert _rel(ours.A_T(x), ref.A_adjoint(x)) < 1e-10
    gray = operators.make("grayscale_luma", img_size=SIZE, dtype=D)
    # deepinv's default 'rec601' rounds the weights differently; give it the BT.601 ones (it stores
    # them in float32, hence the 1e-6).
    ref = dinv.physics.Decolorize(srf=list(operators.LUMA_WEIGHTS)).to(D)
    assert _rel(gray.A(x), ref.A(x)) < 1e-6
    y = gray.A(x)
    assert _rel(gray.A_T(y), ref.A_adjoint(y)) < 1e-6
    mean = operators.make("grayscale", img_size=SIZE, dtype=D)
    ref = dinv.physics.Decolorize(srf="flat").to(D)
    assert _rel(mean.A(x), ref.A(x)) < 1e-6 and _rel(mean.A_pinv(y), ref.A_dagger(y)) < 1e-6


@pytest.mark.parametrize("kernel", [gaussian_kernel(1.0, 5), motion_kernel(7, 0.5, torch.Generator().manual_seed(2))])
def test_spatial_blur_paths_agree(kernel):
    x, y = _rand(SIZE, 1), _rand(SIZE, 2)
    ref = Blur(kernel, SIZE, dtype=D, method="direct")
    methods = ["fft", "separable"] if kernel is not None and torch.linalg.matrix_rank(kernel) == 1 else ["fft"]
    for method in methods:
        op = Blur(kernel, SIZE, dtype=D, method=method)
        assert _rel(op.A(x), ref.A(x)) < 1e-12 and _rel(op.A_T(y), ref.A_T(y)) < 1e-12
        assert abs(_dot(op.A(x), y) - _dot(x, op.A_T(y))) < 1e-10 * abs(_dot(op.A(x), y))


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_blur_pinv_factorisations_are_the_spatial_blur(method):
    """The Kronecker factors A_y X A_xᵀ and the sparse LU matrix behind Blur.A_pinv are the same linear map
    as the spatial implementation, to 1e-12 in float64, with an asymmetric kernel for the sparse one."""
    from operators.blur import _conv_matrix_1d, _sparse_conv_matrix
    x = _rand(SIZE, 1)
    gauss = Blur(gaussian_kernel(1.0, 5), SIZE, dtype=D, method=method)
    ay, ax = (_conv_matrix_1d(f, n) for f, n in zip(gauss._factors, SIZE[1:]))
    assert _rel(ay @ x @ ax.mT, gauss.A(x)) < 1e-12 and gauss._pinv_factors()[0] == "kron"
    for k in (gauss._k64, motion_kernel(7, 0.5, torch.Generator().manual_seed(2))):
        op = Blur(k, SIZE, dtype=D, method=method)
        m = _sparse_conv_matrix(op._k64, *SIZE[1:])
        got = torch.from_numpy((m @ x.reshape(-1, SIZE[1] * SIZE[2]).T.numpy()).T.copy()).reshape(x.shape)
        assert _rel(got, op.A(x)) < 1e-12
    assert op._pinv_factors()[0] == "lu"
    singular = torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.5, 0.1], [0.0, 0.2, 0.0]], dtype=D)  # σ_min ≈ 8e-17·σ_max
    assert Blur(singular, SIZE, dtype=D, method=method)._pinv_factors()[0] == "cg"
    op.lu_max_nnz = 0  # too large to factorise: the base class's CG
    assert op._pinv_factors()[0] == "cg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether CG converges here is tests/test_bad_inputs.py's business
        assert torch.equal(op.A_pinv(op.A(x)), LinearOperator._A_pinv(op, op.A(x)))


@pytest.mark.parametrize("name", operators.available())
def test_pinv_meets_its_documented_tolerance_at_default_size(name, tmp_path):
    """At every registry operator's default size, in float64 and with no warning, ‖A A⁺ A x − A x‖ is within
    what A_pinv documents: pinv_tol·‖A x‖ for iterative and factorised forms (LinearOperator, Blur._A_pinv),
    svd_rtol·max(s)·‖x‖ for SVD forms (the measured-coordinate truncation, operators/svd.py)."""
    g7 = dict(kernel=gaussian_kernel(1.0, 7))
    need = {"blur_kernel": g7, "blur_kernel_fft": g7, "inpaint_file": dict(path=_mask_png(tmp_path / "mask.png", 64))}
    op = operators.make(name, dtype=D, **need.get(name, {}))
    if not isinstance(op, LinearOperator):
        pytest.skip("nonlinear operator: no pseudo-inverse")
    x = _rand(op.input_shape, 8, batch=1)
    ax = op.A(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unconverged CG warns: that is a failure here
        err = float((op.A(op.A_pinv(ax)) - ax).norm())
    if isinstance(op, SVDOperator):
        bound = op.svd_rtol * float(op.singular_values.max()) * float(x.norm()) + 1e-12 * float(ax.norm())
    else:
        bound = op.pinv_tol * float(ax.norm())
    assert err <= bound, (name, err / float(ax.norm()))


@pytest.mark.parametrize("antialias", [True, False])
def test_bicubic_matrix_form_matches_kornia(antialias):
    ref = operators.make("sr_bicubic", img_size=SIZE, factor=4, antialias=antialias, method="kornia")
    op = operators.make("sr_bicubic", img_size=SIZE, factor=4, antialias=antialias, dtype=D)
    x, y = _rand(SIZE, 1), _rand(op.output_shape, 2)
    assert _rel(op.A(x), ref.to(D).A(x)) < 1e-12
    assert _rel(op.A_T(y), ref.A_T(y)) < 1e-12                     # closed form = autograd adjoint
    ref.pinv_tol, ref.pinv_maxiter = 1e-12, 2000
    assert _rel(op.A_pinv(y), ref.A_pinv(y)) < 1e-6                 # closed form = CG
