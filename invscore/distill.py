"""Consistency distillation of a shipped denoiser prior (Song, Dhariwal, Chen & Sutskever 2023, Algorithm 2).

    python -m invscore.distill --teacher fashion_mnist --out train_runs/fmnist_cm --minutes 50
    python -m invscore.training --out train_runs/fmnist_cm --ship-as fashion_mnist_cm

The student (:class:`~invscore.nets.ConsistencyDenoiser`, initialised with the teacher's UNet weights) is
trained on the teacher's probability-flow ODE ``dx/dσ = (x − D(x; σ))/σ`` discretised at Karras et al.'s N
levels σ_1 < … < σ_N (eq. 5, ρ = 7): for n ~ U{1, …, N−1}, x_{n+1} = x0 + σ_{n+1} z, one Heun step of the
teacher gives x̂_n, and the loss is ‖f_θ(x_{n+1}, σ_{n+1}) − f_θ⁻(x̂_n, σ_n)‖² (eq. 7 with d = ℓ2², λ = 1),
θ⁻ an EMA of θ with decay μ (the target network). The shipped weights are a slower EMA of θ. Each step costs
2 teacher NFE + 1 target NFE + one student forward/backward.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt
from .nets import ConsistencyDenoiser
from .samplers import time_grid
from .sde import EDMSDE
from .training import EMA, _load_data, _optimise

__all__ = ["karras_sigmas", "heun_teacher_step", "consistency_distillation_loss", "distill", "main"]


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """σ_1 < … < σ_n: σ_i = (σ_min^{1/ρ} + (i−1)/(n−1)(σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ (Karras et al. 2022, eq. 5),
    increasing: the samplers' 'edm' grid on σ(t) = t, reversed."""
    return time_grid(EDMSDE(sigma_min, sigma_max), n - 1, "edm", rho=rho, dtype=torch.float64).flip(0)


@torch.no_grad()
def heun_teacher_step(teacher: nn.Module, x: torch.Tensor, s_from: torch.Tensor, s_to: torch.Tensor) -> torch.Tensor:
    """One Heun step of dx/dσ = (x − D(x; σ))/σ from σ = s_from to s_to (per sample, (B,)); 2 NFE."""
    v = lambda s: s.view(-1, 1, 1, 1)  # noqa: E731
    d = (x - teacher(x, s_from)) / v(s_from)
    x_e = x + v(s_to - s_from) * d
    d2 = (x_e - teacher(x_e, s_to)) / v(s_to)
    return x + v(s_to - s_from) * (d + d2) / 2


def consistency_distillation_loss(student, target, teacher, x0, n, sigmas, noise) -> torch.Tensor:
    """Song et al. 2023, eq. 7: E ‖f_θ(x0 + σ_{n+1} z, σ_{n+1}) − f_θ⁻(Heun_teacher(·, σ_{n+1} → σ_n), σ_n)‖²
    (mean over pixels and batch); ``n``: (B,) indices into ``sigmas`` (increasing) with n + 1 < len(sigmas)."""
    s_hi, s_lo = sigmas[n + 1].to(x0.dtype), sigmas[n].to(x0.dtype)
    x_hi = x0 + s_hi.view(-1, 1, 1, 1) * noise
    with torch.no_grad():
        goal = target(heun_teacher_step(teacher, x_hi, s_hi, s_lo), s_lo)
    return ((student(x_hi, s_hi) - goal) ** 2).mean()


def parser() -> argparse.ArgumentParser:
    """Command-line options (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m invscore.distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="fashion_mnist", help="shipped name or .safetensors of an EDM denoiser")
    p.add_argument("--data", default="fashion_mnist")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--name", default=None)
    p.add_argument("--levels", type=int, default=18, help="N, the ODE's discretisation (paper: 18 on CIFAR-10)")
    p.add_argument("--target-ema", type=float, default=0.95, help="μ of the target network θ⁻ (paper: 0.95)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA of the shipped weights")
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam step (paper: 4e-4 at batch 512, 800 k steps)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-final", action="store_true", help="skip the held-out evaluation and sample grid")
    return p


def _card(args, teacher, student, step, loss, elapsed) -> dict:
    tc = teacher.card
    arch = {**copy.deepcopy(tc["arch"]), "name": "consistency_unet", "sigma_min": student.sigma_min}
    return {**{k: tc[k] for k in ("image_size", "channels", "data_range", "noise_convention", "sigma_data",
                                  "sigma_min", "sigma_max", "data") if k in tc},
            "name": args.name or Path(args.out).name, "kind": "denoiser", "family": "consistency", "arch": arch,
            "teacher": tc.get("name"), "steps": step, "final_loss": loss, "training_time_s": round(elapsed, 1),
            "parameters": sum(p.numel() for p in student.parameters()), "weights": "EMA",
            "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("out", "quiet")},
            "method": "consistency distillation (Song et al. 2023, Algorithm 2), d = l2, Heun teacher"}


def distill(args, data=None) -> dict:
    """Run consistency distillation as described by parsed ``args``; ``data`` = (x in [-1, 1], labels)
    overrides ``--data``. Returns a summary (steps, losses, out)."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = ckpt.load_denoiser(args.teacher)
    if type(teacher.net).__name__ != "UNet" or not hasattr(teacher, "sigma_data"):
        raise ValueError(f"teacher {args.teacher!r} is not an EDM UNet denoiser; distillation starts from one")
    x = (data if data is not None else _load_data(argparse.Namespace(data=args.data, n_train=args.n_train,
                                                                     task="prior")))[0]
    student = ConsistencyDenoiser(copy.deepcopy(teacher.net), teacher.sigma_data,
                                  float(teacher.card.get("sigma_min", 0.002))).requires_grad_(True).train()
    target, ema = EMA(student, args.target_ema), EMA(student, args.ema)
    opt = torch.optim.Adam(student.parameters(), lr=args.lr)
    sigmas = karras_sigmas(args.levels, student.sigma_min, float(teacher.card.get("sigma_max", 80.0)))
    gen = torch.Generator().manual_seed(args.seed)
    losses, elapsed, step, t0 = [], 0.0, 0, time.perf_counter()
    save = lambda: ckpt.save_model(ema.model, out / "ema.safetensors",  # noqa: E731
                                   _card(args, teacher, student, step, sum(losses[-50:]) / max(1, len(losses[-50:])), elapsed))
    while step < args.steps and (args.minutes is None or elapsed < args.minutes * 60):
        x0 = x[torch.randint(x.shape[0], (args.batch,), generator=gen)]
        n = torch.randint(args.levels - 1, (args.batch,), generator=gen)
        loss = consistency_distillation_loss(student, target.model, teacher, x0, n, sigmas,
                                             torch.randn(x0.shape, generator=gen))
        _optimise(args, student, opt, loss, step)
        step += 1
        target.update(student, step)
        ema.update(student, step)
        losses.append(float(loss.detach()))
        elapsed = time.perf_counter() - t0
        if not args.quiet and step % 50 == 0:
            print(f"step {step} loss {sum(losses[-50:]) / 50:.5f} {elapsed / step:.2f} s/step", flush=True)
        if step % args.save_every == 0:
            save()
    path = save()
    if not args.no_final:
        _finalize(args, ema.model, path)
    return {"steps": step, "losses": losses, "out": str(out), "elapsed": elapsed}


def _finalize(args, model, path: Path) -> None:
    """Held-out MSE per σ and a grid of 1- and 2-step samples, written into the card and OUT."""
    from torchvision.utils import save_image
    from .data import load
    from .priors import CallablePrior, Diffusion
    from .samplers import sample
    from .sde import make_sde
    from .training_eval import evaluate_denoiser
    card = json.loads(ckpt.card_path(path).read_text())
    model.eval()
    xt = load(args.data, "test", n=512)[0] * 2 - 1
    card["eval_test_mse_by_sigma"] = evaluate_denoiser(model, xt)
    diff = Diffusion(CallablePrior(model, data_shape=tuple(xt.shape[1:])), make_sde("edm"))
    grids = [sample(diff, (32, *xt.shape[1:]), "consistency", steps=k, generator=torch.Generator().manual_seed(k)).x
             for k in (1, 2)]
    save_image((torch.cat(grids).clamp(-1, 1) + 1) / 2, Path(args.out) / "samples.png", nrow=8, padding=1)
    card["sample_grid"] = "samples.png (rows 1-4 one-step samples, rows 5-8 two-step; EDM SDE and grid)"
    ckpt.save_model(model, path, card)


def main(argv=None) -> int | None:
    """Entry point for ``python -m invscore.distill``; a teacher that cannot be read prints one line, exit 2."""
    args = parser().parse_args(argv)
    try:
        s = distill(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"invscore: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in s.items() if k != "losses"}))


if __name__ == "__main__":
    sys.exit(main())
