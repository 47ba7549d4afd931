"""Stage 1 of the posterior-sampling benchmark (``python experiments/bench_posterior.py --sweep``; see that
script's docstring): every invscore method at its defaults plus an SMC (particles, steps) grid, and every
deepinv configuration at NFE = TUNE_NFE then the TOP_K best per method over the NFE grid, at N = 300
samples against 300 exact samples. Writes ``posterior_benchmark.sweep.{csv,md,png}``.
"""
from __future__ import annotations

import math
import os
import time
import traceback

import torch

from invscore.conditional import solve
from invscore.stats import sliced_wasserstein
from invscore.testing import mixture_problem, posterior_references
from posterior_common import (ORACLE_STEPS, RESULTS, SWEEP, C, deepinv_setup, notes_section, plot_grid, problem_tables,
                              read_csv, read_elapsed, run_deepinv, write_csv, write_elapsed, write_html, write_md)

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


def invscore_runs():
    runs = [("smc", f"particles={k},steps={s}", dict(method="smc", steps=s, particles=k)) for k, s in SMC_GRID]
    for method in ("pigdm", "dps", "ddrm", "projection"):
        runs += [(method, f"steps={s}", dict(method=method, steps=s)) for s in INV_STEPS]
    return runs


def _cfg_label(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items())


def bench_problem(d, d_y, n, quick, log):
    p = mixture_problem(d, d_y, seed=d + d_y)
    exact, dirs, floor, oracle = posterior_references(p, n, ORACLE_STEPS)
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
    den, phys, y_u = deepinv_setup(p, n)

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
    fields = ["d", "d_y", "sigma_y", "library", "method", "config", "nfe", "sw", "floor", "sw_over_floor",
              "oracle_over_floor", "seconds", "error"]
    write_csv(prefix, fields, rows, ".5g")
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
                     f"{'met' if v['strict'] else 'NOT met'}{' (target below floor)' if v['below_floor'] else ''} | "
                     f"{_fmt_run(bia)} | {_fmt_run(bdl)} | {r2} |")
    lines += problem_tables(
        "SW / floor (best config per method and NFE)", sorted({(r["d"], r["d_y"]) for r in rows}), best,
        lambda r: f"sigma_y={r['sigma_y']}, floor SW {r['floor']:.3f}, oracle/floor {r['oracle_over_floor']:.2f}",
        ["library", "method", "NFE", "SW/floor", "config"],
        lambda r: f"| {r['library']} | {r['method']} | {r['nfe']} | {r['sw_over_floor']:.2f} | {r['config']} |")
    errs = [r for r in rows if r["error"]]
    if errs or notes:
        lines += notes_section(notes, [f"d={r['d']} d_y={r['d_y']} {r['method']} [{r['config']}]: {r['error']}"
                                       for r in errs])
    write_md(prefix, lines)
    plot(best, os.path.join(RESULTS, prefix + ".png"))
    write_html(prefix)
    return best, vs


def plot(best, path):
    def series(ax, rs, label, c, ls, marker):
        pts = sorted((r["nfe"], r["sw_over_floor"]) for r in rs)
        if pts:
            ax.plot(*zip(*pts), ls, marker=marker, ms=3, color=c, label=label)

    def refs(ax, rs):
        ax.axhline(1.0, color="k", lw=0.8, ls=":", label="floor")
        ax.axhline(rs[0]["oracle_over_floor"], color="gray", lw=0.8, ls="-.", label="oracle (60 steps)")

    plot_grid(best, path, series, refs, "SW / floor",
              "Sliced Wasserstein to the exact posterior vs NFE (solid: invscore, dashed: deepinv, best config)")


def read_sweep(prefix=SWEEP):
    return read_csv(prefix, ("d", "d_y", "nfe"), ("sigma_y", "sw", "floor", "sw_over_floor", "oracle_over_floor",
                                                  "seconds"))


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
        rows = read_sweep(SWEEP)
        elapsed = read_elapsed(SWEEP)
    else:
        rows = []
        for d in ([8] if args.quick else args.dims):
            for d_y in args.dys:
                rows += bench_problem(d, d_y, args.n, args.quick, lambda s: print(s, flush=True))
        elapsed = time.perf_counter() - start
        write_elapsed(SWEEP, elapsed)
    best, vs = write_outputs(rows, args.n, elapsed, SWEEP_NOTES, SWEEP)
    print("\nVerdict of the sweep (goal: best invscore <= 0.5 x best deepinv at equal or fewer NFE):")
    for v in vs:
        bd, bi = v["best_deepinv"], v["best_invscore_at_le"]
        ratio = f"{bi['sw'] / bd['sw']:.2f}" if bi else "-"
        print(f"  d={v['d']:>2} d_y={v['d_y']}: best deepinv {_fmt_run(bd)}; best invscore at <= NFE "
              f"{_fmt_run(bi)}; ratio {ratio} -> {'MET' if v['strict'] else 'NOT MET'}")
    print(f"\nwrote {RESULTS}/{SWEEP}.{{csv,md,png}}")
