"""The command line: ``python -m invscore VERB [--flags] [hydra overrides…]`` (see docs/cli.md).

Flags become Hydra overrides of configs/ (``cli.args``), overrides are composed with Hydra's compose
API (``cli.compose``) and each resulting config is one run of :func:`invscore.run.execute`.
User mistakes print one line and exit with code 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
import warnings

from .args import CLIError, build_parser, split_args, to_overrides
from .compose import compose_config, expand_sweep, group_options, merge_overrides

__all__ = ["main", "CLIError"]


def _options(summary: dict) -> str:
    """The picked method's options beside its name, with its time grid where the run used another than the
    method's own (``auto``'s choices may)."""
    from ..conditional import METHODS
    opts = dict(summary.get("method_options") or {})
    own = getattr(METHODS.get(summary.get("method")), "grid", None)
    if own is not None and summary.get("grid") not in (None, own):
        opts["grid"] = summary["grid"]
    return f"({', '.join(f'{k}={v!r}' for k, v in opts.items())})" if opts else ""


def _report(summary: dict) -> str:
    m = summary.get("metrics") or {}
    verb = "" if summary.get("verb", summary["task"]) == summary["task"] else f"{summary['verb']} "
    procs = f" on {summary['processes']} processes" if summary.get("processes", 1) > 1 else ""
    parts = [f"{verb}{summary['task']}: {summary.get('n_images')} image(s){procs}",
             f"{summary.get('method') or summary.get('sampler')}{_options(summary)} {summary.get('steps')} steps, "
             f"NFE {summary.get('nfe')}"
             + (f" + {summary['backward_passes']} backward" if summary.get("backward_passes") else "")
             + (f", autoencoder {summary['autoencoder_passes']} + {summary['autoencoder_backward']} backward"
                if summary.get("autoencoder_passes") else ""),
             f"{summary['wall_seconds']:.1f} s"]
    for key, fmt in (("psnr", "PSNR {:.2f} dB"), ("ssim", "SSIM {:.3f}"), ("lpips", "LPIPS {:.3f}")):
        if m.get(key) is not None:
            parts.append(fmt.format(m[key]))
    if m and m.get("lpips") is None:
        parts.append("LPIPS unavailable")
    pm = summary.get("metrics_posterior_mean") or {}
    if pm.get("psnr") is not None:
        parts.append(f"their posterior mean (of {summary.get('samples_per_image')}): PSNR {pm['psnr']:.2f} dB"
                     + (f", LPIPS {pm['lpips']:.3f}" if pm.get("lpips") is not None else ""))
    if "class_accuracy" in summary:
        parts.append(f"class {summary['class']} accuracy {summary['class_accuracy']:.2f}")
    return ", ".join(parts) + f"\n  results: {summary['run_dir']}/ (report.html, grid.png, metrics.csv, summary.json)"


def _runs(args, overrides: list[str]) -> list[dict]:
    from ..conditional import METHODS
    from ..distributed import launched, main_process
    from ..run import execute
    from ..samplers import SAMPLERS
    flags = to_overrides(args, prior_groups=group_options("prior"), methods=METHODS, samplers=SAMPLERS)
    combos = expand_sweep(merge_overrides(flags, overrides), args.multirun)
    cfgs = [(compose_config(c), c) for c in combos]  # every config checked before the first run starts
    summaries = []
    sweep_root = None
    if len(cfgs) > 1 and getattr(args, "resume", None):
        raise CLIError("--resume continues one run; it cannot be combined with a -m sweep")
    if len(cfgs) > 1 and launched():
        raise CLIError("-m sweeps run one after another in one process; under torchrun start one run per "
                       "configuration (or use the joblib/submitit launchers, docs/cli.md)")
    if len(cfgs) > 1:
        from ..run import new_run_dir
        sweep_root = new_run_dir(cfgs[0][0].out, f"{args.verb}-sweep")
        print(f"sweep of {len(cfgs)} runs -> {sweep_root}/")
    for i, (cfg, combo) in enumerate(cfgs):
        if sweep_root is not None:
            swept = [c for c in combo if c not in flags]
            cfg.out = str(sweep_root / (f"{i:02d}_" + "_".join(s.replace("/", "-") for s in swept)[:80]))
        summary = execute(cfg, combo, resume=bool(getattr(args, "resume", None)))
        summaries.append(summary)
        if main_process():  # under torchrun every process returns rank 0's summary; one prints it
            print(_report(summary))
    if sweep_root is not None:
        from .. import io
        io.write_json(sweep_root / "sweep.json", [{"overrides": s["overrides"], "run_dir": s["run_dir"],
                                                   "metrics": s.get("metrics"), "nfe": s.get("nfe"),
                                                   "wall_seconds": s["wall_seconds"]} for s in summaries])
        print(f"sweep summary: {sweep_root}/sweep.json")
    return summaries


def _user_mistake(exc: BaseException) -> bool:
    """A CLIError, or invscore.run's UserError: only a run raises the latter, so its module (which imports
    torch) is looked up rather than imported, keeping `--help` free of torch."""
    build = sys.modules.get("invscore.run.build")
    return isinstance(exc, CLIError) or (build is not None and isinstance(exc, build.UserError))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code (0 ok, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":  # thin pass-through: the training module owns its flags
        if argv[1:] in (["-h"], ["--help"]):  # its help text without importing torch (cli.facts)
            from .facts import train_help
            print(train_help(), end="")
            return 0
        from ..training import main as train_main
        return train_main(argv[1:]) or 0
    parser = build_parser()

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"invscore: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            args, overrides = split_args(parser, argv)
            if args.verb is None:
                parser.print_help()
                return 2
            if args.verb == "list":
                from .listing import listing
                print(listing(args.what))
                return 0
            _runs(args, overrides)
    except BrokenPipeError:  # `python -m invscore list | head`: the reader left; not an error of ours
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 -- re-raised unless it is a user's mistake
        if not _user_mistake(exc):
            raise
        print(f"invscore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("invscore: interrupted (a run keeps its finished batches; its summary.json says how to --resume)",
              file=sys.stderr)
        return 130
    return 0
