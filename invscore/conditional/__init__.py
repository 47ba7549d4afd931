"""Conditional sampling: measurement terms, classifier guidance, SMC, and the ``solve`` entry point."""
from .guided import ClassifierFreeGuidance, ClassifierGuidance, Guided, Term
from .measurement import DDRMCorrection, DPS, MMPS, PiGDM, Projection
from .smc import sample_smc
from .solve import METHODS, SolveResult, solve

__all__ = ["Term", "Guided", "ClassifierGuidance", "ClassifierFreeGuidance", "Projection", "DDRMCorrection",
           "DPS", "PiGDM", "MMPS", "sample_smc", "solve", "SolveResult", "METHODS"]
