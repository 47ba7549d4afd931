"""Train a latent prior on CPU: a KL autoencoder, then an EDM score prior on its scaled latents (latent
diffusion, Rombach et al. 2022: the two stages trained one after the other).

    python -m invscore.latent_training --out train_runs/latent --vae-minutes 12 --prior-minutes 30
    python -m invscore.latent_training --out train_runs/latent --ship-as fashion_mnist   # copy into assets

OUT gets ``vae.safetensors`` (+ card: held-out reconstruction PSNR, the latent scale s) and
``prior/ema.safetensors`` (+ card: family 'latent', the autoencoder it belongs to, held-out latent denoising
MSE per σ) and ``samples.png`` (decoded EDM-Heun samples). Shipping names them ``NAME_vae`` and ``NAME_latent``.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .nets import Autoencoder, vae_loss

__all__ = ["train_autoencoder", "encode_all", "main"]


def train_autoencoder(x: torch.Tensor, minutes: float, steps: int, batch: int = 64, lr: float = 1e-3,
                      beta: float = 1e-3, channels=(16, 32, 64), latent_channels: int = 4, seed: int = 0):
    """Adam on :func:`~invscore.nets.vae_loss` for ``steps`` steps or ``minutes``; then sets the latent scale
    s = σ_data / std(μ) over the training set (σ_data = 0.5). Returns (autoencoder in eval mode, steps, seconds)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ae = Autoencoder(x.shape[1], latent_channels, channels)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    step, t0 = 0, time.perf_counter()
    while step < steps and time.perf_counter() - t0 < minutes * 60:
        idx = torch.randint(x.shape[0], (batch,), generator=gen)
        for g in opt.param_groups:  # cosine decay: the last steps refine instead of jumping around
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.perf_counter() - t0) / (minutes * 60))))
        loss, _ = vae_loss(ae, x[idx], gen, beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    ae.eval().requires_grad_(False)
    mu = encode_all(ae, x[:4096])
    ae.latent_scale.fill_(0.5 / float(mu.std()))
    return ae, step, time.perf_counter() - t0


@torch.no_grad()
def encode_all(ae: Autoencoder, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Served latents z = s·μ(x) of a whole set, in batches."""
    return torch.cat([ae.encode(x[i:i + batch])[0] for i in range(0, x.shape[0], batch)])


def parser() -> argparse.ArgumentParser:
    """Command-line options (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m invscore.latent_training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--out", required=True)
    p.add_argument("--vae-minutes", type=float, default=12.0)
    p.add_argument("--vae-steps", type=int, default=100000)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=1e-3, help="the autoencoder's Adam learning rate (cosine decay)")
    p.add_argument("--beta", type=float, default=1e-3, help="KL weight of the autoencoder's loss")
    p.add_argument("--latent-channels", type=int, default=4)
    p.add_argument("--vae-channels", default="16,32,64", help="widths of the autoencoder's levels (f = 2^(levels-1))")
    p.add_argument("--prior-minutes", type=float, default=30.0)
    p.add_argument("--prior-steps", type=int, default=100000)
    p.add_argument("--prior-channels", default="64,64", help="widths of the latent UNet's levels")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--ship-as", default=None, metavar="NAME", help="do not train: ship OUT as NAME_vae + NAME_latent")
    return p


def _train_prior(args, z: torch.Tensor, out: Path, vae_name: str):
    from .training import parser as train_parser, train
    targs = train_parser().parse_args(
        ["--out", str(out), "--name", vae_name.replace("_vae", "_latent"), "--channels", args.prior_channels,
         "--minutes", str(args.prior_minutes), "--steps", str(args.prior_steps), "--threads", str(args.threads),
         "--seed", str(args.seed), "--no-final", "--quiet", "--data", args.data])
    train(targs, data=(z, None))
    return ckpt.load_denoiser(out / "ema.safetensors"), targs


def run(args) -> dict:
    """Both stages and their held-out evaluation; returns the summary written to OUT/summary.json."""
    from torchvision.utils import save_image
    from .data import load
    from .io import from_data
    from .metrics import psnr
    from .training import heun_preview
    from .training_eval import evaluate_denoiser
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = load(args.data, "train", n=args.n_train)[0] * 2 - 1
    xt = load(args.data, "test", n=512)[0] * 2 - 1
    chans = [int(c) for c in args.vae_channels.split(",")]
    ae, steps, secs = train_autoencoder(x, args.vae_minutes, args.vae_steps, args.vae_batch, args.vae_lr, args.beta,
                                        chans, args.latent_channels, args.seed)
    size = int(x.shape[-1])
    vae_card = {"name": f"{args.data}_vae", "kind": "autoencoder", "family": "autoencoder",
                "arch": {"name": "autoencoder", "kwargs": {"in_channels": int(x.shape[1]), "latent_channels":
                                                           args.latent_channels, "channels": chans}},
                "image_size": size, "channels": int(x.shape[1]), "data_range": [-1.0, 1.0],
                "latent_shape": list(ae.latent_shape(size)), "latent_scale": float(ae.latent_scale),
                "data": {"name": args.data, "split": "train", "n_images": int(x.shape[0])},
                "steps": steps, "training_time_s": round(secs, 1), "beta_kl": args.beta,
                "hyperparameters": {"batch": args.vae_batch, "lr": args.vae_lr, "schedule": "cosine over the time budget",
                                    "adam": True, "seed": args.seed, "vae_minutes": args.vae_minutes},
                "parameters": sum(p.numel() for p in ae.parameters()),
                "eval_test_reconstruction_psnr_db": round(float(psnr(from_data(ae(xt)).clamp(0, 1), from_data(xt)).mean()), 2)}
    ckpt.save_model(ae, out / "vae.safetensors", vae_card)
    z, zt = encode_all(ae, x), encode_all(ae, xt)
    t0 = time.perf_counter()
    prior, targs = _train_prior(args, z, out / "prior", vae_card["name"])
    card = json.loads(ckpt.card_path(out / "prior" / "ema.safetensors").read_text())
    card.update({"family": "latent", "autoencoder": "../vae.safetensors", "pixel_shape": [int(x.shape[1]), size, size],
                 "eval_test_mse_by_sigma": evaluate_denoiser(prior, zt),
                 "data": {**card["data"], "name": args.data, "latents_of": vae_card["name"]}})
    g = torch.Generator().manual_seed(args.seed)
    s = ae.decode(heun_preview(prior, (64, *z.shape[1:]), generator=g))
    save_image((s.clamp(-1, 1) + 1) / 2, out / "samples.png", nrow=8, padding=1)
    card["sample_grid"] = f"samples.png (64 EDM-Heun samples decoded, 18 steps, seed {args.seed})"
    ckpt.save_model(prior, out / "prior" / "ema.safetensors", card)
    summary = {"vae": vae_card, "prior_steps": card["steps"], "prior_seconds": round(time.perf_counter() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def ship(out: str | Path, name: str) -> list[Path]:
    """Copy OUT's autoencoder and latent prior into invscore/assets as ``NAME_vae`` and ``NAME_latent``; the
    prior's card is pointed at the shipped autoencoder."""
    out = Path(out)
    if not (out / "summary.json").exists():
        raise ValueError(f"{out} holds no finished latent run (no summary.json); let the training finish first")
    ckpt.ASSETS.mkdir(parents=True, exist_ok=True)
    dst = []
    for src, suffix in ((out / "vae.safetensors", "vae"), (out / "prior" / "ema.safetensors", "latent")):
        card = json.loads(ckpt.card_path(src).read_text())
        d = ckpt.ASSETS / f"{name}_{suffix}.safetensors"
        shutil.copyfile(src, d)
        card["name"] = d.stem
        if suffix == "latent":
            card["autoencoder"] = f"{name}_vae"
            shutil.copyfile(out / "samples.png", ckpt.ASSETS / f"{name}_latent_samples.png")
            card["sample_grid"] = f"{name}_latent_samples.png" + card["sample_grid"].removeprefix("samples.png")
        ckpt.card_path(d).write_text(json.dumps(card, indent=2, default=str) + "\n")
        dst.append(d)
    return dst


def main(argv=None) -> int:
    """Entry point of ``python -m invscore.latent_training``."""
    args = parser().parse_args(argv)
    try:
        if args.ship_as:
            print("\n".join(map(str, ship(args.out, args.ship_as))))
            return 0
        print(json.dumps(run(args), default=str))
    except (ValueError, FileNotFoundError) as exc:
        print(f"invscore: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
