"""Command-line flags of each verb and their translation into Hydra overrides of configs/.

A flag is sugar for one or two overrides (``--mask random --ratio 0.5`` → ``operator=inpaint_random
operator.missing_ratio=0.5``); anything left on the command line that is not a flag is an override and
wins over the flags, so ``--steps 10 steps=20`` runs 20 steps.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

__all__ = ["CLIError", "TASKS", "INVERSE", "MASKS", "KERNELS", "SCALES", "build_parser", "to_overrides", "override_key",
           "split_args"]

#: verb -> one-line description (the `list tasks` table and --help)
TASKS = {
    "inpaint": "fill in missing pixels (--mask center|box|random|half|FILE, --ratio)",
    "colorize": "restore colour from a gray image (needs an RGB prior)",
    "deblur": "remove a known blur (--kernel gaussian|motion, --blur-sigma)",
    "superres": "super-resolve an average-pooled image (--scale 2|4|8)",
    "generate": "sample the prior, optionally guided to a class (--n, --class K, --gamma)",
    "evaluate": "run --task inpaint|colorize|deblur|superres on many images (a dataset split or folder); "
                "torchrun shards it over processes",
}
#: the inverse tasks (``evaluate --task``) and the flags that belong to one of them
INVERSE = ("inpaint", "colorize", "deblur", "superres")
_TASK_FLAGS = {"inpaint": ("mask", "ratio"), "deblur": ("kernel", "blur_sigma"), "superres": ("scale",)}
MASKS = {"center": "inpaint_center", "box": "inpaint_box", "random": "inpaint_random", "half": "inpaint_half"}
KERNELS = {"gaussian": "blur_gaussian", "motion": "blur_motion"}
SCALES = (2, 4, 8)


class CLIError(Exception):
    """A command-line mistake: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse's default prints the whole usage block; one line plus where to look is easier to read
        raise CLIError(f"{self.prog}: {message} (see {self.prog} --help)")


def _quote(value) -> str:
    """A string value as a Hydra override literal: quoted unless it is a plain word, path-safe."""
    s = str(value)
    if re.fullmatch(r"[A-Za-z0-9_.\-/]+", s) and not re.fullmatch(r"[-+]?[0-9.e+-]+|true|false|null|nan|inf", s):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _default(operator: str, param: str) -> str:
    # the operator owns its parameters' defaults; read through the snapshot so `--help` needs no torch
    from .facts import fact
    return fact("operator_defaults")[operator][param]


class _LazyHelp:
    """A help text computed when argparse formats it (``VERB --help``), not when the parser is built: the
    method names and operator defaults come from the registries (through :mod:`invscore.cli.facts`), which a
    run or the top-level ``--help`` should not wait for."""

    def __init__(self, make):
        self._make = make

    def __str__(self) -> str:
        return self._make()

    def __mod__(self, params) -> str:  # argparse expands ``%(default)s`` with ``help % params``
        return self._make() % params

    def strip(self) -> str:
        return self._make().strip()


def _sigma_y() -> str:
    from .facts import fact  # configs/config.yaml's value, read once per state of the sources
    return fact("sigma_y")


def _methods() -> list[str]:
    from .facts import fact  # the registry's names (a snapshot of it while torch is not imported)
    return fact("method_names")


def _common(p: argparse.ArgumentParser, generate: bool = False) -> None:
    g = p.add_argument_group("common")
    g.add_argument("--prior", help="shipped prior name, a .safetensors checkpoint path, or FORMAT:PATH for a "
                                   "checkpoint of the field (`list priors` shows the formats; default: "
                                   "fashion_mnist; emoji for colorize)")
    if not generate:
        g.add_argument("--image", help="an image file or a folder of images (default: the prior's shipped test images)")
        g.add_argument("--dataset", help="an invscore.data dataset name (its test split) or folder:/path")
        g.add_argument("--resize", action="store_true",
                       help="centre-crop to the prior's aspect ratio, resize and convert channels to fit it")
    g.add_argument("--n", "--num-images", dest="n", type=int,
                   help="number of images (generate: samples); default 4 (evaluate: 32). Under torchrun write "
                        "--num-images: torchrun's own parser rejects --n as an ambiguous abbreviation")
    g.add_argument("--method", help=_LazyHelp(lambda: f"posterior method ({', '.join(_methods())}; default auto, which picks one per operator "
                                                      "with --steps as its NFE budget; "
                                                      "`list methods` shows each one's cost and options)")
                   if not generate else "sampler (invscore.samplers.SAMPLERS; default ode_heun)")
    g.add_argument("--steps", type=int, help="sampling steps (default: the method's fast default)")
    if not generate:
        g.add_argument("--sigma-y", type=float, help=_LazyHelp(lambda: "measurement noise std in [-1, 1] units, "
                       f"the operator's Gaussian noise (default {_sigma_y()})"))
        g.add_argument("--samples", type=int, help="posterior samples per image (default 1)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--device", help="auto (cuda when present), cpu, cuda, cuda:1 ...")
    g.add_argument("--threads", help="torch CPU threads (default auto: the idle cores)")
    g.add_argument("--batch", type=int, help="images solved at once (default 4); batch b draws from seeds (seed, b), "
                                            "so the batch size changes the draws, the process count does not")
    g.add_argument("--out", help="run directory (default outputs/VERB/TIMESTAMP; never overwritten)")
    if not generate:
        g.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR: repeat its command and "
                                                       "add --resume DIR; finished batches are not redone")
    g.add_argument("--class", dest="label", type=int, help="guide samples to class K with the noisy classifier")
    g.add_argument("--gamma", type=float,
                   help="classifier-guidance scale (default 16: 98 %% of guided samples on-class in "
                        "experiments/results/prior_report.md)")
    g.add_argument("--classifier", help="classifier name or path, or adm:PATH for guided-diffusion's noisy "
                                        "classifier (default: the prior's shipped classifier; a class-conditional "
                                        "prior such as fashion_mnist_cond uses classifier-free guidance instead)")
    g.add_argument("--cfg-weight", dest="cfg_weight", type=float,
                   help="classifier-free guidance weight w of a class-conditional prior (default 2; 1 = the "
                        "conditional model, 0 = unconditional)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("-m", "--multirun", action="store_true",
                   help="sweep comma-separated override values, e.g. -m method=pigdm,dps steps=20,50")


_TORCHRUN = (" Several processes (gloo on CPU, nccl on GPU; rank 0 merges the metrics and writes the files): "
             "`torchrun --nproc_per_node=2 -m invscore evaluate --dataset fashion_mnist --num-images 64`.")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every verb (overrides are collected separately, see :func:`split_args`)."""
    epilog = ("Anything of the form key=value is a Hydra override of configs/config.yaml, e.g. "
              "`method=dps steps=20 sigma_y=0.1 operator.missing_ratio=0.9`; see docs/cli.md.")
    parser = _Parser(prog="python -m invscore", description="Solve imaging inverse problems with a diffusion prior.",
                     epilog=epilog)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, desc in TASKS.items():
        p = sub.add_parser(verb, help=desc, description=desc, epilog=epilog + (_TORCHRUN if verb == "evaluate" else ""))
        _common(p, generate=verb == "generate")
        if verb == "evaluate":
            p.add_argument("--task", help=f"the inverse task: {', '.join(INVERSE)} (default inpaint)")
        if verb in ("inpaint", "evaluate"):
            p.add_argument("--mask", help="center (default), box, random, half, or a mask image FILE (bright = observed)")
            p.add_argument("--ratio", type=float, help=_LazyHelp(lambda: "missing fraction: random pixels (default "
                           f"{_default('inpaint_random', 'missing_ratio')}) or centre-box area "
                           f"({_default('inpaint_center', 'ratio')})"))
        if verb in ("deblur", "evaluate"):
            p.add_argument("--kernel", help="gaussian (default) or motion")
            p.add_argument("--blur-sigma", type=float, help="Gaussian kernel std in pixels (default 1.5)")
        if verb in ("superres", "evaluate"):
            p.add_argument("--scale", type=int, help="downsampling factor: 2, 4 (default) or 8")
    lp = sub.add_parser("list", help="list priors, methods, operators, tasks, datasets",
                        description="List what the other verbs accept.")
    lp.add_argument("what", nargs="?", default="all",
                    choices=("all", "priors", "methods", "operators", "tasks", "datasets", "samplers"))
    sub.add_parser("train", help="train a prior or classifier (passes its arguments to python -m invscore.training)",
                   add_help=False)
    return parser


def override_key(token: str) -> str:
    """The config key an override sets (``+a.b=1`` → ``a.b``), used to let later overrides win."""
    return token.split("=", 1)[0].lstrip("+~")


def _mask(args, out: list[str]) -> None:
    mask = args.mask
    if mask is not None:
        if mask in MASKS:
            out.append(f"operator={MASKS[mask]}")
        else:
            p = Path(mask)
            if not p.suffix and not p.exists():  # a word, not a file name: a mistyped mask name
                raise CLIError(f"unknown mask {mask!r}; expected one of {', '.join(MASKS)} or the path of a mask image")
            out += ["operator=inpaint_file", f"operator.path={_quote(p.resolve())}"]
    if args.ratio is not None:
        kind = mask or "center"
        if kind == "random":
            out.append(f"operator.missing_ratio={args.ratio}")
        elif kind == "center":
            out.append(f"operator.ratio={args.ratio}")
        else:
            raise CLIError(f"--ratio applies to --mask random (missing pixels) or center (box area), not {kind!r}")


def _task(args) -> str:
    """The task a verb runs: itself, or ``evaluate --task`` (default inpaint), whose flags must fit it."""
    if args.verb != "evaluate":
        return args.verb
    task = args.task or "inpaint"
    if task not in INVERSE:
        raise CLIError(f"unknown task {task!r} for evaluate; expected one of {', '.join(INVERSE)}")
    for owner, attrs in _TASK_FLAGS.items():
        given = [a for a in attrs if getattr(args, a) is not None]
        if owner != task and given:
            raise CLIError(f"--{given[0].replace('_', '-')} applies to --task {owner}, not {task}")
    return task


def to_overrides(args, prior_groups=(), methods=(), samplers=()) -> list[str]:
    """Translate parsed flags into Hydra overrides (task first, so its group defaults apply).

    ``prior_groups``: names with a file in configs/prior (others are checkpoint paths); ``methods`` and
    ``samplers``: valid --method values, to reject a typo with the list of valid ones.
    """
    verb = args.verb
    task = _task(args)
    out = [f"task={task}"] + (["mode=evaluate"] if verb == "evaluate" else [])
    if args.prior is not None:
        out.append(f"prior={args.prior}" if args.prior in prior_groups else f"prior.checkpoint={_quote(args.prior)}")
    if task == "inpaint":
        _mask(args, out)
    if task == "deblur":
        if args.kernel is not None and args.kernel not in KERNELS:
            raise CLIError(f"unknown kernel {args.kernel!r}; expected one of {', '.join(KERNELS)}")
        if args.kernel is not None:
            out.append(f"operator={KERNELS[args.kernel]}")
        if args.blur_sigma is not None:
            if args.kernel == "motion":
                raise CLIError("--blur-sigma applies to --kernel gaussian; a motion kernel has no sigma")
            out.append(f"operator.sigma={args.blur_sigma}")
    if task == "superres" and args.scale is not None:
        if args.scale not in SCALES:
            raise CLIError(f"unsupported scale {args.scale}; expected one of {', '.join(map(str, SCALES))}")
        out.append(f"operator.factor={args.scale}")
    if args.method is not None:
        valid = samplers if verb == "generate" else methods
        if valid and args.method not in valid:
            what = "sampler" if verb == "generate" else "method"
            raise CLIError(f"unknown {what} {args.method!r}; expected one of {', '.join(sorted(valid))}")
        out.append(f"task.sampler={args.method}" if verb == "generate" else f"method={args.method}")
    simple = {"steps": "steps", "sigma_y": "sigma_y", "seed": "seed", "batch": "batch", "samples": "samples",
              "n": "data.n", "label": "guidance.label", "gamma": "guidance.gamma", "threads": "threads",
              "cfg_weight": "guidance.weight"}
    for attr, key in simple.items():
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f"{key}={v}")
    if getattr(args, "resume", None) is not None:
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise CLIError(f"--resume {args.resume} continues that run in its own directory; drop --out {args.out}")
        out.append(f"out={_quote(args.resume)}")
    quoted = {"device": "device", "out": "out", "image": "data.image", "dataset": "data.dataset",
              "classifier": "guidance.classifier"}
    for attr, key in quoted.items():
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f"{key}={_quote(v)}")
    if getattr(args, "resize", False):
        out.append("data.resize=true")
    if args.quiet:
        out.append("quiet=true")
    return out


def split_args(parser, argv):
    """Parse flags; the remaining ``key=value`` tokens are overrides. Returns ``(args, overrides)``."""
    args, rest = parser.parse_known_args(argv)
    overrides, bad = [], []
    for tok in rest:
        (overrides if ("=" in tok or tok.startswith("~")) and not tok.startswith("-") else bad).append(tok)
    if bad:
        prog = f"{parser.prog} {args.verb}" if getattr(args, "verb", None) else parser.prog
        raise CLIError(f"{prog}: unrecognised argument(s) {' '.join(bad)}; overrides look like key=value "
                       f"(see {prog} --help)")
    return args, overrides

