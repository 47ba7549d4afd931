"""Conditional sampling: measurement terms, classifier guidance, SMC, the method registry and ``solve``."""
from .guided import ClassifierFreeGuidance, ClassifierGuidance, Guided, Term
from .measurement import DDRMCorrection, DPS, MMPS, PiGDM, Projection
from .methods import METHODS, Cost, Method, get_method, methods_for, register_method
from . import auto, daps, diffpir, pnpdm, pnpflow, psld  # noqa: F401,E402  (each module registers its method)
from .smc import sample_smc
from .solve import SolveResult, solve

__all__ = ["Term", "Guided", "ClassifierGuidance", "ClassifierFreeGuidance", "Projection", "DDRMCorrection",
           "DPS", "PiGDM", "MMPS", "sample_smc", "solve", "SolveResult", "METHODS", "Method", "Cost",
           "register_method", "get_method", "methods_for"]
