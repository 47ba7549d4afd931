"""Image-restoration tasks on held-out images: invscore's posterior samplers vs deepinv's DPS, DDRM, DiffPIR
and PosteriorDiffusion on the same frozen prior, the same operators and the same measurements, in one run
(issue 6 §2, issue 14 §3).

Tasks (32×32 gray, data in [-1, 1], y = A x + σ_y n with σ_y = 0.05 in data units):

* ``inpaint_center`` — missing 16×16 centre box (``operators.make('inpaint_center')``);
* ``inpaint_random`` — 70 % of pixels missing, one fixed mask (seed 0);
* ``deblur`` — Gaussian blur σ = 1.5 px, circular (FFT), 31×31 support;
* ``sr4`` — ×4 super-resolution by 4×4 average pooling (the SR operator of DDRM, Kawar et al. 2022);
* ``colorize`` — gray = channel mean, on a colour prior: ``--prior emoji --dataset emoji --tasks colorize
  --subset-seed 0 --out-prefix tasks_table_colorize`` (the emoji test split is sorted by code point, so a
  seeded random subset; the four tasks above are the default).

Methods (one posterior sample per image, same y for every method):

* invscore (``invscore.conditional.solve``, default options): MMPS (Rozet et al. 2024; 20 steps on the EDM
  grid, one CG iteration), ΠGDM (Song et al. 2023), DDRM (Kawar et al.
  2022), DPS (Chung et al. 2023), twisted SMC with 4 particles (default 16 would cost 800 NFE/image),
  and projection = Song et al. 2021 imputation in the SVD basis (predictor–corrector, 2 NFE per step).
  The table uses ``solve``'s default step counts. ``auto_mean4`` / ``ddrm_mean4``: the mean of 4 samples of
  ``auto`` / DDRM at a quarter of the NFE each (100 NFE in all), a posterior-mean estimate, compared apart.
* deepinv 0.5.0 (``inverse_common.run_deepinv``): DPS (DDPM solver, Chung et al. 2023), DDRM, DiffPIR
  (Zhu et al. 2023) and PosteriorDiffusion (``dinv_pd``: ΠGDM / moment-matching / DPS fidelities) with the prior as a [0, 1] denoiser and the operator's own SVD as a deepinv physics
  (see ``inverse_common``). Table at 100 NFE. Each is tuned first: every configuration of a small grid
  (``DEEPINV``) runs at ``TUNE_NFE`` on 4 *other* test images (indices N..N+3, never scored), and the
  best mean PSNR is kept for every NFE.
* baseline: the measurement seen as an image (A⁺y: zero-filled holes, nearest-neighbour upsampling;
  the blurred y for deblurring, where A⁺ would amplify the noise).

Metrics: PSNR, SSIM and LPIPS (AlexNet) per image, mean ± standard error over the N images; NFE = network
evaluations per image; seconds per image = wall time of the batched run / N (one CPU thread).
Quality-vs-NFE curves: every method at NFE ∈ ``NFE_GRID`` (plus its table point), on the first
``--curve-n`` images of the same set.

Run: ``OMP_WAIT_POLICY=PASSIVE python experiments/tasks_table.py [--n 16] [--curve-n 16] [--quick]``;
writes ``experiments/results/tasks_table.{md,csv}``, ``tasks_nfe_<task>.png`` and ``tasks_samples.png``
(another ``--out-prefix P``: ``P_samples.png``).
The committed run took 13 min on one CPU thread beside the colorize run on a quiet machine (50 min on a busy
one; ``--quick``: 30 s).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback

import torch

import operators
from inverse_common import (DEEPINV, INVSCORE, RESULTS, SMC_PARTICLES, cfg_label, deepinv_problem, image_metrics,
                            invscore_method, invscore_steps, run_deepinv, run_invscore, save_grid, tune_deepinv)
from invscore.checkpoint import load_denoiser, read_card, training_steps
from invscore.data import load
from invscore.io import atomic_write_text, write_csv
from invscore.metrics import summarize
from invscore.priors import CallablePrior

SIGMA_Y = 0.05
TASKS = {  # name -> (registry name, parameters, description): the gray tasks, which the other scripts share
    "inpaint_center": ("inpaint_center", {}, "centre 16×16 box missing"),
    "inpaint_random": ("inpaint_random", {"missing_ratio": 0.7, "seed": 0}, "70 % pixels missing"),
    "deblur": ("blur_gaussian_fft", {"sigma": 1.5}, "Gaussian blur σ=1.5 px (FFT)"),
    "sr4": ("sr_avgpool", {"factor": 4}, "×4 average-pool SR"),
}
#: tasks for a colour prior only (--prior emoji --dataset emoji)
COLOUR_TASKS = {"colorize": ("grayscale", {}, "gray = channel mean (colour priors: --prior emoji --dataset emoji)")}
ALL_TASKS = {**TASKS, **COLOUR_TASKS}
NFE_GRID = [10, 20, 50, 100]
#: posterior-mean rows: METHOD_mean4 = the mean of MEAN_K samples of METHOD at 1/MEAN_K of the NFE each
MEAN_K, MEAN_OF = 4, ["auto", "ddrm"]
MEANS = {f"{m}_mean{MEAN_K}": m for m in MEAN_OF}  # row name -> the method averaged
DEEPINV_TABLE_NFE, TUNE_NFE, TUNE_N = 100, 50, 4


def table_nfe(method: str) -> int:
    if method.startswith("dinv_") or method in MEANS:
        return DEEPINV_TABLE_NFE
    m = invscore_method(method)
    return m.steps if m.delegates else m.nfe()  # auto: its budget; else default steps × declared NFE per step


def baseline(op, y):
    """The measurement as an image: y itself where A maps images to images (mask, blur), else A⁺y."""
    return y.clone() if tuple(op.output_shape) == tuple(op.input_shape) else op.A_pinv(y)


def run_task(task, prior, x, x_tune, args, log):
    reg, params, _ = ALL_TASKS[task]
    op = operators.make(reg, img_size=tuple(x.shape[1:]), noise=SIGMA_Y, **params)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    den, phys, y_u = deepinv_problem(prior, op, y)  # deepinv sees u = (x + 1)/2: half the noise std
    rows, per_image, shown = [], {}, {"truth": x[: args.show], "measurement": baseline(op, y)[: args.show]}

    def record(lib, method, config, nfe, xh, secs, role, n_img, error=""):
        r = dict(task=task, library=lib, method=method, config=config, nfe=int(nfe), role=role, n=n_img,
                 sec_per_img=secs / n_img, error=error)
        if xh is not None and torch.isfinite(xh).all():
            m = image_metrics(xh, x[:n_img])
            per_image[(method, int(nfe))] = m
            r.update(summarize(m))
            if role == "table":
                shown[method] = xh[: args.show]
        else:
            r["error"] = error or "non-finite output"
        rows.append(r)
        log(f"  {task:<15}{method:<13}{config:<32} NFE {nfe:>4} n={n_img:<3} PSNR {r.get('psnr', math.nan):6.2f}"
            f"  SSIM {r.get('ssim', math.nan):.3f}  LPIPS {r.get('lpips', math.nan):.3f}"
            f"  {secs / n_img:6.2f} s/img  {role}{'  ' + r['error'] if r['error'] else ''}")

    same = tuple(op.output_shape) == tuple(op.input_shape)
    record("-", "measurement", "y as image" if same else "A+y (block replication)", 0, baseline(op, y), 0.0,
           "table", x.shape[0])

    # deepinv tuning on held-out tuning images (their own measurement, same operator and noise level)
    y_t = op.measure(x_tune, generator=torch.Generator().manual_seed(100))
    tuned, tuning = {}, []
    for method, cfgs in DEEPINV.items():
        cfgs = cfgs[:1] if args.quick else cfgs
        tuned[method], scores = tune_deepinv(method, cfgs, args.tune_nfe, den, phys,
                                             operators.to_unit_measurement(op, y_t), x_tune, log)
        tuning += [dict(task=task, method=method, config=cfg_label(c), psnr=p) for c, p in scores]

    methods = INVSCORE + list(MEANS) + list(DEEPINV)
    for method in methods:
        base, k = MEANS.get(method, method), MEAN_K if method in MEANS else 1
        t_nfe = args.nfe_grid[0] if args.quick else table_nfe(method)
        # a mean's curve points need >= 5 NFE per sample: fewer steps make a mean of noise
        for nfe in sorted(n for n in set(args.nfe_grid) | {t_nfe} if n == t_nfe or n >= 5 * k):
            role = "table" if nfe == t_nfe else "curve"
            n_img = x.shape[0] if role == "table" else min(args.curve_n, x.shape[0])
            lib = "deepinv" if method.startswith("dinv_") else "invscore"
            config = cfg_label(tuned[method]) if lib == "deepinv" else (
                (f"{k} × " if k > 1 else "")
                + (f"budget={nfe // k}" if base == "auto" else f"steps={invscore_steps(base, nfe // k)}")
                + (f",particles={SMC_PARTICLES}" if method == "smc" else "")
                + (",Hartley basis" if method == "smc" and isinstance(op, operators.BlurFFT) else ""))
            t0 = time.perf_counter()
            try:
                if lib == "deepinv":
                    xh, got, secs = run_deepinv(method, tuned[method], nfe, den, phys, y_u[:n_img])
                else:
                    # SMC moves a symmetric FFT blur into its real Hartley basis itself (operators.HartleyBlur)
                    xh, got, secs = run_invscore(prior, op, y[:n_img], base, invscore_steps(base, nfe // k), k=k)
                if base == "auto":
                    picked, steps = invscore_method("auto").resolve(op, nfe // k)
                    config += f" → {picked.label()}, steps={steps}"
                record(lib, method, config, got, xh, secs, role, n_img)
            except Exception as err:  # noqa: BLE001 - report, don't hide
                traceback.print_exc()
                record(lib, method, config, nfe, None, time.perf_counter() - t0, role, n_img,
                       f"{type(err).__name__}: {err}")
    return rows, tuning, per_image, shown


def paired(rows, per_image, task, max_nfe=100, role="table", theirs=None, means=False):
    """invscore's best untuned run at ≤ ``max_nfe`` NFE vs deepinv's best (``theirs``: (method, nfe) to fix
    it), by mean PSNR, among runs of ``role`` on the same images: the per-image differences' mean and 95 %
    interval (mean ± 1.96 s.e.) for PSNR and LPIPS; ``None`` when a side is missing. invscore's side is its
    single samples, or with ``means`` its posterior-mean rows (``MEANS``)."""
    runs = [r for r in rows if r["task"] == task and r["role"] == role and not r["error"] and "psnr" in r]
    ours = [r for r in runs if r["library"] == "invscore" and r["nfe"] <= max_nfe and (r["method"] in MEANS) == means]
    other = [r for r in (runs if theirs is None else rows) if r["library"] == "deepinv" and not r["error"]
             and "psnr" in r and (theirs is None or (r["method"], r["nfe"]) == theirs)]
    if not ours or not other:
        return None
    a, b = max(ours, key=lambda r: r["psnr"]), max(other, key=lambda r: r["psnr"])
    out = {"ours": a, "theirs": b}
    for k in ("psnr", "lpips"):
        pa, pb = per_image[(a["method"], a["nfe"])][k], per_image[(b["method"], b["nfe"])][k]
        n = min(pa.numel(), pb.numel())
        d = (pa[:n] - pb[:n]).double()
        se = float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
        out[k] = (float(d.mean()), float(d.mean()) - 1.96 * se, float(d.mean()) + 1.96 * se, n)
    return out


def paired_lines(pairs) -> list[str]:
    """The markdown section of the paired comparisons (issue 14 §3's targets)."""
    L = ["## invscore's best untuned vs deepinv's best tuned (paired, same images and y)", "",
         "Per-image differences invscore − deepinv, mean [95 % interval = mean ± 1.96 s.e.]; PSNR higher and "
         "LPIPS lower favour invscore. Row 1 of each task: table runs at ≤ 100 NFE (all scored images); row 2: "
         "invscore at ≤ 10 NFE vs deepinv's DDRM at 20 (curve runs, first --curve-n images); row 3: invscore's "
         f"posterior-mean rows (the mean of {MEAN_K} samples at a quarter of the NFE each, a different estimator: "
         "lower error, blurrier) at ≤ 100 NFE vs deepinv's best single sample.", "",
         "| task | invscore | deepinv | n | ΔPSNR (dB) | ΔLPIPS |", "|---|---|---|---|---|---|"]
    for task, items in pairs.items():
        for p in items:
            if p is None:
                continue
            a, b = p["ours"], p["theirs"]
            dp, dl = p["psnr"], p["lpips"]
            L.append(f"| {task} | {a['method']} ({a['config']}, {a['nfe']} NFE) | {b['method']} ({b['config']}, "
                     f"{b['nfe']} NFE) | {dp[3]} | {dp[0]:+.2f} [{dp[1]:+.2f}, {dp[2]:+.2f}] | "
                     f"{dl[0]:+.4f} [{dl[1]:+.4f}, {dl[2]:+.4f}] |")
    return L + [""]


def curve_points(rows, per_image, curve_n):
    """(task, method) -> sorted [(nfe, psnr, lpips)] on the first curve_n images (table runs subset)."""
    pts = {}
    for r in rows:
        key = (r["method"], r["nfe"])
        if r["method"] == "measurement" or key not in per_image:
            continue
        m = per_image[key]
        pts.setdefault(r["method"], []).append(
            (r["nfe"], float(m["psnr"][:curve_n].mean()), float(m["lpips"][:curve_n].mean())))
    return {k: sorted(v) for k, v in pts.items()}


def plot_curves(task, pts, base, path, curve_n):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.get_cmap("tab20").colors  # 20 colours: the default cycle's 10 repeat across 17 methods
    for i, (method, p) in enumerate(sorted(pts.items(), key=lambda kv: (kv[0].startswith("dinv_"), kv[0]))):
        ls, mk = ("--", "s") if method.startswith("dinv_") else (":", "^") if method in MEANS else ("-", "o")
        for ax, j in zip(axes, (1, 2)):
            ax.plot([q[0] for q in p], [q[j] for q in p], ls, marker=mk, ms=4, color=colors[i % len(colors)],
                    label=method)
    for ax, j, name in zip(axes, (0, 1), ("PSNR (dB) ↑", "LPIPS (alex) ↓")):
        ax.axhline(base[j], color="k", lw=0.8, ls=":", label="measurement")
        ax.set_xscale("log")
        ax.set_xlabel("NFE per image")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{task}: quality vs NFE, first {curve_n} held-out test images "
                 f"(solid: invscore, dotted: invscore's mean of {MEAN_K} samples, dashed: deepinv, same prior)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(r, k):
    return f"{r[k]:.2f} ± {r[k + '_se']:.2f}" if k == "psnr" else f"{r[k]:.3f} ± {r[k + '_se']:.3f}"


def write_outputs(rows, tuning, args, card, elapsed, prefix, pairs=None):
    fields = ["task", "library", "method", "config", "role", "n", "nfe", "psnr", "psnr_se", "ssim", "ssim_se",
              "lpips", "lpips_se", "sec_per_img", "error"]
    write_csv(RESULTS / f"{prefix}.csv", rows, fields=fields, float_format=".5g")
    cmd = "OMP_WAIT_POLICY=PASSIVE python experiments/tasks_table.py " + " ".join(sys.argv[1:])
    L = [f"# Restoration tasks: invscore vs deepinv on the same prior ({args.prior})", "",
         f"Prior `{args.prior}` ({training_steps(card)} training steps). "
         + (f"First {args.n}" if args.subset_seed is None else f"A random subset (seed {args.subset_seed}) of {args.n}")
         + f" {args.dataset} test images (held out from training), 32×32, σ_y = {SIGMA_Y} in data units [-1, 1] (deepinv: {SIGMA_Y / 2} "
         "in [0, 1]); one posterior sample per image (`*_mean4` rows: the mean of 4 samples, each at a quarter of the NFE); the same y for every method. Mean ± s.e. over images. "
         "NFE = network evaluations per image (deepinv: counted calls of the wrapped denoiser); s/img = "
         "batched wall time / N, one CPU thread on a machine shared with a training job (timings are "
         "indicative; ratios within one run are fair).", "",
         f"Generated by `{cmd}` in {elapsed / 60:.1f} min (torch threads 1). All runs, including the NFE-curve "
         f"points (first {args.curve_n} images), are in `{prefix}.csv`; curves in `tasks_nfe_<task>.png`, "
         f"samples in `{'tasks_samples.png' if prefix == 'tasks_table' else prefix + '_samples.png'}`.", ""]
    for task in ALL_TASKS:
        rs = [r for r in rows if r["task"] == task and r["role"] == "table"]
        if not rs:
            continue
        L += [f"## {task} — {ALL_TASKS[task][2]}", "",
              "| method | library | config | NFE/img | PSNR ↑ | SSIM ↑ | LPIPS ↓ | s/img |", "|---|---|---|---|---|---|---|---|"]
        for r in rs:
            if r["error"]:
                L.append(f"| {r['method']} | {r['library']} | {r['config']} | {r['nfe']} | failed: {r['error']} | | | |")
                continue
            L.append(f"| {r['method']} | {r['library']} | {r['config']} | {r['nfe']} | {fmt(r, 'psnr')} | "
                     f"{fmt(r, 'ssim')} | {fmt(r, 'lpips')} | {r['sec_per_img']:.2f} |")
        L.append("")
    L += paired_lines(pairs or {})
    L += ["## deepinv tuning (mean PSNR on the 4 tuning images, NFE "
          f"{args.tune_nfe}; best kept for every NFE)", "", "| task | method | config | PSNR |", "|---|---|---|---|"]
    L += [f"| {t['task']} | {t['method']} | {t['config']} | {t['psnr']:.2f} |" for t in tuning]
    L += ["", "## Notes", "",
          f"- SMC runs with {SMC_PARTICLES} particles (the `solve` default of 16 would cost 800 NFE per image at "
          "50 steps); its NFE counts steps × particles.",
          "- invscore methods run untuned at `solve`'s defaults; deepinv's get the small tuning above, on images "
          "that are not scored. The candidate grids were set after a first look at those same tuning images.",
          "- deepinv's physics is the invscore operator's own SVD (`operators.to_deepinv(op, "
          "decomposable=True)`, tested against `op.A` and `op.A_T`); for the FFT blur it uses the real Hartley "
          "basis (same singular values). "
          "invscore's SMC needs real spectral coordinates, so on `deblur` it moves the blur into that Hartley "
          "basis itself (`operators.HartleyBlur`); the other invscore methods use `BlurFFT` as is.",
          "- deepinv's DDRM draws its noise as σ·randn/√2 while calling the denoiser at σ, and its schedule "
          "starts at σ_u = 1 (σ_x = 2); its last denoiser call asks for σ = 0, clamped to EDM's σ_min = 0.002. "
          "DiffPIR uses its own 1000-step DDPM schedule (σ_x up to ≈ 156, above the prior's trained σ_max = 80). "
          "All run as shipped.",
          "- DPS and ΠGDM (both libraries) also backpropagate through every network call: one NFE costs about "
          "two forward passes. MMPS backpropagates cg_iters = 1 time per call at its default (its guidance reuses "
          "the CG steps' backward passes).",
          ""]
    atomic_write_text(RESULTS / f"{prefix}.md", "\n".join(L))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default="fashion_mnist", help="shipped name or .safetensors path (gray 1×32×32)")
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--n", type=int, default=16, help="scored test images (table)")
    ap.add_argument("--curve-n", type=int, default=16,
                    help="images for the extra NFE-curve points (and the ≤ 10 NFE pairing)")
    ap.add_argument("--nfe-grid", type=int, nargs="+", default=NFE_GRID)
    ap.add_argument("--tune-nfe", type=int, default=TUNE_NFE)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(ALL_TASKS))
    ap.add_argument("--subset-seed", type=int, default=None,
                    help="score a seeded random subset of the test split (default: its first images)")
    ap.add_argument("--show", type=int, default=4, help="images per task in tasks_samples.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 images, NFE 10, one deepinv config")
    ap.add_argument("--out-prefix", default=None, help="default tasks_table (quick: tasks_table_quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.curve_n, args.nfe_grid, args.tune_nfe, args.show = 2, 2, [10], 10, 2
    prefix = args.out_prefix or ("tasks_table_quick" if args.quick else "tasks_table")
    samples_png = "tasks_samples.png" if prefix == "tasks_table" else f"{prefix}_samples.png"
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    D = load_denoiser(args.prior)
    card = read_card(args.prior)
    if args.subset_seed is None:
        x01, _ = load(args.dataset, "test", args.n + TUNE_N)
    else:
        xa, _ = load(args.dataset, "test")
        x01 = xa[torch.randperm(len(xa), generator=torch.Generator().manual_seed(args.subset_seed))[:args.n + TUNE_N]]
    x_all = x01 * 2 - 1  # [0, 1] -> the prior's data space
    x, x_tune = x_all[: args.n], x_all[args.n: args.n + (2 if args.quick else TUNE_N)]
    prior = CallablePrior(D, data_shape=tuple(x.shape[1:]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, tuning, figs, pairs = [], [], [], {}
    for task in args.tasks:
        print(f"== {task}", flush=True)
        r, t, per_image, shown = run_task(task, prior, x, x_tune, args, lambda s: print(s, flush=True))
        rows += r
        tuning += t
        pairs[task] = [paired(r, per_image, task),
                       paired(r, per_image, task, max_nfe=10, role="curve", theirs=("dinv_ddrm", 20)),
                       paired(r, per_image, task, means=True)]
        pts = curve_points(r, per_image, args.curve_n)
        m0 = per_image.get(("measurement", 0))
        base = (float(m0["psnr"][: args.curve_n].mean()), float(m0["lpips"][: args.curve_n].mean()))
        if not args.quick:
            plot_curves(task, pts, base, RESULTS / f"tasks_nfe_{task}.png", args.curve_n)
        figs.append(shown)
        write_outputs(rows, tuning, args, card, time.perf_counter() - start, prefix, pairs)  # partial results survive
    if not args.quick:  # rows: truth, measurement, methods; columns: the first --show images of each task
        labels = [k for k in figs[0] if all(k in f for f in figs)]
        save_grid([torch.cat([f[k] for f in figs]) for k in labels], labels, RESULTS / samples_png,
                  "one posterior sample per method (table runs); column blocks: " + ", ".join(args.tasks))
    elapsed = time.perf_counter() - start
    write_outputs(rows, tuning, args, card, elapsed, prefix, pairs)
    from invscore.run.report import write_experiment_report  # a page to look at: tables, quality-vs-NFE plots
    figures = [RESULTS / f"tasks_nfe_{t}.png" for t in args.tasks] + [RESULTS / samples_png]
    figures = [] if args.quick else figures  # --quick draws no figures; older ones would mislead
    write_experiment_report(RESULTS / f"{prefix}.html", prefix, markdown=RESULTS / f"{prefix}.md", figures=figures)
    print(f"\nwrote {RESULTS}/{prefix}.{{md,csv,html}} in {elapsed / 60:.1f} min")
    print((RESULTS / f"{prefix}.md").read_text())


if __name__ == "__main__":
    main()
