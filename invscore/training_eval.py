"""Held-out evaluation of a trained prior or classifier (written into its model card by
:func:`finalize` at the end of ``python -m invscore.training``): error per σ and a centre-box inpainting check against a classical baseline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .priors import CallablePrior, Diffusion
from .samplers import sample_heun, time_grid
from .sde import EDMSDE

__all__ = ["evaluate_denoiser", "evaluate_classifier", "evaluate_inpainting", "finalize", "heun_preview",
           "EVAL_SIGMAS"]

EVAL_SIGMAS = (0.002, 0.01, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0)


@torch.no_grad()
def heun_preview(denoiser: nn.Module, shape, steps: int = 18, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0, generator: torch.Generator | None = None,
                 terms=()) -> torch.Tensor:
    """EDM's deterministic sampler (Karras et al. 2022, Algorithm 1) through invscore.samplers: Heun on
    the probability-flow ODE ``dx/dσ = (x − D(x; σ))/σ`` of σ(t) = t (:class:`~invscore.sde.EDMSDE`) over
    ``steps`` noise levels σ_i = (σ_max^{1/ρ} + i/(steps−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (eq. 5), then the
    last Euler step to σ = 0 (2·steps − 1 NFE); float64 state, float32 network and result (data space).
    ``terms``: conditional terms (e.g. a Projection) applied after each step."""
    from .conditional.guided import Guided
    sde = EDMSDE(sigma_min, sigma_max)
    model = Diffusion(CallablePrior(lambda x, s: denoiser(x.float(), s.float()).double()), sde)
    model = Guided(model, terms) if terms else model
    # drawn with the (CPU) generator, then on the network's device
    dev = next(iter(denoiser.parameters()), torch.empty(0)).device if isinstance(denoiser, nn.Module) else None
    x = sde.prior_sampling(shape, generator=generator, dtype=torch.float64).to(dev)
    ts = time_grid(sde, steps - 1, "edm", rho=rho, device=dev)
    return sample_heun(model, x, ts, generator=generator, denoise=True).x.float()


def _by_sigma(x_test: torch.Tensor, seed: int, score) -> dict[str, float]:
    """``score(x0 + σn, σ)`` for each σ of EVAL_SIGMAS, the noise n from one seeded stream."""
    g = torch.Generator().manual_seed(seed)
    return {f"{s:g}": score(x_test + s * torch.randn(x_test.shape, generator=g), torch.full((x_test.shape[0],), s))
            for s in EVAL_SIGMAS}


@torch.no_grad()
def evaluate_denoiser(denoiser: nn.Module, x_test: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Held-out MSE of D(x0 + σn, σ) vs x0 per σ (data space [-1, 1]); σ spans the sampler range."""
    return _by_sigma(x_test, seed, lambda xn, sig: float(((denoiser(xn, sig) - x_test) ** 2).mean()))


@torch.no_grad()
def evaluate_classifier(clf: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, seed: int = 0):
    """Held-out accuracy of argmax p_σ(c | x0 + σn) per σ."""
    return _by_sigma(x_test, seed, lambda xn, sig: float((clf(xn, sig).argmax(1) == y_test).float().mean()))


@torch.no_grad()
def evaluate_inpainting(denoiser: nn.Module, x_test: torch.Tensor, n_samples: int = 8, steps: int = 40,
                        seed: int = 0) -> dict[str, float]:
    """Held-out sanity check against a classical baseline (docs/architecture.md): fill a centred 16×16 box by
    projection inside the EDM Heun sampler (Song et al. 2021 imputation,
    :class:`~invscore.conditional.Projection`: after each step the known pixels are reset to x0 + σ_{k+1}·z)
    and compare the PSNR of the mean of `n_samples` samples with scikit-image's biharmonic inpainting (both
    in [0, 1])."""
    from operators import Mask, center_box_mask
    from skimage.restoration import inpaint_biharmonic
    from .conditional.measurement import Projection
    b, c, h, w = x_test.shape
    mask = center_box_mask((c, h, w), box=16)[None]
    op = Mask(mask[0], channels=c, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    x0 = x_test.repeat_interleave(n_samples, 0).double()
    x = heun_preview(denoiser, x0.shape, steps, generator=g, terms=[Projection(op, op(x0))])
    est = ((x.view(b, n_samples, c, h, w).mean(1).clamp(-1, 1)) + 1) / 2
    ref = (x_test + 1) / 2
    bih = torch.stack([torch.from_numpy(inpaint_biharmonic(
        r.permute(1, 2, 0).numpy(), (1 - mask[0, 0]).bool().numpy(), channel_axis=-1)).permute(2, 0, 1)
        for r in (ref * mask)]).float().clamp(0, 1)
    from .metrics import psnr
    return {"psnr_prior_mean_of_samples": float(psnr(est, ref).mean()), "psnr_biharmonic": float(psnr(bih, ref).mean()),
            "n_images": b, "n_samples": n_samples, "heun_steps": steps, "box": "16x16 centred"}


def finalize(args, model: nn.Module, card: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    """The end of a training run: evaluate on the held-out split (:func:`evaluate_classifier`,
    :func:`evaluate_denoiser`, :func:`evaluate_inpainting`), write the preview grid and the final card into
    ``args.out``; returns the evaluation numbers."""
    from torchvision.utils import save_image
    from . import checkpoint as ckpt
    from .data import load
    out = Path(args.out)
    model.eval()
    extra: dict[str, Any] = {}
    try:
        xt, yt = load(args.data, "test", n=512)
        xt = xt * 2 - 1
    except Exception as exc:  # noqa: BLE001 - custom tensors in tests have no registered test split
        xt, yt, card["eval_note"] = None, None, f"no held-out split: {exc}"
    if xt is not None and args.task == "classifier":
        card["eval_test_accuracy_by_sigma"] = extra["accuracy"] = evaluate_classifier(model, xt, yt)
    elif xt is not None:
        card["eval_test_mse_by_sigma"] = extra["mse"] = evaluate_denoiser(model, xt)
        if x.shape[-1] >= 32:
            card["eval_inpainting"] = extra["inpainting"] = evaluate_inpainting(model, xt[:16])
    if args.task == "prior":
        g = torch.Generator().manual_seed(args.seed)
        s = heun_preview(model, (64, x.shape[1], x.shape[2], x.shape[3]), generator=g)
        save_image((s.clamp(-1, 1) + 1) / 2, out / "samples.png", nrow=8, padding=1)
        card["sample_grid"] = "samples.png (64 EDM-Heun samples, 18 steps, seed %d)" % args.seed
    ckpt.save_model(model, out / "ema.safetensors", card, half=args.half)
    (out / "summary.json").write_text(json.dumps(card, indent=2, default=str))
    return extra
