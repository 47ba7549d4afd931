"""``method="auto"``: one default that picks, per operator kind and NFE budget, the method the tasks table
measured best (``experiments/tasks_table.py``), with that method's own defaults. Its ``steps`` is the budget.

The choice is data, :data:`RULES`: for each operator kind a list of ``(smallest budget, method, most
steps)``; the last entry the budget reaches wins. The evidence for each row is cited beside it; rerun the
table to revise them. The budget is the network evaluations per image (forward passes; a gradient method's
backward passes come on top and are reported by ``SolveResult.vjp``).
"""
from __future__ import annotations

from .methods import Cost, Method, get_method, register_method

__all__ = ["AutoMethod", "RULES", "operator_kind"]

#: operator kind -> [(smallest budget, method, most steps worth taking)], by increasing budget: the last entry
#: whose budget the request reaches is used, with min(budget // its NFE per step, most steps) steps — more
#: steps are not always better (MMPS peaks at 20). Evidence: experiments/results/tasks_table.{md,csv} (held-out
#: Fashion-MNIST, σ_y = 0.05; table points on 16 images, curve points on 8; one run, so a claim about that
#: prior and those images) and colorization.md (32 emoji test images):
#: inpainting: MMPS leads at 10–50 NFE (centre 19.69 / 19.78 dB at 10 / 20, random 20.98 / 22.94 on the curve
#: images; PnP-Flow at 50: 18.91 / 21.65), PnP-Flow at 100 (16 images: centre 21.60 against MMPS-20's 20.85,
#: random 23.79 against 22.75); deblur (FFT): DDRM at every budget (22.39 at 10 against ΠGDM's 21.73, 22.94
#: at 20; 16 images: 23.68 at 50, 23.75 at 100, PnP-DM 23.29); ×4 SR: MMPS at 10–20 (18.12 / 19.17),
#: PnP-Flow from 50 (19.34 at 50 against MMPS-20's 19.17, a thin margin; 16 images at 100: 20.99, PnP-DM 20.08,
#: DDRM-50 19.29; its LPIPS is worse, 0.056 against DDRM-50's 0.045); colorization (tasks_table_colorize.md,
#: 32 emoji test images, σ_y = 0.05; the same order at σ_y = 0, colorization.md): DDRM below 100 (curve images:
#: 23.27 dB at 10 NFE against MMPS's 20.06; table: DDRM-50 22.79 against MMPS-20's 21.11), PnP-Flow at 100
#: (24.82 dB, LPIPS 0.061, the best run at ≤ 100 NFE; DPS 23.43; at σ_y = 0 25.70 against DPS's 24.50). DiffPIR and DAPS lead on no task at their defaults. Kinds without a table fall back to DDRM (SVD),
#: ΠGDM (linear) and DPS.
RULES: dict[str, list[tuple[int, str, int]]] = {
    "inpaint": [(1, "mmps", 20), (100, "pnpflow", 20)],
    "deblur": [(1, "ddrm", 100)],
    "superres": [(1, "mmps", 20), (50, "pnpflow", 20)],
    "colorize": [(1, "ddrm", 100), (100, "pnpflow", 20)],
    "svd": [(1, "ddrm", 50)],
    "linear": [(1, "pigdm", 50)],
    "nonlinear": [(1, "dps", 1000)],
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
            reached = [(name, most) for need, name, most in RULES[kind] if need <= budget]
            chosen = get_method(reached[-1][0]) if reached else None
            if chosen is not None and _fits(chosen, operator):
                return chosen, max(1, min(budget // chosen.cost().nfe, reached[-1][1]))
        raise AssertionError("RULES['nonlinear'] names a method for any operator")  # pragma: no cover


def _fits(method: Method, operator) -> bool:
    try:
        method.check(operator)
    except TypeError:
        return False
    return True
