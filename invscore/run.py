"""One run: resolved config → instantiate (prior, images, operator) → measure → solve → evaluate → write.

``execute(cfg)`` takes the OmegaConf config composed from ``configs/`` (see docs/cli.md) and writes into
a fresh run directory: ``grid.png`` (measurement | samples | ground truth per row), ``metrics.csv``
(per image and sample), ``summary.json`` (means, NFE, seconds, resolved config), ``config.yaml`` and
``samples/*.png``. Mistakes a user can fix raise :class:`UserError` with a one-line message.

Inverse tasks run in batches of ``cfg.batch`` images formed over the whole input in order; batch ``b``
draws its measurement noise and its samples from generators seeded by ``(seed, b)`` (:func:`batch_seed`).
So results do not depend on how the batches are shared among processes: under ``torchrun`` rank ``r`` of
``W`` solves batches ``r, r + W, …`` (:mod:`invscore.distributed`) and rank 0 merges the per-image rows
into the same files a single process writes. They do depend on the batch size.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from . import io
from .distributed import Shard, launched, local_world_size, shard

__all__ = ["UserError", "configure_threads", "load_prior", "load_inputs", "build_operator", "measurement_view",
           "load_guidance", "new_run_dir", "batch_seed", "execute"]


class UserError(ValueError):
    """A mistake in the command or its inputs; the CLI prints the message alone and exits with code 2."""


def configure_threads(threads) -> int:
    """Set torch's CPU threads: an int, or 'auto' = the cores left idle by other processes (at least 1),
    shared among the processes torchrun started on this machine.

    OpenMP threads that outnumber free cores spin against each other: on a 2-core machine busy with
    training, 2 threads made one UNet forward pass ~50× slower than 1 thread.
    """
    if threads in (None, "auto"):
        n = os.cpu_count() or 1
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = max(1, min(n, int(round(n - busy))) // local_world_size())
    try:
        threads = int(threads)
    except (TypeError, ValueError):
        raise UserError(f"threads must be 'auto' or a positive integer, got {threads!r}") from None
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def _shipped_summary() -> str:
    from .checkpoint import read_card, shipped
    names = []
    for name in shipped():
        try:
            card = read_card(name)
            names.append(f"{name} ({card.get('kind')}, {card.get('channels')}×{card.get('image_size')}²)")
        except (OSError, ValueError):
            names.append(name)
    return ", ".join(names) if names else "none yet"


def load_prior(checkpoint: str, device, task: str | None = None):
    """Load a frozen denoiser from a shipped name or a path; returns ``(prior, card)`` where the prior is
    a :class:`~invscore.priors.CallablePrior` that knows its data shape ``(C, S, S)``."""
    from .checkpoint import load_denoiser, shipped
    from .priors import CallablePrior
    checkpoint = str(checkpoint)
    looks_like_path = os.sep in checkpoint or checkpoint.endswith(".safetensors")
    if not looks_like_path and checkpoint not in shipped():
        need = "an RGB prior" if task == "colorize" else "a prior"
        raise UserError(f"{task or 'this task'} needs {need}, but no prior named {checkpoint!r} is shipped "
                        f"(shipped: {_shipped_summary()}); pass --prior PATH to a .safetensors checkpoint "
                        "or train and ship one (python -m invscore.training, then invscore.training.ship)")
    try:
        net = load_denoiser(checkpoint, device=device)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(f"cannot load prior {checkpoint!r}: {exc}") from None
    card = net.card
    shape = (int(card["channels"]), int(card["image_size"]), int(card["image_size"]))
    try:  # one cheap forward pass: a card that does not match its weights fails here, not mid-sampling
        with torch.no_grad():
            net(torch.zeros(1, *shape, device=device), torch.ones(1, device=device))
    except RuntimeError as exc:
        raise UserError(f"prior {checkpoint!r} does not run on {shape[0]}×{shape[1]}×{shape[2]} inputs, the size "
                        f"its card declares ({str(exc).splitlines()[0]}); the card does not match the weights") from None
    if task == "colorize" and shape[0] != 3:
        raise UserError(f"colorize needs an RGB (3-channel) prior; {checkpoint!r} has {shape[0]} channel(s). "
                        f"Shipped priors: {_shipped_summary()}; pass --prior NAME|PATH of an RGB checkpoint")
    return CallablePrior(net, data_shape=shape), card


def _fit(x: torch.Tensor, what: str, shape, resize: bool, prior_name: str) -> torch.Tensor:
    c, h, w = shape
    if tuple(x.shape[-3:]) == tuple(shape):
        return x
    if not resize:
        raise UserError(f"{what} is {x.shape[-3]}×{x.shape[-2]}×{x.shape[-1]} (channels×height×width) but prior "
                        f"{prior_name!r} expects {c}×{h}×{w}; pass --resize to resize it and convert its "
                        "channels, or use a prior trained for this size")
    return io.fit_images(x, c, (h, w))


def load_inputs(data, prior_cfg, card, shape) -> tuple[torch.Tensor, list[str]]:
    """Ground-truth images ``(N, C, H, W)`` in [0, 1] fitted to the prior, and their names: from
    ``data.image`` (file or folder), ``data.dataset``, or else (``data.default``) the prior's shipped
    held-out test images (``shipped``) or split ``data.split`` of the dataset it was trained on (``split``)."""
    from .data import load as load_dataset
    from .data.assets import shipped_test_sets, test_images
    n = int(data.n) if data.n is not None else None
    if n is not None and n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    prior_name = str(card.get("name", prior_cfg.checkpoint))
    if data.image is not None and data.dataset is not None:
        raise UserError("pass either --image or --dataset, not both")
    if data.image is not None:
        try:
            ims, names = io.load_images(data.image, n)
        except io.ImageError as exc:
            raise UserError(str(exc)) from None
        ims = [_fit(t[None], f"image {nm!r}", shape, bool(data.resize), prior_name) for t, nm in zip(ims, names)]
        return torch.cat(ims), names
    dataset = data.dataset
    if dataset is None and data.image is None and data.get("default", "shipped") == "split":
        dataset = (card.get("data") or {}).get("name")
        if dataset is None:
            raise UserError(f"prior {prior_name!r} does not name its training dataset in its card; "
                            "pass --dataset NAME or --image FOLDER")
    if dataset is not None:
        try:
            x, _ = load_dataset(str(dataset), split=str(data.split), n=n)
        except (ValueError, ImportError, FileNotFoundError) as exc:
            raise UserError(f"cannot load dataset {dataset!r}: {exc}") from None
        x = _fit(x, f"dataset {dataset!r}", shape, bool(data.resize), prior_name)
        width = max(3, len(str(x.shape[0] - 1)))
        return x, [f"{dataset}_{i:0{width}d}" for i in range(x.shape[0])]
    sets = shipped_test_sets()
    candidates = [prior_cfg.get("test_images"), (card.get("data") or {}).get("name"), card.get("name")]
    name = next((s for s in candidates if s in sets), None)
    if name is None:
        raise UserError(f"prior {prior_name!r} has no shipped test images (shipped sets: {sets}); "
                        "pass --image PATH or --dataset NAME")
    x = test_images(name, n)
    return _fit(x, f"shipped test set {name!r}", shape, bool(data.resize), prior_name), \
        [f"{name}_{i:02d}" for i in range(x.shape[0])]


def build_operator(op_cfg, shape, sigma_y: float, device):
    """``operators.make`` from an operator config node (``name`` + parameters) for images of ``shape``.
    CLI-level conveniences: ``ratio`` (missing area) for the centre box; a mask file must exist."""
    import operators
    spec = {k: v for k, v in dict(op_cfg).items() if v is not None}
    name = spec.pop("name", None)
    if name is None:
        return None
    if "ratio" in spec:
        ratio = float(spec.pop("ratio"))
        if not 0.0 < ratio < 1.0:
            raise UserError(f"--ratio must be in (0, 1), got {ratio}")
        spec["box"] = max(1, round(math.sqrt(ratio) * shape[1]))
    if "path" in spec and not Path(str(spec["path"])).is_file():
        raise UserError(f"mask file {str(spec['path'])!r} does not exist; --mask takes center, box, random, "
                        "half or the path of a mask image (bright = observed)")
    try:
        op = operators.make(name, img_size=tuple(shape), noise=float(sigma_y), **spec)
    except (ValueError, TypeError) as exc:
        raise UserError(f"cannot build operator {name!r} for {shape[0]}×{shape[1]}×{shape[2]} images: {exc}") from None
    return op.to(device)


def measurement_view(op, y: torch.Tensor) -> torch.Tensor:
    """What the grid shows for a measurement, in [0, 1]: y itself when it has image layout of the
    same height and width (masks, blur, gray), else A⁺y (super-resolution and other shape changes)."""
    if y.ndim == 4 and tuple(y.shape[-2:]) == tuple(op.input_shape[-2:]):
        return io.from_data(y)
    return io.from_data(op.A_pinv(y))


def load_guidance(g, prior_name: str, card, device) -> list:
    """Classifier-guidance terms for ``guidance.label`` (empty when it is null)."""
    if g.label is None:
        return []
    from .checkpoint import load_classifier, read_card, shipped
    from .conditional import ClassifierGuidance
    name = g.classifier
    if name is None:
        fits = [k for k in shipped() if read_card(k).get("kind") == "classifier"
                and read_card(k).get("image_size") == card["image_size"]
                and read_card(k).get("channels") == card["channels"]]
        preferred = f"{prior_name}_classifier"
        name = preferred if preferred in fits else (fits[0] if fits else None)
        if name is None:
            raise UserError(f"--class needs a noise-conditional classifier for {card['channels']}×{card['image_size']}² "
                            f"images; none is shipped (shipped: {_shipped_summary()}). Pass --classifier PATH or "
                            "train one: python -m invscore.training --task classifier --data fashion_mnist")
    try:
        clf = load_classifier(str(name), device=device)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"cannot load classifier {name!r}: {exc}") from None
    k = int(g.label)
    classes = int(clf.card.get("arch", {}).get("kwargs", {}).get("num_classes", 10))
    if not 0 <= k < classes:
        raise UserError(f"--class must be in 0..{classes - 1} for classifier {name!r}, got {k}")
    return [ClassifierGuidance(clf, k, float(g.gamma))]


def new_run_dir(out, task: str, root: str | os.PathLike = "outputs") -> Path:
    """Create and return a new, empty run directory: ``out`` or ``root/task/YYYYmmdd-HHMMSS``; if that
    exists, ``-1``, ``-2``… is appended (an existing run is never overwritten)."""
    base = Path(out) if out else Path(root) / task / datetime.now().strftime("%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        cand = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            cand.mkdir()  # atomic claim: two runs started in the same second get different names
            return cand
        except FileExistsError:
            continue
    raise UserError(f"cannot find a free run directory name next to {base}")


def _progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="step", disable=quiet, file=sys.stderr, leave=False)


def _metrics(x_hat: torch.Tensor, x: torch.Tensor, state: dict) -> dict[str, torch.Tensor]:
    from .metrics import MissingWeightsError, lpips, psnr, ssim
    out = {"psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}
    if state.get("lpips", True):
        try:
            out["lpips"] = lpips(x_hat, x, net="alex")
        except MissingWeightsError as exc:
            state["lpips"] = False
            warnings.warn(f"LPIPS unavailable ({str(exc).splitlines()[0]}); install its weights once with "
                          "`python -m invscore.metrics.setup_lpips`", stacklevel=2)
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def batch_seed(seed: int, batch: int, stream: int) -> int:
    """The seed of batch ``batch``'s random ``stream`` (0: measurement noise, 1: sampling) in a run seeded
    ``seed``: a 63-bit hash of the three, so that nearby seeds and batches get unrelated streams and no
    process needs another's generator state."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(batch)}/{int(stream)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: a valid torch seed


def execute(cfg, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the task described by ``cfg`` (composed from configs/) and write its outputs; returns the summary.

    Under torchrun every process calls this with the same config; each returns rank 0's summary."""
    from .utils import resolve_device
    t_start = time.perf_counter()
    task = str(cfg.task.name)
    for key in ("steps", "batch", "samples", "grid_rows"):
        if int(cfg[key]) < 1:
            raise UserError(f"{key} must be >= 1, got {cfg[key]}")
    if float(cfg.sigma_y) < 0:
        raise UserError(f"--sigma-y must be >= 0, got {cfg.sigma_y}")
    if task == "generate" and launched():
        raise UserError("generate runs as one process; torchrun shards the inverse tasks (evaluate, inpaint, …)")
    try:
        device = resolve_device(cfg.device)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    before = torch.get_num_threads()
    try:  # a run inside a larger process (tests, notebooks) must not leave its thread count behind
        with shard(device) as sh:
            return _execute(cfg, overrides, task, sh, configure_threads(cfg.threads), t_start)
    finally:
        torch.set_num_threads(before)


def _execute(cfg, overrides, task, sh: Shard, threads, t_start) -> dict[str, Any]:
    from omegaconf import OmegaConf
    device = sh.device
    prior, card = load_prior(cfg.prior.checkpoint, device, task)
    prior_name = str(card.get("name", cfg.prior.checkpoint))
    shape = tuple(prior.data_shape)
    guidance = load_guidance(cfg.guidance, prior_name, card, device)
    if task != "generate":  # every input is checked before a run directory exists
        x01, names = load_inputs(cfg.data, cfg.prior, card, shape)
        op = build_operator(cfg.operator, shape, float(cfg.sigma_y), device)
    verb = str(cfg.get("verb") or task)
    run_dir = sh.broadcast(new_run_dir(cfg.out, verb) if sh.main else None)  # rank 0 claims it, the rest follow
    if sh.main and cfg.out and run_dir != Path(cfg.out):
        warnings.warn(f"{str(cfg.out)!r} exists; writing to {str(run_dir)!r} instead of overwriting it", stacklevel=2)
    common = dict(verb=verb, task=task, run_dir=str(run_dir), device=str(device), threads=threads,
                  processes=sh.world,
                  prior={"checkpoint": str(cfg.prior.checkpoint), "name": prior_name, "shape": list(shape)},
                  overrides=list(overrides or []), config=OmegaConf.to_container(cfg, resolve=True))
    if sh.main:
        io.atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        if task == "generate":
            summary = _run_generate(cfg, prior, guidance, device, run_dir)
        else:
            summary = _run_inverse(cfg, prior, op, x01, names, guidance, sh, run_dir)
    except UserError:
        if sh.main:
            import shutil
            shutil.rmtree(run_dir, ignore_errors=True)  # created by this run a moment ago: nothing else in it
        raise
    if sh.main:  # written last: a run directory is complete exactly when its summary says so
        summary = {**common, **summary, "wall_seconds": time.perf_counter() - t_start, "complete": True}
        io.write_json(run_dir / "summary.json", summary)
    return sh.broadcast(summary)


def _solve_batch(b: int, cfg, prior, op, x01, names, guidance, device, bar, state: dict, run_dir: Path) -> dict:
    """Measure and solve batch ``b`` (images ``b·batch …``), score it and write its sample PNGs; returns
    its metric rows, its first grid rows, NFE and sampling seconds."""
    from .conditional import solve
    k, batch, steps, method = int(cfg.samples), int(cfg.batch), int(cfg.steps), str(cfg.method.name)
    lo = b * batch
    x01 = x01[lo:lo + batch]
    x = io.to_data(x01).to(device)
    g_meas = torch.Generator(device).manual_seed(batch_seed(cfg.seed, b, 0))
    g_sample = torch.Generator(device).manual_seed(batch_seed(cfg.seed, b, 1))
    y = op.measure(x, g_meas)
    try:  # k posterior samples per measurement, adjacent rows
        res = solve(prior, op, y.repeat_interleave(k, 0), method=method, steps=steps, sigma_y=float(cfg.sigma_y),
                    sde=str(cfg.sde), generator=g_sample, guidance=guidance, callback=lambda _: bar.update(1),
                    **_plain(cfg.method.get("options")))
    except (ValueError, TypeError) as exc:
        raise UserError(f"method {method!r}: {exc}") from None
    except FloatingPointError as exc:
        raise UserError(str(exc)) from None
    x_hat = io.from_data(res.x.detach()).cpu()
    per = _metrics(x_hat, x01.repeat_interleave(k, 0), state)
    base = _metrics(io.from_data(op.A_pinv(y)).cpu(), x01, {"lpips": False})
    samples = x_hat.view(x01.shape[0], k, *x_hat.shape[1:])
    view = measurement_view(op, y).cpu()
    rows, grid = [], []
    for i in range(x01.shape[0]):
        for j in range(k):
            r = i * k + j
            rows.append({"image": names[lo + i], "sample": j, **{m: float(v[r]) for m, v in per.items()},
                         **({} if "lpips" in per else {"lpips": None}),
                         "baseline_psnr": float(base["psnr"][i]), "baseline_ssim": float(base["ssim"][i])})
            io.save_png(samples[i, j], run_dir / "samples" / f"{lo + i:03d}_{j}.png")
        if lo + i < int(cfg.grid_rows):
            grid.append([view[i], *samples[i], x01[i]])
    return {"batch": b, "rows": rows, "grid": grid, "nfe": res.nfe, "seconds": res.seconds}


def _run_inverse(cfg, prior, op, x01, names, guidance, sh: Shard, run_dir: Path) -> dict[str, Any] | None:
    """Solve this process's batches; on rank 0, merge every process's rows (in image order) and write
    metrics.csv and grid.png. Returns the summary fields on rank 0, ``None`` elsewhere."""
    k, batch, steps, method = int(cfg.samples), int(cfg.batch), int(cfg.steps), str(cfg.method.name)
    mine = sh.mine(math.ceil(len(names) / batch))
    bar = _progress(steps * len(mine), f"{cfg.task.name}/{method}", bool(cfg.quiet) or not sh.main)
    state: dict = {}
    try:
        done = [_solve_batch(b, cfg, prior, op, x01, names, guidance, sh.device, bar, state, run_dir) for b in mine]
    finally:
        bar.close()
    parts = sh.gather(done)
    if not sh.main:
        return None
    done = sorted((d for part in parts for d in part), key=lambda d: d["batch"])
    rows = [r for d in done for r in d["rows"]]
    io.write_csv(run_dir / "metrics.csv", rows)
    io.save_png(io.make_grid([g for d in done for g in d["grid"]]), run_dir / "grid.png", scale=int(cfg.grid_scale))
    means = {m: _mean([r[m] for r in rows]) for m in ("psnr", "ssim", "lpips", "baseline_psnr", "baseline_ssim")}
    return {"method": method, "operator": dict(cfg.operator), "steps": steps, "nfe": max(d["nfe"] for d in done),
            "sampling_seconds": sum(d["seconds"] for d in done), "n_images": len(names), "samples_per_image": k,
            "batch": batch, "metrics": means, "lpips_available": all(r["lpips"] is not None for r in rows),
            "baseline": "A⁺y (pseudo-inverse of the measurement) against the ground truth",
            "files": {"grid": "grid.png", "metrics": "metrics.csv", "samples": "samples/", "config": "config.yaml"},
            "grid_columns": ["measurement"] + [f"sample {j}" for j in range(k)] + ["ground truth"],
            "grid_rows": min(len(names), int(cfg.grid_rows))}


def _plain(node) -> dict:
    from omegaconf import OmegaConf
    return {} if node is None else dict(OmegaConf.to_container(node, resolve=True))


def _run_generate(cfg, prior, guidance, device, run_dir: Path) -> dict[str, Any]:
    from .priors import Diffusion
    from .conditional import Guided
    from .samplers import SAMPLERS, sample
    from .sde import make_sde
    sampler, steps, n, batch = str(cfg.task.sampler), int(cfg.steps), int(cfg.data.n), int(cfg.batch)
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r} for generate; expected one of {sorted(SAMPLERS)}")
    model = Diffusion(prior, make_sde(str(cfg.sde)))
    model = Guided(model, guidance) if guidance else model
    gen = torch.Generator(device).manual_seed(int(cfg.seed))
    sizes = [min(batch, n - i) for i in range(0, n, batch)]
    bar = _progress(steps * len(sizes), f"generate/{sampler}", bool(cfg.quiet))
    outs, start = [], time.perf_counter()
    try:
        for b in sizes:
            model.nfe = 0
            res = sample(model, (b, *prior.data_shape), method=sampler, steps=steps, generator=gen, device=device,
                         callback=lambda _: bar.update(1))
            outs.append(res.x.detach())
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    x = io.from_data(torch.cat(outs)).cpu()
    ncol = min(8, n)
    io.save_png(io.make_grid([list(x[i:i + ncol]) for i in range(0, n, ncol)]), run_dir / "grid.png",
                scale=int(cfg.grid_scale))
    for i in range(n):
        io.save_png(x[i], run_dir / "samples" / f"{i:03d}.png")
    rows = [{"image": f"sample_{i:03d}", "sample": 0} for i in range(n)]
    extra: dict[str, Any] = {}
    if guidance:  # how often the guiding classifier, on the clean sample, agrees with the asked class
        clf, label = guidance[0].classifier, guidance[0].label
        with torch.no_grad():
            pred = clf(io.to_data(x).to(device), torch.full((n,), 0.002, device=device)).argmax(-1).cpu()
        for r, p in zip(rows, pred.tolist()):
            r["predicted_class"] = p
        extra = {"class": label, "gamma": guidance[0].gamma, "class_accuracy": float((pred == label).float().mean())}
    io.write_csv(run_dir / "metrics.csv", rows)
    return {"sampler": sampler, "steps": steps, "nfe": res.nfe, "sampling_seconds": seconds, "n_images": n,
            "metrics": {}, **extra, "files": {"grid": "grid.png", "metrics": "metrics.csv", "samples": "samples/",
                                              "config": "config.yaml"}}
