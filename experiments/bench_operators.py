"""Benchmark: time of A, Aᵀ and A⁺ of each invscore operator against deepinv's equivalent physics.

Batch of 8 images 3×256×256, float32, CPU, torch.no_grad(). Each timing is the median over
``--repeats`` rounds; within a round invscore and deepinv alternate so machine noise hits both.
Iterative pseudo-inverses (spatial blur, bicubic) are timed over 3 rounds (1 when a deepinv call
exceeds 20 s) and get the same budget on both sides (tol 1e-4,
50 iterations; deepinv's default LSQR, invscore's CG on the normal equations), and the table
reports each one's relative residual ||A x − y|| / ||y|| so the ratio is not bought with accuracy.

    python experiments/bench_operators.py --threads 1 --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import deepinv as dinv
import torch

import operators
from operators import LUMA_WEIGHTS

SIZE = (3, 256, 256)
B = 8


def pairs():
    """(name, invscore operator, deepinv physics, input shape) with the same forward model."""
    g = torch.Generator().manual_seed(0)
    out = []
    for name in ("inpaint_random", "inpaint_center"):
        op = operators.make(name, img_size=SIZE, generator=g) if name == "inpaint_random" else operators.make(name, img_size=SIZE)
        out.append((name, op, dinv.physics.Inpainting(SIZE, mask=op.mask.expand(SIZE).clone()), SIZE))
    for name in ("blur_gaussian_fft", "blur_motion_fft"):
        op = operators.make(name, img_size=SIZE)
        out.append((name, op, dinv.physics.BlurFFT(SIZE, filter=op.kernel[None, None].float()), SIZE))
    for name in ("blur_gaussian", "blur_motion"):
        op = operators.make(name, img_size=SIZE)
        out.append((name, op, dinv.physics.Blur(filter=op.kernel[None, None].float(), padding="reflect"), SIZE))
    out.append(("grayscale", operators.make("grayscale", img_size=SIZE), dinv.physics.Decolorize(srf="flat"), SIZE))
    out.append(("grayscale_luma", operators.make("grayscale_luma", img_size=SIZE),
                dinv.physics.Decolorize(srf=list(LUMA_WEIGHTS)), SIZE))
    box = torch.full((1, 1, 4, 4), 1 / 16)
    out.append(("sr_avgpool", operators.make("sr_avgpool", img_size=SIZE, factor=4),
                dinv.physics.Downsampling(SIZE, filter=box, factor=4), SIZE))
    out.append(("sr_bicubic", operators.make("sr_bicubic", img_size=SIZE, factor=4),
                dinv.physics.Downsampling(SIZE, filter="bicubic", factor=4, padding="reflect"), SIZE))
    cs = dinv.physics.CompressedSensing(m=1024, img_size=(1, 64, 64), rng=torch.Generator().manual_seed(0))
    out.append(("dense (4096→1024)", operators.DenseOperator(cs._A, input_shape=(1, 64, 64), output_shape=(1024,)),
                cs, (1, 64, 64)))
    return out


def _time(fn, arg, min_time=0.05):
    """Seconds per call: loop until min_time has passed (at least one call)."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn(arg)
        n += 1
        t = time.perf_counter() - t0
        if t >= min_time:
            return t / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", default=None, help="comma-separated operator names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, deepinv {dinv.__version__}, threads={torch.get_num_threads()}, "
          f"batch {B}, median of {args.repeats} repeats (ms per call)\n")
    head = f"{'operator':20s} | {'A ours':>8s} {'deepinv':>8s} {'ratio':>6s} | {'Aᵀ ours':>8s} {'deepinv':>8s} {'ratio':>6s} | " \
           f"{'A⁺ ours':>8s} {'deepinv':>8s} {'ratio':>6s} | A⁺ residual ours / deepinv"
    print(head)
    print("-" * len(head))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, op, phys, shape in pairs():
            if args.only and name.split()[0] not in args.only.split(","):
                continue
            if not isinstance(op, operators.SVDOperator):
                op.pinv_tol, op.pinv_maxiter = 1e-4, 50
                phys.max_iter, phys.tol = 50, 1e-4
            x = torch.rand((B, *shape), generator=gen) * 2 - 1
            y = op.A(x)
            ours = {"A": (op.A, x), "Aᵀ": (op.A_T, y), "A⁺": (op.A_pinv, y)}
            theirs = {"A": (phys.A, x), "Aᵀ": (phys.A_adjoint, y), "A⁺": (phys.A_dagger, y)}
            row = [f"{name:20s}"]
            for key in ("A", "Aᵀ", "A⁺"):
                ts_o, ts_d = [], []
                heavy = key == "A⁺" and not isinstance(op, operators.SVDOperator)
                reps = max(3, args.repeats // 2) if heavy else args.repeats
                for _ in range(reps):
                    ts_o.append(_time(*ours[key], min_time=0 if heavy else 0.05))
                    ts_d.append(_time(*theirs[key], min_time=0 if heavy else 0.05))
                    if heavy and ts_d[-1] > 20:  # deepinv's direct 61×61 LSQR: one round is minutes
                        break
                to, td = statistics.median(ts_o) * 1e3, statistics.median(ts_d) * 1e3
                row.append(f"{to:8.2f} {td:8.2f} {to / td:6.2f}")
            res = lambda xh: float((op.A(xh) - y).norm() / y.norm())  # noqa: E731
            row.append(f"{res(op.A_pinv(y)):.1e} / {res(phys.A_dagger(y)):.1e}")
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
