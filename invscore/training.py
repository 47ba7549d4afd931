"""Train a denoiser prior (EDM denoising score matching, or rectified-flow matching with ``--objective flow``)
or a noise-conditional classifier on CPU.

    python -m invscore.training --data fashion_mnist --out train_runs/fmnist --minutes 60
    python -m invscore.training --objective flow --out train_runs/fmnist_flow --minutes 60
    python -m invscore.training --task classifier --data fashion_mnist --out train_runs/fmnist_clf
    python -m invscore.training --conditional --out train_runs/fmnist_cond --minutes 60   # for CFG
    python -m invscore.training --out train_runs/fmnist --resume          # continue from state.pt
    python -m invscore.training --out train_runs/fmnist --ship-as fashion_mnist   # copy into assets

On a shared CPU set OMP_WAIT_POLICY=PASSIVE: with spinning OpenMP threads a step took 4–10× longer
whenever another process was busy (measured: 6.6 s vs 1.7 s per step).

Every `--save-every` steps the run directory gets `state.pt` (resume; weights_only-loadable) and
`ema.safetensors` + `ema.json` (the shippable EMA network and its model card); at the end also
`samples.png` (denoiser) and evaluation numbers in the card.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from .nets import build
from .nets.classifier import classifier_loss
from .nets.flow import flow_matching_loss
from .training_eval import finalize, heun_preview  # noqa: F401 - heun_preview re-exported (tests, latent_training)

#: objective -> (P_mean, P_std) of ln σ: EDM's Table 1, and for flow the logit-normal t of Esser et al. 2024
#: (SD3, eq. 19, m = 0, s = 1), which is the same law since logit(t) = ln σ on the straight path
OBJECTIVES = {"edm": (-1.2, 1.2), "flow": (0.0, 1.0)}
_P_HELP = ", ".join(f"{k} {v[0]:g}/{v[1]:g}" for k, v in OBJECTIVES.items())


def sample_sigma(n: int, generator: torch.Generator, p_mean: float = -1.2, p_std: float = 1.2,
                 tail_frac: float = 0.0, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
    """Training noise levels: ln σ ~ N(P_mean, P_std²) (EDM, Karras et al. 2022, sec. 5 / Table 1).

    A fraction `tail_frac` is instead drawn log-uniform on [σ_min, σ_max]: the log-normal puts only
    ~1e-6 of its mass above σ = 80, yet samplers start there, so the ends get a few direct samples.
    """
    ln_s = p_mean + p_std * torch.randn(n, generator=generator)
    if tail_frac > 0:
        u = torch.rand(n, generator=generator)
        ln_u = math.log(sigma_min) + (math.log(sigma_max) - math.log(sigma_min)) * torch.rand(n, generator=generator)
        ln_s = torch.where(u < tail_frac, ln_u, ln_s)
    return ln_s.exp()


def edm_loss(denoiser: nn.Module, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
             label: torch.Tensor | None = None) -> torch.Tensor:
    """Denoising score matching with EDM's weight (Karras et al. 2022, eq. 2 and Table 1):

    L = E[λ(σ) ‖D(x0 + σn, σ[, c]) − x0‖²],  λ(σ) = (σ² + σd²) / (σ·σd)²  (mean over pixels and batch);
    ``label`` (B,) conditions a class-conditional denoiser, −1 being the dropped label ∅.
    """
    sd = denoiser.sigma_data
    w = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    xt = x0 + sigma.view(-1, 1, 1, 1) * noise
    err = (denoiser(xt, sigma) if label is None else denoiser(xt, sigma, label)) - x0
    err = err ** 2
    return (w * err.flatten(1).mean(1)).mean()


class EMA:
    """θ_ema ← β θ_ema + (1−β) θ with warm-up β_k = min(β, (1+k)/(10+k)) (Tarvainen & Valpola 2017;
    the warm-up keeps early averages from being dominated by the random initialisation)."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """One EMA step after optimiser step `step` (buffers are copied, not averaged)."""
        beta = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.is_floating_point():
                e.lerp_(p, 1 - beta)
            else:
                e.copy_(p)


def make_model(args) -> tuple[nn.Module, dict[str, Any]]:
    """Build the network named by args (kind, channels) and return it with its rebuild config."""
    chans = [int(c) for c in args.channels.split(",")]
    if args.task == "classifier":
        kwargs = dict(in_channels=args.image_channels, num_classes=args.num_classes, channels=chans,
                      num_res_blocks=args.res_blocks, mid_attention=bool(args.attention))
        cfg = {"name": "classifier", "kwargs": kwargs, "sigma_data": args.sigma_data}
    elif args.arch == "unet":
        kwargs = dict(in_channels=args.image_channels, channels=chans, num_res_blocks=args.res_blocks,
                      mid_attention=bool(args.attention))
        if args.conditional:
            kwargs["num_classes"] = args.num_classes
        cfg = {"name": "flow_unet" if args.objective == "flow" else "unet", "kwargs": kwargs,
               "sigma_data": args.sigma_data}
    else:
        cfg = {"name": args.arch, "kwargs": {"in_channels": args.image_channels,
                                             "img_resolution": args.image_size, "model_channels": chans[0]},
               "sigma_data": args.sigma_data}
    return build(cfg), cfg


def parser() -> argparse.ArgumentParser:
    """Command-line options (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m invscore.training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("prior", "classifier"), default="prior")
    p.add_argument("--objective", choices=OBJECTIVES, default="edm",
                   help="prior loss: edm (denoising score matching) or flow (rectified-flow velocity; --arch unet)")
    p.add_argument("--data", default="fashion_mnist", help="dataset name from invscore.data.available()")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--out", required=True, help="run directory (state.pt, ema.safetensors, log)")
    p.add_argument("--name", default=None, help="checkpoint name written into the card")
    p.add_argument("--arch", default="unet", choices=("unet", "deepinv_ncsnpp", "deepinv_admunet"))
    p.add_argument("--channels", default="32,64,64")
    p.add_argument("--res-blocks", type=int, default=1)
    p.add_argument("--attention", type=int, default=1, help="1: one self-attention at the bottleneck")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--conditional", action="store_true",
                   help="train a class-conditional prior D(x, σ, c) for classifier-free guidance (edm, unet)")
    p.add_argument("--label-drop", type=float, default=0.1,
                   help="with --conditional: share of labels replaced by ∅ (Ho & Salimans 2022 use 0.1–0.2)")
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="after warm-up: constant, or cosine decay to 0 at --steps (Loshchilov & Hutter 2017)")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from a checkpoint's weights (shipped name or .safetensors) instead of random ones")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--sigma-data", type=float, default=0.5)
    p.add_argument("--p-mean", type=float, default=None, help="ln σ mean (default per objective: %s)" % _P_HELP)
    p.add_argument("--p-std", type=float, default=None, help="ln σ std (default per objective)")
    p.add_argument("--tail-frac", type=float, default=0.1, help="share of log-uniform σ on [0.002, 80]")
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--half", action="store_true", help="store the shipped weights in float16")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    p.add_argument("--no-final", action="store_true", help="skip evaluation and preview grid")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ship-as", default=None, metavar="NAME",
                   help="do not train: copy OUT's finished EMA checkpoint, card and grid into invscore/assets")
    return p


def _load_data(args):
    from .data import load
    try:
        x, y = load(args.data, "train", n=args.n_train)
    except (ImportError, FileNotFoundError, ValueError) as exc:  # unknown, or its package/files not installed
        raise SetupError(f"--data {args.data}: {exc}") from None
    if (args.task == "classifier" or args.conditional) and y is None:
        raise SetupError(f"dataset {args.data!r} has no labels; a classifier or --conditional needs a labelled dataset")
    return x * 2 - 1, y


def _card(args, cfg, x, step, loss, elapsed, n_params) -> dict[str, Any]:
    """The model card of a run (see invscore.checkpoint.save_model)."""
    return {
        "name": args.name or Path(args.out).name,
        "kind": "classifier" if args.task == "classifier" else "denoiser",
        **({} if args.task == "classifier" else {"family": "flow" if args.objective == "flow" else "score"}),
        **({"classes": args.num_classes, "label_dropout": args.label_drop} if getattr(args, "conditional", False) else {}),
        "arch": cfg, "image_size": int(x.shape[-1]), "channels": int(x.shape[1]),
        "data_range": [-1.0, 1.0], "noise_convention": ckpt.NOISE_CONVENTION,
        "sigma_data": args.sigma_data, "sigma_min": 0.002, "sigma_max": 80.0,
        "data": {"name": args.data, "split": "train", "n_images": int(x.shape[0]),
                 "held_out": "split 'test' of invscore.data (never seen in training)"},
        "steps": step, "final_loss": loss, "training_time_s": round(elapsed, 1),
        "parameters": n_params,
        **({"initialised_from": args.init_card} if getattr(args, "init_card", None) else {}),
        "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("out", "resume", "quiet", "init_card")},
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "weights": "EMA",
    }


def _restore(state_path: Path, model: nn.Module, ema: EMA, opt, gen: torch.Generator, args) -> dict[str, Any]:
    """Load a resume state into the run's objects (and its ``--init`` provenance into args); returns its
    progress counters."""
    st = ckpt.load_state(state_path)  # refuses a missing file and anything but plain data, one line each
    args.init_card = st.get("args", {}).get("init_card")
    model.load_state_dict(st["model"])
    ema.model.load_state_dict(st["ema"])
    opt.load_state_dict(st["opt"])
    gen.set_state(st["rng"])
    return {"step": st["step"], "elapsed": st["elapsed"], "losses": list(st["losses"]), "avg": st["avg"]}


def _loss(args, model: nn.Module, x: torch.Tensor, y, gen: torch.Generator) -> torch.Tensor:
    """One minibatch's loss: x0 drawn with replacement, σ from :func:`sample_sigma`, n ~ N(0, I)."""
    idx = torch.randint(x.shape[0], (args.batch,), generator=gen)
    x0 = x[idx]
    p_mean, p_std = OBJECTIVES[args.objective]
    p_mean, p_std = (p_mean if args.p_mean is None else args.p_mean), (p_std if args.p_std is None else args.p_std)
    sigma = sample_sigma(args.batch, gen, p_mean, p_std, args.tail_frac)
    noise = torch.randn(x0.shape, generator=gen)
    if args.task == "classifier":
        return classifier_loss(model, x0, y[idx], sigma, noise)
    if args.objective == "flow":
        return flow_matching_loss(model, x0, sigma / (1 + sigma), noise)  # t = σ/(1+σ): the same noise level
    # Ho & Salimans 2022, Algorithm 1: a conditional prior sees the dropped label (−1) with probability p_uncond
    drop = torch.rand(args.batch, generator=gen) < args.label_drop if args.conditional else None
    return edm_loss(model, x0, sigma, noise, None if drop is None else torch.where(drop, -1, y[idx]))


def learning_rate(args, step: int) -> float:
    """lr_k = lr·min(1, (k+1)/warmup), times ½(1 + cos(π k/K)) with K = --steps under the cosine schedule
    (SGDR, Loshchilov & Hutter 2017, eq. 5, one cycle, η_min = 0)."""
    lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
    if getattr(args, "lr_schedule", "constant") == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / max(1, args.steps)))
    return lr


def _optimise(args, model: nn.Module, opt, loss: torch.Tensor, step: int) -> None:
    """Adam step at :func:`learning_rate` with global-norm gradient clipping."""
    for g in opt.param_groups:
        g["lr"] = learning_rate(args, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if args.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    opt.step()


def check_args(args) -> None:
    """Refuse option combinations that cannot train (one line each)."""
    if args.objective == "flow" and (args.task != "prior" or args.arch != "unet"):
        raise ValueError(f"--objective flow trains a prior with --arch unet; got --task {args.task} --arch {args.arch}")
    if getattr(args, "conditional", False) and (args.task, args.objective, args.arch) != ("prior", "edm", "unet"):
        raise ValueError("--conditional trains an edm prior with --arch unet; got "
                         f"--task {args.task} --objective {args.objective} --arch {args.arch}")
    if getattr(args, "lr_schedule", "constant") == "cosine" and args.minutes is not None:
        raise ValueError("--lr-schedule cosine decays to 0 at --steps; with --minutes the run stops elsewhere: "
                         "give --steps alone")
    if not 0.0 <= getattr(args, "label_drop", 0.1) < 1.0:
        raise ValueError(f"--label-drop must be in [0, 1) (the share of dropped labels), got {args.label_drop}")


def _setup(args, data):
    """Run directory, data and the seeded network, optimiser, RNG and EMA of a fresh run."""
    check_args(args)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = data if data is not None else _load_data(args)
    args.image_channels, args.image_size = int(x.shape[1]), int(x.shape[-1])
    with torch.random.fork_rng():
        # Seeded initialisation without touching the caller's global RNG stream.
        torch.manual_seed(args.seed)
        model, cfg = make_model(args)
    if getattr(args, "init", None) and not args.resume:  # a resumed run's weights come from its state.pt
        args.init_card = _init_from(model, cfg, args.init)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    return out, x, y, model, cfg, opt, torch.Generator().manual_seed(args.seed), EMA(model, args.ema)


class SetupError(ValueError):
    """A refused ``--data`` set (not installed) or ``--init`` checkpoint (missing, unreadable, or another arch):
    the user's to fix, reported in one line."""


def _init_from(model: nn.Module, cfg: dict, source: str) -> dict[str, Any]:
    """Copy a checkpoint's weights into the freshly built network (fine-tuning); its arch must be the run's.
    Returns the source's provenance for the card (its name, steps and training time)."""
    try:
        card = ckpt.read_card(source)
    except (ValueError, FileNotFoundError) as exc:
        raise SetupError(f"--init {source}: {exc}") from None
    if card.get("arch") != json.loads(json.dumps(cfg)):
        raise SetupError(f"--init {source}: its arch {card.get('arch')} differs from this run's {cfg}; "
                         "pass the flags that rebuild it (see the card's hyperparameters)")
    loaded = ckpt.load_denoiser(source) if card.get("kind") == "denoiser" else ckpt.load_classifier(source)
    model.load_state_dict(loaded.state_dict())
    # steps and seconds = all the source's training (its own fine-tunes included), so chained fine-tunes add up
    return {"checkpoint": str(source), "name": card.get("name"), "steps": ckpt.training_steps(card),
            "training_time_s": ckpt.training_seconds(card)}


def train(args, data=None) -> dict[str, Any]:
    """Run (or resume) training as described by parsed `args`; `data` = (x in [-1, 1], labels) overrides
    `--data` (tests use it).  Returns a summary dict (steps, loss history, paths)."""
    out, x, y, model, cfg, opt, gen, ema = _setup(args, data)
    state_path = out / "state.pt"
    prog = _restore(state_path, model, ema, opt, gen, args) if args.resume else {
        "step": 0, "elapsed": 0.0, "losses": [], "avg": None}
    n_params = sum(p.numel() for p in model.parameters())

    def save():
        """Write the resume state and the EMA checkpoint with its card."""
        ckpt.save_state({"model": model.state_dict(), "ema": ema.model.state_dict(), "opt": opt.state_dict(),
                         "rng": gen.get_state(), **prog, "args": dict(vars(args))}, state_path)
        card = _card(args, cfg, x, prog["step"], prog["avg"], prog["elapsed"], n_params)
        ckpt.save_model(ema.model, out / "ema.safetensors", card, half=args.half)

    from tqdm import tqdm
    bar = tqdm(total=args.steps, initial=prog["step"], disable=args.quiet, desc=args.task, dynamic_ncols=True,
               mininterval=5 if sys.stderr.isatty() else 60)
    model.train()
    t_last = time.perf_counter()
    while prog["step"] < args.steps and (args.minutes is None or prog["elapsed"] < args.minutes * 60):
        loss = _loss(args, model, x, y, gen)
        _optimise(args, model, opt, loss, prog["step"])
        prog["step"] += 1
        ema.update(model, prog["step"])
        lv = float(loss.detach())
        prog["losses"].append(lv)
        prog["avg"] = lv if prog["avg"] is None else 0.99 * prog["avg"] + 0.01 * lv
        prog["elapsed"], t_last = prog["elapsed"] + time.perf_counter() - t_last, time.perf_counter()
        bar.update(1)
        bar.set_postfix(loss=f"{prog['avg']:.4f}", s_per_it=f"{prog['elapsed'] / max(1, prog['step']):.2f}",
                        refresh=False)
        if prog["step"] % args.save_every == 0:
            save()
            t_last = time.perf_counter()  # saving time is not training time
    bar.close()
    save()
    summary = {"steps": prog["step"], "final_loss": prog["avg"], "losses": prog["losses"],
               "elapsed": prog["elapsed"], "out": str(out), "parameters": n_params}
    if not args.no_final:
        card = _card(args, cfg, x, prog["step"], prog["avg"], prog["elapsed"], n_params)
        summary.update(finalize(args, ema.model, card, x))
    return summary


def ship(run_dir: str | Path, name: str, notes: dict[str, Any] | None = None) -> Path:
    """Copy a finished run's EMA weights, card and sample grid into invscore/assets as `name`
    (`name.safetensors`, `name.json`, `name_samples.png`); `notes` are merged into the card."""
    import shutil
    run_dir = Path(run_dir)
    src = run_dir / "ema.safetensors"
    card = json.loads(ckpt.card_path(src).read_text())
    if "eval_test_mse_by_sigma" not in card and "eval_test_accuracy_by_sigma" not in card:
        raise ValueError(f"{run_dir} has no final evaluation in its card; let the run finish (or rerun "
                         "with --resume so finalize() runs) before shipping")
    ckpt.ASSETS.mkdir(parents=True, exist_ok=True)
    dst = ckpt.ASSETS / f"{name}.safetensors"
    shutil.copyfile(src, dst)
    card["name"] = name
    if (run_dir / "samples.png").exists():
        shutil.copyfile(run_dir / "samples.png", ckpt.ASSETS / f"{name}_samples.png")
        card["sample_grid"] = f"{name}_samples.png" + card.get("sample_grid", "").removeprefix("samples.png")
    card.update(notes or {})
    ckpt.card_path(dst).write_text(json.dumps(card, indent=2, default=str) + "\n")
    return dst


def _fail(exc: Exception) -> int:
    print(f"invscore: error: {exc}", file=sys.stderr)
    return 2


def main(argv=None) -> int | None:
    """Entry point for `python -m invscore.training`; a refused resume state, --data set or --init checkpoint
    prints one line and returns 2."""
    args = parser().parse_args(argv)
    if args.ship_as:
        print(ship(args.out, args.ship_as))
        return
    if args.resume:  # the run's own options win over defaults; explicit flags on the command line still apply
        try:  # load_state refuses a missing file and anything but plain data
            prev = ckpt.load_state(Path(args.out) / "state.pt").get("args")
        except (ValueError, FileNotFoundError) as exc:
            return _fail(exc)
        given = {a.dest for a in parser()._actions if any(o in (argv or sys.argv[1:]) for o in a.option_strings)}
        for k, v in prev.items():
            if k not in given and k not in ("resume", "image_channels", "image_size"):
                setattr(args, k, v)
    try:
        check_args(args)
    except ValueError as exc:
        parser().error(str(exc))
    try:
        s = train(args)
    except SetupError as exc:
        return _fail(exc)
    print(json.dumps({k: v for k, v in s.items() if k != "losses"}, default=str))


if __name__ == "__main__":
    sys.exit(main())
