"""invscore: imaging inverse problems with a frozen score (diffusion) model as the prior.

Data flows one way: prior → SDE → sampler ← conditional terms ← operator ← measurement.
"""
import importlib

# name -> submodule: imported on first use (PEP 562), so `python -m invscore --help` need not import torch
_LAZY = {**dict.fromkeys(("CallablePrior", "DiagonalGaussian", "Diffusion", "Gaussian", "GaussianMixture",
                          "NetworkPrior", "Prior", "StationaryGaussian"), "priors"),
         **dict.fromkeys(("SAMPLERS", "SampleResult", "sample", "time_grid"), "samplers"),
         **dict.fromkeys(("SDE", "DiscreteVPSDE", "SubVPSDE", "VESDE", "VPSDE", "make_sde"), "sde"),
         "resolve_device": "utils"}

__version__ = "0.1.0"
__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "DiscreteVPSDE", "make_sde", "Prior", "CallablePrior", "NetworkPrior",
           "Diffusion",
           "Gaussian", "DiagonalGaussian", "StationaryGaussian", "GaussianMixture", "sample", "time_grid",
           "SampleResult", "SAMPLERS", "resolve_device"]


def __getattr__(name: str):
    """The public names (and submodules, ``invscore.conditional``) on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__():
    return sorted(set(globals()) | set(__all__))
