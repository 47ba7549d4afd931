"""Blur operators y = k * x: circular (FFT, exact SVD) and spatial with reflect padding (kornia).

The spatial blur's A⁺ is factorised, not iterative, where the structure allows (see ``Blur._A_pinv``).

Both use a true convolution with the kernel centre at (kh // 2, kw // 2); see ``operators.kernels``.
Kernels that do not sum to 1 are refused unless ``normalize=True`` (see ``check_kernel``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import filter2d, filter2d_separable

from .base import LinearOperator, conjugate_gradient
from .kernels import check_kernel
from .masks import _img_size
from .svd import SVDOperator

__all__ = ["BlurFFT", "HartleyBlur", "Blur"]


class BlurFFT(SVDOperator):
    """Circular convolution A x = F⁻¹(Ĥ ⊙ F x), diagonalised by the unitary DFT F (Gonzalez & Woods, §4.7).

    SVD with complex unitary factors: V = Fᴴ, U = Fᴴ diag(e^{i∠Ĥ}), s = |Ĥ| (per channel, flattened
    over (C, H, W)), so ``V_T(x) = fft2(x, norm='ortho').flatten(1)`` is complex. Frequencies with
    |Ĥ| > svd_rtol·max|Ĥ| are *measured*; the set is conjugate-symmetric, so projections of real images
    are real. Fast paths use ``rfft2``.
    """

    def __init__(self, kernel, img_size, noise=None, normalize: bool = False, svd_rtol: float = 1e-6,
                 dtype: torch.dtype | None = None):
        c, h, w = _img_size(img_size)
        k = check_kernel(kernel, normalize).to(torch.float64)
        kh, kw = k.shape
        if kh > h or kw > w:
            raise ValueError(f"BlurFFT: expected a kernel no larger than the image {h}x{w}, got {kh}x{kw}")
        super().__init__((c, h, w), (c, h, w), noise)
        pad = torch.zeros(h, w, dtype=torch.float64)
        pad[:kh, :kw] = k
        # Move the kernel centre to pixel (0, 0) so the circular convolution does not shift the image.
        pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        H = torch.fft.fft2(pad)
        mag = H.abs()
        phase = torch.where(mag > 0, H / torch.where(mag > 0, mag, torch.ones_like(mag)), torch.ones_like(H))
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer("kernel", k.to(dtype), persistent=False)
        # Complex buffers would lose their imaginary part under Module.to(float64); store them as real views.
        self.register_buffer("_phase", torch.view_as_real(phase).to(dtype), persistent=False)
        Hr = torch.fft.rfft2(pad)
        self.register_buffer("_Hr", torch.view_as_real(Hr).to(dtype), persistent=False)
        self._register_svd(mag.expand(c, h, w).flatten().to(dtype), rtol=svd_rtol)
        keep = mag[:, : w // 2 + 1] > self.svd_rtol * mag.max()
        Hr_inv = torch.where(keep, 1.0 / torch.where(keep, Hr, torch.ones_like(Hr)), torch.zeros_like(Hr))
        self.register_buffer("_Hr_inv", torch.view_as_real(Hr_inv).to(dtype), persistent=False)
        self.register_buffer("_keep_r", keep, persistent=False)

    def _filter(self, x, spectrum):
        hw = self.input_shape[1:]
        return torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=hw)

    # Fast closed forms in the half spectrum (rfft2): A, Aᵀ (conjugate), A⁺ (truncated inverse), AᵀA.
    def _A(self, x):
        return self._filter(x, torch.view_as_complex(self._Hr))

    def _A_T(self, y):
        return self._filter(y, torch.view_as_complex(self._Hr).conj())

    def _A_pinv(self, y):
        return self._filter(y, torch.view_as_complex(self._Hr_inv))

    def _AtA(self, x):
        return self._filter(x, torch.view_as_complex(self._Hr).abs().square())

    def _project_measured(self, x):
        return self._filter(x, self._keep_r.to(x.dtype))

    # Unitary factors (complex spectral coordinates).
    def V_T(self, x):
        return torch.fft.fft2(x, norm="ortho").flatten(1)

    def V(self, z):
        return torch.fft.ifft2(z.view(z.shape[0], *self.input_shape), norm="ortho").real

    def U_T(self, y):
        return (torch.fft.fft2(y, norm="ortho") * torch.view_as_complex(self._phase).conj()).flatten(1)

    def U(self, z):
        z = z.view(z.shape[0], *self.output_shape) * torch.view_as_complex(self._phase)
        return torch.fft.ifft2(z, norm="ortho").real

    def real_svd(self) -> "HartleyBlur":
        """The same operator with a *real* SVD (:class:`HartleyBlur`); needs a symmetric kernel."""
        return HartleyBlur(self)


def _hartley(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D discrete Hartley transform over the last two dims, H = Re F − Im F (Bracewell 1983);
    real, symmetric and its own inverse."""
    f = torch.fft.fft2(x, norm="ortho")
    return f.real - f.imag


class HartleyBlur(SVDOperator):
    """A :class:`BlurFFT` with a symmetric kernel in a *real* SVD basis. Its spectrum Ĥ is then real and
    even, so A = H diag(Ĥ) H with H the orthonormal 2-D Hartley transform: s = |Ĥ| (same values, same
    order as the BlurFFT), V = H, U = H diag(sign Ĥ). Methods that need real spectral coordinates (SMC)
    use it; A, Aᵀ and A⁺ stay the BlurFFT's fast rfft forms."""

    def __init__(self, blur: BlurFFT):
        super().__init__(tuple(blur.input_shape), tuple(blur.output_shape), blur.noise)
        phase = torch.view_as_complex(blur._phase.to(torch.float64))
        if phase.imag.abs().max() > 1e-6:
            raise ValueError("HartleyBlur: expected a symmetric kernel (k(-i, -j) = k(i, j), a real spectrum); "
                             "a motion blur has none. Use a method without an SVD (mmps, pigdm, dps) for it.")
        self.blur = blur
        self.register_buffer("sign", phase.real.sign().to(blur.singular_values.dtype), persistent=False)
        self._register_svd(blur.singular_values.clone(), rtol=blur.svd_rtol)

    def _A(self, x):
        return self.blur._A(x)

    def _A_T(self, y):
        return self.blur._A_T(y)

    def _A_pinv(self, y):
        return self.blur._A_pinv(y)

    def V_T(self, x):
        return _hartley(x).flatten(1)

    def V(self, z):
        return _hartley(z.view(z.shape[0], *self.input_shape))

    def U_T(self, y):
        return (_hartley(y) * self.sign).flatten(1)

    def U(self, z):
        return _hartley(z.view(z.shape[0], *self.output_shape) * self.sign)


def _fold_reflect(z: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Adjoint of reflect padding along ``dim``: add the padded margins back onto their mirror pixels."""
    n = z.shape[dim] - before - after
    out = z.narrow(dim, before, n).clone()
    if before:
        # Padded index j < before copies pixel (before - j), so the margin lands flipped on pixels 1..before.
        out.narrow(dim, 1, before).add_(z.narrow(dim, 0, before).flip(dim))
    if after:
        # Padded index before + n + t copies pixel n - 2 - t, i.e. pixels n-1-after .. n-2 in reverse.
        out.narrow(dim, n - 1 - after, after).add_(z.narrow(dim, before + n, after).flip(dim))
    return out


def _corr_adjoint(y: torch.Tensor, kc: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of ``kornia.filters.filter2d(x, kc, border_type='reflect')`` (odd kernel kc).

    filter2d = (valid correlation) ∘ (reflect pad), so its adjoint is (pad)ᵀ ∘ (full convolution).
    The full convolution runs as conv2d with the flipped kernel on a zero-padded y: CPU
    conv_transpose2d is several times slower for the same arithmetic.
    """
    b, c, h, w = y.shape
    kh, kw = kc.shape
    z = F.pad(y.reshape(b * c, 1, h, w), (kw - 1, kw - 1, kh - 1, kh - 1))
    z = F.conv2d(z, kc.flip((0, 1))[None, None].to(y.dtype))
    z = _fold_reflect(z, 2, kh // 2, kh // 2)
    z = _fold_reflect(z, 3, kw // 2, kw // 2)
    return z.view(b, c, h, w)


class Blur(LinearOperator):
    """Spatial convolution y = k * x with reflect boundary (``kornia.filters.filter2d``, border 'reflect').

    Aᵀ is the exact adjoint in closed form (full convolution, then the reflect padding folded back);
    A⁺ is factorised (see :meth:`_A_pinv`: a Kronecker SVD or a sparse LU), CG only for a singular A
    or beyond ``lu_max_nnz``. Same linear map, three
    evaluation paths chosen by ``method='auto'``: a large kernel (more than ``fft_area`` taps, e.g.
    DPS's 61×61) as an FFT convolution of the reflect-padded image (linear, not circular: the padded
    size leaves no wrap-around in the kept window); a small rank-1 kernel (Gaussian) as two 1-D passes
    (``kornia.filters.filter2d_separable``); other small kernels through ``kornia.filters.filter2d``.
    """

    fft_area = 15 * 15
    #: Truncation of the separable (Kronecker SVD) pseudo-inverse: singular values below
    #: pinv_rcond·max(s) count as 0, as numpy.linalg.pinv's rcond.
    pinv_rcond: float = 1e-8
    #: Largest sparse matrix (nonzeros: kernel taps × pixels) factorised by LU; larger ones use CG.
    lu_max_nnz: int = 4_000_000
    #: A counts as invertible (A⁺ = A⁻¹ by LU) when its estimated σ_min exceeds lu_rcond·‖A‖₂; an exactly
    #: singular A shows σ_min at round-off (~1e-17), the default motion blur on 64×64 ≈ 5e-13.
    lu_rcond: float = 1e-14

    def __init__(self, kernel, img_size, noise=None, normalize: bool = False, dtype: torch.dtype | None = None,
                 method: str = "auto"):
        c, h, w = _img_size(img_size)
        k = check_kernel(kernel, normalize).to(torch.float64)
        kh, kw = k.shape
        if kh // 2 >= h or kw // 2 >= w:
            raise ValueError(f"Blur: reflect padding needs kernel half-size < image size; expected a kernel "
                             f"smaller than {2 * h - 1}x{2 * w - 1}, got {kh}x{kw}")
        if method not in ("auto", "direct", "separable", "fft"):
            raise ValueError(f"Blur: expected method in 'auto', 'direct', 'separable', 'fft', got {method!r}")
        super().__init__((c, h, w), (c, h, w), noise)
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer("kernel", k.to(dtype), persistent=False)
        # kornia correlates; a convolution is a correlation with the flipped kernel.
        self.register_buffer("_kc", k.flip((0, 1)).to(dtype), persistent=False)
        u, s, vh = torch.linalg.svd(k)
        rank1 = bool(s[1:].abs().max() <= 1e-12 * s[0]) if len(s) > 1 else True
        if method == "auto":
            # Measured on 256×256 (2 cores): above ~15×15 taps the FFT beats even two 1-D passes.
            method = "fft" if kh * kw > self.fft_area else ("separable" if rank1 else "direct")
        if method == "separable" and not rank1:
            raise ValueError("Blur: method='separable' needs a rank-1 kernel")
        self.method = method
        # True-convolution factors k = ky kxᵀ (float64) for the Kronecker pseudo-inverse, or None.
        self._k64 = k
        self._factors = (u[:, 0] * s[0].sqrt(), vh[0] * s[0].sqrt()) if rank1 else None
        self._pinv_cache: dict = {}  # factors built on first use, keyed by the settings they depend on
        if method == "separable":
            ky, kx = u[:, 0] * s[0].sqrt(), vh[0] * s[0].sqrt()
            sign = torch.sign(ky.sum())  # keep both factors positive for a non-negative kernel
            self.register_buffer("_ky", (sign * ky).flip(0).to(dtype), persistent=False)
            self.register_buffer("_kx", (sign * kx).flip(0).to(dtype), persistent=False)
        if method == "fft":
            ph, pw = kh // 2, kw // 2
            hp, wp = h + 2 * ph, w + 2 * pw
            pad = torch.zeros(hp, wp, dtype=torch.float64)
            pad[:kh, :kw] = k
            pad = torch.roll(pad, shifts=(-ph, -pw), dims=(0, 1))
            self.register_buffer("_Kr", torch.view_as_real(torch.fft.rfft2(pad)).to(dtype), persistent=False)

    def _fft_conv(self, x, adjoint: bool):
        c, h, w = self.input_shape
        kh, kw = self.kernel.shape
        ph, pw = kh // 2, kw // 2
        hp, wp = h + 2 * ph, w + 2 * pw
        K = torch.view_as_complex(self._Kr)
        if not adjoint:
            xp = F.pad(x, (pw, pw, ph, ph), mode="reflect")
            return torch.fft.irfft2(torch.fft.rfft2(xp) * K, s=(hp, wp))[..., ph:ph + h, pw:pw + w]
        z = F.pad(x, (pw, pw, ph, ph))  # adjoint of the crop: embed in zeros
        z = torch.fft.irfft2(torch.fft.rfft2(z) * K.conj(), s=(hp, wp))
        return _fold_reflect(_fold_reflect(z, 2, ph, ph), 3, pw, pw)

    def _A(self, x):
        if self.method == "separable":
            return filter2d_separable(x, self._kx[None], self._ky[None], border_type="reflect")
        if self.method == "fft":
            return self._fft_conv(x, adjoint=False)
        return filter2d(x, self._kc[None], border_type="reflect")

    def _A_T(self, y):
        if self.method == "separable":
            # A = A_y ∘ A_x (kornia filters x first), so Aᵀ = A_xᵀ ∘ A_yᵀ.
            z = _corr_adjoint(y, self._ky[:, None])
            return _corr_adjoint(z, self._kx[None, :])
        if self.method == "fft":
            return self._fft_conv(y, adjoint=True)
        return _corr_adjoint(y, self._kc)

    # --- pseudo-inverse ---------------------------------------------------------------------------------
    def _A_pinv(self, y):
        """A⁺y for the reflect-padded blur, by the kernel's structure; every path documents what holds.

        * Rank-1 kernel (Gaussian): A = A_y ⊗ A_x with 1-D reflect-convolution matrices (Hansen, Nagy &
          O'Leary 2006, "Deblurring Images", §4.4), so SVDs of A_y (H×H) and A_x (W×W) give A's SVD with
          singular values s_i t_j. A⁺ is the truncated pseudo-inverse: s_i t_j ≤ pinv_rcond·max dropped,
          hence ‖A A⁺ A x − A x‖ ≤ pinv_rcond·‖A‖₂‖x‖ (+ round-off) and A⁺ A A⁺ = A⁺.
        * Other kernels: A is square; when it is numerically invertible (σ_min, estimated by inverse
          iteration, above lu_rcond·‖A‖₂) A⁺ = A⁻¹, applied by a sparse LU (scipy SuperLU, on the CPU in
          float64, not differentiable); backward stability gives ‖A A⁺ y − y‖ ≈ ε‖A‖‖A⁺y‖. It is the exact
          inverse, not truncated: the default 61-tap motion blur on 64×64 has σ_min/σ_max ≈ 5e-13, so A⁺ of
          *noisy* data amplifies noise accordingly.
        * Singular A, or more than ``lu_max_nnz`` nonzeros: the base class's CG (it warns if unconverged).

        For y = A x with ‖A x‖ ≥ 1e-2·‖A‖₂‖x‖ the first two give ‖A A⁺ y − y‖ ≤ pinv_tol·‖y‖ (1e-6).
        """
        kind, fac = self._pinv_factors()
        if kind == "kron":
            # float64 where the device has it: 1/(s_i t_j) reaches 1/pinv_rcond, too much for float32 round-off.
            dt = y.dtype if y.device.type == "mps" else torch.float64
            key = (self.pinv_rcond, y.device, dt)
            if key not in self._pinv_cache:
                self._pinv_cache[key] = [f.to(y.device, dt) for f in fac]
            uy, vy, ux, vx, s_inv = self._pinv_cache[key]
            return (vy @ ((uy.mT @ y.to(dt) @ ux) * s_inv) @ vx.mT).to(y.dtype)
        if kind == "lu":
            b, c, h, w = y.shape
            rhs = y.detach().to("cpu", torch.float64).reshape(b * c, h * w).T.numpy()
            z = torch.from_numpy(np.ascontiguousarray(fac.solve(np.ascontiguousarray(rhs)).T))
            return z.reshape(b, c, h, w).to(y.device, y.dtype)
        return conjugate_gradient(self._AtA, self._A_T(y), tol=self.pinv_tol, maxiter=self.pinv_maxiter,
                                  warn=f"{type(self).__name__}.A_pinv")

    def _pinv_factors(self):
        """Build (once, float64 on the CPU) what :meth:`_A_pinv` needs: ('kron', factors), ('lu', LU)
        or ('cg', None)."""
        key = (self.pinv_rcond, self.lu_max_nnz, self.lu_rcond)
        if key in self._pinv_cache:
            return self._pinv_cache[key]
        _, h, w = self.input_shape
        k = self._k64
        if self._factors is not None:
            uy, sy, vyh = torch.linalg.svd(_conv_matrix_1d(self._factors[0], h))
            ux, sx, vxh = torch.linalg.svd(_conv_matrix_1d(self._factors[1], w))
            st = sy[:, None] * sx[None, :]
            keep = st > self.pinv_rcond * st.max()
            s_inv = torch.where(keep, 1.0 / torch.where(keep, st, torch.ones_like(st)), torch.zeros_like(st))
            out = ("kron", (uy, vyh.mT, ux, vxh.mT, s_inv))
        elif int((k != 0).sum()) * h * w <= self.lu_max_nnz:
            lu = _lu_if_invertible(_sparse_conv_matrix(k, h, w), self.lu_rcond)
            out = ("cg", None) if lu is None else ("lu", lu)
        else:
            out = ("cg", None)
        self._pinv_cache[key] = out
        return out


def _lu_if_invertible(m, rcond: float, steps: int = 20):
    """SuperLU factors of the sparse square m, or None when m is numerically singular: σ_min from inverse
    iteration on (mᵀm)⁻¹ (Golub & Van Loan §7.6.1; it converges from above) ≤ rcond·sqrt(‖m‖₁‖m‖∞) (≥ ‖m‖₂)."""
    from scipy.sparse.linalg import norm, splu
    try:
        lu = splu(m)
    except RuntimeError:  # "Factor is exactly singular"
        return None
    v = np.random.default_rng(0).standard_normal(m.shape[0])
    for _ in range(steps):
        v = lu.solve(lu.solve(v, trans="T"))
        nv = float(np.linalg.norm(v))
        if not (np.isfinite(nv) and nv > 0):
            return None
        v /= nv
    return lu if nv ** -0.5 > rcond * float(np.sqrt(norm(m, 1) * norm(m, np.inf))) else None


def _reflect(t: torch.Tensor, n: int) -> torch.Tensor:
    """Index of padded position t in a length-n signal under whole-sample ('reflect') symmetry, |t| < 2n-1."""
    t = t.abs()
    return torch.where(t >= n, 2 * (n - 1) - t, t)


def _conv_matrix_1d(f: torch.Tensor, n: int) -> torch.Tensor:
    """n×n matrix of the 1-D true convolution (f * x)_i = Σ_a f_a x_{i+p-a}, p = len(f)//2, reflect boundary."""
    p = len(f) // 2
    i = torch.arange(n)[:, None]
    cols = _reflect(i + p - torch.arange(len(f))[None, :], n)
    m = torch.zeros(n, n, dtype=torch.float64)
    return m.index_put_((i.expand_as(cols), cols), f.to(torch.float64)[None, :].expand_as(cols), accumulate=True)


def _sparse_conv_matrix(k: torch.Tensor, h: int, w: int):
    """The (h·w)×(h·w) scipy CSC matrix of the 2-D true convolution with k, reflect boundary (row-major
    pixels); only the nonzero taps are stored, coincident reflected entries summed."""
    import scipy.sparse as sp
    kh, kw = k.shape
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols, vals = [], [], []
    for a, b in torch.nonzero(k).tolist():
        rows.append((ii * w + jj).flatten())
        cols.append((_reflect(ii + kh // 2 - a, h) * w + _reflect(jj + kw // 2 - b, w)).flatten())
        vals.append(torch.full((h * w,), float(k[a, b]), dtype=torch.float64))
    r, c, v = (torch.cat(t).numpy() for t in (rows, cols, vals))
    return sp.csc_matrix((v, (r, c)), shape=(h * w, h * w))
