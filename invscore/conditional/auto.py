"""``method="auto"``: one default that picks, per operator kind and NFE budget, the method (and options) the
benchmarks measured best (``experiments/tasks_table.py``; held-out images for the options). Its ``steps`` is
the budget.

The choice is data, :data:`RULES`: for each operator kind a list of ``(smallest budget, method, most
steps, options)``; the last entry the budget reaches wins. The evidence for each row is cited beside it; rerun the
table to revise them. The budget is the network evaluations per image (forward passes; a gradient method's
backward passes come on top and are reported by ``SolveResult.vjp``).
"""
from __future__ import annotations

from ..samplers.common import GRIDS
from .methods import Cost, Method, get_method, register_method

__all__ = ["AutoMethod", "RULES", "LOW_T", "operator_kind", "build"]

#: deepinv's DDRM draws its noise at 1/√2 of the level it tells the denoiser; auto's low-temperature choices
#: take the same factor (``noise_scale``, see ``_DDIMMethod``) rather than one tuned here
LOW_T = {"noise_scale": 0.7071}

#: operator kind -> [(smallest budget, method, most steps worth taking, options)], by increasing budget: the
#: last entry whose budget the request reaches is used, with min(budget // its NFE per step, most steps) steps
#: and those options over the method's defaults (the key ``grid``: its time grid, see :func:`build`) — more
#: steps are not always better (MMPS peaks at 20, DDRM on colorization at 50).
#: Evidence (PSNR dB; held-out images no table scores or tunes on, ``python experiments/held_out.py``:
#: Fashion-MNIST test 200–247 and emoji test randperm(seed 0)[36:84], σ_y = 0.05, seeds 1–3, paired against
#: deepinv's better DDRM at 20 NFE; 2026-12-06 unless dated): MMPS at noise_scale 1/√2 on the EDM grid, 10 / 20
#: NFE: centre box +0.10 / +0.87, random 70 % −0.80 / +0.75 (noise_scale 0.85: −0.37 / +0.45 and −0.24 / +0.77;
#: 1: −1.00 and −0.58 at 10); ×4 SR on the uniform grid +0.16 / +0.54 (EDM grid −0.46 / +0.24); DDRM on FFT
#: deblurring from r_max = 1 +0.09 / +0.28 at 10 / 20 (r_max = 2: −0.21 / +0.14), equal at 50 (+0.36 / +0.34)
#: and behind at 100 (+0.30 vs +0.36, the default r_max's); colorization with η = 1 −0.79 / −0.21 / +0.55 at
#: 10 / 20 / 50 (η = 0.85: −1.39 / −0.72 / +0.10), and DDRM at 100 steps (+0.02) or PnP-Flow at 100 NFE (+0.21)
#: are no better than at 50; PnP-Flow at 50 / 100 NFE: SR +0.36 / +0.76 (so from 100), centre +0.21 / +1.05,
#: random −0.48 / +0.49 (MMPS-20 +0.87 and +0.75: level on the two, so from 100 as before). 2026-12-05
#: (images 200–215, 2 seeds): noise_scale 1/√2 gains +1.65 / +0.37 / +1.18 dB on MMPS-20 (centre, random, SR)
#: and +0.8 to +1.0 on DDRM deblurring at 10–100 steps; PnP-Flow at
#: 100 NFE: centre 23.88, random 24.07, SR 22.04 (beyond MMPS's best). Earlier evidence for the method order:
#: experiments/results/tasks_table.md, colorization.md. The price: below noise_scale 1 the draws are
#: under-dispersed (experiments/calibration.py), so auto's results below PnP-Flow's budget are low-temperature
#: samples, near the posterior mean; for posterior samples (spread, uncertainty) name the method, whose
#: noise_scale defaults to 1. DiffPIR and DAPS lead on no task at their defaults. Kinds without a table fall
#: back to DDRM (SVD), ΠGDM (linear) and DPS, at their defaults.
RULES: dict[str, list[tuple[int, str, int, dict]]] = {
    "inpaint": [(1, "mmps", 20, LOW_T), (100, "pnpflow", 20, {})],
    "deblur": [(1, "ddrm", 100, {**LOW_T, "r_max": 1.0}), (50, "ddrm", 100, LOW_T)],
    "superres": [(1, "mmps", 20, {**LOW_T, "grid": "uniform"}), (100, "pnpflow", 20, {})],
    "colorize": [(1, "ddrm", 50, {**LOW_T, "eta": 1.0})],
    "svd": [(1, "ddrm", 50, {})],
    "linear": [(1, "pigdm", 50, {})],
    "nonlinear": [(1, "dps", 1000, {})],
}


def operator_kind(op) -> str:
    """The kind of :data:`RULES` an operator belongs to, from its class (masks, blurs, pooling/resizing,
    grayscale; else svd / linear / nonlinear)."""
    import operators
    from operators.blur import Blur, BlurFFT, HartleyBlur
    from operators.color import Grayscale
    from operators.masks import Mask
    from operators.resize import AvgPool, Bicubic
    for kind, classes in (("inpaint", (Mask,)), ("deblur", (BlurFFT, HartleyBlur, Blur)),
                          ("superres", (AvgPool, Bicubic)), ("colorize", (Grayscale,)),
                          ("svd", (operators.SVDOperator,)), ("linear", (operators.LinearOperator,))):
        if isinstance(op, classes):
            return kind
    return "nonlinear"


@register_method
class AutoMethod(Method):
    """The default: the method :data:`RULES` names for the operator's kind within a budget of ``steps``
    network evaluations per image (default 100), run with at most ``budget // its NFE per step`` steps."""

    name = "auto"
    description = "picks the measured-best method for the operator; steps = the NFE budget (see RULES)"
    needs, steps, delegates = "any", 100, True

    def cost(self) -> Cost:
        raise TypeError("auto has no cost of its own: resolve(operator) gives the method it runs")

    def resolve(self, operator, steps: int | None = None) -> tuple[Method, int]:
        """The chosen method and its steps for ``operator`` within ``steps`` NFE per image."""
        budget = self.steps if steps is None else int(steps)
        # a rule whose method does not fit this operator (DDRM on a spatial blur without an SVD) falls through
        # to the general kinds after it
        for kind in dict.fromkeys((operator_kind(operator), "svd", "linear", "nonlinear")):
            reached = [(name, most, opts) for need, name, most, opts in RULES[kind] if need <= budget]
            chosen = build(reached[-1][0], reached[-1][2]) if reached else None
            if chosen is not None and _fits(chosen, operator):
                return chosen, max(1, min(budget // chosen.cost().nfe, reached[-1][1]))
        raise AssertionError("RULES['nonlinear'] names a method for any operator")  # pragma: no cover


def build(name: str, options: dict) -> Method:
    """The method ``name`` with a rule's ``options``; the key ``grid`` is its time grid (one of
    :data:`~invscore.samplers.common.GRIDS`, as ``solve(grid=…)``), the rest are method options."""
    opts = dict(options)
    grid = opts.pop("grid", None)
    method = get_method(name, **opts)
    if grid is not None:
        if grid not in GRIDS:
            raise ValueError(f"a rule for {name!r} names the time grid {grid!r}; expected one of {GRIDS}")
        method.grid = grid
    return method


def _fits(method: Method, operator) -> bool:
    try:
        method.check(operator)
    except TypeError:
        return False
    return True
