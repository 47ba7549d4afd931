"""Shared pieces of ``tasks_table.py`` and ``colorize.py``: one frozen invscore prior, run by invscore's
posterior samplers and by deepinv's (0.5.0) DPS, DDRM, DiffPIR and PosteriorDiffusion on the *same* denoiser, operator and
measurement, with the network calls counted for both.

The conventions are bridged by the library (their docstrings give the maths): deepinv's samplers see
images u = (x + 1)/2 in [0, 1], so the prior is :class:`invscore.priors.deepinv_bridge.UnitDenoiser`
(D_u(u, σ_u) = (D(2u − 1, 2σ_u) + 1) / 2), the measurement ``operators.to_unit_measurement``
(y_u = (y + A𝟙)/2 = A u + (σ_y/2) n) and the operator ``operators.to_deepinv(op, decomposable=True,
unit_scale=1)``: the invscore operator's own SVD as a ``DecomposablePhysics`` (Kawar et al. 2022, §3),
which deepinv's DDRM needs. The FFT blur's spectral coordinates are complex, which deepinv's DDRM cannot
handle (it draws ``randn_like`` noise on them); a symmetric kernel has a real, even spectrum Ĥ, so the
discrete Hartley transform (Bracewell 1983) diagonalises the same blur with the same singular values |Ĥ|
(``operators.real_svd``). Every deepinv sampler gets this one physics.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

import deepinv as dinv
import operators
from invscore.conditional import get_method, solve
from invscore.io import from_data
from invscore.metrics import compute_all, psnr
from invscore.priors.deepinv_bridge import UnitDenoiser

RESULTS = Path(__file__).resolve().parent / "results"
#: EDM's smallest trained noise level: deepinv's DDRM asks for σ = 0 at its last step, where the EDM
#: preconditioning (c_noise = ¼ log σ) is undefined; below this level D is the identity to within noise.
SIGMA_MIN = 0.002


def deepinv_problem(prior, op, y):
    """The task in deepinv's [0, 1] units: (counting denoiser, decomposable physics, y_u) for data x in
    [-1, 1] (x = 2u − 1); the network runs in float32 whatever deepinv's state dtype."""
    den = UnitDenoiser(prior, dtype=torch.float32, sigma_min=SIGMA_MIN)
    return den, operators.to_deepinv(op, decomposable=True, unit_scale=1.0), operators.to_unit_measurement(op, y)


# ------------------------------------------------------------------------------------------ samplers
#: invscore defaults of ``solve`` except SMC's particle count: 16 particles × 50 steps = 800 NFE per image
#: is beyond this CPU budget, so SMC runs with 4 particles (stated in every report).
SMC_PARTICLES = 4


#: the invscore methods both image benchmarks run, at their defaults
INVSCORE = ["auto", "mmps", "pigdm", "ddrm", "dps", "diffpir", "daps", "pnpdm", "pnpflow", "smc", "projection"]
#: deepinv methods and their tuning grids (the best on images outside the scored set is kept); the grids were
#: set after a first look at those tuning images, never at scored ones
DEEPINV = {
    "dinv_dps": [dict(guidance="norm", weight=w) for w in (100.0, 300.0, 1000.0)],
    "dinv_ddrm": [dict(eta=0.85, etab=1.0), dict(eta=1.0, etab=1.0)],
    "dinv_diffpir": [dict(lambda_=7.0, zeta=0.1), dict(lambda_=7.0, zeta=0.5), dict(lambda_=7.0, zeta=1.0),
                     dict(lambda_=25.0, zeta=0.5)],
    # PosteriorDiffusion: ΠGDM and moment-matching fidelities on deepinv's VP SDE; DPS on its VE SDE
    "dinv_pd": [dict(fidelity="pigdm", sde="vp", solver="ddim", eta=1.0, weight=1.0),
                dict(fidelity="mm", sde="vp", solver="ddim", eta=1.0, weight=1.0),
                dict(fidelity="dps", sde="ve", solver="euler", weight=100.0),
                dict(fidelity="dps", sde="ve", solver="euler", weight=300.0)],
}


def invscore_method(method: str):
    """The registered method as these experiments run it (defaults, but SMC with SMC_PARTICLES particles)."""
    return get_method(method, **({"particles": SMC_PARTICLES} if method == "smc" else {}))


def invscore_steps(method: str, nfe: int) -> int:
    """Steps that spend ``nfe`` network evaluations per image, from the method's declared cost per step
    (``auto``'s steps are its NFE budget: it picks the method and steps within it)."""
    m = invscore_method(method)
    return nfe if m.delegates else max(2, round(nfe / m.cost().nfe))


def run_invscore(prior, op, y, method: str, steps: int, seed: int = 1, k: int = 1):
    """One invscore posterior sample per measurement -> (x in [-1, 1], NFE per image, seconds); ``k`` > 1:
    the mean of k independent samples per measurement instead (a Monte-Carlo posterior-mean estimate,
    E‖x̄_k − x‖² = (1 + 1/k) MMSE for exact samples), at k × the NFE."""
    t0 = time.perf_counter()
    res = solve(prior, op, y.repeat_interleave(k, 0), method=invscore_method(method), steps=steps,
                generator=torch.Generator().manual_seed(seed))
    x = res.x.detach().reshape(y.shape[0], k, *res.x.shape[1:]).mean(1)
    return x, res.nfe * k, time.perf_counter() - t0


def deepinv_sample(method: str, cfg: dict, nfe: int, den, phys, y_u, seed: int = 1, dtype=torch.float64):
    """One run of deepinv's sampler ``method`` (dinv_dps, dinv_pigdm, dinv_ddrm, dinv_diffpir) with settings
    ``cfg``, aiming at ``nfe`` denoiser calls, on deepinv's side of the bridges (u in [0, 1]); returns u.
    ``dtype``: the state dtype of deepinv's DPS (its default float64). Runs on ``y_u``'s device (deepinv's DPS
    and DiffPIR default to device='cpu', so it is passed on)."""
    dev = y_u.device
    torch.manual_seed(seed)  # DDRM and DiffPIR draw from the global generator (CUDA's too)
    np.random.seed(seed)
    rng = torch.Generator(device=dev).manual_seed(seed)
    if method == "dinv_dps":
        # timesteps linspace(1, 0, num_steps): the DDPM solver calls the denoiser num_steps − 1 times
        return dinv.sampling.DPS(den, num_steps=nfe + 1, weight=cfg["weight"], guidance=cfg["guidance"],
                                 solver="ddpm", rng=rng, dtype=dtype, device=dev)(y_u, phys)
    if method in ("dinv_pigdm", "dinv_pd"):
        return _posterior_diffusion(cfg, nfe, den, rng)(y_u, phys)
    with torch.no_grad():
        if method == "dinv_ddrm":
            return dinv.sampling.DDRM(den, sigmas=np.linspace(1, 0, nfe), eta=cfg["eta"], etab=cfg["etab"])(y_u, phys)
        if method == "dinv_diffpir":
            return dinv.sampling.DiffPIR(den, data_fidelity=dinv.optim.data_fidelity.L2(), max_iter=nfe,
                                         zeta=cfg["zeta"], lambda_=cfg["lambda_"], device=dev)(y_u, phys)
    raise ValueError(f"unknown deepinv method {method!r}")


def _posterior_diffusion(cfg: dict, nfe: int, den, rng):
    """deepinv's ``PosteriorDiffusion`` (reverse SDE with a noisy data-fidelity score) from ``cfg``: fidelity
    ``pigdm`` (ΠGDM, the default), ``dps`` or ``mm`` (moment matching); ``sde`` ``vp`` (the default) or ``ve``
    (σ from 0.001 to 80 in [0, 1] units, deepinv's own defaults); ``solver`` ``ddpm``, ``ddim`` (with ``eta``)
    or ``euler``; on times linspace(1, 0) that make ``nfe`` denoiser calls (VE stops at t = 10⁻³)."""
    fid = {"pigdm": dinv.sampling.PiGDMDataFidelity, "dps": dinv.sampling.DPSDataFidelity,
           "mm": dinv.sampling.MomentMatchingDataFidelity}[cfg.get("fidelity", "pigdm")]
    ve = cfg.get("sde", "vp") == "ve"
    # deepinv's Euler solver calls the denoiser at every time (the last one for the final x̂0), DDPM/DDIM
    # at all but the last
    ts = torch.linspace(1, 1e-3 if ve else 0, nfe + (cfg["solver"] != "euler"), dtype=torch.float64)
    solver = {"ddpm": lambda: dinv.sampling.DDPMSolver(timesteps=ts, rng=rng),
              "ddim": lambda: dinv.sampling.DDIMSolver(timesteps=ts, eta=cfg.get("eta", 1.0), rng=rng),
              "euler": lambda: dinv.sampling.EulerSolver(timesteps=ts, rng=rng)}[cfg["solver"]]()
    sde = dinv.sampling.VarianceExplodingDiffusion() if ve else dinv.sampling.VariancePreservingDiffusion()
    return dinv.sampling.PosteriorDiffusion(data_fidelity=fid(weight=cfg["weight"]), denoiser=den, sde=sde,
                                            solver=solver)


def run_deepinv(method: str, cfg: dict, nfe: int, den: UnitDenoiser, phys, y_u, seed: int = 1):
    """One deepinv run on images -> (x in [-1, 1], counted NFE, seconds); DPS in float32 like invscore."""
    den.calls = 0
    t0 = time.perf_counter()
    u = deepinv_sample(method, cfg, nfe, den, phys, y_u, seed, dtype=torch.float32)
    return (2 * u.detach().to(torch.float32) - 1), den.calls, time.perf_counter() - t0


def cfg_label(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items())


def tune_deepinv(method, cfgs, nfe, den, phys, y_u, x_true, log=print):
    """Pick the configuration with the best mean PSNR on the tuning images; returns (cfg, [(cfg, psnr)])."""
    scores = []
    for cfg in cfgs:
        try:
            x, _, secs = run_deepinv(method, cfg, nfe, den, phys, y_u)
            p = float(psnr(from_data(x), from_data(x_true)).mean()) if torch.isfinite(x).all() else float("nan")
        except Exception as err:  # noqa: BLE001 - a failing configuration just loses the tuning
            p, secs = float("nan"), 0.0
            log(f"    tune {method} [{cfg_label(cfg)}] failed: {type(err).__name__}: {err}")
        scores.append((cfg, p))
        log(f"    tune {method:<13} [{cfg_label(cfg)}] NFE {nfe}: PSNR {p:6.2f} ({secs:.1f}s)")
    best = max(scores, key=lambda t: -math.inf if math.isnan(t[1]) else t[1])[0]
    return best, scores


# ------------------------------------------------------------------------------------------- metrics
def image_metrics(x: torch.Tensor, x_true: torch.Tensor, colour: bool = False) -> dict[str, torch.Tensor]:
    """Per-image PSNR, SSIM, LPIPS (AlexNet) of x vs x_true (both in [-1, 1]); colourfulness if asked."""
    return compute_all(from_data(x), from_data(x_true), lpips_nets={"lpips": "alex"}, colour=colour)


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
            im = from_data(r[j]).permute(1, 2, 0).float().numpy()
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
