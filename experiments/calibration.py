"""Are the samples posterior samples? Spread–skill of invscore's and deepinv's samplers on the tasks table's
restoration problems (issue 14: why deepinv's DDRM leads on PSNR while trailing on LPIPS).

For an exact posterior sampler, K samples x_1..x_K of one y and the truth x are K + 1 exchangeable draws of
p(x | y), so E‖x̄_K − x‖² = (1 + 1/K) E[s²] with s² the unbiased per-pixel variance of the K samples (the
spread–skill relation of ensemble forecasting, e.g. Fortin et al. 2014, eq. 4). The ratio

    R = MSE(x̄_K, x) / ((1 + 1/K) · mean s²)

is 1 for calibrated samples, > 1 for under-dispersed ones (samples closer together than to the truth: a
sampler that shrinks toward a mean gains single-sample PSNR and loses texture, so LPIPS rises) and < 1 for
over-dispersed ones. The script runs each method K times (seeds 1..K) on the same y of held-out Fashion-MNIST
test images that the tasks table does not score (indices 200–215 by default), σ_y = 0.05, the shipped prior.

Run: ``OMP_WAIT_POLICY=PASSIVE python experiments/calibration.py --threads 2`` (about 15 min on 2 CPU
threads); writes ``results/calibration.{md,csv}``.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import operators
from inverse_common import RESULTS, deepinv_problem, image_metrics, run_deepinv, run_invscore
from invscore.checkpoint import load_denoiser
from invscore.data import load
from invscore.io import write_csv
from invscore.priors import CallablePrior
from tasks_table import SIGMA_Y, TASKS

#: (label, library, method, steps or NFE, deepinv settings): invscore's methods at their default steps (PnP-Flow
#: at the tasks table's 100 NFE), ``auto``'s low-temperature choice at a budget of 20, and deepinv's DDRM at 100 NFE
#: with both of its tuning candidates
RUNS = [("ddrm-50", "invscore", "ddrm", 50, None), ("pnpflow-100", "invscore", "pnpflow", 20, None),
        ("mmps-20", "invscore", "mmps", 20, None), ("pigdm-50", "invscore", "pigdm", 50, None),
        # auto at budget 20: MMPS-20 (inpainting, SR) or DDRM-20 (deblur) at noise_scale 1/√2, low temperature
        ("auto-20 (noise_scale 1/√2)", "invscore", "auto", 20, None),
        ("dinv_ddrm-100 (eta 0.85)", "deepinv", "dinv_ddrm", 100, dict(eta=0.85, etab=1.0)),
        ("dinv_ddrm-100 (eta 1)", "deepinv", "dinv_ddrm", 100, dict(eta=1.0, etab=1.0))]


def spread_skill(samples: torch.Tensor, x: torch.Tensor) -> tuple[float, float, float]:
    """(MSE of the K-sample mean, mean unbiased per-pixel variance s², ratio R) for samples (K, B, ...)."""
    k = samples.shape[0]
    mse = float(((samples.mean(0) - x) ** 2).mean())
    s2 = float(samples.var(0, unbiased=True).mean())
    return mse, s2, mse / ((1 + 1 / k) * s2) if s2 > 0 else math.inf


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=int, default=200, help="first test image (the table scores 0–15, tunes 16–19)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--k", type=int, default=4, help="samples per measurement")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.k < 2 or args.n < 1:
        ap.error(f"--k must be >= 2 (the spread needs two samples) and --n >= 1; got --k {args.k} --n {args.n}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    x01, _ = load("fashion_mnist", "test", args.first + args.n)
    x = (x01 * 2 - 1)[args.first:]
    prior = CallablePrior(load_denoiser("fashion_mnist"), data_shape=tuple(x.shape[1:]))
    rows = []
    for task in args.tasks:
        reg, params, _ = TASKS[task]
        op = operators.make(reg, img_size=tuple(x.shape[1:]), noise=SIGMA_Y, **params)
        y = op.measure(x, generator=torch.Generator().manual_seed(0))
        den, phys, y_u = deepinv_problem(prior, op, y)
        for label, lib, method, steps, cfg in RUNS:
            runs = [run_deepinv(method, cfg, steps, den, phys, y_u, seed=s)[:2] if lib == "deepinv"
                    else run_invscore(prior, op, y, method, steps, seed=s)[:2] for s in range(1, args.k + 1)]
            samples = torch.stack([r[0] for r in runs])
            single = [image_metrics(s, x) for s in samples]
            mean = image_metrics(samples.mean(0), x)
            mse, s2, ratio = spread_skill(samples, x)
            row = dict(task=task, method=label, library=lib, nfe=runs[0][1], n=args.n, k=args.k,
                       psnr_single=sum(float(m["psnr"].mean()) for m in single) / args.k,
                       lpips_single=sum(float(m["lpips"].mean()) for m in single) / args.k,
                       psnr_mean=float(mean["psnr"].mean()), mse_mean=mse, spread=s2, ratio=ratio)
            rows.append(row)
            print(f"{task:<15}{label:<26} NFE {row['nfe']:>4}  single {row['psnr_single']:6.2f} dB / LPIPS "
                  f"{row['lpips_single']:.4f}  mean-of-{args.k} {row['psnr_mean']:6.2f} dB  R {ratio:5.2f}", flush=True)
    fields = list(rows[0])
    write_csv(RESULTS / "calibration.csv", rows, fields)
    lines = ["# Spread–skill of posterior samplers (calibration)", "",
             f"Generated by `python experiments/calibration.py --threads {args.threads}` in "
             f"{(time.perf_counter() - start) / 60:.1f} min. Held-out Fashion-MNIST test images {args.first}–"
             f"{args.first + args.n - 1} (not scored or tuned on by the tasks table), shipped prior, σ_y = {SIGMA_Y}, "
             f"K = {args.k} samples (seeds 1–{args.k}) of one y per image. *R* = MSE(mean of K) / ((1 + 1/K)·s²): "
             "1 for exact posterior samples, > 1 under-dispersed (see the script's docstring). One draw of y and "
             "images: a claim about these problems.", "",
             "| task | method | NFE | single PSNR | single LPIPS | mean-of-K PSNR | R |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['method']} | {r['nfe']} | {r['psnr_single']:.2f} | {r['lpips_single']:.4f} | "
              f"{r['psnr_mean']:.2f} | {r['ratio']:.2f} |" for r in rows]
    (RESULTS / "calibration.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}/calibration.{{md,csv}}")


if __name__ == "__main__":
    main()
