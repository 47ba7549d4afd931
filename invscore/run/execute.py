"""Executing a run: measure → solve → score, batch by batch, sharded over processes under torchrun.

Inverse tasks run in batches of ``cfg.batch`` images formed over the whole input in order; batch ``b``
draws its measurement noise and its samples from generators seeded by ``(seed, b)`` (:func:`batch_seed`).
So results do not depend on how the batches are shared among processes: under ``torchrun`` rank ``r`` of
``W`` solves batches ``r, r + W, …`` (:mod:`invscore.distributed`) and rank 0 merges the per-image rows
into the same files a single process writes. They do depend on the batch size.

Finished work is never lost: each finished batch leaves its sample PNGs and a record under ``batches/``; a
run that fails or is interrupted after creating its directory says ``"complete": false`` in its summary, and
``resume=True`` (``evaluate --resume DIR``) continues it without redoing the finished batches
(:mod:`invscore.run.resume`).
"""
from __future__ import annotations

import hashlib
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..distributed import Shard, launched, shard
from .build import (UserError, build_operator, check_settings, configure_threads, load_guidance, load_inputs,
                    load_prior)
from .outputs import (FILES, grid_columns, new_run_dir, read_batch, score_batch, write_batch, write_generated,
                      write_inverse)

__all__ = ["execute", "batch_seed"]


def batch_seed(seed: int, batch: int, stream: int) -> int:
    """The seed of batch ``batch``'s random ``stream`` (0: measurement noise, 1: sampling) in a run seeded
    ``seed``: a 63-bit hash of the three, so that nearby seeds and batches get unrelated streams and no
    process needs another's generator state."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(batch)}/{int(stream)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: a valid torch seed


def execute(cfg, overrides: list[str] | None = None, resume: bool = False) -> dict[str, Any]:
    """Run the task described by ``cfg`` (composed from configs/) and write its outputs; returns the summary.

    ``resume``: continue the unfinished run in ``cfg.out`` (same config), reusing its finished batches.
    Under torchrun every process calls this with the same config; each returns rank 0's summary."""
    from ..utils import resolve_device
    t_start = time.perf_counter()
    task = str(cfg.task.name)
    check_settings(cfg)
    if task == "generate" and launched():
        raise UserError("generate runs as one process; torchrun shards the inverse tasks (evaluate, inpaint, …)")
    try:
        device = resolve_device(cfg.device)
    except (ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    before = torch.get_num_threads()
    try:  # a run inside a larger process (tests, notebooks) must not leave its thread count behind
        with shard(device) as sh:
            return _execute(cfg, overrides, task, sh, configure_threads(cfg.threads), t_start, resume)
    finally:
        torch.set_num_threads(before)


def _execute(cfg, overrides, task, sh: Shard, threads, t_start, resume=False) -> dict[str, Any]:
    from omegaconf import OmegaConf
    device = sh.device
    prior, card = load_prior(cfg.prior.checkpoint, device, task)
    if cfg.get("checkpointing"):  # fewer activations held by gradient methods, one more forward per backward
        from ..priors.checkpointing import activation_checkpointing
        try:
            activation_checkpointing(prior)
        except ValueError as exc:
            raise UserError(f"checkpointing=true: {exc}") from None
    prior_name = str(card.get("name", cfg.prior.checkpoint))
    shape = tuple(getattr(prior, "pixel_shape", prior.data_shape))  # the image; a latent prior samples z
    guidance = load_guidance(cfg.guidance, prior, prior_name, card, device)
    if task != "generate":  # every input is checked before a run directory exists
        x01, names = load_inputs(cfg.data, cfg.prior, card, shape)
        op = build_operator(cfg.operator, shape, float(cfg.sigma_y), device)
    verb = str(cfg.get("verb") or task)
    if resume:  # every process checks (read-only), so none waits on a rank that refused
        from .resume import resume_dir
        run_dir = resume_dir(cfg)
    else:
        run_dir = sh.broadcast(new_run_dir(cfg.out, verb) if sh.main else None)  # rank 0 claims it, the rest follow
    if sh.main and cfg.out and run_dir != Path(cfg.out):
        warnings.warn(f"{str(cfg.out)!r} exists; writing to {str(run_dir)!r} instead of overwriting it", stacklevel=2)
    common = dict(verb=verb, task=task, run_dir=str(run_dir), device=str(device), threads=threads,
                  processes=sh.world,
                  prior={"checkpoint": str(cfg.prior.checkpoint), "name": prior_name, "shape": list(shape)},
                  overrides=list(overrides or []), config=OmegaConf.to_container(cfg, resolve=True))
    if sh.main and not resume:
        io.atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        if task == "generate":
            summary = _run_generate(cfg, prior, guidance, device, run_dir)
        else:
            summary = _run_inverse(cfg, prior, op, x01, names, guidance, sh, run_dir, resume)
    except BaseException as exc:
        if sh.main:
            _unfinished(run_dir, common, exc, t_start, created=not resume)
        raise
    if sh.main:  # written last: a run directory is complete exactly when its summary says so
        summary = {**common, **summary, "wall_seconds": time.perf_counter() - t_start, "complete": True}
        io.write_json(run_dir / "summary.json", summary)
        from .report import write_run_report
        write_run_report(run_dir)
    return sh.broadcast(summary)


def _unfinished(run_dir: Path, common: dict, exc: BaseException, t_start: float, created: bool) -> None:
    """A run that stopped early: a user's mistake before any batch finished leaves no directory (it was
    created a moment ago and holds only config.yaml); otherwise the summary says ``complete: false``, why,
    and how to continue, and the finished batches stay."""
    finished = sorted(run_dir.glob("batches/*.json"))
    if isinstance(exc, UserError) and created and not finished:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}".splitlines()[0]
    hint = (f"continue it with the same command and --resume {run_dir}" if common["task"] != "generate"
            else "run it again")
    io.write_json(run_dir / "summary.json", {**common, "complete": False, "error": why,
                                             "finished_batches": len(finished), "resume": hint,
                                             "wall_seconds": time.perf_counter() - t_start})


def _progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="step", disable=quiet, file=sys.stderr, leave=False)


def _plain(node) -> dict:
    from omegaconf import OmegaConf
    return {} if node is None else dict(OmegaConf.to_container(node, resolve=True))


def _solve_batch(b: int, cfg, prior, op, x01, guidance, device, bar, run):
    """Measure batch ``b`` (images ``b·batch …``) and draw ``cfg.samples`` posterior samples of each with
    ``run = (method object, steps)`` from :func:`_picked`."""
    from ..conditional import solve
    k, batch, method = int(cfg.samples), int(cfg.batch), str(cfg.method.name)
    x = io.to_data(x01[b * batch:(b + 1) * batch]).to(device)
    g_meas = torch.Generator(device).manual_seed(batch_seed(cfg.seed, b, 0))
    g_sample = torch.Generator(device).manual_seed(batch_seed(cfg.seed, b, 1))
    y = op.measure(x, g_meas)
    try:  # k posterior samples per measurement, adjacent rows
        res = solve(prior, op, y.repeat_interleave(k, 0), method=run[0], steps=run[1],
                    grid=cfg.method.get("grid"), sde=str(cfg.sde), generator=g_sample, guidance=guidance,
                    callback=lambda _: bar.update(1))
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        raise UserError(msg if msg.startswith(f"method {method!r}") else f"method {method!r}: {msg}") from None
    except FloatingPointError as exc:
        raise UserError(str(exc)) from None
    return y, res


def _picked(cfg, op, prior) -> tuple:
    """The method that runs (with its options) and its steps: the configured one, or the one ``auto`` picks
    for ``op`` (for a latent prior, for A ∘ 𝒟); resolved once per run."""
    from ..conditional import get_method
    from ..priors.latent import LatentOperator, LatentPrior
    method = str(cfg.method.name)
    op = LatentOperator(op, prior) if isinstance(prior, LatentPrior) else op
    try:
        m, steps = get_method(method, **_plain(cfg.method.get("options"))).resolve(op, int(cfg.steps))
    except (ValueError, TypeError) as exc:
        raise UserError(f"method {method!r}: {exc}") from None
    return m, steps


def _run_inverse(cfg, prior, op, x01, names, guidance, sh: Shard, run_dir: Path,
                 resume: bool = False) -> dict[str, Any] | None:
    """Solve this process's batches (with ``resume``, those without a record in ``batches/``); on rank 0,
    merge every process's rows (in image order) and write metrics.csv and grid.png. Returns the summary
    fields on rank 0, ``None`` elsewhere."""
    k, batch, method = int(cfg.samples), int(cfg.batch), str(cfg.method.name)
    run = _picked(cfg, op, prior)
    picked, steps = run[0].name, run[1]
    mine = sh.mine(math.ceil(len(names) / batch))
    done = [{**d, "reused": True} for d in (read_batch(run_dir, b) for b in mine) if d is not None] if resume else []
    todo = [b for b in mine if b not in {d["batch"] for d in done}]
    bar = _progress(steps * len(todo), f"{cfg.task.name}/{picked}", bool(cfg.quiet) or not sh.main)
    try:
        for b in todo:
            y, res = _solve_batch(b, cfg, prior, op, x01, guidance, sh.device, bar, run)
            scored = score_batch(io.from_data(res.x.detach()).cpu(), x01[b * batch:(b + 1) * batch], y, op, names,
                                 b * batch, k, int(cfg.grid_rows), run_dir)
            done.append({"batch": b, **scored, "nfe": res.nfe, "vjp": res.vjp, "seconds": res.seconds,
                         "ae": [res.autoencoder_nfe, res.autoencoder_vjp]})
            write_batch(run_dir, done[-1])
    finally:
        bar.close()
    parts = sh.gather(done)
    if not sh.main:
        return None
    done = sorted((d for part in parts for d in part), key=lambda d: d["batch"])
    return {"method": picked, **({"method_asked": method} if picked != method else {}),
            **({"method_options": run[0].changed()} if run[0].changed() else {}),
            "operator": dict(cfg.operator), "steps": steps, "grid": cfg.method.get("grid") or run[0].grid,
            "nfe": max(d["nfe"] for d in done),
            "backward_passes": max(d["vjp"] for d in done),
            **({"autoencoder_passes": max(d.get("ae", [0, 0])[0] for d in done),
                "autoencoder_backward": max(d.get("ae", [0, 0])[1] for d in done)}
               if any(d.get("ae", [0])[0] for d in done) else {}),
            "sampling_seconds": sum(d["seconds"] for d in done), "n_images": len(names), "samples_per_image": k,
            "batch": batch, **write_inverse(done, run_dir, int(cfg.grid_scale), k),
            "baseline": "A⁺y (pseudo-inverse of the measurement) against the ground truth", "files": FILES,
            "grid_columns": grid_columns(k),
            **({"resumed_batches": sum(bool(d.get("reused")) for d in done)} if resume else {}),
            "grid_rows": min(len(names), int(cfg.grid_rows))}


def _sample_prior(cfg, prior, guidance, device):
    """Draw ``cfg.data.n`` samples of the prior in batches with sampler ``cfg.task.sampler``."""
    from ..conditional import Guided
    from ..priors import Diffusion
    from ..samplers import SAMPLERS, sample
    from ..sde import make_sde
    sampler, steps, n, batch = str(cfg.task.sampler), int(cfg.steps), int(cfg.data.n), int(cfg.batch)
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r} for generate; expected one of {sorted(SAMPLERS)}")
    model = Diffusion(prior, make_sde(str(cfg.sde)))
    model = Guided(model, guidance) if guidance else model
    gen = torch.Generator(device).manual_seed(int(cfg.seed) % 2**64)  # torch keeps 64 bits; any int seed works
    sizes = [min(batch, n - i) for i in range(0, n, batch)]
    bar = _progress(steps * len(sizes), f"generate/{sampler}", bool(cfg.quiet))
    outs, start = [], time.perf_counter()
    try:
        for b in sizes:
            model.nfe = 0
            res = sample(model, (b, *prior.data_shape), method=sampler, steps=steps, generator=gen, device=device,
                         callback=lambda _: bar.update(1))
            outs.append(prior.decode(res.x).detach() if hasattr(prior, "decode") else res.x.detach())
    finally:
        bar.close()
    return io.from_data(torch.cat(outs)).cpu(), res.nfe, time.perf_counter() - start


def _run_generate(cfg, prior, guidance, device, run_dir: Path) -> dict[str, Any]:
    x, nfe, seconds = _sample_prior(cfg, prior, guidance, device)
    n = x.shape[0]
    rows = [{"image": f"sample_{i:03d}", "sample": 0} for i in range(n)]
    extra: dict[str, Any] = {}
    if guidance and not hasattr(guidance[0], "classifier"):  # classifier-free: no classifier to ask
        extra = {"class": guidance[0].label, "cfg_weight": guidance[0].weight}
    elif guidance:  # how often the guiding classifier, on the clean sample, agrees with the asked class
        clf, label = guidance[0].classifier, guidance[0].label
        with torch.no_grad():
            pred = clf(io.to_data(x).to(device), torch.full((n,), 0.002, device=device)).argmax(-1).cpu()
        for r, p in zip(rows, pred.tolist()):
            r["predicted_class"] = p
        extra = {"class": label, "gamma": guidance[0].gamma, "class_accuracy": float((pred == label).float().mean())}
    write_generated(x, rows, run_dir, int(cfg.grid_scale))
    return {"sampler": str(cfg.task.sampler), "steps": int(cfg.steps), "nfe": nfe, "sampling_seconds": seconds,
            "n_images": n, "metrics": {}, **extra,
            "files": {k: v for k, v in FILES.items() if k != "batches"}}  # one batch loop, no records
