"""``method="auto"``: one default that picks, per operator kind and NFE budget, the method (and options) the
benchmarks measured best (``experiments/tasks_table.py``; held-out images for the options). Its ``steps`` is
the budget.

The choice is data, :data:`RULES`: for each operator kind a list of ``(smallest budget, method, most
steps, options)``; the last entry the budget reaches wins. The evidence for each row is cited beside it; rerun the
table to revise them. The budget is the network evaluations per image (forward passes; a gradient method's
backward passes come on top and are reported by ``SolveResult.vjp``).
"""
from __future__ import annotations

from .methods import Cost, Method, get_method, register_method

__all__ = ["AutoMethod", "RULES", "LOW_T", "operator_kind"]

#: deepinv's DDRM draws its noise at 1/√2 of the level it tells the denoiser; auto's low-temperature choices
#: take the same factor (``noise_scale``, see ``_DDIMMethod``) rather than one tuned here
LOW_T = {"noise_scale": 0.7071}

#: operator kind -> [(smallest budget, method, most steps worth taking, options)], by increasing budget: the
#: last entry whose budget the request reaches is used, with min(budget // its NFE per step, most steps) steps
#: and those options over the method's defaults — more steps are not always better (MMPS peaks at 20).
#: Evidence (2026-12-05; held-out images no table scores or tunes on: Fashion-MNIST test 200–215 and emoji test
#: randperm(seed 0)[36:52], σ_y = 0.05, 2 seeds; PSNR dB): at noise_scale 1/√2 MMPS-20 gains +1.65 (centre
#: box, 23.95), +0.37 (random 70 %, 24.02), +1.18 (×4 SR, 21.39); at 10 NFE +1.18 / −0.37 / +0.93; DDRM on
#: FFT deblurring +0.84 / +1.00 / +0.80 / +0.83 at 10 / 20 / 50 / 100 steps (25.12 at 100) and on colorization
#: +0.60 / +0.67 at 10 / 20. PnP-Flow at 100 NFE: centre 23.88, random 24.07, SR 22.04, colorization 21.72 (DDRM
#: at 1/√2, 100 steps: 20.69). Earlier evidence for the method order: experiments/results/tasks_table.md,
#: colorization.md. The price: below noise_scale 1 the draws are under-dispersed (experiments/calibration.py),
#: so auto's inpainting, SR, deblurring and colorization results below PnP-Flow's budget are low-temperature
#: samples, near the posterior mean; for posterior samples (spread, uncertainty) name the method, whose
#: noise_scale defaults to 1. DiffPIR and DAPS lead on no task at their defaults. Kinds without a table fall
#: back to DDRM (SVD), ΠGDM (linear) and DPS, at their defaults.
RULES: dict[str, list[tuple[int, str, int, dict]]] = {
    "inpaint": [(1, "mmps", 20, LOW_T), (100, "pnpflow", 20, {})],
    "deblur": [(1, "ddrm", 100, LOW_T)],
    "superres": [(1, "mmps", 20, LOW_T), (50, "pnpflow", 20, {})],
    "colorize": [(1, "ddrm", 100, LOW_T), (100, "pnpflow", 20, {})],
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
            chosen = get_method(reached[-1][0], **reached[-1][2]) if reached else None
            if chosen is not None and _fits(chosen, operator):
                return chosen, max(1, min(budget // chosen.cost().nfe, reached[-1][1]))
        raise AssertionError("RULES['nonlinear'] names a method for any operator")  # pragma: no cover


def _fits(method: Method, operator) -> bool:
    try:
        method.check(operator)
    except TypeError:
        return False
    return True
