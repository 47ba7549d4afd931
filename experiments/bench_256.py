"""Cost of posterior sampling at real size (issue 13, part 6): the 256x256 ADM architecture, every invscore
method and deepinv's DPS / DDRM / DiffPIR on the *same* network, operator and measurement, in one run.

A benchmark script, not a test. The network is deepinv's ``DiffUNet(large_model=False)`` (the FFHQ model's
architecture, ~94 M parameters) with random weights (its zero-initialised last conv randomised, as in
tests/test_fmt_adm.py): enough for cost, meaningless for quality. The operator is
``inpaint_center`` on 3x256x256 with σ_y = 0.05; x is random in [-1, 1] and y = op.measure(x), both seeded,
so every run sees the same y (its checksum is recorded). deepinv runs through the library's bridges
(experiments/inverse_common.py: UnitDenoiser, decomposable physics, y in [0, 1]).

Measured per run (library, method, batch, dtype):
  * seconds per image: wall time of the sampling call / batch (CUDA: synchronised);
  * NFE per image: invscore's ``res.nfe`` and ``res.vjp`` (declared), deepinv's denoiser call count; and,
    for both, the network's own count from a forward pre-hook: images through the network / batch, and
    of those the ones with autograd on (a forward that is differentiated, i.e. one VJP);
  * with ``--checkpointing off on``, the gradient methods (and deepinv's DPS, on the same prior) run a second
    time with activation checkpointing on the network's blocks
    (:func:`invscore.priors.checkpointing.activation_checkpointing`), rows marked ``+ckpt``;
  * peak memory: CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
    memory allocated before the call (weights, x, y); CPU: each run in a fresh subprocess, the kernel's
    peak-RSS counter (VmHWM) reset just before the call by writing 5 to /proc/self/clear_refs, and the
    peak is VmHWM after the call minus VmRSS before it (weights and inputs excluded).

Usage:
  nice python experiments/bench_256.py --device cpu --batch 1 --steps 2 --checkpointing off on \
      --out experiments/results/bench_256_cpu
  python experiments/bench_256.py --gpu-all --out experiments/results/bench_256_gpu
      (CUDA: batch 1 and 8 x float32 and bf16 autocast, every method, checkpointing off and on, one process,
      one warm-up forward)
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

INVSCORE_METHODS = ["projection", "ddrm", "dps", "pigdm", "mmps", "smc"]
DEEPINV_METHODS = ["dinv_dps", "dinv_ddrm", "dinv_diffpir"]
GRADIENT_METHODS = {"dps", "pigdm", "mmps"}  # must not use more memory than deepinv's DPS at the same batch
CHECKPOINTABLE = GRADIENT_METHODS | {"dinv_dps"}  # the runs that differentiate through the network
DEEPINV_CFG = {"dinv_dps": {"weight": 1.0, "guidance": "norm"},
               "dinv_ddrm": {"eta": 0.85, "etab": 1.0},
               "dinv_diffpir": {"zeta": 0.3, "lambda_": 7.0}}
SMC_PARTICLES = 2  # population off
IMG = (3, 256, 256)
SIGMA_Y = 0.05


# ------------------------------------------------------------------------------------------ worker side
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def build_problem(device: str, batch: int):
    import torch
    import deepinv
    import operators
    from invscore.priors.fmt_adm import adm_prior

    torch.manual_seed(0)
    net = deepinv.models.DiffUNet(in_channels=3, out_channels=6, large_model=False, pretrained=None).eval()
    with torch.no_grad():  # DiffUNet zero-initialises its last conv: give it weights so outputs are not 0
        net.out[2].weight.normal_(0, 0.05)
        net.out[2].bias.normal_(0, 0.05)
    nparams = sum(p.numel() for p in net.parameters())
    prior = adm_prior(net).to(device)
    op = operators.make("inpaint_center", img_size=IMG, noise=SIGMA_Y)
    x = torch.rand(batch, *IMG, generator=torch.Generator().manual_seed(1)) * 2 - 1  # drawn on the CPU: the
    y = op.measure(x, generator=torch.Generator().manual_seed(2))  # same x and y on every device
    op, x, y = op.to(device), x.to(device), y.to(device)
    counter = {"calls": 0, "images": 0, "grad_images": 0}

    def hook(_mod, args):
        xin = args[0]
        counter["calls"] += 1
        counter["images"] += int(xin.shape[0])
        if torch.is_grad_enabled() and xin.requires_grad:
            counter["grad_images"] += int(xin.shape[0])

    net.register_forward_pre_hook(hook)
    return net, nparams, prior, op, x, y, counter


def run_one(job: dict, problem) -> dict:
    import torch
    from inverse_common import deepinv_problem, deepinv_sample
    from invscore.conditional import solve
    from invscore.priors.checkpointing import activation_checkpointing

    net, nparams, prior, op, x, y, counter = problem
    activation_checkpointing(prior, on=bool(job.get("checkpointing")))  # CUDA jobs share one prior
    device, batch, lib, method, steps = job["device"], job["batch"], job["lib"], job["method"], job["steps"]
    cuda = device == "cuda"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if job["dtype"] == "bf16"
                else torch.autocast("cuda", enabled=False) if cuda else torch.autocast("cpu", enabled=False))
    if lib == "deepinv":
        den, phys, y_u = deepinv_problem(prior, op, y)
    gc.collect()
    for k in counter:
        counter[k] = 0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_ok = _reset_peak_rss()
        base = _status_kb("VmRSS") * 1024
    out = {}
    t0 = time.perf_counter()
    with autocast:
        if lib == "invscore":
            opts = {"particles": SMC_PARTICLES, "population": False} if method == "smc" else {}
            gen = torch.Generator(device=device).manual_seed(3)
            res = solve(prior, op, y, method=method, steps=steps, generator=gen, **opts)
            xs = res.x
            out.update(nfe=res.nfe, vjp=res.vjp)
        else:
            den.calls = 0
            u = deepinv_sample(method, DEEPINV_CFG[method], steps, den, phys, y_u, seed=3, dtype=torch.float32)
            xs = 2 * u.detach().float() - 1
            out.update(nfe=den.calls / 1.0, vjp=None)  # one call denoises the whole batch: one NFE per image
    if cuda:
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
        peak_abs = torch.cuda.max_memory_allocated()
        mem_how = "cuda max_memory_allocated - allocated before"
    else:
        peak_abs = _status_kb("VmHWM") * 1024
        peak = peak_abs - base if reset_ok else float("nan")
        mem_how = "VmHWM (reset via clear_refs) - VmRSS before" if reset_ok else "clear_refs unavailable"
    out.update(job, seconds=secs, sec_per_image=secs / batch, net_nfe=counter["images"] / batch,
               net_grad_nfe=counter["grad_images"] / batch, net_calls=counter["calls"],
               peak_mib=peak / 2**20, peak_abs_mib=peak_abs / 2**20, mem_how=mem_how, params=nparams,
               y_checksum=float(y.double().sum()), finite=bool(torch.isfinite(xs).all()))
    return out


def worker(jobs: list[dict], threads: int | None):
    import torch
    if threads:
        torch.set_num_threads(threads)
    problems = {}
    for job in jobs:
        key = (job["device"], job["batch"])
        if key not in problems:
            problems[key] = build_problem(*key)
            if job["device"] == "cuda" and job.get("warmup", True):  # CUDA context, cuDNN algorithms
                net, _, prior, _, x, _, _ = problems[key]
                with torch.no_grad():
                    prior.denoise(x, torch.ones(x.shape[0], device=x.device))
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        prior.denoise(x, torch.ones(x.shape[0], device=x.device))
                torch.cuda.synchronize()
        try:
            res = run_one(job, problems[key])
        except Exception as err:  # noqa: BLE001 - report, keep going
            res = dict(job, error=f"{type(err).__name__}: {err}")
        print("RESULT " + json.dumps(res), flush=True)


# ------------------------------------------------------------------------------------------ driver side
def run_jobs(jobs, isolate: bool, threads: int | None, log=print) -> list[dict]:
    results = []
    batches = [[j] for j in jobs] if isolate else [jobs]
    for group in batches:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(group)]
        if threads:
            cmd += ["--threads", str(threads)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = [json.loads(l[7:]) for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or len(got) < len(group):
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            done = {_key(r) for r in got}
            got += [dict(j, error=f"worker rc={proc.returncode}: {' | '.join(tail)}") for j in group
                    if _key(j) not in done]
        for r in got:
            log(f"  {r['lib']:<8} {_label(r):<13} B={r['batch']} {r['dtype']:<7} "
                + (f"ERROR {r['error']}" if "error" in r else
                   f"{r['sec_per_image']:8.2f} s/img  NFE {r['net_nfe']:g} (grad {r['net_grad_nfe']:g})  "
                   f"peak {r['peak_mib']:8.1f} MiB") + f"   [{time.perf_counter() - t0:.0f}s process]", flush=True)
        results += got
    return results


def _key(r):
    return r["lib"], r["method"], r["batch"], r["dtype"], bool(r.get("checkpointing"))


def _label(r):
    return r["method"] + (" +ckpt" if r.get("checkpointing") else "")


def fmt(v, spec):
    return "—" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def table(results: list[dict]) -> str:
    ref = {(r["batch"], r["dtype"]): r["peak_mib"] for r in results
           if r["method"] == "dinv_dps" and not r.get("checkpointing") and "error" not in r}
    head = ("| library | method | batch | dtype | steps | s / image | NFE / image (declared) | VJP / image (declared) "
            "| net fwd / image | of which with grad | peak mem (MiB) | ÷ deepinv DPS | ≤ DPS? |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    order = {m: i for i, m in enumerate(INVSCORE_METHODS + DEEPINV_METHODS)}
    for r in sorted(results, key=lambda r: (r["batch"], r["dtype"], bool(r.get("checkpointing")),
                                            order.get(r["method"], 99))):
        if "error" in r:
            lines.append(f"| {r['lib']} | {_label(r)} | {r['batch']} | {r['dtype']} | {r['steps']} | "
                         f"error: {r['error'][:80]} |||||||||")
            continue
        d = ref.get((r["batch"], r["dtype"]))
        ratio = r["peak_mib"] / d if d else None
        check = ("yes" if ratio <= 1.0 else "**NO**") if (r["method"] in GRADIENT_METHODS and ratio is not None) else ""
        lines.append(f"| {r['lib']} | {_label(r)} | {r['batch']} | {r['dtype']} | {r['steps']} | "
                     f"{fmt(r['sec_per_image'], '.2f')} | {fmt(r['nfe'], 'g')} | {fmt(r['vjp'], 'g')} | "
                     f"{fmt(r['net_nfe'], 'g')} | {fmt(r['net_grad_nfe'], 'g')} | {fmt(r['peak_mib'], '.1f')} | "
                     f"{fmt(ratio, '.2f')} | {check} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 3 on CPU, 20 on CUDA)")
    p.add_argument("--dtype", choices=["float32", "bf16"], nargs="+", default=["float32"])
    p.add_argument("--methods", nargs="+", default=INVSCORE_METHODS + DEEPINV_METHODS,
                   help="subset of " + " ".join(INVSCORE_METHODS + DEEPINV_METHODS))
    p.add_argument("--checkpointing", choices=["off", "on"], nargs="+", default=["off"],
                   help="activation checkpointing of the network's blocks: 'off on' adds +ckpt rows for "
                        + ", ".join(sorted(CHECKPOINTABLE)))
    p.add_argument("--gpu-all", action="store_true",
                   help="CUDA: batch 1 and 8 x float32 and bf16 autocast, every method, checkpointing off and on, "
                        "in one invocation")
    p.add_argument("--isolate", action="store_true",
                   help="one fresh subprocess per run (always on CPU, where peak RSS needs it)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the workers")
    p.add_argument("--out", default=None, help="write PREFIX.md and PREFIX.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker is not None:
        return worker(json.loads(a.worker), a.threads)
    if a.gpu_all:
        a.device, a.batch, a.dtype, a.checkpointing = "cuda", [1, 8], ["float32", "bf16"], ["off", "on"]
    if a.device == "cpu" and "bf16" in a.dtype:
        sys.exit("bench_256: --dtype bf16 is torch.autocast on CUDA only; refusing on CPU")
    import torch
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_256: --device cuda but torch.cuda.is_available() is False")
    unknown = set(a.methods) - set(INVSCORE_METHODS + DEEPINV_METHODS)
    if unknown:
        sys.exit(f"bench_256: unknown methods {sorted(unknown)}")
    steps = a.steps or (3 if a.device == "cpu" else 20)
    methods = [m for m in INVSCORE_METHODS + DEEPINV_METHODS if m in a.methods]
    jobs = [dict(device=a.device, batch=b, dtype=dt, steps=steps, method=m, checkpointing=ck == "on",
                 lib="deepinv" if m.startswith("dinv_") else "invscore")
            for b in a.batch for dt in a.dtype for ck in a.checkpointing for m in methods
            if ck == "off" or m in CHECKPOINTABLE]
    command = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    print(f"bench_256: {len(jobs)} runs on {a.device}, steps {steps}", flush=True)
    t0 = time.perf_counter()
    results = run_jobs(jobs, isolate=a.isolate or a.device == "cpu", threads=a.threads)
    total = time.perf_counter() - t0
    tab = table(results)
    print(tab)
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "torch_threads": a.threads or torch.get_num_threads(),
           "cuda": torch.cuda.get_device_name() if a.device == "cuda" else None}
    try:
        import deepinv
        env["deepinv"] = deepinv.__version__
    except Exception:  # noqa: BLE001
        pass
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": command, "device": a.device, "steps": steps, "batches": a.batch, "dtypes": a.dtype,
                "operator": f"inpaint_center {IMG} sigma_y={SIGMA_Y}", "smc_particles": SMC_PARTICLES,
                "deepinv_configs": DEEPINV_CFG, "checkpointing": a.checkpointing, "total_seconds": total, "env": env,
                "memory": results[0].get("mem_how") if results else None}
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
        mem = ("CUDA: torch.cuda.max_memory_allocated during the call (peak stats reset) minus memory "
               "allocated before it (weights, x, y), all runs in one process after a warm-up forward."
               if a.device == "cuda" else
               "CPU: every run in a fresh subprocess; the kernel's peak-RSS counter (VmHWM) is reset just "
               "before the sampling call (`echo 5 > /proc/self/clear_refs`) and the peak is VmHWM after the "
               "call minus VmRSS before it, so the ~360 MiB of weights and the inputs are excluded.")
        md = [f"# Posterior sampling cost at 256×256 ({a.device})", "",
              f"Command: `{command}`", "",
              f"Network: deepinv DiffUNet(large_model=False), random weights, {results[0].get('params', 0) / 1e6:.1f} M "
              f"parameters, through `invscore.priors.fmt_adm.adm_prior` (1000-step discrete VP). Operator: "
              f"inpaint_center on {IMG}, σ_y = {SIGMA_Y}; same seeded x and y for every run. {steps} steps; "
              f"SMC with {SMC_PARTICLES} particles, population off; deepinv configs {DEEPINV_CFG} "
              "(deepinv's NFE target = steps). Random weights: cost only, no quality.", "",
              f"Memory: {mem}", "",
              "NFE columns: *declared* = invscore `res.nfe` / `res.vjp` and deepinv's denoiser call count; "
              "*net fwd* = images through the network / batch, counted by a forward pre-hook on the network, "
              "*with grad* = those forwards with autograd on (each followed by one VJP).", "",
              "`+ckpt`: activation checkpointing on the network's blocks "
              "(`invscore.priors.checkpointing.activation_checkpointing(prior)`: DiffUNet's input and output "
              "blocks keep only their inputs and recompute their activations in the backward pass); the "
              "÷ deepinv DPS column divides by deepinv's DPS without it.", "",
              tab, "",
              f"Total wall time {total:.0f} s; env {json.dumps(env)}.", ""]
        out.with_suffix(".md").write_text("\n".join(md))
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return results


if __name__ == "__main__":
    main()
