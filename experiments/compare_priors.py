"""Is a retrained prior better? Same sampler, same held-out images, same y (issue 14 §4).

For each prior (a shipped name or a training run's ``ema.safetensors``):

1. **Held-out denoising error per σ**: MSE of D(x0 + σn, σ) vs x0 on the first ``--mse-n`` test images of
   ``--data`` (default Fashion-MNIST), the noise n from one seeded stream shared by every prior
   (:func:`invscore.training_eval.evaluate_denoiser`, the σ grid of the model cards).
2. **Inpainting**: the issue's protocol — centre 16×16 box, σ_y = 0.05 in [−1, 1], test images
   ``--first``…``--first + --n − 1`` (or a random subset with ``--subset-seed``), ``--samples`` posterior
   samples per image (seeds 1…S) with each method at ``solve``'s defaults. Reported: PSNR of the mean of the
   S samples, single-sample PSNR and LPIPS(alex), and the paired per-image difference to the first prior
   listed (mean ± 1.96 s.e.).

Run: ``OMP_WAIT_POLICY=PASSIVE python experiments/compare_priors.py --priors fashion_mnist
train_runs/fashion_mnist_25min/ema.safetensors train_runs/fashion_mnist_ft/ema.safetensors --threads 1``;
writes ``results/compare_priors.{md,csv}`` (``--out`` to rename).
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import operators
from inverse_common import RESULTS, image_metrics, run_invscore
from invscore.checkpoint import load_denoiser, read_card, training_steps
from invscore.data import load
from invscore.io import write_csv
from invscore.priors import CallablePrior
from invscore.training_eval import evaluate_denoiser

SIGMA_Y = 0.05
METHODS = {"dps": 100, "ddrm": 50, "mmps": 20}  # the DPS-100 and two cheap defaults


def paired(a: torch.Tensor, b: torch.Tensor) -> str:
    """Mean of the per-image differences a − b with its normal 95 % interval, mean ± 1.96·sd/√n."""
    d = (a - b).double()
    half = 1.96 * float(d.std(unbiased=True)) / math.sqrt(d.numel())
    return f"{float(d.mean()):+.2f} [{float(d.mean()) - half:+.2f}, {float(d.mean()) + half:+.2f}]"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--priors", nargs="+", required=True, help="shipped names or .safetensors paths")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--data", default="fashion_mnist", help="test split of this invscore.data set")
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--subset-seed", type=int, default=None,
                    help="score a seeded random subset of --n test images instead of --first…; the emoji split "
                         "is sorted by code point, so its head is all flags")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--mse-n", type=int, default=1000,
                    help="denoising MSE on the first N test images (the model cards' protocol, also with --subset-seed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="compare_priors")
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error(f"--n must be >= 2 (the paired interval needs two images), got {args.n}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.subset_seed is None:
        x01, _ = load(args.data, "test", max(args.first + args.n, args.mse_n))
        x = x01[args.first: args.first + args.n] * 2 - 1
    else:
        x01, _ = load(args.data, "test")
        x = x01[torch.randperm(len(x01), generator=torch.Generator().manual_seed(args.subset_seed))[: args.n]] * 2 - 1
    x_all = x01 * 2 - 1
    op = operators.make("inpaint_center", img_size=tuple(x.shape[1:]), noise=SIGMA_Y)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    rows, mse_rows, per = [], [], {}
    for spec in args.priors:
        D = load_denoiser(spec)
        steps = training_steps(read_card(spec))
        mse = evaluate_denoiser(D, x_all[: args.mse_n])
        mse_rows.append({"prior": spec, "steps": steps, **mse})
        prior = CallablePrior(D, data_shape=tuple(x.shape[1:]))
        for method in args.methods:
            samples = torch.stack([run_invscore(prior, op, y, method, METHODS[method], seed=s)[0]
                                   for s in range(1, args.samples + 1)])
            single = [image_metrics(s, x) for s in samples]
            mean = image_metrics(samples.mean(0), x)
            per[(spec, method)] = mean["psnr"]
            row = dict(prior=spec, steps=steps, method=method, steps_method=METHODS[method], n=args.n,
                       samples=args.samples, psnr_mean=float(mean["psnr"].mean()),
                       psnr_mean_se=float(mean["psnr"].std()) / math.sqrt(args.n),
                       psnr_single=sum(float(m["psnr"].mean()) for m in single) / args.samples,
                       lpips_single=sum(float(m["lpips"].mean()) for m in single) / args.samples)
            rows.append(row)
            print(f"{spec:<50}{method:<6} mean-of-{args.samples} {row['psnr_mean']:6.2f} dB  single "
                  f"{row['psnr_single']:6.2f} dB / LPIPS {row['lpips_single']:.4f}", flush=True)
    write_csv(RESULTS / f"{args.out}.csv", rows, list(rows[0]))
    sig = [k for k in mse_rows[0] if k not in ("prior", "steps")]
    ref = args.priors[0]
    L = ["# Priors compared with the same samplers on the same held-out images", "",
         f"Generated by `python experiments/compare_priors.py {' '.join(argv or sys.argv[1:])}` in {(time.perf_counter() - start) / 60:.1f} min. One draw of y: a claim about these "
         "images.", "", f"## Held-out denoising MSE per σ (first {args.mse_n} test images, data space [−1, 1])", "",
         "| prior | steps | " + " | ".join(f"σ={s}" for s in sig) + " |", "|---|---|" + "---|" * len(sig)]
    L += [f"| {r['prior']} | {r['steps']} | " + " | ".join(f"{r[s]:.3g}" for s in sig) + " |" for r in mse_rows]
    L += ["", f"## Centre 16×16 inpainting, σ_y = {SIGMA_Y}, {args.data} test images "
          + (f"{args.first}–{args.first + args.n - 1}" if args.subset_seed is None else
             f"(a random subset of {args.n}, seed {args.subset_seed})") + f", {args.samples} samples each", "",
          f"Paired Δ: mean-of-{args.samples} PSNR minus that of `{ref}` with the same method, per image, mean "
          "[95 % interval].", "",
          "| prior | method | mean-of-S PSNR | single PSNR | single LPIPS | paired Δ vs first |", "|---|---|---|---|---|---|"]
    L += [f"| {r['prior']} | {r['method']}-{r['steps_method']} | {r['psnr_mean']:.2f} ± {r['psnr_mean_se']:.2f} | "
          f"{r['psnr_single']:.2f} | {r['lpips_single']:.4f} | "
          f"{'-' if r['prior'] == ref else paired(per[(r['prior'], r['method'])], per[(ref, r['method'])])} |"
          for r in rows]
    (RESULTS / f"{args.out}.md").write_text("\n".join(L) + "\n")
    print(f"wrote {RESULTS}/{args.out}.{{md,csv}}")


if __name__ == "__main__":
    main()
