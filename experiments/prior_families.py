"""The prior families on the same tasks, images and measurements (issue 15 §1–2): score vs rectified flow vs
consistency model.

Three Fashion-MNIST priors with the same UNet (1.06 M parameters), trained on CPU: ``fashion_mnist`` (EDM
denoising score matching, ``python -m invscore.training``), ``fashion_mnist_flow`` (``--objective flow``:
rectified-flow velocity, logit-normal t; ``invscore.nets.FlowDenoiser``) and ``fashion_mnist_cm``
(consistency distillation of ``fashion_mnist``, ``python -m invscore.distill``;
``invscore.nets.ConsistencyDenoiser``). All are frozen priors ``D(x, σ)``, so every method runs on each
unchanged (for the consistency model D is its map to the ODE's origin, used as the methods' x̂0). By default
all are sampled under the VP SDE (the CLI's default); ``--sdes vp flow`` adds the straight path
(:class:`invscore.sde_flow.FlowSDE`, whose probability-flow ODE is the flow's own ODE).

For each task of ``tasks_table.TASKS`` (σ_y = 0.05 in [-1, 1], the same y for everyone), each method of
``METHODS`` at each NFE of ``--nfe``: one posterior sample per image of the first ``--n`` Fashion-MNIST test
images (held out from both priors' training). Reported: PSNR / LPIPS mean over images, and per (task, method,
NFE, SDE) the paired difference of each family against the score prior with its 95 % interval (mean ± 1.96
s.e. over images). Also the priors' held-out denoising MSE per σ from their cards, and unconditional
generation against NFE: ``--gen-n`` samples per prior and sampler (DDIM, η = 0, and multistep consistency
sampling, both under the VP SDE), scored by the Fréchet distance (``invscore.stats.frechet_distance``) of the
shipped noise-conditional classifier's pooled features at σ = 0.002 to those of ``--gen-n`` held-out test
images; the floor is the distance between two disjoint sets of test images of the same size. The feature
network was trained on the same training split as the priors, so this is FID-like, not FID.

Run: ``OMP_WAIT_POLICY=PASSIVE python experiments/prior_families.py [--n 8] [--threads 1]``; writes
``experiments/results/prior_families.{md,csv,png}`` (``--quick``: 2 images, NFE 10, one task).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import operators
from inverse_common import RESULTS, image_metrics, invscore_method, invscore_steps
from invscore.checkpoint import load_classifier, load_denoiser, read_card, training_seconds, training_steps
from invscore.conditional import solve
from invscore.data import load
from invscore.io import atomic_write_text, write_csv
from invscore.priors import CallablePrior, Diffusion
from invscore.samplers import sample
from invscore.sde import make_sde
from invscore.stats import frechet_distance
from tasks_table import SIGMA_Y, TASKS

PRIORS = {"score": "fashion_mnist", "flow": "fashion_mnist_flow", "consistency": "fashion_mnist_cm"}
METHODS = ["mmps", "pigdm", "ddrm", "dps", "pnpflow"]
NFE = [4, 10, 20, 50, 100]
SDES = ["vp", "flow"]
GEN = {"ddim": [2, 4, 10, 20], "consistency": [1, 2, 4]}  # sampler -> NFE per sample
STYLES = {"score": "--", "flow": "-", "consistency": ":"}


def run(prior, op, y, method, nfe, sde, seed=1):
    """One posterior sample per measurement at ``nfe`` network evaluations -> (x, NFE actually spent)."""
    res = solve(prior, op, y, method=invscore_method(method), steps=invscore_steps(method, nfe), sde=sde,
                generator=torch.Generator().manual_seed(seed))
    return res.x.detach(), res.nfe


def interval(d: torch.Tensor) -> tuple[float, float]:
    """Mean and 1.96 × standard error of per-image differences."""
    d = d.double()
    return float(d.mean()), 1.96 * float(d.std(unbiased=True)) / math.sqrt(d.numel()) if d.numel() > 1 else math.nan


@torch.no_grad()
def features(clf, x: torch.Tensor) -> torch.Tensor:
    """The classifier's pooled features (the input of its linear head) of images x in [-1, 1], at σ = 0.002."""
    got = []
    hook = clf.head.register_forward_hook(lambda m, inp, out: got.append(inp[0]))
    try:
        for chunk in x.split(256):
            clf(chunk, torch.full((len(chunk),), 0.002))
    finally:
        hook.remove()
    return torch.cat(got)


def generation(priors, n: int, log=print) -> list[dict]:
    """Fréchet distance of ``n`` unconditional samples per (prior, sampler, NFE) to ``n`` held-out test images
    (images 1000..1000+n), and the floor: test images 2000..2000+n against the same reference."""
    clf = load_classifier("fashion_mnist_classifier")
    test = load("fashion_mnist", "test", 2000 + n)[0] * 2 - 1
    ref = features(clf, test[1000:1000 + n])
    rows = [dict(prior="test images", sampler="-", nfe=0, fd=float(frechet_distance(features(clf, test[2000:]), ref)))]
    log(f"FD floor (two sets of {n} test images): {rows[0]['fd']:.3f}")
    for fam, prior in priors.items():
        model = Diffusion(prior, make_sde("vp"))
        for sampler, nfes in GEN.items():
            for nfe in nfes:
                res = sample(model, (n, *test.shape[1:]), sampler, steps=nfe, generator=torch.Generator().manual_seed(nfe))
                rows.append(dict(prior=fam, sampler=sampler, nfe=res.nfe,
                                 fd=float(frechet_distance(features(clf, res.x.float().clamp(-1, 1)), ref))))
                log(f"generate {fam:<12}{sampler:<12}NFE {res.nfe:>3}  FD {rows[-1]['fd']:.3f}")
    return rows


def plot(rows, path, tasks):
    """PSNR and LPIPS vs NFE per task (first SDE); colour = method, line style = prior family (STYLES)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.6 * len(tasks), 6), squeeze=False)
    colours = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for j, task in enumerate(tasks):
        for m in METHODS:
            for fam, ls in STYLES.items():
                pts = sorted((r["nfe"], r["psnr"], r["lpips"]) for r in rows if r["task"] == task
                             and r["method"] == m and r["prior"] == fam and r["sde"] == rows[0]["sde"])
                if pts:
                    n, p, lp = zip(*pts)
                    axes[0, j].plot(n, p, ls, marker="o", ms=3, color=colours[m], label=f"{m} ({fam})")
                    axes[1, j].plot(n, lp, ls, marker="o", ms=3, color=colours[m])
        axes[0, j].set_title(task)
        for i, lab in enumerate(("PSNR (dB) ↑", "LPIPS ↓")):
            axes[i, j].set_xscale("log")
            axes[i, j].set_xlabel("NFE per image")
            axes[i, j].set_ylabel(lab)
    axes[0, 0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rows, pairs, cards, args, elapsed, prefix, gen=()):
    write_csv(RESULTS / f"{prefix}.csv", rows)
    L = ["# Prior families: " + ", ".join(f"{k} ({c['name']})" for k, c in cards.items()), "",
         f"First {args.n} Fashion-MNIST test images (held out from every prior), σ_y = {SIGMA_Y}, one posterior "
         "sample per image, the same y for every run. Generated by `OMP_WAIT_POLICY=PASSIVE python "
         f"experiments/prior_families.py --n {args.n} --threads {args.threads} --sdes {' '.join(args.sdes)}` in "
         f"{elapsed / 60:.1f} min.", "",
         "## The priors", "", "| prior | family | training steps (with any fine-tune) | CPU time (s) | held-out MSE at σ = 0.05 / 0.5 / 2 / 20 |",
         "|---|---|---|---|---|"]
    for fam, c in cards.items():
        mse = c.get("eval_test_mse_by_sigma", {})
        L.append(f"| {c['name']} | {c.get('family', 'score')} | {training_steps(c)} | {training_seconds(c) or math.nan:.0f} | "
                 + " / ".join(f"{mse.get(s, math.nan):.4f}" for s in ("0.05", "0.5", "2", "20")) + " |")
    if gen:
        nfes = sorted({n for v in GEN.values() for n in v})
        L += ["", f"## Unconditional generation: Fréchet distance to {args.gen_n} test images (lower is better)", "",
              f"Floor (two disjoint sets of {args.gen_n} test images): {gen[0]['fd']:.3f}.", "",
              "| prior | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
        for fam in cards:
            for sampler in GEN:
                got = {r["nfe"]: r["fd"] for r in gen if r["prior"] == fam and r["sampler"] == sampler}
                cells = [f"{got[n]:.3f}" if n in got else "–" for n in nfes]
                L.append(f"| {fam} | {sampler} | " + " | ".join(cells) + " |")
    L += ["", "## Paired against the score prior, per image (mean ± 1.96 s.e.); PSNR up and LPIPS down favour the "
          "other family", "", "| task | method | NFE | SDE | family | PSNR score | PSNR family | ΔPSNR (dB) | "
          "LPIPS score | LPIPS family | ΔLPIPS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        L.append(f"| {p['task']} | {p['method']} | {p['nfe']} | {p['sde']} | {p['family']} | {p['psnr_score']:.2f} | "
                 f"{p['psnr_other']:.2f} | {p['dpsnr']:+.2f} ± {p['dpsnr_ci']:.2f} | {p['lpips_score']:.4f} | "
                 f"{p['lpips_other']:.4f} | {p['dlpips']:+.4f} ± {p['dlpips_ci']:.4f} |")
    atomic_write_text(RESULTS / f"{prefix}.md", "\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--nfe", type=int, nargs="+", default=NFE)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--sdes", nargs="+", default=SDES[:1], choices=SDES)
    ap.add_argument("--families", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen-n", type=int, default=256, help="unconditional samples per point (0: skip)")
    for fam in PRIORS:
        ap.add_argument(f"--{fam}-prior", default=PRIORS[fam], help="shipped name or .safetensors path")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if "score" not in args.families:
        ap.error("--families must include score: the others are paired against it")
    names = {fam: getattr(args, f"{fam}_prior") for fam in args.families}
    if args.quick:
        args.n, args.nfe, args.tasks, args.gen_n = 2, [10], args.tasks[:1], 8
    prefix = "prior_families_quick" if args.quick else "prior_families"
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    x = load("fashion_mnist", "test", args.n)[0] * 2 - 1
    priors = {fam: CallablePrior(load_denoiser(name), data_shape=tuple(x.shape[1:])) for fam, name in names.items()}
    cards = {fam: read_card(name) for fam, name in names.items()}
    rows, pairs, per = [], [], {}
    RESULTS.mkdir(parents=True, exist_ok=True)
    gen = generation(priors, args.gen_n) if args.gen_n else []
    for task in args.tasks:
        reg, params, _ = TASKS[task]
        op = operators.make(reg, img_size=tuple(x.shape[1:]), noise=SIGMA_Y, **params)
        y = op.measure(x, generator=torch.Generator().manual_seed(0))
        for method in METHODS:
            for nfe in args.nfe:
                if 2 * invscore_method(method).cost().nfe > nfe:
                    continue  # the method's two-step minimum does not fit this budget
                for sde in args.sdes:
                    for fam, prior in priors.items():
                        t0 = time.perf_counter()
                        xh, got = run(prior, op, y, method, nfe, sde)
                        m = image_metrics(xh, x)
                        per[(task, method, nfe, sde, fam)] = m
                        rows.append(dict(task=task, method=method, nfe=got, sde=sde, prior=fam,
                                         psnr=float(m["psnr"].mean()), lpips=float(m["lpips"].mean()),
                                         sec_per_img=(time.perf_counter() - t0) / x.shape[0]))
                        print(f"{task:<15}{method:<8}NFE {got:>4} {sde:<5}{fam:<6}PSNR {rows[-1]['psnr']:6.2f} "
                              f"LPIPS {rows[-1]['lpips']:.4f}", flush=True)
                    b = per[(task, method, nfe, sde, "score")]
                    for fam in [f for f in priors if f != "score"]:
                        a = per[(task, method, nfe, sde, fam)]
                        dp, dl = interval(a["psnr"] - b["psnr"]), interval(a["lpips"] - b["lpips"])
                        pairs.append(dict(task=task, method=method, nfe=rows[-1]["nfe"], sde=sde, family=fam,
                                          psnr_score=float(b["psnr"].mean()), psnr_other=float(a["psnr"].mean()),
                                          dpsnr=dp[0], dpsnr_ci=dp[1], lpips_score=float(b["lpips"].mean()),
                                          lpips_other=float(a["lpips"].mean()), dlpips=dl[0], dlpips_ci=dl[1]))
        write(rows, pairs, cards, args, time.perf_counter() - start, prefix, gen)  # partial results survive
    if not args.quick:
        plot(rows, RESULTS / f"{prefix}.png", args.tasks)
    write(rows, pairs, cards, args, time.perf_counter() - start, prefix, gen)
    write_csv(RESULTS / f"{prefix}_generation.csv", gen) if gen else None
    print((RESULTS / f"{prefix}.md").read_text())


if __name__ == "__main__":
    main()
