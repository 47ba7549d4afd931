"""``python -m invscore list [priors|methods|operators|tasks|datasets|samplers]``."""
from __future__ import annotations

from .args import TASKS

__all__ = ["listing"]


def _priors() -> list[str]:
    from ..checkpoint import read_card, shipped
    from ..data.assets import shipped_test_sets
    rows = []
    for name in shipped():
        try:
            card = read_card(name)
        except (OSError, ValueError) as exc:
            rows.append(f"  {name:<24} unreadable card ({exc})")
            continue
        size = f"{card.get('channels')}×{card.get('image_size')}×{card.get('image_size')}"
        extra = f"steps {card['steps']}" if "steps" in card else ""
        rows.append(f"  {name:<24} {card.get('kind', '?'):<10} {size:<10} {extra}")
    if not rows:
        rows.append("  (none shipped yet: pass --prior PATH to a .safetensors checkpoint, "
                    "or train one with `python -m invscore train`)")
    rows.append(f"  shipped test-image sets: {', '.join(shipped_test_sets()) or 'none'}")
    from ..priors.formats import available_formats
    for spec, desc in available_formats().values():
        rows.append(f"  --prior {spec:<22} {desc}")
    return rows


def _methods() -> list[str]:
    from ..conditional import METHODS
    rows = [f"  {'name':<11} {'steps':>5} {'grid':<8} {'operator':<8} {'NFE/step':>8} {'VJP/step':>8}  what"]
    for name, cls in METHODS.items():
        m = cls()
        nfe, vjp = ("picked", "") if m.delegates else (m.cost().nfe, m.cost().vjp)
        rows.append(f"  {name:<11} {m.steps:>5} {m.grid:<8} {m.needs:<8} {nfe:>8} {vjp:>8}  {m.description}")
        if m.defaults:
            rows.append(f"  {'':<11} options: " + ", ".join(f"{k}={v}" for k, v in m.defaults.items()))
    return rows


def _operators() -> list[str]:
    import operators
    from .args import KERNELS, MASKS
    return [f"  registry: {', '.join(operators.available())}",
            f"  inpaint --mask: {', '.join(MASKS)}, FILE; deblur --kernel: {', '.join(KERNELS)}; "
            "superres --scale: 2, 4, 8"]


def _datasets() -> list[str]:
    from ..data import available
    return [f"  {k:<14} {'available' if v else 'not installed'}" for k, v in available().items()]


def _samplers() -> list[str]:
    from ..samplers import SAMPLERS
    return ["  " + ", ".join(SAMPLERS) + "  (generate --method)"]


def listing(what: str = "all") -> str:
    """The text printed by the ``list`` verb."""
    sections = {"tasks": lambda: [f"  {k:<9} {v}" for k, v in TASKS.items()], "priors": _priors,
                "methods": _methods, "operators": _operators, "samplers": _samplers, "datasets": _datasets}
    names = list(sections) if what == "all" else [what]
    return "\n".join(f"{n}:\n" + "\n".join(sections[n]()) for n in names)
