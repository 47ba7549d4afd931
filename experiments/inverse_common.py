"""Shared pieces of ``tasks_table.py`` and ``colorize.py``: one frozen invscore prior, run by invscore's
posterior samplers and by deepinv's (0.5.0) DPS, DDRM and DiffPIR on the *same* denoiser, operator and
measurement, with the network calls counted for both.

Conventions bridged here (``docs/CONVENTIONS.md`` vs ``deepinv/sampling/diffusion.py``):

* invscore: data x in [-1, 1]; denoiser D(x, σ) in variance-exploding units of x (EDM, Karras et al.
  2022); y = A x + σ_y n with σ_y in x units.
* deepinv's diffusion samplers take a ``Denoiser`` for images u in [0, 1] with σ in u units
  (DDRM: σ from 1 to 0; DiffPIR calls ``model(x/(2√ᾱ) + 1/2, σ/2)``; DPS/PosteriorDiffusion carry the
  state in [-1, 1] and wrap the denoiser with ``MinusOneOneDenoiserWrapper``, i.e. (D_u((x+1)/2, σ/2)·2−1)).
  With x = 2u − 1 (so σ_x = 2σ_u) the exact translation is D_u(u, σ_u) = (D(2u − 1, 2σ_u) + 1) / 2
  (:class:`UnitDenoiser`), and for a linear A the measurement becomes
  y_u = (y + A𝟙) / 2 = A u + (σ_y / 2) n: same A, half the noise std (:func:`to_unit_measurement`).
* deepinv's DDRM needs a ``DecomposablePhysics`` (U, singular values, V). ``operators.to_deepinv`` gives
  a plain ``LinearPhysics``, so :class:`SpectralPhysics` builds the decomposable form from the invscore
  operator's own SVD (Kawar et al. 2022, §3), checked against ``op.A`` / ``op.A_T`` at construction.
  The FFT blur's spectral coordinates are complex, which deepinv's DDRM cannot handle (it draws
  ``randn_like`` noise on them); a symmetric kernel has a real, even spectrum Ĥ, so the discrete Hartley
  transform (Bracewell 1983), a real orthogonal involution, diagonalises the same blur with the same
  singular values |Ĥ| (U = Hartley·sign Ĥ). All three deepinv samplers get this one physics.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python experiments/x.py`` from anywhere
    sys.path.insert(0, str(ROOT))

import deepinv as dinv  # noqa: E402
import operators  # noqa: E402
from invscore.conditional import solve  # noqa: E402
from invscore.metrics import colorfulness, lpips, psnr, ssim  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
#: EDM's smallest trained noise level: deepinv's DDRM asks for σ = 0 at its last step, where the EDM
#: preconditioning (c_noise = ¼ log σ) is undefined; below this level D is the identity to within noise.
SIGMA_MIN = 0.002


# ------------------------------------------------------------------------------------------ denoiser
class UnitDenoiser(dinv.models.Denoiser):
    """The invscore denoiser D(x, σ) (x in [-1, 1]) as a deepinv denoiser on u in [0, 1]:
    D_u(u, σ_u) = (D(2u − 1, 2σ_u) + 1) / 2. Counts its calls (each denoises the whole batch once = 1 NFE
    per image)."""

    def __init__(self, D):
        super().__init__()
        self.D, self.calls = D, 0

    def forward(self, x, sigma, *args, **kwargs):
        self.calls += 1
        B = x.shape[0]
        s = torch.as_tensor(sigma, device=x.device).reshape(-1).to(torch.float32)
        s = s.expand(B) if s.numel() == 1 else s
        # the network is float32; deepinv's SDE samplers may carry float64 states
        out = self.D((2 * x - 1).to(torch.float32), (2 * s).clamp(min=SIGMA_MIN))
        return ((out + 1) / 2).to(x.dtype)


# ------------------------------------------------------------------------------------------- physics
def real_svd(op):
    """``op`` itself, or for an FFT blur the same blur in the real Hartley basis (``operators.HartleyBlur``)."""
    return op.real_svd() if isinstance(op, operators.BlurFFT) else op


class SpectralPhysics(dinv.physics.DecomposablePhysics):
    """An invscore ``SVDOperator`` as a deepinv ``DecomposablePhysics`` with flat real spectral coordinates
    (B, n): mask = singular values padded with zeros to n, so DDRM's per-coordinate rules apply."""

    def __init__(self, op, sigma: float):
        op = real_svd(op)
        n, m = op.n, op.m
        s = op.singular_values.detach().to(torch.float32)
        mask = torch.zeros(1, n)
        mask[0, : s.numel()] = s
        super().__init__(mask=mask, noise_model=dinv.physics.GaussianNoise(sigma), img_size=tuple(op.input_shape))
        self.op, self.n, self.m = op, n, m
        self._check()

    def V_adjoint(self, x):
        return self.op.V_T(x)

    def V(self, z, **kwargs):
        return self.op.V(z)

    def U_adjoint(self, y, **kwargs):
        z = self.op.U_T(y)
        return torch.cat([z, z.new_zeros(z.shape[0], self.n - z.shape[1])], 1) if z.shape[1] < self.n else z

    def U(self, z):
        return self.op.U(z[:, : self.m])

    @torch.no_grad()
    def _check(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, *self.op.input_shape, generator=g)
        y = torch.randn(2, *self.op.output_shape, generator=g)
        # against the fast closed forms of the operator as given (for a blur: BlurFFT's rfft filter)
        ref = getattr(self.op, "blur", self.op)
        for name, a, b in (("A", self.A(x), ref.A(x)), ("A_adjoint", self.A_adjoint(y), ref.A_T(y))):
            err = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
            if err > 1e-4:
                raise AssertionError(f"SpectralPhysics.{name} differs from the invscore operator by {err:.2e}")


def to_unit_measurement(op, y: torch.Tensor) -> torch.Tensor:
    """y (x units) -> y_u = (y + A𝟙)/2 = A u + (σ_y/2) n for u = (x + 1)/2 (A linear)."""
    ones = torch.ones(1, *op.input_shape, dtype=y.dtype)
    return (y + op.A(ones)) / 2


# ------------------------------------------------------------------------------------------ samplers
#: invscore defaults of ``solve`` except SMC's particle count: 16 particles × 50 steps = 800 NFE per image
#: is beyond this CPU budget, so SMC runs with 4 particles (stated in every report).
SMC_PARTICLES = 4
NFE_PER_STEP = {"projection": 2, "smc": SMC_PARTICLES}  # PC: predictor + Langevin corrector; SMC: K particles


def invscore_steps(method: str, nfe: int) -> int:
    return max(2, round(nfe / NFE_PER_STEP.get(method, 1)))


def run_invscore(prior, op, y, method: str, steps: int, seed: int = 1):
    """One invscore posterior sample per measurement -> (x in [-1, 1], NFE per image, seconds)."""
    kw = {"particles": SMC_PARTICLES} if method == "smc" else {}
    t0 = time.perf_counter()
    res = solve(prior, op, y, method=method, steps=steps, generator=torch.Generator().manual_seed(seed), **kw)
    return res.x.detach(), res.nfe, time.perf_counter() - t0


def run_deepinv(method: str, cfg: dict, nfe: int, den: UnitDenoiser, phys, y_u, seed: int = 1):
    """One deepinv run aiming at ``nfe`` denoiser calls -> (x in [-1, 1], counted NFE, seconds)."""
    torch.manual_seed(seed)  # DDRM and DiffPIR draw from the global generator
    np.random.seed(seed)
    den.calls = 0
    t0 = time.perf_counter()
    if method == "dinv_dps":
        # timesteps linspace(1, 0, num_steps): the DDPM solver calls the denoiser num_steps − 1 times
        model = dinv.sampling.DPS(den, num_steps=nfe + 1, weight=cfg["weight"], guidance=cfg["guidance"],
                                  solver="ddpm", rng=torch.Generator().manual_seed(seed), dtype=torch.float32)
        u = model(y_u, phys)
    elif method == "dinv_ddrm":
        with torch.no_grad():
            u = dinv.sampling.DDRM(den, sigmas=np.linspace(1, 0, nfe), eta=cfg["eta"], etab=cfg["etab"])(y_u, phys)
    elif method == "dinv_diffpir":
        with torch.no_grad():
            u = dinv.sampling.DiffPIR(den, data_fidelity=dinv.optim.data_fidelity.L2(), max_iter=nfe,
                                      zeta=cfg["zeta"], lambda_=cfg["lambda_"])(y_u, phys)
    else:
        raise ValueError(f"unknown deepinv method {method!r}")
    return (2 * u.detach().to(torch.float32) - 1), den.calls, time.perf_counter() - t0


def cfg_label(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items())


def tune_deepinv(method, cfgs, nfe, den, phys, y_u, x_true, log=print):
    """Pick the configuration with the best mean PSNR on the tuning images; returns (cfg, [(cfg, psnr)])."""
    scores = []
    for cfg in cfgs:
        try:
            x, _, secs = run_deepinv(method, cfg, nfe, den, phys, y_u)
            p = float(psnr(to01(x), to01(x_true)).mean()) if torch.isfinite(x).all() else float("nan")
        except Exception as err:  # noqa: BLE001 - a failing configuration just loses the tuning
            p, secs = float("nan"), 0.0
            log(f"    tune {method} [{cfg_label(cfg)}] failed: {type(err).__name__}: {err}")
        scores.append((cfg, p))
        log(f"    tune {method:<13} [{cfg_label(cfg)}] NFE {nfe}: PSNR {p:6.2f} ({secs:.1f}s)")
    best = max(scores, key=lambda t: -math.inf if math.isnan(t[1]) else t[1])[0]
    return best, scores


# ------------------------------------------------------------------------------------------- metrics
def to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) / 2).to(torch.float32)


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.double()
    return float(v.mean()), (float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan"))


def image_metrics(x: torch.Tensor, x_true: torch.Tensor, colour: bool = False) -> dict[str, torch.Tensor]:
    """Per-image PSNR, SSIM, LPIPS (AlexNet) of x vs x_true (both in [-1, 1]); colourfulness if asked."""
    a, b = to01(x), to01(x_true)
    out = {"psnr": psnr(a, b), "ssim": ssim(a, b), "lpips": lpips(a, b, net="alex")}
    if colour:
        out["colorfulness"] = colorfulness(a)
    return out


def summarize(per_image: dict[str, torch.Tensor]) -> dict[str, float]:
    out = {}
    for k, v in per_image.items():
        out[k], out[k + "_se"] = mean_se(v)
    return out


# -------------------------------------------------------------------------------------------- images
def save_grid(rows: list[torch.Tensor], labels: list[str], path: Path, title: str = "", scale: float = 0.9):
    """A labelled grid: one row per tensor (B, C, H, W) in [-1, 1], one column per image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ncol = rows[0].shape[0]
    fig, axes = plt.subplots(len(rows), ncol, figsize=(scale * ncol + 1.6, scale * len(rows) + 0.4), squeeze=False)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        for j in range(ncol):
            ax = axes[i][j]
            im = to01(r[j]).permute(1, 2, 0).numpy()
            ax.imshow(im[..., 0] if im.shape[2] == 1 else im, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=7)
    height = fig.get_size_inches()[1]
    if title:  # keep the title clear of the first row
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.2, rect=(0, 0, 1, 1 - (0.35 / height if title else 0)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
