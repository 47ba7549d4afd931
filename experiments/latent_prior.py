"""A latent prior against a pixel prior on the same tasks, images and measurements (issue 15 §3).

``fashion_mnist_latent`` is an EDM score prior on the 4×8×8 latents of the KL autoencoder ``fashion_mnist_vae``
(``python -m invscore.latent_training``; latent diffusion, Rombach et al. 2022); ``fashion_mnist`` is the pixel
score prior. Each task of ``tasks_table.TASKS`` (σ_y = 0.05 in [-1, 1]) is solved by ``invscore.solve`` on the
first ``--n`` Fashion-MNIST test images (held out from every network), one posterior sample per image. Latent
methods: DPS through the decoder, PSLD (Rout et al. 2023: DPS + the gluing term through the encoder) and DAPS
with Langevin through the decoder. Reported: PSNR / LPIPS, network evaluations and backward passes, the
autoencoder's forward and backward passes (the decoder's Jacobian cost), seconds per image, and the ceiling
of the latent prior, 𝒟(E(x)) of the true image. Also the measured time of one decoder forward + backward
against one latent-UNet and one pixel-UNet forward + backward, at the batch used.

Run: ``OMP_WAIT_POLICY=PASSIVE python experiments/latent_prior.py [--n 8] [--threads 2]``; writes
``experiments/results/latent_prior.{md,csv}``.
"""
from __future__ import annotations

import argparse
import time

import torch

import operators
from inverse_common import RESULTS, image_metrics
from invscore.checkpoint import load_denoiser, training_steps
from invscore.conditional import solve
from invscore.data import load
from invscore.io import atomic_write_text, write_csv
from invscore.priors import CallablePrior
from invscore.priors.latent import load_latent_prior
from prior_families import interval
from tasks_table import SIGMA_Y, TASKS

#: (prior, method, steps, options): the methods' defaults
RUNS = [("pixel", "auto", 100, {}), ("pixel", "dps", 100, {}), ("pixel", "pigdm", 50, {}),
        ("latent", "dps", 100, {}), ("latent", "psld", 100, {}), ("latent", "daps", 50, {})]


def _fwd_bwd_seconds(fn, x, reps: int = 5) -> float:
    x = x.detach().requires_grad_(True)
    fn(x).sum().backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(x).sum().backward()
    return (time.perf_counter() - t0) / reps


def timing(latent, pixel_net, batch: int) -> dict:
    """Seconds of one forward + backward pass at ``batch``: decoder, latent UNet, pixel UNet."""
    z = torch.randn(batch, *latent.data_shape)
    s = torch.ones(batch)
    return {"decoder": _fwd_bwd_seconds(latent.decode, z), "latent_unet": _fwd_bwd_seconds(lambda v: latent(v, s), z),
            "pixel_unet": _fwd_bwd_seconds(lambda v: pixel_net(v, s), torch.randn(batch, *latent.pixel_shape))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tasks", nargs="+", default=["inpaint_center", "sr4"], choices=list(TASKS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latent", default="fashion_mnist_latent")
    ap.add_argument("--pixel", default="fashion_mnist")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    x = load("fashion_mnist", "test", args.n)[0] * 2 - 1
    net = load_denoiser(args.latent)
    latent = load_latent_prior(net, net.card, "cpu", where=net.source)
    pixel_net = load_denoiser(args.pixel)
    priors = {"pixel": CallablePrior(pixel_net, data_shape=tuple(x.shape[1:])), "latent": latent}
    with torch.no_grad():
        ceiling = image_metrics(latent.decode(latent.encode(x)), x)
    rows, per = [], {}
    for task in args.tasks:
        reg, params, _ = TASKS[task]
        op = operators.make(reg, img_size=tuple(x.shape[1:]), noise=SIGMA_Y, **params)
        y = op.measure(x, generator=torch.Generator().manual_seed(0))
        for prior, method, steps, opts in RUNS:
            t0 = time.perf_counter()
            r = solve(priors[prior], op, y, method=method, steps=steps, generator=torch.Generator().manual_seed(1), **opts)
            m = image_metrics(r.x.detach(), x)
            per[(task, prior, method)] = m
            rows.append(dict(task=task, prior=prior, method=r.method, nfe=r.nfe, vjp=r.vjp, ae_fwd=r.autoencoder_nfe,
                             ae_bwd=r.autoencoder_vjp, psnr=float(m["psnr"].mean()), lpips=float(m["lpips"].mean()),
                             sec_per_img=(time.perf_counter() - t0) / x.shape[0]))
            print(f"{task:<15}{prior:<7}{r.method:<7}NFE {r.nfe:>4}+{r.vjp:<4} AE {r.autoencoder_nfe}+{r.autoencoder_vjp:<5}"
                  f"PSNR {rows[-1]['psnr']:6.2f} LPIPS {rows[-1]['lpips']:.4f} {rows[-1]['sec_per_img']:.1f}s/img", flush=True)
    t = timing(latent, pixel_net, args.n)
    write_csv(RESULTS / "latent_prior.csv", rows)
    card, vae = net.card, latent.autoencoder.card
    L = ["# Latent prior vs pixel prior", "",
         f"First {args.n} Fashion-MNIST test images, σ_y = {SIGMA_Y}, one posterior sample per image, the same y for "
         f"every run. Generated by `OMP_WAIT_POLICY=PASSIVE python experiments/latent_prior.py --n {args.n} --threads "
         f"{args.threads}` in {(time.perf_counter() - start) / 60:.1f} min. One run, one seed: a claim about these "
         "networks and images.", "",
         f"- Autoencoder `{vae['name']}`: {vae['parameters']:,} parameters, {vae['steps']} steps "
         f"({vae['training_time_s']:.0f} s); latent {tuple(vae['latent_shape'])}; held-out reconstruction "
         f"PSNR {vae['eval_test_reconstruction_psnr_db']} dB (512 images).",
         f"- Latent prior `{card['name']}`: {card['parameters']:,} parameters, {card['steps']} steps "
         f"({card['training_time_s']:.0f} s). Pixel prior `{args.pixel}`: {pixel_net.card['parameters']:,} parameters, "
         f"{training_steps(pixel_net.card)} steps.",
         f"- Ceiling of any latent method, 𝒟(E(x)) of the true images: PSNR {float(ceiling['psnr'].mean()):.2f} dB, "
         f"LPIPS {float(ceiling['lpips'].mean()):.4f}.",
         f"- One forward + backward pass at batch {args.n}: decoder {t['decoder'] * 1e3:.0f} ms, latent UNet "
         f"{t['latent_unet'] * 1e3:.0f} ms, pixel UNet {t['pixel_unet'] * 1e3:.0f} ms.", "",
         "| task | prior | method | NFE | network backward | autoencoder fwd | autoencoder bwd | PSNR | LPIPS | s/img |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['task']} | {r['prior']} | {r['method']} | {r['nfe']} | {r['vjp']} | {r['ae_fwd']} | {r['ae_bwd']} | "
                 f"{r['psnr']:.2f} | {r['lpips']:.4f} | {r['sec_per_img']:.2f} |")
    L += ["", "Paired, per image (mean ± 1.96 s.e.): each latent method against the best pixel run of its task.", "",
          "| task | latent method | best pixel run | ΔPSNR (dB) | ΔLPIPS |", "|---|---|---|---|---|"]
    for task in args.tasks:
        best = max((k for k in per if k[0] == task and k[1] == "pixel"), key=lambda k: float(per[k]["psnr"].mean()))
        for k in [k for k in per if k[0] == task and k[1] == "latent"]:
            dp, dl = interval(per[k]["psnr"] - per[best]["psnr"]), interval(per[k]["lpips"] - per[best]["lpips"])
            L.append(f"| {task} | {k[2]} | {best[2]} | {dp[0]:+.2f} ± {dp[1]:.2f} | {dl[0]:+.4f} ± {dl[1]:.4f} |")
    atomic_write_text(RESULTS / "latent_prior.md", "\n".join(L) + "\n")
    print((RESULTS / "latent_prior.md").read_text())


if __name__ == "__main__":
    main()
