"""Option choices for ``method="auto"`` on images no table scores or tunes on: invscore runs (method, options,
NFE) beside deepinv's DDRM, on the tasks table's restoration problems.

Images (``--n``, default 48): Fashion-MNIST test 200–247 for the gray tasks and emoji test
``randperm(seed 0)[36:84]`` for colorization (the tasks table scores Fashion-MNIST 0–15 and tunes deepinv on
16–19; the colour table scores emoji ``randperm(0)[:32]`` and tunes on ``[32:36]``); σ_y = 0.05; each run on
``--seeds`` sampler seeds (1–3), the same y for every run; ΔPSNR paired per image against deepinv's better
DDRM at 20 NFE. The evidence cited in
:data:`invscore.conditional.auto.RULES` comes from this script: ``results/sel*.md``, each with its command.

Run: ``OMP_WAIT_POLICY=PASSIVE python experiments/held_out.py --threads 2`` (the default runs, a first look: auto,
MMPS, DDRM and ΠGDM at 10 NFE, at noise_scale 1 and 1/√2, and deepinv's DDRM at 10 and 20) ->
``results/held_out.{md,csv}``.
``--runs 'ddrm:noise_scale=0.5@10'`` runs others (``method[:k=v,...]@nfe``; steps = nfe / NFE per step; the key
``grid`` is solve's time grid).
"""
from __future__ import annotations

import argparse
import ast
import math
import shlex
import sys
import time

import torch

import operators
from inverse_common import RESULTS, deepinv_problem, image_metrics, run_deepinv
from invscore.checkpoint import load_denoiser
from invscore.conditional import solve
from invscore.conditional.auto import build
from invscore.data import load
from invscore.io import atomic_write_text, write_csv
from invscore.priors import CallablePrior
from tasks_table import ALL_TASKS, SIGMA_Y

FIRST, N = 200, 48  # Fashion-MNIST test images FIRST .. FIRST + N − 1
EMOJI_FROM = 36  # emoji test randperm(0)[EMOJI_FROM : EMOJI_FROM + N]
DEFAULT_RUNS = ["auto@10", "mmps@10", "mmps:noise_scale=0.7071@10", "ddrm@10", "ddrm:noise_scale=0.7071@10",
                "pigdm:noise_scale=0.7071@10", "dinv_ddrm:eta=0.85@10", "dinv_ddrm:eta=1.0@10",
                "dinv_ddrm:eta=0.85@20", "dinv_ddrm:eta=1.0@20"]


def parse_run(spec: str) -> tuple[str, dict, int]:
    """``method[:k=v,...]@nfe`` -> (method, options, nfe); values are Python literals."""
    head, _, nfe = spec.rpartition("@")
    name, _, opts = head.partition(":")
    options = {k: _value(v) for k, v in (kv.split("=", 1) for kv in opts.split(",") if kv)}
    return name, options, int(nfe)


def _value(text: str):
    """A Python literal, or the text itself (a shell strips the quotes of ``grid='uniform'``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def images(task: str, n: int = N) -> tuple[str, torch.Tensor]:
    """(prior name, ``n`` held-out images in [-1, 1]) for ``task``."""
    if task == "colorize":
        xa, _ = load("emoji", "test")
        idx = torch.randperm(len(xa), generator=torch.Generator().manual_seed(0))[EMOJI_FROM:EMOJI_FROM + n]
        return "emoji", xa[idx] * 2 - 1
    xa, _ = load("fashion_mnist", "test", FIRST + n)
    return "fashion_mnist", xa[FIRST:] * 2 - 1


def run(spec, prior, op, y, seed):
    """One run -> (x in [-1, 1], NFE per image, label)."""
    name, options, nfe = parse_run(spec)
    if name.startswith("dinv_"):
        cfg = {"eta": 0.85, "etab": 1.0, **options} if name == "dinv_ddrm" else options
        x, got, _ = run_deepinv(name, cfg, nfe, *deepinv_problem(prior, op, y), seed=seed)
        return x, got, spec
    method = build(name, options)  # as auto builds a rule's method: the key grid is its time grid
    if method.delegates:
        picked, steps = method.resolve(op, nfe)
        label = f"{spec} → {picked.label()}, steps {steps}"
    else:
        steps, label = max(1, nfe // method.cost().nfe), spec
    res = solve(prior, op, y, method=method, steps=nfe if method.delegates else steps,
                generator=torch.Generator().manual_seed(seed))
    return res.x.detach(), res.nfe, label


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=list(ALL_TASKS))
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="method[:k=v,...]@nfe")
    ap.add_argument("--n", type=int, default=N, help="held-out images per task")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-prefix", default="held_out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows, per_image = [], {}
    for task in args.tasks:
        prior_name, x = images(task, args.n)
        prior = CallablePrior(load_denoiser(prior_name), data_shape=tuple(x.shape[1:]))
        reg, params, _ = ALL_TASKS[task]
        op = operators.make(reg, img_size=tuple(x.shape[1:]), noise=SIGMA_Y, **params)
        y = op.measure(x, generator=torch.Generator().manual_seed(0))
        for spec in args.runs:
            per_seed = []
            for seed in args.seeds:
                xh, nfe, label = run(spec, prior, op, y, seed)
                m = image_metrics(xh, x) if torch.isfinite(xh).all() else None
                per_seed.append(m)
            ok = [m for m in per_seed if m is not None]
            psnr = torch.stack([m["psnr"] for m in ok]).mean(0) if ok else None  # per image, over seeds
            lp = torch.stack([m["lpips"] for m in ok]).mean(0) if ok else None
            r = dict(task=task, run=label, nfe=int(nfe), seeds=len(ok),
                     psnr=float(psnr.mean()) if ok else math.nan,
                     psnr_se=float(psnr.std() / len(psnr) ** 0.5) if ok else math.nan,
                     lpips=float(lp.mean()) if ok else math.nan,
                     error="" if len(ok) == len(per_seed) else "non-finite output")
            rows.append(r)
            per_image[(task, label)] = psnr
            print(f"  {task:<15}{label:<60} NFE {nfe:>4}  PSNR {r['psnr']:6.2f} ± {r['psnr_se']:.2f}  "
                  f"LPIPS {r['lpips']:.4f} {r['error']}", flush=True)
    for r in rows:  # paired against deepinv's best DDRM at 20 NFE, where it ran
        ref = [q for q in rows if q["task"] == r["task"] and q["run"].startswith("dinv_ddrm") and q["nfe"] == 20
               and math.isfinite(q["psnr"])]
        mine = per_image.get((r["task"], r["run"]))
        if ref and mine is not None:
            d = mine - per_image[(r["task"], max(ref, key=lambda q: q["psnr"])["run"])]
            r["dpsnr_vs_dinv_ddrm20"] = float(d.mean())
            r["dpsnr_ci"] = 1.96 * float(d.std() / len(d) ** 0.5)
    for r in rows:
        if "dpsnr_ci" in r:
            print(f"  {r['task']:<15}{r['run']:<60} ΔPSNR vs deepinv's DDRM-20 "
                  f"{r['dpsnr_vs_dinv_ddrm20']:+.2f} ± {r['dpsnr_ci']:.2f}")
    elapsed = time.perf_counter() - start
    write_csv(RESULTS / f"{args.out_prefix}.csv", rows)
    lines = [f"# Held-out runs ({args.out_prefix})", "",
             f"Fashion-MNIST test {FIRST}–{FIRST + args.n - 1} (emoji test "
             f"randperm(0)[{EMOJI_FROM}:{EMOJI_FROM + args.n}] for colorize), σ_y = {SIGMA_Y}, seeds {args.seeds}; "
             f"PSNR per image averaged over seeds, mean ± s.e. over "
             f"images. Generated by `python experiments/held_out.py {shlex.join(argv)}` in {elapsed / 60:.1f} min.",
             "", "ΔPSNR: paired per image against the better of deepinv's DDRM runs at 20 NFE, mean ± 95 % half-width.",
             "", "| task | run | NFE | PSNR | ΔPSNR | LPIPS |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['run']} | {r['nfe']} | {r['psnr']:.2f} ± {r['psnr_se']:.2f} | "
              + (f"{r['dpsnr_vs_dinv_ddrm20']:+.2f} ± {r['dpsnr_ci']:.2f}" if "dpsnr_ci" in r else "")
              + f" | {r['lpips']:.4f} |" for r in rows]
    atomic_write_text(RESULTS / f"{args.out_prefix}.md", "\n".join(lines) + "\n")
    print(f"wrote {RESULTS}/{args.out_prefix}.{{md,csv}} in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
