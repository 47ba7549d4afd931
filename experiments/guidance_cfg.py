"""Classifier guidance vs classifier-free guidance on Fashion-MNIST, judged by an independent clean CNN.

Classifier guidance (Dhariwal & Nichol 2021): the shipped unconditional prior ``fashion_mnist`` plus the shipped
noisy classifier, scale γ. Classifier-free guidance (Ho & Salimans 2022): the shipped class-conditional prior
``fashion_mnist_cond`` (trained with 10 % label dropout), weight w (x̂0_u + w (x̂0_c − x̂0_u); w = 1 is the
conditional model). Every setting draws ``--per-class`` samples of each class with DDIM from the same start
noise. Reported per setting, on the judge's 128-d penultimate features (`experiments/guidance_judge.py`'s
JudgeCNN, trained on the train split only):

* on-class: the share of samples the judge labels as the requested class (± binomial s.e.);
* precision / recall (Kynkäänniemi et al. 2019, k = 3) against ``--real`` held-out test images of the same
  class, averaged over classes; per-class feature variance relative to the real images' (diversity);
* FD: Fréchet distance (invscore.stats.frechet_distance) of all samples against held-out test images.

Inpainting *as* class k: centre 16×16 box, σ_y = 0.05, ΠGDM (50 steps) with the guidance term, ``--n-inpaint``
test images, k = the image's own class (PSNR against the truth) and k = the next class (judged share of k).

    OMP_WAIT_POLICY=PASSIVE python experiments/guidance_cfg.py --per-class 16 --threads 2
Writes experiments/results/guidance_cfg.{md,csv,png}.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import operators  # noqa: E402
from invscore.checkpoint import load_classifier, load_denoiser, training_steps  # noqa: E402
from invscore.conditional import ClassifierFreeGuidance, ClassifierGuidance, Guided, solve  # noqa: E402
from invscore.data import load  # noqa: E402
from invscore.io import atomic_write_text, from_data  # noqa: E402
from invscore.metrics import mean_se  # noqa: E402
from invscore.priors import CallablePrior, Diffusion  # noqa: E402
from invscore.samplers import sample  # noqa: E402
from invscore.sde import make_sde  # noqa: E402
from invscore.stats import frechet_distance  # noqa: E402
from guidance_judge import train_judge  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "guidance_cfg"


def judge_features(judge, x01: torch.Tensor) -> torch.Tensor:
    """The judge's penultimate (128-d, after ReLU) features of images in [0, 1]."""
    with torch.no_grad():
        return judge.eval().net[:-1](x01)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eq. 1–2): a sample is covered by a set when it
    lies within the k-th nearest-neighbour radius of some member of that set."""
    def covered(ref, q):
        r = torch.cdist(ref, ref).kthvalue(k + 1, dim=1).values  # +1: each point is its own 0-th neighbour
        return (torch.cdist(q, ref) <= r[None]).any(1).double().mean()
    return float(covered(real, fake)), float(covered(fake, real))


def guided_models(kind: str, strength: float, labels, nets):
    """(Diffusion model with the guidance term, NFE per step) for one setting."""
    if kind == "classifier":
        base = Diffusion(CallablePrior(nets["uncond"]), make_sde("vp"))
        return (Guided(base, [ClassifierGuidance(nets["clf"], labels, strength)]) if strength else base), 1
    base = Diffusion(CallablePrior(nets["cond"]), make_sde("vp"))
    if strength == 0:
        return base, 1
    return Guided(base, [ClassifierFreeGuidance(nets["cond"].denoise_given, labels, strength)]), 2


def generation(nets, judge, settings, per_class, steps, real, seed, log):
    labels = torch.arange(10).repeat_interleave(per_class)
    rows, grids = [], {}
    for kind, s in settings:
        g = torch.Generator().manual_seed(seed)  # the same start noise for every setting
        model, nfe = guided_models(kind, s, labels, nets)
        t0 = time.perf_counter()
        x01 = from_data(sample(model, (len(labels), 1, 32, 32), method="ddim", steps=steps, generator=g).x.detach())
        f = judge_features(judge, x01)
        hit = (judge.net[-1](f).argmax(1) == labels).double()
        pr = [precision_recall(real["f"][real["y"] == c], f[labels == c]) for c in range(10)]
        var = [float(f[labels == c].var(0).sum() / real["f"][real["y"] == c].var(0).sum()) for c in range(10)]
        row = dict(guidance=kind, strength=s, nfe=nfe * steps, on_class=mean_se(hit)[0], on_class_se=mean_se(hit)[1],
                   precision=sum(p for p, _ in pr) / 10, recall=sum(r for _, r in pr) / 10, variance_ratio=sum(var) / 10,
                   fd=float(frechet_distance(f, real["f_all"])), seconds=round(time.perf_counter() - t0, 1))
        rows.append(row)
        grids[(kind, s)] = x01.view(10, per_class, 1, 32, 32)[:, :min(8, per_class)].reshape(-1, 1, 32, 32)
        log(f"  {kind} {s:g}: on-class {row['on_class']:.1%}, P/R {row['precision']:.2f}/{row['recall']:.2f}, "
            f"var {row['variance_ratio']:.2f}, FD {row['fd']:.2f} ({row['seconds']:.0f}s)")
    return rows, grids


def inpainting(nets, judge, settings, n, seed, log):
    x, y_cls = load("fashion_mnist", "test", n=n)
    op = operators.make("inpaint_center", img_size=(1, 32, 32), noise=0.05)
    y = op.measure(x * 2 - 1, torch.Generator().manual_seed(seed))
    rows = []
    for target in ("own", "next"):
        labels = y_cls if target == "own" else (y_cls + 1) % 10
        for kind, s in settings:
            prior = nets["uncond"] if kind == "classifier" else nets["cond"]
            terms = ([] if s == 0 else [ClassifierGuidance(nets["clf"], labels, s)] if kind == "classifier"
                     else [ClassifierFreeGuidance(nets["cond"].denoise_given, labels, s)])
            r = solve(CallablePrior(prior, data_shape=(1, 32, 32)), op, y, method="pigdm", steps=50, guidance=terms,
                      generator=torch.Generator().manual_seed(seed + 1))
            x01 = from_data(r.x.detach()).clamp(0, 1)
            hit = (judge.eval()(x01).argmax(1) == labels).double()
            psnr = 10 * torch.log10(1 / (x01 - x).pow(2).flatten(1).mean(1))
            rows.append(dict(target=target, guidance=kind, strength=s, on_class=mean_se(hit)[0], on_class_se=mean_se(hit)[1],
                             psnr=mean_se(psnr)[0], psnr_se=mean_se(psnr)[1], nfe=r.nfe, vjp=r.vjp))
            log(f"  inpaint as {target} class, {kind} {s:g}: judged {rows[-1]['on_class']:.1%}, PSNR {rows[-1]['psnr']:.2f}")
    return rows


def write(gen, inp, grids, info, args, prefix):
    from torchvision.utils import save_image
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(gen[0]))
        w.writeheader()
        w.writerows(gen)
    with open(prefix.parent / (prefix.name + "_inpainting.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(inp[0]))
        w.writeheader()
        w.writerows(inp)
    from torchvision.utils import make_grid
    blocks = [make_grid(g, nrow=g.shape[0] // 10, padding=1, pad_value=1.0) for g in grids.values()]
    save_image(make_grid(torch.stack(blocks), nrow=len(blocks), padding=4, pad_value=0.5), prefix.with_suffix(".png"))
    L = ["# Classifier guidance vs classifier-free guidance (Fashion-MNIST)", "",
         f"Command: `python experiments/guidance_cfg.py {' '.join(sys.argv[1:])}` ({info['minutes']:.1f} min). "
         f"{args.per_class} samples per class and setting, DDIM {args.steps} steps, one seed; judge: clean CNN, "
         f"held-out accuracy {info['judge_accuracy']:.3f}; real reference: {args.real} test images per class. "
         f"Priors: `fashion_mnist` ({info['uncond_steps']} steps) + `fashion_mnist_classifier` for classifier guidance, "
         f"`fashion_mnist_cond` ({info['cond_steps']} steps) for CFG — different networks, so compare each against "
         "its own unguided row (γ = 0, w = 0). One run: a claim about these priors and this seed.", "",
         "| guidance | strength | NFE | on-class (judge) | precision | recall | variance ratio | FD |",
         "|---|---|---|---|---|---|---|---|"]
    for r in gen:
        L.append(f"| {r['guidance']} | {r['strength']:g} | {r['nfe']} | {r['on_class']:.1%} ± {r['on_class_se']:.1%} | "
                 f"{r['precision']:.2f} | {r['recall']:.2f} | {r['variance_ratio']:.2f} | {r['fd']:.2f} |")
    L += ["", f"## Inpainting as class k (centre 16×16, σ_y = 0.05, ΠGDM 50 steps, {args.n_inpaint} test images)", "",
          "| k | guidance | strength | judged as k | PSNR (dB) |", "|---|---|---|---|---|"]
    for r in inp:
        L.append(f"| {r['target']} | {r['guidance']} | {r['strength']:g} | {r['on_class']:.1%} ± {r['on_class_se']:.1%} | "
                 f"{r['psnr']:.2f} ± {r['psnr_se']:.2f} |")
    L += ["", f"Grid (`{prefix.name}.png`): one block per setting, left to right in the table's order; rows = classes "
          f"0–9, {min(8, args.per_class)} samples each."]
    atomic_write_text(prefix.with_suffix(".md"), "\n".join(L) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--real", type=int, default=200, help="held-out test images per class as the reference")
    p.add_argument("--gammas", type=float, nargs="+", default=[0, 4, 16])
    p.add_argument("--weights", type=float, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--inpaint-gamma", type=float, default=16)
    p.add_argument("--inpaint-weight", type=float, default=2)
    p.add_argument("--n-inpaint", type=int, default=20)
    p.add_argument("--judge-steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    judge, jinfo = train_judge(steps=args.judge_steps)
    nets = {"uncond": load_denoiser("fashion_mnist"), "cond": load_denoiser("fashion_mnist_cond"),
            "clf": load_classifier("fashion_mnist_classifier")}
    xt, yt = load("fashion_mnist", "test")
    keep = torch.cat([torch.nonzero(yt == c).flatten()[-args.real:] for c in range(10)])  # not the inpainted ones
    real = {"f": judge_features(judge, xt[keep]), "y": yt[keep]}
    real["f_all"] = real["f"]
    settings = [("classifier", g) for g in args.gammas] + [("free", w) for w in args.weights]
    gen, grids = generation(nets, judge, settings, args.per_class, args.steps, real, args.seed, print)
    inp = inpainting(nets, judge, [("classifier", 0), ("classifier", args.inpaint_gamma), ("free", 0),
                                   ("free", args.inpaint_weight)], args.n_inpaint, args.seed, print)
    info = {"minutes": (time.perf_counter() - t0) / 60, "judge_accuracy": jinfo["test_accuracy"],
            "uncond_steps": training_steps(nets["uncond"].card), "cond_steps": training_steps(nets["cond"].card)}
    write(gen, inp, grids, info, args, Path(args.out))
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
