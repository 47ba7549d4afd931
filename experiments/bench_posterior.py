"""Posterior-sampling benchmark: sliced Wasserstein to the exact posterior vs NFE, invscore vs deepinv.

Issue spec: "For every method: sliced Wasserstein vs NFE on the mixture fixture, and in the same run
deepinv's DPS, DDRM and DiffPIR / PosteriorDiffusion given the same closed-form prior as a deepinv
denoiser. Goal for invscore's best method: at most half the distance of the best deepinv sampler at equal
or fewer NFE. A table and a PNG plot."

Setting: :func:`invscore.testing.mixture_problem` (25-component grid mixture, random A with d_y rows,
random sigma_y), d in {8, 80}, d_y in {1, 2, 4}, seed = d + d_y as in ``tests/test_conditional.py``.
Every method draws N posterior samples for the one measurement y; the distance is the sliced
Wasserstein distance (200 fixed directions) to N exact posterior samples, reported relative to the
*floor* (mean SW between two independent exact sample sets) next to the *oracle* (the ancestral sampler,
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

Verdict per problem (strict, as in the issue): take the best deepinv run (lowest SW, its NFE n_d); the
goal is met if some invscore method reaches SW <= 0.5 x that with NFE <= n_d. Also printed: for the
best invscore run (NFE n_i), the best deepinv run with NFE <= n_i (the lenient reading).

Run: ``python experiments/bench_posterior.py [--n 300] [--quick] [--from-csv]`` (about 17 min on one
thread; ``--from-csv`` only rebuilds the table and plot); writes
``experiments/results/posterior_benchmark.{csv,md,png}``.
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
from invscore.priors import Diffusion
from invscore.samplers import sample_pc, time_grid
from invscore.sde import VPSDE
from invscore.stats import sliced_wasserstein
from invscore.testing import mixture_problem

C = 20.0  # x = C (2u - 1): u in [0, 1] for deepinv
ORACLE_STEPS = 60
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

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


def write_outputs(rows, n, elapsed, notes):
    os.makedirs(RESULTS, exist_ok=True)
    fields = ["d", "d_y", "sigma_y", "library", "method", "config", "nfe", "sw", "floor", "sw_over_floor",
              "oracle_over_floor", "seconds", "error"]
    with open(os.path.join(RESULTS, "posterior_benchmark.csv"), "w", newline="") as f:
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
             "`posterior_benchmark.csv`.", ""]
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
    with open(os.path.join(RESULTS, "posterior_benchmark.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(best, os.path.join(RESULTS, "posterior_benchmark.png"))
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


_ELAPSED = os.path.join(RESULTS, "posterior_benchmark.elapsed")


def _read_csv():
    rows = []
    with open(os.path.join(RESULTS, "posterior_benchmark.csv")) as f:
        for r in csv.DictReader(f):
            for k in ("d", "d_y", "nfe"):
                r[k] = int(r[k])
            for k in ("sigma_y", "sw", "floor", "sw_over_floor", "oracle_over_floor", "seconds"):
                r[k] = float(r[k])
            rows.append(r)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="NFE <= 200 / steps <= 100 only, d=8 only")
    ap.add_argument("--dims", type=int, nargs="+", default=[8, 80])
    ap.add_argument("--dys", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--from-csv", action="store_true",
                    help="rebuild the .md and .png from an existing posterior_benchmark.csv (no runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    if args.from_csv:
        rows, elapsed = _read_csv(), None
    else:
        for d in ([8] if args.quick else args.dims):
            for d_y in args.dys:
                rows += bench_problem(d, d_y, args.n, args.quick, lambda s: print(s, flush=True))
    notes = [
        "Resolution: at N = 300 one SW estimate scatters by roughly +-0.3 x floor (e.g. smc d=80 d_y=2: 0.60 at "
        "NFE 200, 1.12 at NFE 400), and taking the best over configurations and NFE biases a method's best "
        "value low. Where 0.5 x best deepinv < floor the 2x goal cannot be resolved at this N ('target below "
        "floor'); a decisive test needs a larger N or repeated seeds.",
        "deepinv DDRM draws its noise as std * randn / sqrt(2) while calling the denoiser at the nominal sigma "
        "(deepinv 0.5.0, sampling/diffusion.py); run as shipped.",
        "deepinv DiffPIR and DDRM are used with their own fixed schedules (DiffPIR: 1000-step DDPM betas; "
        "DDRM: sigmas = linspace(1, 0, NFE) in [0, 1] units, i.e. 40 in x units).",
        "NFE counts denoiser forward calls; DPS/PiGDM (both libraries) also backpropagate through each call.",
    ]
    elapsed = float(open(_ELAPSED).read()) if args.from_csv and os.path.exists(_ELAPSED) else time.perf_counter() - start
    if not args.from_csv:
        os.makedirs(RESULTS, exist_ok=True)
        with open(_ELAPSED, "w") as f:
            f.write(f"{elapsed:.1f}\n")
    best, vs = write_outputs(rows, args.n, elapsed, notes)
    print("\nproblem      library  method        NFE   SW/floor  oracle/floor  config")
    for r in best:
        print(f"d={r['d']:>2} d_y={r['d_y']}  {r['library']:<8} {r['method']:<12} {r['nfe']:>5}  "
              f"{r['sw_over_floor']:8.2f}  {r['oracle_over_floor']:12.2f}  {r['config']}")
    print("\nVerdict (goal: best invscore <= 0.5 x best deepinv at equal or fewer NFE):")
    for v in vs:
        bd, bi = v["best_deepinv"], v["best_invscore_at_le"]
        ratio = f"{bi['sw'] / bd['sw']:.2f}" if bi else "-"
        print(f"  d={v['d']:>2} d_y={v['d_y']}: best deepinv {_fmt_run(bd)}; best invscore at <= NFE "
              f"{_fmt_run(bi)}; ratio {ratio} -> {'MET' if v['strict'] else 'NOT MET'}"
              f"{' (0.5 x best deepinv is below the floor: unreachable at this N)' if v['below_floor'] else ''}")
        bia, bdl = v["best_invscore"], v["best_deepinv_at_le"]
        print(f"      lenient: best invscore {_fmt_run(bia)}; best deepinv at <= its NFE {_fmt_run(bdl)} -> "
              f"{'met' if v['lenient'] else 'not met'}")
    print(f"\nwrote {RESULTS}/posterior_benchmark.{{csv,md,png}} in {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
