"""Sampler overhead benchmark (issue: foundation §6).

For a small UNet prior on CPU: wall time of a sampling run divided by (its NFE × the time of one bare
forward pass of the same network at the same batch size). 1.00 means the sampler costs nothing beyond
the network; target ≤ 1.05. Timings interleave the bare passes and the runs, and report medians, because
the machine is shared. A second, noise-robust column divides the wall time by the time spent inside the
network during that same run (measured by a timing wrapper), so load changes between the bare passes
and the run cancel. Run: ``python experiments/bench_samplers.py [--threads 1] [--batch 8] [--steps 100]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import invscore
from invscore.nets import build
from invscore.priors import CallablePrior, Diffusion
from invscore.samplers import sample_ddim, sample_heun, sample_pc, time_grid


def _forward_time(net, x, sigma, reps):
    times = []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            net(x, sigma)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build({"name": "unet", "kwargs": {"in_channels": 1, "channels": [32, 64, 64], "num_res_blocks": 1,
                                            "mid_attention": True}}).eval()
    inside = [0.0]

    def timed(x, sigma):
        t0 = time.perf_counter()
        out = net(x, sigma)
        inside[0] += time.perf_counter() - t0
        return out

    model = Diffusion(CallablePrior(timed), invscore.VPSDE())
    shape = (args.batch, 1, 32, 32)
    x = torch.randn(shape)
    sigma = torch.full((args.batch,), 1.0)
    runs = {
        "pc (reverse diffusion + Langevin)": lambda ts: sample_pc(model, x, ts, "reverse_diffusion", "langevin"),
        "ode heun": lambda ts: sample_heun(model, x, ts),
        "ddim": lambda ts: sample_ddim(model, x, ts),
    }
    ts = time_grid(model.sde, args.steps, dtype=torch.float32)
    _forward_time(net, x, sigma, 5)  # warm-up
    print(f"batch {args.batch} x 1x32x32, {args.steps} steps, torch threads {args.threads}, "
          f"{sum(p.numel() for p in net.parameters())/1e6:.2f} M params")
    print(f"{'sampler':36s} {'NFE':>5s} {'wall s':>8s} {'NFE x fwd s':>11s} {'ratio':>6s} {'wall/in-net':>11s}")
    for name, run in runs.items():
        ratios, walls, ideals, nfe, own = [], [], [], 0, []
        for _ in range(args.repeats):
            fwd = _forward_time(net, x, sigma, 20)
            inside[0] = 0.0
            t0 = time.perf_counter()
            res = run(ts)
            wall = time.perf_counter() - t0
            fwd = (fwd + _forward_time(net, x, sigma, 20)) / 2
            nfe = res.nfe
            ratios.append(wall / (nfe * fwd))
            walls.append(wall)
            ideals.append(nfe * fwd)
            own.append(wall / inside[0])
        print(f"{name:36s} {nfe:5d} {statistics.median(walls):8.2f} {statistics.median(ideals):11.2f} "
              f"{statistics.median(ratios):6.3f} {statistics.median(own):11.3f}")


if __name__ == "__main__":
    main()
