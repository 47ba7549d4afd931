"""Stage 2 of the posterior-sampling benchmark, the decisive rerun (``python experiments/bench_posterior.py``; see
that script's docstring): the sweep's contenders only, on a fixed NFE grid, a large exact reference set, N
samples per run and several seeds; aggregates over seeds, the verdicts and ``posterior_benchmark.{csv,md,png}``.
"""
from __future__ import annotations

import math
import os
import time
import traceback

import numpy as np
import torch

from invscore.conditional import get_method, solve
from invscore.conditional.smc import sample_smc
from invscore.priors import Diffusion
from invscore.samplers import sample_ddim, time_grid
from invscore.sde import VPSDE
from invscore.testing import grid_mixture, mixture_problem
from posterior_common import (FINAL, RESULTS, SWEEP, C, deepinv_setup, notes_section, plot_grid, problem_tables,
                              read_csv, run_deepinv, sw_to_reference, write_csv, write_html, write_md)

FINAL_NFE = [20, 50, 100, 200, 500]
SMC_UNIFORM_MAX_NFE = 200  # solve()'s uniform-grid SMC only up to here (time budget; the sweep has the rest)
CONTENDER = 2.0  # a method is rerun where its best sweep SW is within this factor of its library's best


def smc_config(nfe):
    """(particles, steps) of SMC at a target NFE: 4 particles below 200 NFE, 8 from 200 (a fixed rule; the
    sweep had (4, 50) best at 200 NFE on 3 problems and (8, 25) on 3)."""
    k = 4 if nfe < 200 else 8
    return k, max(1, nfe // k)


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
                        steps = nfe // get_method(method).cost().nfe  # the registry's NFE per step
                        plan.append((lib, method, nfe, f"steps={steps}"))
                else:
                    at = [r for r in lr if r["method"] == method and r["nfe"] == nfe]
                    if at:
                        plan.append((lib, method, nfe, min(at, key=lambda r: r["sw"])["config"]))
        if lib == "invscore" and best.get("ddrm", math.inf) > CONTENDER * top:
            # DDRM changed after the sweep (Kawar et al. eq. 7 on the unmeasured coordinates): rerun it too
            plan += [(lib, "ddrm", nfe, f"steps={nfe}") for nfe in FINAL_NFE]
        if lib == "invscore":
            # MMPS came after the sweep; cg_iters = d_y solves its d_y x d_y system exactly
            plan += [(lib, "mmps", nfe, f"steps={nfe},cg_iters={d_y}") for nfe in FINAL_NFE]
            # solve() takes grid= since the sweep: ΠGDM on the EDM grid too, whatever its sweep rank
            plan += [(lib, "pigdm_edm", nfe, f"steps={nfe},grid=edm") for nfe in FINAL_NFE]
            # SMC with the N samples as one particle cloud (came after the sweep), its twist spread set to the
            # data's standard deviation
            plan += [(lib, "smc_pop", nfe, f"steps={nfe},twist_std={data_std(d):.2f}") for nfe in FINAL_NFE]
    # the oracle: the exact posterior's own denoiser in the ancestral sampler on the EDM grid
    plan += [("oracle", "oracle", nfe, f"steps={nfe},grid=edm") for nfe in FINAL_NFE]
    return plan


def data_std(d):
    """The mixture prior's standard deviation per coordinate, sqrt(mean_i Var[x_i]) (the same for every d)."""
    prior = grid_mixture(d)
    w = prior.log_w.exp()[:, None]
    var = (w * (prior.means**2 + prior.lam)).sum(0) - ((w * prior.means).sum(0)) ** 2
    return float(var.mean().sqrt())


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
    den, phys, y_u = deepinv_setup(p, n)
    sde = VPSDE()
    model = Diffusion(p.prior, sde)
    for lib, method, target, config in plan:
        cfg = _parse_cfg(config)
        for seed in seeds:
            t0 = time.perf_counter()
            err, x, nfe = "", None, 0
            try:
                if lib == "oracle":
                    gen = torch.Generator().manual_seed(seed)
                    x = sde.prior_sampling((n, d), generator=gen, dtype=torch.float64)
                    res = sample_ddim(Diffusion(p.posterior, sde), x, time_grid(sde, cfg["steps"], "edm"), eta=1.0,
                                      generator=gen)
                    x, nfe = res.x, res.nfe
                elif lib == "invscore" and method == "smc_edm":
                    ts = time_grid(sde, cfg["steps"], "edm")
                    res = sample_smc(model, p.operator, y, ts, particles=cfg["particles"],
                                     generator=torch.Generator().manual_seed(seed))
                    x, nfe = res.x, res.nfe * cfg["particles"]
                elif lib == "invscore":  # pigdm_edm: grid='edm' is in the config; smc_pop: smc with population
                    extra = {"population": True} if method == "smc_pop" else {}
                    res = solve(p.prior, p.operator, y, method="smc" if extra else method.removesuffix("_edm"),
                                generator=torch.Generator().manual_seed(seed), **cfg, **extra)
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
        orc = [r for r in rs if r["library"] == "oracle" and r["nfe"] <= bd["nfe"]]
        se = _ratio_se(bi, bd)[1] if (bi and key == "sw") else float("nan")
        se_l = _ratio_se(bi_all, bd_le)[1] if (bd_le and key == "sw") else float("nan")
        out.append(dict(d=d, d_y=d_y, floor=rs[0]["floor"], best_deepinv=bd, best_invscore_at_le=bi,
                        strict=strict, strict_se=se, best_invscore=bi_all, best_deepinv_at_le=bd_le,
                        lenient=lenient, lenient_se=se_l, below_floor=0.5 * bd["sw"] < rs[0]["floor"],
                        oracle=min(orc, key=lambda r: (r[key], r["nfe"])) if orc else None))
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
    fields = ["d", "d_y", "sigma_y", "library", "method", "config", "target", "nfe", "seed", "n", "m_ref", "sw",
              "floor", "floor_sd", "floor_rms", "sw_over_floor", "seconds", "error"]
    write_csv(prefix, fields, rows, ".6g")
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
              "deepinv run with NFE ≤ n_i. Ratio ± standard error over seeds (delta method). *Oracle*: the "
              "exact posterior's own denoiser in the ancestral sampler on the EDM grid, best at ≤ n_d NFE — "
              "what a sampler started from N(0, I) reaches with that budget.", "",
              "| problem | floor | best deepinv (any NFE) | best invscore at ≤ that NFE | strict ratio | goal | "
              "oracle at ≤ that NFE | best invscore (any NFE) | best deepinv at ≤ that NFE | lenient ratio | goal |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in vs:
        lines.append(
            f"| d={v['d']} d_y={v['d_y']} | {v['floor']:.3f} | {_fmt_agg(v['best_deepinv'])} | "
            f"{_fmt_agg(v['best_invscore_at_le'])} | {v['strict']:.2f} ± {v['strict_se']:.2f} | "
            f"{_call(v['strict'], v['strict_se'])}{' (target below floor)' if v['below_floor'] else ''} | "
            f"{_fmt_agg(v['oracle'])} | {_fmt_agg(v['best_invscore'])} | {_fmt_agg(v['best_deepinv_at_le'])} | "
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
    lines += problem_tables(
        "Sliced W2 per method and NFE (mean ± s.d. over seeds)", sorted({(r["d"], r["d_y"]) for r in agg}), agg,
        lambda r: f"sigma_y={r['sigma_y']}, floor SW {r['floor']:.4f} ± {r['floor_sd']:.4f}",
        ["library", "method", "NFE", "SW", "SW/floor", "debiased SW", "config"],
        lambda r: (f"| {r['library']} | {r['method']} | {r['nfe']} | {r['sw']:.4f} ± {r['sw_sd']:.4f} | "
                   f"{r['sw'] / r['floor']:.2f} | {r['deb']:.4f} | {r['config']}"
                   f"{' (' + str(r['failed']) + ' failed)' if r['failed'] else ''} |"))
    errs = [r for r in rows if r["error"]]
    lines += notes_section(notes, [f"d={r['d']} d_y={r['d_y']} {r['method']} [{r['config']}] seed {r['seed']}: "
                                   f"{r['error']}" for r in errs])
    write_md(prefix, lines)
    plot_final(agg, os.path.join(RESULTS, prefix + ".png"))
    write_html(prefix)
    return vs, vd


def plot_final(agg, path):
    def series(ax, rs, label, c, ls, marker):
        pts = sorted((r["nfe"], r["sw"], r["sw_sd"]) for r in rs if not math.isnan(r["sw"]))
        if pts:
            nfe, sw, sd = zip(*pts)
            ax.errorbar(nfe, sw, yerr=np.nan_to_num(sd), fmt=ls, marker=marker, ms=3, color=c, label=label, capsize=2)

    def refs(ax, rs):
        ax.axhline(rs[0]["floor"], color="k", lw=0.8, ls=":", label="floor (exact, same N)")

    plot_grid(agg, path, series, refs, "sliced W2 to the exact posterior",
              "Sliced W2 vs NFE, mean ± s.d. over seeds (solid: invscore, dashed: deepinv, dash-dot: oracle)",
              xticks=FINAL_NFE,
              fig_legend=True)


def read_final(prefix=FINAL):
    return read_csv(prefix, ("d", "d_y", "target", "nfe", "seed", "n", "m_ref"),
                    ("sigma_y", "sw", "floor", "floor_sd", "floor_rms", "sw_over_floor", "seconds"))


def print_verdicts(vs):
    print("\nVerdict (raw SW, mean over seeds; goal: best invscore <= 0.5 x best deepinv at <= NFE):")
    for v in vs:
        print(f"  d={v['d']:>2} d_y={v['d_y']}: strict {v['strict']:.2f} ± {v['strict_se']:.2f} "
              f"({_fmt_agg(v['best_invscore_at_le'])} vs {_fmt_agg(v['best_deepinv'])}) -> "
              f"{_call(v['strict'], v['strict_se'])}; lenient {v['lenient']:.2f} ± {v['lenient_se']:.2f} -> "
              f"{_call(v['lenient'], v['lenient_se'])}")


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
    "invscore's MMPS (moment-matching posterior sampling, Rozet et al. 2024) was added after the sweep and "
    "the first decisive run; its runs were added with `--only mmps --merge` (same problems, seeds, N and "
    "references; the other rows are those of the earlier run). It runs at `solve`'s default EDM time grid with "
    "cg_iters = d_y, which makes its conjugate-gradient solve exact; each step is one network evaluation "
    "and d_y + 1 backward passes. ΠGDM on the EDM time grid (`pigdm_edm`: `solve(..., grid='edm')`) "
    "was added the same way, on every problem.",
    "`smc_pop` (added the same way, `--only smc_pop --merge`) is `solve(..., method='smc', population=True)`: "
    "the N samples of the one y are one particle cloud, so each network evaluation moves one returned sample "
    "and NFE = steps. Its samples are a resampled cloud, not independent: they can repeat (12 % and 21 % "
    "duplicates at N = 2000, d=80 d_y=2, 50 and 100 steps) and their mode proportions are correlated. Its twist "
    "spread `twist_std` is the prior's standard deviation per coordinate, sqrt(1 + 128) = 11.36.",
    "Where invscore's best run sits at the floor, the raw ratio cannot fall below floor / best deepinv: "
    "'target below floor' marks problems where 0.5 × best deepinv < floor. For d=80 d_y=4 a supplementary "
    "run at N = 2000 (`posterior_benchmark.d80_dy4_n2000.md`, ΠGDM and deepinv DPS at 500 NFE, the two "
    "best) halves the floor; d=8 d_y=1's floor (multimodal: SW of N samples falls like N^(-1/4)) stays "
    "above the target at any N this script can afford. For d=80 d_y=1 and d_y=2, supplementary runs at "
    "N = 5000 (`posterior_benchmark.d80_dy1_n5000.md`, `posterior_benchmark.d80_dy2_n5000.md`: deepinv DPS "
    "at every NFE of its plan from 20 (d_y=1) or 100 (d_y=2; 8.4 and 2.3 at 20 and 50 NFE with N = 500), "
    "and invscore's best runs at ≤ 100 NFE) "
    "bring the floor down by 2.2–2.5×.",
]
