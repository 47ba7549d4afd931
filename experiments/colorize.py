"""Colorization with the colour prior, as in Song et al. 2021 (score SDE, Appendix I.2): gray = channel mean,
seen through an orthogonal colour transform whose first axis is the gray direction (``operators.make(
'grayscale')``, an SVD operator), so colorization is imputation of the 2 chroma coordinates per pixel
(issue 6 §2).

Methods, one sample per image, the same gray y for all:

* ``projection`` — Song et al.'s imputation: predictor–corrector (reverse diffusion + Langevin) with the
  measured (gray) coordinate replaced by the diffused measurement after every step, ``solve`` defaults
  (100 steps, 200 NFE);
* the other invscore methods of ``inverse_common.INVSCORE`` at ``solve`` defaults (``auto``, MMPS, ΠGDM, DDRM,
  DPS, DiffPIR, DAPS, PnP-DM, PnP-Flow; twisted SMC with 4 particles);
* baselines: the gray image itself (A⁺y, gray in all three channels) and deepinv 0.5.0's DPS, DDRM, DiffPIR
  and PosteriorDiffusion on the same prior and the same operator (``inverse_common``: prior as a [0, 1]
  denoiser, the operator's SVD as a ``DecomposablePhysics``), 100 NFE, each configured from its grid
  ``inverse_common.DEEPINV`` by PSNR on 4 other test images. ``tasks_table.py --tasks colorize`` runs the
  same problem with σ_y = 0.05 and NFE curves.

Metrics (``invscore.metrics``): PSNR, SSIM, LPIPS (AlexNet) against the colour ground truth, and the
colourfulness of Hasler & Süsstrunk 2003 (M = σ_rgyb + 0.3 μ_rgyb), with the ground truth's for reference;
mean ± standard error over N held-out emoji test images (``invscore.data.load('emoji', 'test')``), drawn
with a fixed seed: the split is sorted by code point, so its first images are all flags.

Run: ``OMP_WAIT_POLICY=PASSIVE python experiments/colorize.py [--prior emoji] [--n 32] [--quick]``; writes
``experiments/results/colorization.{md,png}`` (``--quick``: ``colorization_quick.*``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

import operators
from inverse_common import (DEEPINV, INVSCORE, RESULTS, SMC_PARTICLES, cfg_label, deepinv_problem, image_metrics,
                            invscore_method, run_deepinv, run_invscore, save_grid, tune_deepinv)
from invscore.checkpoint import load_denoiser, read_card, training_steps
from invscore.conditional import METHODS
from invscore.data import load
from invscore.io import atomic_write_text, write_json
from invscore.metrics import colorfulness, summarize
from invscore.priors import CallablePrior

SUBSET_SEED = 0  # test images drawn with this seed (see the docstring)
DINV_NFE, TUNE_NFE, TUNE_N = 100, 50, 4


def prior_description(prior: str) -> str:
    """Name, training steps and where the checkpoint came from (a path = an intermediate checkpoint)."""
    card = read_card(prior)
    steps = training_steps(card)
    if Path(prior).suffix == ".safetensors" or "/" in prior:
        return f"intermediate checkpoint `{prior}` (not the shipped prior), {steps} training steps"
    return f"shipped prior `{prior}`, {steps} training steps"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default="emoji", help="shipped name or .safetensors path (colour 3×32×32)")
    ap.add_argument("--dataset", default="emoji")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--sigma-y", type=float, default=0.0,
                    help="measurement noise in data units [-1, 1]; Song et al.'s colorization is noiseless")
    ap.add_argument("--show", type=int, default=8, help="images in the figure")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 images, 10 steps")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    n = 2 if args.quick else args.n
    D = load_denoiser(args.prior)
    xa, _ = load(args.dataset, "test")
    x01 = xa[torch.randperm(len(xa), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n + TUNE_N]]
    x_all = x01 * 2 - 1
    x, x_tune = x_all[:n], x_all[n:]
    prior = CallablePrior(D, data_shape=tuple(x.shape[1:]))
    op = operators.make("grayscale", img_size=tuple(x.shape[1:]), noise=args.sigma_y)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    rows, shown = [], {}

    def record(method, lib, config, nfe, xh, secs):
        if not torch.isfinite(xh).all():  # reported as such, not scored (deepinv's DiffPIR at σ_y = 0)
            rows.append(dict(method=method, library=lib, config=config, nfe=int(nfe), sec_per_img=secs / n,
                             error="non-finite output"))
            print(f"  {method:<11} {config:<22} NFE {nfe:>4}  non-finite output", flush=True)
            return
        m = summarize(image_metrics(xh, x, colour=True))
        rows.append(dict(method=method, library=lib, config=config, nfe=int(nfe), sec_per_img=secs / n, **m))
        shown.setdefault(method, xh[: args.show])
        print(f"  {method:<11} {config:<22} NFE {nfe:>4}  PSNR {m['psnr']:6.2f}  SSIM {m['ssim']:.3f}  "
              f"LPIPS {m['lpips']:.3f}  colourfulness {m['colorfulness']:.3f}  {secs / n:.2f} s/img", flush=True)

    record("gray (A⁺y)", "-", "baseline", 0, op.A_pinv(y), 0.0)
    for method in INVSCORE:
        m = invscore_method(method)
        steps = 5 if args.quick else m.steps
        xh, nfe, secs = run_invscore(prior, op, y, method, steps)
        config = f"steps={steps}" + (f",particles={SMC_PARTICLES}" if method == "smc" else "")
        if m.delegates:
            picked, k = m.resolve(op, steps)
            config = f"budget={steps} → {picked.label()}, steps={k}"
        record(method, "invscore", config, nfe, xh, secs)

    # deepinv: same prior ([0, 1] wrapper), same operator (its SVD), same y (in [0, 1] units)
    den, phys, y_u = deepinv_problem(prior, op, y)
    y_t = operators.to_unit_measurement(op, op.measure(x_tune, generator=torch.Generator().manual_seed(100)))
    tuning = []
    for method, cfgs in DEEPINV.items():
        cfg, scores = tune_deepinv(method, cfgs[:1] if args.quick else cfgs, 10 if args.quick else TUNE_NFE,
                                   den, phys, y_t, x_tune)
        tuning += [(method, c, p) for c, p in scores]
        xh, nfe, secs = run_deepinv(method, cfg, 10 if args.quick else DINV_NFE, den, phys, y_u)
        record(method, "deepinv", cfg_label(cfg), nfe, xh, secs)
    shown["ground truth"] = x[: args.show]
    gt = summarize({"c": colorfulness((x + 1) / 2)})
    gt_c, gt_se = gt["c"], gt["c_se"]

    suffix = "_quick" if args.quick else ""
    save_grid(list(shown.values()), list(shown.keys()), RESULTS / f"colorization{suffix}.png",
              f"colorization, one sample per method ({Path(str(args.prior)).stem})", scale=1.0)
    elapsed = time.perf_counter() - start
    cmd = "OMP_WAIT_POLICY=PASSIVE python experiments/colorize.py " + " ".join(sys.argv[1:] if argv is None else argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS, capture_output=True,
                            text=True).stdout.strip() or "?"

    L = ["# Colorization (Song et al. 2021 imputation through an orthogonal colour transform)", "",
         f"Prior: {prior_description(args.prior)}. {n} held-out emoji test images (a random subset, seed "
         f"{SUBSET_SEED}: the split is sorted by code point, its head all flags; 32×32 RGB), gray = "
         f"channel mean (`operators.make('grayscale')`), σ_y = {args.sigma_y} (data units [-1, 1]). One sample "
         "per image, the same y for every method; mean ± s.e. over images. Colourfulness: Hasler & Süsstrunk "
         f"2003; the ground truth's is **{gt_c:.3f} ± {gt_se:.3f}** (the gray input's is 0).", "",
         f"Generated by `{cmd}` at commit {commit} in {elapsed / 60:.1f} min (one CPU thread, machine shared "
         "with a training job).", "",
         "| method | library | config | NFE/img | PSNR ↑ | SSIM ↑ | LPIPS ↓ | colourfulness | s/img |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error"):
            L.append(f"| {r['method']} | {r['library']} | {r['config']} | {r['nfe']} | {r['error']} | | | | "
                     f"{r['sec_per_img']:.2f} |")
            continue
        L.append(f"| {r['method']} | {r['library']} | {r['config']} | {r['nfe']} | {r['psnr']:.2f} ± {r['psnr_se']:.2f} | "
                 f"{r['ssim']:.3f} ± {r['ssim_se']:.3f} | {r['lpips']:.3f} ± {r['lpips_se']:.3f} | "
                 f"{r['colorfulness']:.3f} ± {r['colorfulness_se']:.3f} | {r['sec_per_img']:.2f} |")
    L += ["", f"Ground truth colourfulness: {gt_c:.3f} ± {gt_se:.3f}.", "",
          f"deepinv tuning (mean PSNR on {TUNE_N} other test images, NFE {10 if args.quick else TUNE_NFE}; the best "
          "per method is the row above): " + "; ".join(f"{m} {cfg_label(c)}: {p:.2f} dB" for m, c, p in tuning) + ".",
          "",
          "Notes: invscore methods at `solve` defaults, untuned; SMC with "
          f"{SMC_PARTICLES} particles (the default {METHODS['smc'].defaults['particles']} would cost {METHODS['smc']().nfe()} NFE/image). A single "
          "posterior sample is scored: PSNR/LPIPS reward the posterior *mean*, so a sharp, plausible but "
          "differently-coloured sample scores lower than a washed-out one; colourfulness shows the other side. "
          f"The figure `colorization{suffix}.png` shows the first {args.show} images: gray input, each method, "
          "ground truth.", ""]
    atomic_write_text(RESULTS / f"colorization{suffix}.md", "\n".join(L))
    write_json(RESULTS / f"colorization{suffix}.json",
               dict(prior=str(args.prior), n=n, sigma_y=args.sigma_y, ground_truth_colorfulness=[gt_c, gt_se],
                    rows=rows, tuning=[[m, cfg_label(c), p] for m, c, p in tuning], seconds=elapsed))
    from invscore.run.report import write_experiment_report  # a page to look at: the .md with its figure
    write_experiment_report(RESULTS / f"colorization{suffix}.html", f"colorization{suffix}",
                            markdown=RESULTS / f"colorization{suffix}.md",
                            figures=[RESULTS / f"colorization{suffix}.png"])
    print("\n".join(L))


if __name__ == "__main__":
    main()
