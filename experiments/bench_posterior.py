"""Posterior-sampling benchmark: sliced Wasserstein to the exact posterior vs NFE, invscore vs deepinv.

Issue spec: "For every method: sliced Wasserstein vs NFE on the mixture fixture, and in the same run
deepinv's DPS, DDRM and DiffPIR / PosteriorDiffusion given the same closed-form prior as a deepinv
denoiser. Goal for invscore's best method: at most half the distance of the best deepinv sampler at equal
or fewer NFE. A table and a PNG plot."

Setting: :func:`invscore.testing.mixture_problem` (25-component grid mixture, random A with d_y rows,
random sigma_y), d in {8, 80}, d_y in {1, 2, 4}, seed = d + d_y as in ``tests/test_conditional.py``.
In the sweep (stage 1 below), every method draws N posterior samples for the one measurement y; the
distance is the sliced Wasserstein distance (200 fixed directions) to N exact posterior samples, reported
relative to the *floor* (mean SW between two independent exact sample sets) next to the *oracle* (the ancestral sampler,
60 steps, driven by the exact posterior's own denoiser), both as in the tests' ``_references``.

invscore: every method of ``invscore.conditional.solve`` at its default options, NFE = ``res.nfe``
(network evaluations per sample; SMC counts steps x particles).

deepinv (0.5.0): the prior's exact denoiser wrapped as a ``deepinv.models.Denoiser``. deepinv's
diffusion samplers assume images in [0, 1] (PosteriorDiffusion/DPS carry the state in [-1, 1] and wrap
the denoiser with ``MinusOneOneDenoiserWrapper``; DiffPIR clamps its x0 estimate to [-1, 1]), so the
problem is mapped affinely: x = C (2 u - 1) with C = 20 (the mixture's means are at most 16 away from 0
with unit component covariance), i.e. u = x / (2C) + 1/2 in [0, 1]; the denoiser is
D_u(u, s) = D_x(C(2u - 1), 2Cs) / (2C) + 1/2; the measurement becomes y_u = (y + C A 1) / (2C) =
A u + (sigma_y / 2C) n, same A. The physics is a ``deepinv.physics.DecomposablePhysics`` built from A's
SVD (DDRM needs U, V and singular values; V is d x d, the spectral space has d coordinates with the
d - d_y unobserved singular values set to 0). Samples are mapped back with x = C (2u - 1). NFE is the
number of denoiser calls counted by the wrapper (each call denoises the whole batch once). deepinv's
hyperparameters are swept (small grids, listed in ``DEEPINV``): every configuration at NFE = TUNE_NFE,
then the TOP_K best per method over the whole NFE grid; per method and NFE the best configuration *on
this very metric* is reported, an optimistic baseline for deepinv. invscore runs untuned (defaults).

Two stages.

1. ``--sweep``: every method and configuration at N = 300 samples against 300 exact samples (invscore
   methods at defaults plus an SMC (particles, steps) grid; deepinv: every configuration at NFE = TUNE_NFE,
   then the TOP_K best per method over the NFE grid). Writes ``posterior_benchmark.sweep.{csv,md,png}``
   (about 17 min on one thread). At this N the floor is ~1 (d=80 d_y=1) and one estimate scatters by
   +-0.3 x floor, so half of deepinv's best was often below the floor: the goal could not be decided.
2. default, the decisive rerun: the sweep's contenders only (per library, the methods whose best sweep SW is
   within CONTENDER x of that library's best; deepinv at each NFE with the configuration that was best at that
   NFE in the sweep), on FINAL_NFE, N samples per run (default 500, what fits ~40 min on one busy thread with
   3 seeds), sliced W2 against M = 20,000 exact posterior samples, repeated over seeds (mean +- s.d.).
   The floor is the same distance for N exact samples. SMC runs both at ``solve``'s uniform time grid and at
   the EDM grid (``smc_edm``: ``sample_smc`` on ``time_grid(sde, steps, 'edm')``). Writes
   ``posterior_benchmark.{csv,md,png}``.

Verdict per problem (strict, as in the issue): take the best deepinv run (lowest mean SW, its NFE n_d); the
goal is met if some invscore run reaches SW <= 0.5 x that with NFE <= n_d. Also reported: for the best
invscore run (NFE n_i), the best deepinv run with NFE <= n_i (the lenient reading), ratios with standard
errors over seeds, and a debiased reading (sqrt(SW^2 - floor^2), see ``debiased``).

Run: ``python experiments/bench_posterior.py`` (decisive, N = 500, 3 seeds, ~40 min on one busy thread),
``python experiments/bench_posterior.py --sweep`` (stage 1), ``--from-csv`` to rebuild tables and plots.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

import deepinv as dinv
from invscore.conditional import solve
from invscore.conditional.smc import sample_smc
from invscore.priors import Diffusion
from invscore.samplers import sample_pc, time_grid
from invscore.sde import VPSDE
from invscore.stats import sliced_wasserstein
from invscore.testing import mixture_problem

C = 20.0  # x = C (2u - 1): u in [0, 1] for deepinv
ORACLE_STEPS = 60
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SWEEP = "posterior_benchmark.sweep"  # stage 1: the N = 300 sweep of every method and configuration
FINAL = "posterior_benchmark"  # stage 2: the decisive rerun of the contenders

#: invscore runs: method -> list of (label, solve kwargs)
INV_STEPS = [20, 50, 100, 200, 500]
SMC_GRID = [(4, 5), (4, 12), (8, 12), (4, 50), (8, 25), (8, 50), (16, 50), (16, 100)]  # (particles, steps)

#: deepinv runs: method -> list of configs; steps are chosen so that the counted NFE hit DEEPINV_NFE
DEEPINV_NFE = [20, 50, 100, 200, 500]
TUNE_NFE, TOP_K = 100, 2  # every config at TUNE_NFE, the TOP_K best per method over DEEPINV_NFE
DEEPINV = {
    "dinv_dps": [dict(guidance="norm", weight=w) for w in (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0)]
    + [dict(guidance="annealed", weight=w) for w in (0.3, 1.0, 3.0)],
    "dinv_pigdm": [dict(weight=w, solver="ddpm") for w in (1.0, 3.0, 10.0)],
    "dinv_ddrm": [dict(eta=0.85, etab=1.0), dict(eta=1.0, etab=1.0)],
    "dinv_diffpir": [dict(lambda_=lam, zeta=z) for lam in (0.3, 1.0, 7.0, 25.0) for z in (0.1, 0.5, 1.0)],
}


class ClosedFormDenoiser(dinv.models.Denoiser):
    """The prior's exact MMSE denoiser in deepinv's [0, 1] convention (see the module docstring); counts calls."""

    def __init__(self, prior, c: float = C):
        super().__init__()
        self.prior, self.c, self.calls = prior, c, 0

    def forward(self, x, sigma, *args, **kwargs):
        self.calls += 1
        B = x.shape[0]
        u = x.reshape(B, -1).to(torch.float64)
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1)
        s = s.expand(B) if s.numel() == 1 else s
        x0 = self.prior.denoise(self.c * (2 * u - 1), 2 * self.c * s)
        return (x0 / (2 * self.c) + 0.5).reshape(x.shape).to(x.dtype)


class SVDPhysics(dinv.physics.DecomposablePhysics):
    """A = U diag(s) Vᵀ (d_y x d) on images (B, 1, 1, d), measurements (B, 1, 1, d_y); spectral space has d
    coordinates (mask = s padded with zeros), so DDRM's per-coordinate rules apply."""

    def __init__(self, A: torch.Tensor, sigma: float):
        d_y, d = A.shape
        U, s, Vh = torch.linalg.svd(A.to(torch.float64), full_matrices=True)
        mask = torch.zeros(1, 1, 1, d, dtype=torch.float64)
        mask[..., :d_y] = s
        super().__init__(mask=mask, noise_model=dinv.physics.GaussianNoise(sigma), img_size=(1, 1, d))
        self.d, self.d_y = d, d_y
        self.register_buffer("Umat", U)
        self.register_buffer("Vh", Vh)

    def V_adjoint(self, x):
        return x @ self.Vh.to(x.dtype).T

    def V(self, z, **kwargs):
        return z @ self.Vh.to(z.dtype)

    def U(self, z):
        return z[..., : self.d_y] @ self.Umat.to(z.dtype).T

    def U_adjoint(self, y, **kwargs):
        return F.pad(y @ self.Umat.to(y.dtype), (0, self.d - self.d_y))


def references(p, n: int, seed: int = 0):
    """As ``tests/test_conditional.py::_references``: exact samples, directions, floor, oracle SW."""
    g = torch.Generator().manual_seed(seed)
    exact = p.posterior.sample(n, g)
    dirs = torch.randn(p.prior.dim, 200, generator=g, dtype=torch.float64)
    dirs /= dirs.norm(dim=0)
    floor = sum(float(sliced_wasserstein(exact, p.posterior.sample(n, g), directions=dirs)) for _ in range(4)) / 4
    sde = VPSDE()
    x = sde.prior_sampling((n, p.prior.dim), generator=g, dtype=torch.float64)
    oracle_x = sample_pc(Diffusion(p.posterior, sde), x, time_grid(sde, ORACLE_STEPS, dtype=torch.float64),
                         predictor="ancestral", generator=g).x
    return exact, dirs, floor, float(sliced_wasserstein(oracle_x, exact, directions=dirs))


def invscore_runs():
    runs = [("smc", f"particles={k},steps={s}", dict(method="smc", steps=s, particles=k)) for k, s in SMC_GRID]
    for method in ("pigdm", "dps", "ddrm", "projection"):
        runs += [(method, f"steps={s}", dict(method=method, steps=s)) for s in INV_STEPS]
    return runs


def run_deepinv(method, cfg, nfe, den, phys, y_u, seed):
    """One deepinv run targeting ``nfe`` denoiser calls; returns samples in [0, 1] space (B, 1, 1, d)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    rng = torch.Generator().manual_seed(seed)
    if method == "dinv_dps":
        # timesteps linspace(1, 0, num_steps): num_steps - 1 ancestral steps, none at t = 0
        model = dinv.sampling.DPS(den, num_steps=nfe + 1, weight=cfg["weight"], guidance=cfg["guidance"],
                                  solver="ddpm", rng=rng)
        return model(y_u, phys)
    if method == "dinv_pigdm":
        ts = torch.linspace(1, 0, nfe + 1, dtype=torch.float64)
        solver = (dinv.sampling.DDPMSolver(timesteps=ts, rng=rng) if cfg["solver"] == "ddpm"
                  else dinv.sampling.DDIMSolver(timesteps=ts, eta=cfg["eta"], rng=rng))
        model = dinv.sampling.PosteriorDiffusion(
            data_fidelity=dinv.sampling.PiGDMDataFidelity(weight=cfg["weight"]), denoiser=den,
            sde=dinv.sampling.VariancePreservingDiffusion(), solver=solver)
        return model(y_u, phys)
    if method == "dinv_ddrm":
        model = dinv.sampling.DDRM(den, sigmas=np.linspace(1, 0, nfe), eta=cfg["eta"], etab=cfg["etab"])
        return model(y_u, phys)
    if method == "dinv_diffpir":
        model = dinv.sampling.DiffPIR(den, data_fidelity=dinv.optim.data_fidelity.L2(), max_iter=nfe,
                                      zeta=cfg["zeta"], lambda_=cfg["lambda_"])
        return model(y_u, phys)
    raise ValueError(method)


def _cfg_label(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items())


def bench_problem(d, d_y, n, quick, log):
    p = mixture_problem(d, d_y, seed=d + d_y)
    exact, dirs, floor, oracle = references(p, n)
    rows = []
    base = dict(d=d, d_y=d_y, sigma_y=round(p.sigma_y, 4), floor=floor, oracle_over_floor=oracle / floor)

    def record(lib, method, config, nfe, x, seconds, error=""):
        if x is not None and torch.isfinite(x).all():
            sw = float(sliced_wasserstein(x.reshape(n, d).to(torch.float64), exact, directions=dirs))
        else:
            sw, error = float("nan"), error or "non-finite samples"
        rows.append(dict(base, library=lib, method=method, config=config, nfe=int(nfe), sw=sw,
                         sw_over_floor=sw / floor, seconds=round(seconds, 3), error=error))
        log(f"  d={d:>2} d_y={d_y} {method:>12} {config:<34} NFE {nfe:>5}  SW/floor {sw / floor:7.2f}"
            f"  ({seconds:.1f}s){'  ' + error if error else ''}")

    # invscore
    y = p.y.expand(n, -1).contiguous()
    for method, config, kw in invscore_runs():
        if quick and kw.get("steps", 0) > 100:
            continue
        t0 = time.perf_counter()
        try:
            res = solve(p.prior, p.operator, y, generator=torch.Generator().manual_seed(1), **kw)
            record("invscore", method, config, res.nfe, res.x, time.perf_counter() - t0)
        except Exception as err:  # noqa: BLE001 - report, don't hide
            record("invscore", method, config, 0, None, time.perf_counter() - t0, f"{type(err).__name__}: {err}")

    # deepinv, same prior as a [0, 1] denoiser, same problem in [0, 1] coordinates
    den = ClosedFormDenoiser(p.prior)
    phys = SVDPhysics(p.A, p.sigma_y / (2 * C))
    ones = torch.ones(1, d, dtype=torch.float64)
    y_u = ((p.y + C * ones @ p.A.T) / (2 * C)).reshape(1, 1, 1, d_y).expand(n, 1, 1, d_y).contiguous()

    def one(method, cfg, nfe):
        den.calls = 0
        t0 = time.perf_counter()
        try:
            u = run_deepinv(method, cfg, nfe, den, phys, y_u, seed=1)
            x = C * (2 * u.to(torch.float64) - 1)
            record("deepinv", method, _cfg_label(cfg), den.calls, x, time.perf_counter() - t0)
        except Exception as err:  # noqa: BLE001 - report, don't hide
            traceback.print_exc()
            record("deepinv", method, _cfg_label(cfg), den.calls, None, time.perf_counter() - t0,
                   f"{type(err).__name__}: {err}")
        return rows[-1]["sw"]

    for method, cfgs in DEEPINV.items():
        # stage 1: every configuration at TUNE_NFE; stage 2: the TOP_K best of them over the NFE grid
        tuned = sorted(((one(method, cfg, TUNE_NFE), i) for i, cfg in enumerate(cfgs)),
                       key=lambda t: (math.isnan(t[0]), t[0]))
        for _, i in tuned[:TOP_K]:
            for nfe in DEEPINV_NFE:
                if nfe != TUNE_NFE and not (quick and nfe > 200):
                    one(method, cfgs[i], nfe)
    return rows


def best_per_nfe(rows):
    """(library, method, nfe) -> the row with the lowest SW (deepinv: best config of the sweep)."""
    best = {}
    for r in rows:
        if math.isnan(r["sw"]):
            continue
        key = (r["d"], r["d_y"], r["library"], r["method"], r["nfe"])
        if key not in best or r["sw"] < best[key]["sw"]:
            best[key] = r
    return sorted(best.values(), key=lambda r: (r["d"], r["d_y"], r["library"] != "invscore", r["method"], r["nfe"]))


def verdicts(rows):
    out = []
    for d, d_y in sorted({(r["d"], r["d_y"]) for r in rows}):
        rs = [r for r in rows if (r["d"], r["d_y"]) == (d, d_y) and not math.isnan(r["sw"])]
        inv = [r for r in rs if r["library"] == "invscore"]
        dv = [r for r in rs if r["library"] == "deepinv"]
        bd = min(dv, key=lambda r: (r["sw"], r["nfe"]))
        cand = [r for r in inv if r["nfe"] <= bd["nfe"]]
        bi = min(cand, key=lambda r: (r["sw"], r["nfe"])) if cand else None
        strict = bi is not None and bi["sw"] <= 0.5 * bd["sw"]
        bi_all = min(inv, key=lambda r: (r["sw"], r["nfe"]))
        dv_le = [r for r in dv if r["nfe"] <= bi_all["nfe"]]
        bd_le = min(dv_le, key=lambda r: (r["sw"], r["nfe"])) if dv_le else None
        lenient = bd_le is None or bi_all["sw"] <= 0.5 * bd_le["sw"]
        # an exact sampler scores SW ~ floor at this N: a target below the floor cannot be shown
        below_floor = 0.5 * bd["sw"] < rs[0]["floor"]
        out.append(dict(d=d, d_y=d_y, floor=rs[0]["floor"], best_deepinv=bd, best_invscore_at_le=bi, strict=strict,
                        best_invscore=bi_all, best_deepinv_at_le=bd_le, lenient=lenient, below_floor=below_floor))
    return out


def _fmt_run(r):
    if r is None:
        return "none"
    return f"{r['method']} [{r['config']}] NFE {r['nfe']}: SW/floor {r['sw_over_floor']:.2f}"


def write_outputs(rows, n, elapsed, notes, prefix=SWEEP):
    os.makedirs(RESULTS, exist_ok=True)
    fields = ["d", "d_y", "sigma_y", "library", "method", "config", "nfe", "sw", "floor", "sw_over_floor",
              "oracle_over_floor", "seconds", "error"]
    with open(os.path.join(RESULTS, prefix + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()})
    best = best_per_nfe(rows)
    vs = verdicts(rows)
    lines = ["# Posterior sampling: sliced Wasserstein vs NFE (mixture fixture)", "",
             f"N = {n} samples per run, SW over 200 fixed directions, relative to the floor (exact vs exact). "
             f"Oracle: ancestral sampler, {ORACLE_STEPS} steps, exact posterior denoiser. invscore methods at "
             f"default options; deepinv: every configuration of a small sweep at NFE {TUNE_NFE}, the {TOP_K} best per "
             "method over the NFE grid, and the best per method and NFE shown (config column). "
             f"Generated by `python experiments/bench_posterior.py` in {elapsed / 60:.1f} min; all runs in "
             f"`{prefix}.csv`.", ""]
    lines += ["## Verdict (goal: best invscore <= 0.5 x best deepinv, at equal or fewer NFE)", "",
              "| problem | best deepinv (any NFE) | best invscore at <= that NFE | ratio | goal | "
              "best invscore (any NFE) | best deepinv at <= that NFE | ratio |", "|---|---|---|---|---|---|---|---|"]
    for v in vs:
        bd, bi, bia, bdl = v["best_deepinv"], v["best_invscore_at_le"], v["best_invscore"], v["best_deepinv_at_le"]
        r1 = f"{bi['sw'] / bd['sw']:.2f}" if bi else "-"
        r2 = f"{bia['sw'] / bdl['sw']:.2f}" if bdl else "-"
        lines.append(f"| d={v['d']} d_y={v['d_y']} | {_fmt_run(bd)} | {_fmt_run(bi)} | {r1} | "
                     f"{'met' if v['strict'] else 'NOT met'}{' (target below floor)' if v['below_floor'] else ''} | {_fmt_run(bia)} | {_fmt_run(bdl)} | {r2} |")
    lines += ["", "## SW / floor (best config per method and NFE)", ""]
    for d, d_y in sorted({(r["d"], r["d_y"]) for r in rows}):
        rs = [r for r in best if (r["d"], r["d_y"]) == (d, d_y)]
        lines += [f"### d={d}, d_y={d_y} (sigma_y={rs[0]['sigma_y']}, floor SW {rs[0]['floor']:.3f}, "
                  f"oracle/floor {rs[0]['oracle_over_floor']:.2f})", "",
                  "| library | method | NFE | SW/floor | config |", "|---|---|---|---|---|"]
        lines += [f"| {r['library']} | {r['method']} | {r['nfe']} | {r['sw_over_floor']:.2f} | {r['config']} |"
                  for r in rs]
        lines.append("")
    errs = [r for r in rows if r["error"]]
    if errs or notes:
        lines += ["## Notes and failures", ""] + [f"- {s}" for s in notes]
        lines += [f"- d={r['d']} d_y={r['d_y']} {r['method']} [{r['config']}]: {r['error']}" for r in errs]
    with open(os.path.join(RESULTS, prefix + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(best, os.path.join(RESULTS, prefix + ".png"))
    return best, vs


def plot(best, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    probs = sorted({(r["d"], r["d_y"]) for r in best})
    ds, dys = sorted({d for d, _ in probs}), sorted({dy for _, dy in probs})
    fig, axes = plt.subplots(len(ds), len(dys), figsize=(4.2 * len(dys), 3.6 * len(ds)), squeeze=False)
    methods = sorted({(r["library"], r["method"]) for r in best}, key=lambda m: (m[0] != "invscore", m[1]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    style = {m: (colors[i % len(colors)], "-" if m[0] == "invscore" else "--") for i, m in enumerate(methods)}
    for i, d in enumerate(ds):
        for j, d_y in enumerate(dys):
            ax = axes[i][j]
            rs = [r for r in best if (r["d"], r["d_y"]) == (d, d_y)]
            if not rs:
                continue
            for m in methods:
                pts = sorted((r["nfe"], r["sw_over_floor"]) for r in rs if (r["library"], r["method"]) == m)
                if pts:
                    c, ls = style[m]
                    ax.plot(*zip(*pts), ls, marker="o" if m[0] == "invscore" else "s", ms=3, color=c, label=m[1])
            ax.axhline(1.0, color="k", lw=0.8, ls=":", label="floor")
            ax.axhline(rs[0]["oracle_over_floor"], color="gray", lw=0.8, ls="-.", label="oracle (60 steps)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"d={d}, d_y={d_y}")
            ax.set_xlabel("NFE per sample")
            ax.set_ylabel("SW / floor")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("Sliced Wasserstein to the exact posterior vs NFE (solid: invscore, dashed: deepinv, best config)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _elapsed_path(prefix):
    return os.path.join(RESULTS, prefix + ".elapsed")


def _read_csv(prefix=SWEEP):
    rows = []
    with open(os.path.join(RESULTS, prefix + ".csv")) as f:
        for r in csv.DictReader(f):
            for k in ("d", "d_y", "nfe"):
                r[k] = int(r[k])
            for k in ("sigma_y", "sw", "floor", "sw_over_floor", "oracle_over_floor", "seconds"):
                r[k] = float(r[k])
            rows.append(r)
    return rows


SWEEP_NOTES = [
    "Resolution: at N = 300 one SW estimate scatters by roughly +-0.3 x floor (e.g. smc d=80 d_y=2: 0.60 at "
    "NFE 200, 1.12 at NFE 400), and taking the best over configurations and NFE biases a method's best "
    "value low. Where 0.5 x best deepinv < floor the 2x goal cannot be resolved at this N ('target below "
    "floor'); the decisive rerun is `posterior_benchmark.md`.",
    "deepinv DDRM draws its noise as std * randn / sqrt(2) while calling the denoiser at the nominal sigma "
    "(deepinv 0.5.0, sampling/diffusion.py); run as shipped.",
    "deepinv DiffPIR and DDRM are used with their own fixed schedules (DiffPIR: 1000-step DDPM betas; "
    "DDRM: sigmas = linspace(1, 0, NFE) in [0, 1] units, i.e. 40 in x units).",
    "NFE counts denoiser forward calls; DPS/PiGDM (both libraries) also backpropagate through each call.",
    "invscore's ddrm rows predate its fix (Kawar et al. eq. 7 on the unmeasured coordinates; before, the "
    "DDIM kernel); the decisive rerun has the fixed DDRM.",
]


def run_sweep(args):
    start = time.perf_counter()
    if args.from_csv:
        rows = _read_csv(SWEEP)
        path = _elapsed_path(SWEEP)
        elapsed = float(open(path).read()) if os.path.exists(path) else float("nan")
    else:
        rows = []
        for d in ([8] if args.quick else args.dims):
            for d_y in args.dys:
                rows += bench_problem(d, d_y, args.n, args.quick, lambda s: print(s, flush=True))
        elapsed = time.perf_counter() - start
        os.makedirs(RESULTS, exist_ok=True)
        with open(_elapsed_path(SWEEP), "w") as f:
            f.write(f"{elapsed:.1f}\n")
    best, vs = write_outputs(rows, args.n, elapsed, SWEEP_NOTES, SWEEP)
    print("\nVerdict of the sweep (goal: best invscore <= 0.5 x best deepinv at equal or fewer NFE):")
    for v in vs:
        bd, bi = v["best_deepinv"], v["best_invscore_at_le"]
        ratio = f"{bi['sw'] / bd['sw']:.2f}" if bi else "-"
        print(f"  d={v['d']:>2} d_y={v['d_y']}: best deepinv {_fmt_run(bd)}; best invscore at <= NFE "
              f"{_fmt_run(bi)}; ratio {ratio} -> {'MET' if v['strict'] else 'NOT MET'}")
    print(f"\nwrote {RESULTS}/{SWEEP}.{{csv,md,png}}")


# ---------------------------------------------------------------------------------------------------------
# Stage 2: the decisive rerun. Only the contenders of the sweep, on a fixed NFE grid, a large exact
# reference set, N samples per run and several seeds.

FINAL_NFE = [20, 50, 100, 200, 500]
SMC_UNIFORM_MAX_NFE = 200  # solve()'s uniform-grid SMC only up to here (time budget; the sweep has the rest)
CONTENDER = 2.0  # a method is rerun where its best sweep SW is within this factor of its library's best


def smc_config(nfe):
    """(particles, steps) of SMC at a target NFE: 4 particles below 200 NFE, 8 from 200 (a fixed rule; the
    sweep had (4, 50) best at 200 NFE on 3 problems and (8, 25) on 3)."""
    k = 4 if nfe < 200 else 8
    return k, max(1, nfe // k)


def sw_to_reference(x, ref_sorted, dirs):
    """Sliced W2 between N samples and M = k·N reference samples (projections pre-sorted, ``(M, P)``): in 1-D
    the optimal coupling of sorted sets matches the i-th sample with reference points k·i .. k·i + k − 1,
    so this is exact, not a quantile approximation."""
    n, m = x.shape[0], ref_sorted.shape[0]
    if m % n:
        raise ValueError(f"the reference size {m} must be a multiple of N = {n}")
    px, _ = torch.sort(x.reshape(n, -1).to(torch.float64) @ dirs, dim=0)
    return float(((px.repeat_interleave(m // n, dim=0) - ref_sorted) ** 2).mean().sqrt())


def plan_problem(sweep_rows, d, d_y):
    """The runs of the decisive stage for one problem: [(library, method, nfe target, config label)].

    invscore: its methods whose best sweep SW is within CONTENDER x of the best invscore method's, each on
    FINAL_NFE (SMC with ``smc_config``, at the default uniform grid up to SMC_UNIFORM_MAX_NFE and the EDM
    grid), plus DDRM (changed since the sweep). deepinv: likewise among
    deepinv's methods, at each NFE the configuration that was best at that NFE in the sweep (optimistic for
    deepinv: selected on this metric)."""
    rs = [r for r in sweep_rows if (r["d"], r["d_y"]) == (d, d_y) and not math.isnan(r["sw"])]
    plan = []
    for lib in ("invscore", "deepinv"):
        lr = [r for r in rs if r["library"] == lib]
        best = {}
        for r in lr:
            best[r["method"]] = min(best.get(r["method"], math.inf), r["sw"])
        top = min(best.values())
        for method in sorted(m for m, v in best.items() if v <= CONTENDER * top):
            for nfe in FINAL_NFE:
                if lib == "invscore":
                    if method == "smc":
                        k, steps = smc_config(nfe)
                        if nfe <= SMC_UNIFORM_MAX_NFE:
                            plan.append((lib, "smc", nfe, f"particles={k},steps={steps}"))
                        plan.append((lib, "smc_edm", nfe, f"particles={k},steps={steps},grid=edm"))
                    else:
                        steps = nfe // 2 if method == "projection" else nfe
                        plan.append((lib, method, nfe, f"steps={steps}"))
                else:
                    at = [r for r in lr if r["method"] == method and r["nfe"] == nfe]
                    if at:
                        plan.append((lib, method, nfe, min(at, key=lambda r: r["sw"])["config"]))
        if lib == "invscore" and best.get("ddrm", math.inf) > CONTENDER * top:
            # DDRM changed after the sweep (Kawar et al. eq. 7 on the unmeasured coordinates): rerun it too
            plan += [(lib, "ddrm", nfe, f"steps={nfe}") for nfe in FINAL_NFE]
    return plan


def _parse_cfg(label):
    out = {}
    for kv in label.split(","):
        k, v = kv.split("=")
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def decisive_problem(d, d_y, plan, n, seeds, m_ref, log, n_floor=8):
    p = mixture_problem(d, d_y, seed=d + d_y)
    g = torch.Generator().manual_seed(0)
    ref = p.posterior.sample(m_ref, g)
    dirs = torch.randn(d, 200, generator=g, dtype=torch.float64)
    dirs /= dirs.norm(dim=0)
    ref_sorted, _ = torch.sort(ref @ dirs, dim=0)
    floors = [sw_to_reference(p.posterior.sample(n, g), ref_sorted, dirs) for _ in range(n_floor)]
    floor, floor_sd = float(np.mean(floors)), float(np.std(floors, ddof=1))
    floor_rms = float(np.sqrt(np.mean(np.square(floors))))
    log(f"d={d} d_y={d_y}: floor SW(N={n} exact, {m_ref} exact) = {floor:.4f} +- {floor_sd:.4f}")
    base = dict(d=d, d_y=d_y, sigma_y=round(p.sigma_y, 4), n=n, m_ref=m_ref, floor=floor, floor_sd=floor_sd,
                floor_rms=floor_rms)
    rows = []
    y = p.y.expand(n, -1).contiguous()
    den = ClosedFormDenoiser(p.prior)
    phys = SVDPhysics(p.A, p.sigma_y / (2 * C))
    ones = torch.ones(1, d, dtype=torch.float64)
    y_u = ((p.y + C * ones @ p.A.T) / (2 * C)).reshape(1, 1, 1, d_y).expand(n, 1, 1, d_y).contiguous()
    sde = VPSDE()
    model = Diffusion(p.prior, sde)
    for lib, method, target, config in plan:
        cfg = _parse_cfg(config)
        for seed in seeds:
            t0 = time.perf_counter()
            err, x, nfe = "", None, 0
            try:
                if lib == "invscore" and method == "smc_edm":
                    ts = time_grid(sde, cfg["steps"], "edm")
                    res = sample_smc(model, p.operator, y, ts, particles=cfg["particles"],
                                     generator=torch.Generator().manual_seed(seed))
                    x, nfe = res.x, res.nfe * cfg["particles"]
                elif lib == "invscore":
                    res = solve(p.prior, p.operator, y, method=method, generator=torch.Generator().manual_seed(seed),
                                **cfg)
                    x, nfe = res.x, res.nfe
                else:
                    den.calls = 0
                    u = run_deepinv(method, cfg, target, den, phys, y_u, seed=seed)
                    x, nfe = C * (2 * u.to(torch.float64) - 1), den.calls
            except Exception as e:  # noqa: BLE001 - report, don't hide
                traceback.print_exc()
                err = f"{type(e).__name__}: {e}"
            sw = (sw_to_reference(x, ref_sorted, dirs) if x is not None and torch.isfinite(x).all()
                  else float("nan"))
            if x is not None and math.isnan(sw) and not err:
                err = "non-finite samples"
            rows.append(dict(base, library=lib, method=method, config=config, target=target, nfe=int(nfe), seed=seed,
                             sw=sw,
                             sw_over_floor=sw / floor, seconds=round(time.perf_counter() - t0, 3), error=err))
            log(f"  d={d:>2} d_y={d_y} {method:>12} {config:<36} seed {seed} NFE {nfe:>4}  SW {sw:.4f}  "
                f"SW/floor {sw / floor:6.2f}  ({rows[-1]['seconds']:.1f}s){'  ' + err if err else ''}")
    return rows


def debiased(sw, floor_rms):
    """sqrt(max(SW² − floor², 0)): in 1-D, W2²(μ_N, ν_M) = ∫(F_N⁻¹ − G_M⁻¹)² splits into the distance
    of the laws, the sampling noise of both sets and cross terms whose mean vanishes as empirical
    quantiles are unbiased to O(1/N); the floor² (exact N-set vs the same reference) estimates the noise part. Exact in
    expectation for a perfect sampler, approximate otherwise (the method's own quantile noise differs from
    the exact posterior's where its law differs)."""
    return math.sqrt(max(sw**2 - floor_rms**2, 0.0))


def aggregate(rows):
    """(d, d_y, library, method, nfe) -> mean / s.d. over seeds of SW (and of the debiased SW)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["d"], r["d_y"], r["library"], r["method"], r["config"], r["target"]), []).append(r)
    out = []
    for (d, d_y, lib, method, config, _), rs in groups.items():
        sws = np.array([r["sw"] for r in rs])
        ok = sws[np.isfinite(sws)]
        r0 = rs[0]
        deb = np.array([debiased(v, r0["floor_rms"]) for v in ok])
        out.append(dict(d=d, d_y=d_y, library=lib, method=method, config=config, nfe=max(r["nfe"] for r in rs),
                        seeds=len(ok), failed=len(sws) - len(ok),
                        sw=float(ok.mean()) if len(ok) else float("nan"),
                        sw_sd=float(ok.std(ddof=1)) if len(ok) > 1 else float("nan"),
                        deb=float(deb.mean()) if len(ok) else float("nan"),
                        floor=r0["floor"], floor_sd=r0["floor_sd"], floor_rms=r0["floor_rms"],
                        sigma_y=r0["sigma_y"], n=r0["n"], m_ref=r0["m_ref"]))
    return sorted(out, key=lambda r: (r["d"], r["d_y"], r["library"] != "invscore", r["method"], r["nfe"]))


def _ratio_se(a, b):
    """Ratio of means a/b and its standard error (delta method, seeds independent)."""
    q = a["sw"] / b["sw"]
    rel = 0.0
    for r in (a, b):
        if r["seeds"] > 1 and r["sw"] > 0:
            rel += (r["sw_sd"] / r["sw"]) ** 2 / r["seeds"]
    return q, q * math.sqrt(rel)


def final_verdicts(agg, key="sw"):
    out = []
    for d, d_y in sorted({(r["d"], r["d_y"]) for r in agg}):
        rs = [r for r in agg if (r["d"], r["d_y"]) == (d, d_y) and not math.isnan(r[key])]
        inv = [r for r in rs if r["library"] == "invscore"]
        dv = [r for r in rs if r["library"] == "deepinv"]
        bd = min(dv, key=lambda r: (r[key], r["nfe"]))
        cand = [r for r in inv if r["nfe"] <= bd["nfe"]]
        bi = min(cand, key=lambda r: (r[key], r["nfe"])) if cand else None
        bi_all = min(inv, key=lambda r: (r[key], r["nfe"]))
        dv_le = [r for r in dv if r["nfe"] <= bi_all["nfe"]]
        bd_le = min(dv_le, key=lambda r: (r[key], r["nfe"])) if dv_le else None
        strict = (bi[key] / bd[key]) if bi else float("inf")
        lenient = (bi_all[key] / bd_le[key]) if bd_le else float("nan")
        se = _ratio_se(bi, bd)[1] if (bi and key == "sw") else float("nan")
        se_l = _ratio_se(bi_all, bd_le)[1] if (bd_le and key == "sw") else float("nan")
        out.append(dict(d=d, d_y=d_y, floor=rs[0]["floor"], best_deepinv=bd, best_invscore_at_le=bi,
                        strict=strict, strict_se=se, best_invscore=bi_all, best_deepinv_at_le=bd_le,
                        lenient=lenient, lenient_se=se_l, below_floor=0.5 * bd["sw"] < rs[0]["floor"]))
    return out


def _fmt_agg(r, key="sw"):
    if r is None:
        return "none"
    sd = f" ± {r['sw_sd']:.3f}" if key == "sw" and not math.isnan(r["sw_sd"]) else ""
    return f"{r['method']} [{r['config']}] NFE {r['nfe']}: {r[key]:.3f}{sd} ({r[key] / r['floor']:.2f}× floor)"


def _call(q, se):
    """'met' / 'NOT met', flagged where the ratio is within 2 standard errors of 0.5."""
    if math.isnan(q):
        return "met (no deepinv run at ≤ that NFE)"
    word = "met" if q <= 0.5 else "NOT met"
    if not math.isnan(se) and abs(q - 0.5) < 2 * se:
        word += " (within 2 s.e. of 0.5)"
    return word


def write_final(rows, agg, n, seeds, m_ref, elapsed, notes, prefix=FINAL):
    os.makedirs(RESULTS, exist_ok=True)
    fields = ["d", "d_y", "sigma_y", "library", "method", "config", "target", "nfe", "seed", "n", "m_ref", "sw",
              "floor",
              "floor_sd", "floor_rms", "sw_over_floor", "seconds", "error"]
    with open(os.path.join(RESULTS, prefix + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    vs, vd = final_verdicts(agg, "sw"), final_verdicts(agg, "deb")
    lines = ["# Posterior sampling: sliced Wasserstein vs NFE (mixture fixture), decisive rerun", "",
             f"Each run draws N = {n} posterior samples for the one measurement y; its sliced W2 (200 fixed "
             f"directions) is taken against M = {m_ref} exact posterior samples (exact for M a multiple of N: "
             f"sorted 1-D sets, each sample matched with its {m_ref // n} reference points), and repeated over "
             f"seeds {list(seeds)} (mean ± s.d.). The *floor* is the same distance for N exact samples (mean "
             f"over 8 sets): what a perfect sampler scores at this N. Runs: the contenders of the N = 300 sweep "
             f"(`{SWEEP}.md`, every method and configuration), i.e. per library the methods whose best sweep SW "
             f"is within {CONTENDER:g}× of that library's best method, on NFE {FINAL_NFE}; deepinv at each NFE "
             "with the configuration that was best at that NFE in the sweep (selected on this metric: "
             "optimistic for deepinv); invscore at defaults (SMC: 4 particles below 200 NFE, 8 from 200; `smc` "
             "is `solve`'s uniform time grid, `smc_edm` the same sampler on `time_grid(..., 'edm')`). "
             f"Generated by `python experiments/bench_posterior.py` in {elapsed / 60:.1f} min; every run in "
             f"`{prefix}.csv`.", ""]
    lines += ["## Verdict (goal: best invscore ≤ 0.5 × best deepinv, at equal or fewer NFE)", "",
              "Raw sliced W2 (mean over seeds). *Strict*: the best deepinv run at any NFE (n_d) against the best "
              "invscore run with NFE ≤ n_d. *Lenient*: the best invscore run at any NFE (n_i) against the best "
              "deepinv run with NFE ≤ n_i. Ratio ± standard error over seeds (delta method).", "",
              "| problem | floor | best deepinv (any NFE) | best invscore at ≤ that NFE | strict ratio | goal | "
              "best invscore (any NFE) | best deepinv at ≤ that NFE | lenient ratio | goal |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for v in vs:
        lines.append(
            f"| d={v['d']} d_y={v['d_y']} | {v['floor']:.3f} | {_fmt_agg(v['best_deepinv'])} | "
            f"{_fmt_agg(v['best_invscore_at_le'])} | {v['strict']:.2f} ± {v['strict_se']:.2f} | "
            f"{_call(v['strict'], v['strict_se'])}{' (target below floor)' if v['below_floor'] else ''} | "
            f"{_fmt_agg(v['best_invscore'])} | {_fmt_agg(v['best_deepinv_at_le'])} | "
            f"{v['lenient']:.2f} ± {v['lenient_se']:.2f} | {_call(v['lenient'], v['lenient_se'])} |")
    lines += ["", "Debiased reading (secondary; the raw numbers above decide): sqrt(max(SW² − floor², 0)) removes "
              "the sampling noise an exact sampler would also show (see `debiased` in the script for when that "
              "is exact).", "",
              "| problem | best deepinv (any NFE) | best invscore at ≤ that NFE | strict ratio | "
              "best invscore (any NFE) | best deepinv at ≤ that NFE | lenient ratio |",
              "|---|---|---|---|---|---|---|"]
    for v in vd:
        lines.append(f"| d={v['d']} d_y={v['d_y']} | {_fmt_agg(v['best_deepinv'], 'deb')} | "
                     f"{_fmt_agg(v['best_invscore_at_le'], 'deb')} | {v['strict']:.2f} | "
                     f"{_fmt_agg(v['best_invscore'], 'deb')} | {_fmt_agg(v['best_deepinv_at_le'], 'deb')} | "
                     f"{v['lenient']:.2f} |")
    lines += ["", "## Sliced W2 per method and NFE (mean ± s.d. over seeds)", ""]
    for d, d_y in sorted({(r["d"], r["d_y"]) for r in agg}):
        rs = [r for r in agg if (r["d"], r["d_y"]) == (d, d_y)]
        lines += [f"### d={d}, d_y={d_y} (sigma_y={rs[0]['sigma_y']}, floor SW {rs[0]['floor']:.4f} ± "
                  f"{rs[0]['floor_sd']:.4f})", "",
                  "| library | method | NFE | SW | SW/floor | debiased SW | config |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['library']} | {r['method']} | {r['nfe']} | {r['sw']:.4f} ± {r['sw_sd']:.4f} | "
                  f"{r['sw'] / r['floor']:.2f} | {r['deb']:.4f} | {r['config']}"
                  f"{' (' + str(r['failed']) + ' failed)' if r['failed'] else ''} |" for r in rs]
        lines.append("")
    errs = [r for r in rows if r["error"]]
    lines += ["## Notes and failures", ""] + [f"- {s}" for s in notes]
    lines += [f"- d={r['d']} d_y={r['d_y']} {r['method']} [{r['config']}] seed {r['seed']}: {r['error']}"
              for r in errs]
    with open(os.path.join(RESULTS, prefix + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot_final(agg, os.path.join(RESULTS, prefix + ".png"))
    return vs, vd


def plot_final(agg, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    probs = sorted({(r["d"], r["d_y"]) for r in agg})
    ds, dys = sorted({d for d, _ in probs}), sorted({dy for _, dy in probs})
    fig, axes = plt.subplots(len(ds), len(dys), figsize=(4.2 * len(dys), 3.6 * len(ds)), squeeze=False)
    methods = sorted({(r["library"], r["method"]) for r in agg}, key=lambda m: (m[0] != "invscore", m[1]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    style = {m: (colors[i % len(colors)], "-" if m[0] == "invscore" else "--") for i, m in enumerate(methods)}
    for i, d in enumerate(ds):
        for j, d_y in enumerate(dys):
            ax = axes[i][j]
            rs = [r for r in agg if (r["d"], r["d_y"]) == (d, d_y)]
            if not rs:
                continue
            for m in methods:
                pts = sorted((r["nfe"], r["sw"], r["sw_sd"]) for r in rs if (r["library"], r["method"]) == m
                             and not math.isnan(r["sw"]))
                if pts:
                    c, ls = style[m]
                    nfe, sw, sd = zip(*pts)
                    ax.errorbar(nfe, sw, yerr=np.nan_to_num(sd), fmt=ls, marker="o" if m[0] == "invscore" else "s",
                                ms=3, color=c, label=m[1], capsize=2)
            ax.axhline(rs[0]["floor"], color="k", lw=0.8, ls=":", label="floor (exact, same N)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(FINAL_NFE, [str(v) for v in FINAL_NFE])
            ax.minorticks_off()
            ax.set_title(f"d={d}, d_y={d_y}")
            ax.set_xlabel("NFE per sample")
            ax.set_ylabel("sliced W2 to the exact posterior")
            ax.grid(True, which="both", alpha=0.3)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.suptitle("Sliced W2 vs NFE, mean ± s.d. over seeds (solid: invscore, dashed: deepinv)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _read_final(prefix=FINAL):
    rows = []
    with open(os.path.join(RESULTS, prefix + ".csv")) as f:
        for r in csv.DictReader(f):
            for k in ("d", "d_y", "target", "nfe", "seed", "n", "m_ref"):
                r[k] = int(r[k])
            for k in ("sigma_y", "sw", "floor", "floor_sd", "floor_rms", "sw_over_floor", "seconds"):
                r[k] = float(r[k])
            rows.append(r)
    return rows


FINAL_NOTES = [
    "Why this stage: at N = 300 against 300 exact samples, the floor is ~1 (d=80 d_y=1) and one estimate "
    "scatters by ±0.3 × floor, so half of deepinv's best was often below the floor. Against a large reference "
    "and with N samples the floor falls, but only slowly: on a multimodal law the 1-D W2 of N samples "
    "converges like N^(-1/4) (mode-weight fluctuations), not N^(-1/2).",
    "deepinv DDRM draws its noise as std * randn / sqrt(2) while calling the denoiser at the nominal sigma "
    "(deepinv 0.5.0, sampling/diffusion.py); run as shipped. deepinv DiffPIR and DDRM use their own fixed "
    "schedules.",
    "NFE counts denoiser forward calls; DPS/PiGDM (both libraries) also backpropagate through each call; SMC "
    "counts steps × particles.",
    "invscore's DDRM changed after the sweep (Kawar et al. eq. 7 on the unmeasured coordinates instead of the "
    "DDIM kernel), so it is rerun on every problem whatever its sweep rank. invscore's DPS runs at the "
    "paper's ζ′ = 1, about 150× smaller a step than deepinv's tuned weight (30–300) on this problem's scale, "
    "and is not a contender; it is not tuned here.",
    "Where invscore's best run sits at the floor, the raw ratio cannot fall below floor / best deepinv: "
    "'target below floor' marks problems where 0.5 × best deepinv < floor. For d=80 d_y=4 a supplementary "
    "run at N = 2000 (`posterior_benchmark.d80_dy4_n2000.md`, ΠGDM and deepinv DPS at 500 NFE, the two "
    "best) halves the floor; d=8 d_y=1's floor (multimodal: SW of N samples falls like N^(-1/4)) stays "
    "above the target at any N this script can afford.",
]


def run_final(args):
    start = time.perf_counter()
    seeds = list(range(1, args.seeds + 1))
    prefix = FINAL + (f".{args.tag}" if args.tag else "")
    if args.from_csv:
        rows = _read_final(prefix)
        path = _elapsed_path(prefix)
        elapsed = float(open(path).read()) if os.path.exists(path) else float("nan")
        n, m_ref = rows[0]["n"], rows[0]["m_ref"]
        seeds = sorted({r["seed"] for r in rows})
    else:
        sweep = _read_csv(SWEEP)
        rows, n, m_ref = [], args.n, args.m_ref
        for d in args.dims:
            for d_y in args.dys:
                plan = plan_problem(sweep, d, d_y)
                if args.max_nfe:
                    plan = [q for q in plan if q[2] <= args.max_nfe]
                if args.only:
                    keep = {tuple(o.split(":")) for o in args.only}
                    plan = [q for q in plan if (q[1], str(q[2])) in keep or (q[1],) in keep]
                rows += decisive_problem(d, d_y, plan, n, seeds, m_ref, lambda s: print(s, flush=True))
                write_final(rows, aggregate(rows), n, seeds, m_ref, time.perf_counter() - start, FINAL_NOTES, prefix)
        elapsed = time.perf_counter() - start
        with open(_elapsed_path(prefix), "w") as f:
            f.write(f"{elapsed:.1f}\n")
    agg = aggregate(rows)
    vs, _ = write_final(rows, agg, n, seeds, m_ref, elapsed, FINAL_NOTES, prefix)
    print("\nVerdict (raw SW, mean over seeds; goal: best invscore <= 0.5 x best deepinv at <= NFE):")
    for v in vs:
        print(f"  d={v['d']:>2} d_y={v['d_y']}: strict {v['strict']:.2f} ± {v['strict_se']:.2f} "
              f"({_fmt_agg(v['best_invscore_at_le'])} vs {_fmt_agg(v['best_deepinv'])}) -> "
              f"{_call(v['strict'], v['strict_se'])}; lenient {v['lenient']:.2f} ± {v['lenient_se']:.2f} -> "
              f"{_call(v['lenient'], v['lenient_se'])}")
    print(f"\nwrote {RESULTS}/{prefix}.{{csv,md,png}} in {(time.perf_counter() - start) / 60:.1f} min")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", action="store_true",
                    help=f"stage 1: sweep every method and configuration at N = --n against N exact samples "
                         f"(writes {SWEEP}.*); default: stage 2, the decisive rerun of its contenders")
    ap.add_argument("--n", type=int, default=None, help="samples per run (default 300 sweep, 500 decisive)")
    ap.add_argument("--m-ref", type=int, default=20000, help="exact reference samples (decisive stage)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per run (decisive stage)")
    ap.add_argument("--max-nfe", type=int, default=0, help="decisive stage: skip runs above this NFE (timing)")
    ap.add_argument("--only", nargs="+", default=[], metavar="METHOD[:NFE]",
                    help="decisive stage: only these runs of the plan, e.g. pigdm:500 dinv_dps:500")
    ap.add_argument("--tag", default="", help=f"decisive stage: write {FINAL}.TAG.* instead of {FINAL}.*")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="sweep: NFE <= 200 / steps <= 100 only, d=8 only")
    ap.add_argument("--dims", type=int, nargs="+", default=[8, 80])
    ap.add_argument("--dys", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--from-csv", action="store_true", help="rebuild the .md and .png from the stage's csv (no runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.sweep:
        args.n = args.n or 300
        run_sweep(args)
    else:
        args.n = args.n or 500
        run_final(args)


if __name__ == "__main__":
    main()
