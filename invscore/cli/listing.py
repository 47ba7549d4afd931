"""``python -m invscore list [priors|methods|operators|tasks|datasets|samplers]``.

The ``*_rows`` functions read the live registries (torch); ``list`` prints them through
:func:`invscore.cli.facts.fact`, which answers from a snapshot keyed by the sources when torch is not loaded.
"""
from __future__ import annotations

from .args import TASKS
from .facts import fact

__all__ = ["listing", "priors_rows", "methods_rows", "operators_rows", "samplers_rows"]


def priors_rows() -> list[str]:
    """The shipped checkpoints by their model cards (kind, size, family: score, flow, consistency, latent or autoencoder; training steps; a latent prior's autoencoder, a conditional prior's classes), the shipped test-image sets and the registered formats."""
    from ..checkpoint import read_card, shipped, training_steps
    from ..data.assets import shipped_test_sets
    rows = []
    for name in shipped():
        try:
            card = read_card(name)
        except (OSError, ValueError) as exc:
            rows.append(f"  {name:<24} unreadable card ({exc})")
            continue
        size = f"{card.get('channels')}×{card.get('image_size')}×{card.get('image_size')}"
        extra = f"steps {training_steps(card)}" if "steps" in card else ""
        if card.get("family") == "latent":
            extra += f"; decodes to {'×'.join(map(str, card.get('pixel_shape', [])))} with {card.get('autoencoder')}"
        if card.get("classes"):
            extra += f"; {card['classes']} classes (classifier-free guidance: --class K --cfg-weight W)"
        kind = card.get("kind", "?")
        family = card.get("family", "score" if kind == "denoiser" else "-")  # cards before families were score
        rows.append(f"  {name:<24} {kind:<11} {size:<10} {family:<11} {extra}")
    if not rows:
        rows.append("  (none shipped yet: pass --prior PATH to a .safetensors checkpoint, "
                    "or train one with `python -m invscore train`)")
    rows.append(f"  shipped test-image sets: {', '.join(shipped_test_sets()) or 'none'}")
    from ..priors.formats import available_formats
    for spec, desc in available_formats().values():
        rows.append(f"  --prior {spec:<22} {desc}")
    return rows


def methods_rows() -> list[str]:
    """Each registered method's declared steps, grid, operator need, cost per step, description, options."""
    from ..conditional import METHODS
    rows = [f"  {'name':<11} {'steps':>5} {'grid':<8} {'operator':<8} {'NFE/step':>8} {'VJP/step':>8}  what"]
    for name, cls in METHODS.items():
        m = cls()
        nfe, vjp = ("picked", "") if m.delegates else (m.cost().nfe, m.cost().vjp)
        rows.append(f"  {name:<11} {m.steps:>5} {m.grid:<8} {m.needs:<8} {nfe:>8} {vjp:>8}  {m.description}")
        if m.defaults:
            rows.append(f"  {'':<11} options: " + ", ".join(f"{k}={v}" for k, v in m.defaults.items()))
    return rows


def operators_rows() -> list[str]:
    """The operator registry's names and the CLI's shorthands for them."""
    import operators
    from .args import KERNELS, MASKS, SCALES
    return [f"  registry: {', '.join(operators.available())}",
            f"  inpaint --mask: {', '.join(MASKS)}, FILE; deblur --kernel: {', '.join(KERNELS)}; "
            f"superres --scale: {', '.join(map(str, SCALES))}"]


def _datasets() -> list[str]:
    from ..data import available  # probes each loader's files and packages: live, never snapshotted
    return [f"  {k:<14} {'available' if v else 'not installed'}" for k, v in available().items()]


def _dataset_names() -> list[str]:
    # `list` (all) stays torch-free: names only; whether each is installed needs its loader (`list datasets`)
    return ["  " + ", ".join(fact("dataset_names")) + "  (`list datasets` says which are installed)"]


def samplers_rows() -> list[str]:
    """The sampler registry's names."""
    from ..samplers import SAMPLERS
    return ["  " + ", ".join(SAMPLERS) + "  (generate --method)"]


def listing(what: str = "all") -> str:
    """The text printed by the ``list`` verb."""
    sections = {"tasks": lambda: [f"  {k:<9} {v}" for k, v in TASKS.items()],
                **{s: (lambda s=s: fact(f"list_{s}")) for s in ("priors", "methods", "operators", "samplers")},
                "datasets": _datasets if what == "datasets" else _dataset_names}
    names = list(sections) if what == "all" else [what]
    return "\n".join(f"{n}:\n" + "\n".join(sections[n]()) for n in names)
